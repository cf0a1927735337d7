"""The author-rights rules of the admission policy (charts/tokenfactory/templates/admission-policy.yaml),
in Python, for the operator to re-check what it is about to create (defence in depth, issue 15 item 1).

Pure: a TokenFactory spec and the cluster admin's TokenFactoryAllowList spec in, problems out (one line
each, naming the field, worded as the policy words them). The Secret/ConfigMap rule needs the author's
identity, which only the apiserver has at admission; ``references`` lists what a re-check would ask a
SubjectAccessReview about, and ``unsafe_without_policy`` what the operator should refuse to act on when
the policy is not installed. Not wired into the reconciler yet (see docs/deploy.md).
"""

from __future__ import annotations

from tokenfactory import api


def toleration_text(key: str | None, operator: str, value: str | None, effect: str | None) -> str:
    """The policy's text form: <key or *>[=<value>][:<effect>] (operator Exists has no "=value")."""
    out = key or "*"
    if operator != "Exists":
        out += "=" + (value or "")
    if effect:
        out += ":" + effect
    return out


def image_allowed(image: str, allowed: list[str]) -> bool:
    return any(image.startswith(a[:-1]) if a.endswith("*") else image == a for a in allowed)


def toleration_allowed(t: api.Toleration, gpu_type: str, allowed: list[api.AllowedToleration]) -> bool:
    return any(("*" in a.gpu_types or gpu_type in a.gpu_types)
               and (a.key or "") == (t.key or "") and a.operator == t.operator
               and (a.value or "") == (t.value or "") and (a.effect or "") == (t.effect or "")
               for a in allowed)


def check(spec: api.TokenFactorySpec, allow: api.AllowListSpec) -> list[str]:
    """Image and toleration problems of ``spec`` under the admin's allow-list (empty: allowed)."""
    problems = []
    if not image_allowed(spec.engine.image, allow.allowed_images):
        problems.append(f"spec.engine.image: {spec.engine.image} is not allowed; the cluster admin allows: "
                        + (", ".join(allow.allowed_images) or "no image"))
    for pool in spec.pools:
        bad = [toleration_text(t.key, t.operator, t.value, t.effect) for t in pool.tolerations
               if not toleration_allowed(t, pool.gpu_type, allow.allowed_tolerations)]
        if bad:
            problems.append(f"spec.pools[name={pool.name}].tolerations: {', '.join(bad)} not allowed for gpuType "
                            f"{pool.gpu_type}")
    return problems


def references(spec: api.TokenFactorySpec) -> list[tuple[str, str, str]]:
    """(field, kind, name) of every Secret and ConfigMap the vLLM pods would read."""
    out = []
    for var in spec.engine.env:
        src = var.value_from
        if src and src.secret_key_ref:
            out.append((f"spec.engine.env[name={var.name}].valueFrom.secretKeyRef.name", "Secret", src.secret_key_ref.name))
        if src and src.config_map_key_ref:
            out.append((f"spec.engine.env[name={var.name}].valueFrom.configMapKeyRef.name", "ConfigMap",
                        src.config_map_key_ref.name))
    return out


def unsafe_without_policy(spec: api.TokenFactorySpec) -> list[str]:
    """Fields that grant more than creating a TokenFactory should, when no admission policy checked the author:
    Secret/ConfigMap references, an image other than the default, and any toleration."""
    default_image = api.EngineSpec.model_fields["image"].default
    problems = [f"{field}: {kind} {name}" for field, kind, name in references(spec)]
    if spec.engine.image != default_image:
        problems.append(f"spec.engine.image: {spec.engine.image}")
    problems += [f"spec.pools[name={p.name}].tolerations" for p in spec.pools if p.tolerations]
    return problems
