"""The author-rights rules of the admission policy (charts/tokenfactory/templates/admission-policy.yaml),
in Python, for the operator to re-check what it is about to create (defence in depth, issue 15 item 1).

Pure: a TokenFactory spec and the cluster admin's TokenFactoryAllowList spec in, problems out (one line
each, naming the field, worded as the policy words them). The Secret/ConfigMap rule needs the author's
identity, which only the apiserver has at admission; ``references`` lists what a re-check would ask a
SubjectAccessReview about, and ``unsafe_without_policy`` what the operator should refuse to act on when
the policy is not installed. The reconciler's re-check is ``pipeline/admission.py`` (see docs/deploy.md).
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


TRUST_REMOTE_CODE = "--trust-remote-code"


def trusts_remote_code(arg: str) -> bool:
    """``arg`` turns on vLLM's --trust-remote-code, in any form vLLM's parser takes: ``--trust-remote-code``,
    ``--trust-remote-code=true``, underscores for dashes (``--trust_remote_code``) and an abbreviation
    (argparse accepts a unique prefix: ``--trust``). The policy's CEL applies the same test."""
    name = arg.split("=", 1)[0].replace("_", "-")
    return len(name) >= 4 and TRUST_REMOTE_CODE.startswith(name)


def trust_remote_code_fields(spec: api.TokenFactorySpec) -> list[str]:
    """Where ``spec`` passes --trust-remote-code: ``spec.engine.extraArgs`` / ``spec.pools[name=..].engine.extraArgs``."""
    out = []
    if any(trusts_remote_code(a) for a in spec.engine.extra_args):
        out.append("spec.engine.extraArgs")
    for pool in spec.pools:
        if pool.engine is not None and any(trusts_remote_code(a) for a in pool.engine.extra_args):
            out.append(f"spec.pools[name={pool.name}].engine.extraArgs")
    return out


def trust_remote_code_problem(fields: list[str]) -> str:
    return (f"{', '.join(fields)}: {TRUST_REMOTE_CODE} runs code from the model repository (spec.model.name) in the "
            f"vLLM pods; the cluster admin does not allow it (spec.allowTrustRemoteCode: true allows it)")


def check(spec: api.TokenFactorySpec, allow: api.AllowListSpec) -> list[str]:
    """Image, toleration and --trust-remote-code problems of ``spec`` under the admin's allow-list (empty: allowed)."""
    problems = []
    trc = trust_remote_code_fields(spec)
    if trc and not allow.allow_trust_remote_code:
        problems.append(trust_remote_code_problem(trc))
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
    Secret/ConfigMap references, an image other than the default, any toleration and --trust-remote-code."""
    default_image = api.EngineSpec.model_fields["image"].default
    problems = [f"{field}: {kind} {name}" for field, kind, name in references(spec)]
    if spec.engine.image != default_image:
        problems.append(f"spec.engine.image: {spec.engine.image}")
    problems += [f"spec.pools[name={p.name}].tolerations" for p in spec.pools if p.tolerations]
    problems += [f"{field}: {TRUST_REMOTE_CODE}" for field in trust_remote_code_fields(spec)]
    return problems
