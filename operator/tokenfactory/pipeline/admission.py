"""Defence in depth for the author-rights admission policy (issue 15 item 1), operator side.

The ValidatingAdmissionPolicy (``charts/tokenfactory/templates/admission-policy.yaml``) checks the author
of a TokenFactory at admission. The operator re-checks what it can before it creates anything:

- the policy and its binding are installed (``tokenfactory run --admission-policy NAME``; the binding has
  the policy's name, its ``paramRef`` names the TokenFactoryAllowList): the spec's images and tolerations
  must pass the same allow-list (``authorcheck.check``); a spec that does not (written before the policy
  or its allow-list changed, or while the policy was not there) is refused, reason ``NotAllowed``;
- the policy is not installed (or its binding or allow-list is missing): a spec using a field that grants
  more than creating a TokenFactory should (a Secret/ConfigMap reference, a non-default image, a
  toleration: ``authorcheck.unsafe_without_policy``) is refused, reason ``AdmissionPolicyMissing``.

- the binding's ``matchResources.namespaceSelector`` leaves the factory's namespace out: the policy never
  checked its author, so it is treated as the policy missing (``AdmissionPolicyMissing``) for that factory.
  A selector on ``kubernetes.io/metadata.name`` only (the chart's ``watchNamespaces`` form) is decided from
  the name; any other label needs the Namespace (``get namespaces``: the chart grants it when
  ``admissionPolicy.namespaceSelector`` is set).

Refused means: Degraded=True with that reason and the fields named, one Warning Event, nothing applied.
The Secret/ConfigMap rule needs the author's identity, which only the apiserver has at admission: without
the policy such references are refused outright. ``--admission-policy`` unset (development, tests): no
re-check, and ``tokenfactory run`` says so at start-up.

``gate`` and ``selector_matches`` are pure; ``AdmissionReader`` reads the three objects through lightkube
(``get`` on exactly these names: the chart grants nothing more), and a Namespace's labels when the
binding's selector needs them, and caches the answers for ``ttl`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenfactory import api, authorcheck

log = logging.getLogger("tokenfactory.admission")

NOT_ALLOWED = "NotAllowed"
POLICY_MISSING = "AdmissionPolicyMissing"
NAME_LABEL = "kubernetes.io/metadata.name"  # set by the apiserver on every Namespace: its name


@dataclass(frozen=True)
class AdmissionState:
    """What the operator found: the policy with its binding and allow-list (``allow``), or why not."""

    policy: str
    allow: api.AllowListSpec | None = None  # None: policy, binding or allow-list missing
    missing: str = ""  # what is missing, for the message
    namespace_selector: Mapping[str, Any] | None = None  # the binding's matchResources.namespaceSelector


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (``matchLabels`` and ``matchExpressions``) against ``labels``; empty or
    absent selects everything."""
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), list(e.get("values") or [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)
        if not ok:
            return False
    return True


def selector_keys(selector: Mapping[str, Any] | None) -> set[str]:
    """The label keys a selector looks at."""
    sel = selector or {}
    return set(sel.get("matchLabels") or {}) | {e.get("key") for e in sel.get("matchExpressions") or []}


def for_namespace(state: AdmissionState, namespace: str, labels: Mapping[str, str] | None) -> AdmissionState:
    """``state`` as it applies to a factory in ``namespace`` (``labels``: the Namespace's, None when they
    could not be read): a namespace the binding does not select was never checked at admission, so it is
    treated as the policy missing."""
    if state.allow is None or not state.namespace_selector:
        return state
    if labels is not None and selector_matches(state.namespace_selector, labels):
        return state
    why = ("its binding's namespaceSelector does not select namespace " + namespace if labels is not None else
           f"the labels of namespace {namespace}, which its binding's namespaceSelector needs, could not be read")
    return AdmissionState(state.policy, missing=why, namespace_selector=state.namespace_selector)


def gate(spec: api.TokenFactorySpec, state: AdmissionState | None) -> tuple[str, list[str]] | None:
    """``(reason, problems)`` when the operator must refuse ``spec``; None when it may go ahead."""
    if state is None:
        return None
    if state.allow is not None:
        problems = authorcheck.check(spec, state.allow)
        for pool in spec.pools:  # per-pool engine overrides pass the same image rule
            image = getattr(getattr(pool, "engine", None), "image", None)
            if image and not authorcheck.image_allowed(image, state.allow.allowed_images):
                problems.append(f"spec.pools[name={pool.name}].engine.image: {image} is not allowed")
        return (NOT_ALLOWED, [p + f" (TokenFactoryAllowList of {state.policy})" for p in problems]) if problems else None
    unsafe = authorcheck.unsafe_without_policy(spec) + _pool_overrides(spec)
    if not unsafe:
        return None
    return POLICY_MISSING, [f"{u}: not re-checkable without the admission policy {state.policy} ({state.missing}); "
                            f"install it (chart value admissionPolicy.enabled) or remove the field" for u in unsafe]


def _pool_overrides(spec: api.TokenFactorySpec) -> list[str]:
    """Per-pool engine overrides (``pools[].engine``) that would need the policy: their Secret/ConfigMap
    references and images."""
    out = []
    for pool in spec.pools:
        eng = pool.engine
        if eng is None:
            continue
        for var in eng.env:
            src = var.value_from
            if src and src.secret_key_ref:
                out.append(f"spec.pools[name={pool.name}].engine.env[name={var.name}].valueFrom.secretKeyRef.name: "
                           f"Secret {src.secret_key_ref.name}")
            if src and src.config_map_key_ref:
                out.append(f"spec.pools[name={pool.name}].engine.env[name={var.name}].valueFrom.configMapKeyRef.name: "
                           f"ConfigMap {src.config_map_key_ref.name}")
        if eng.image:
            out.append(f"spec.pools[name={pool.name}].engine.image: {eng.image}")
    return out


class AdmissionReader:
    """Reads the policy, its binding and its allow-list (cluster-scoped, by name), cached for ``ttl`` s."""

    def __init__(self, policy: str, client: Any | None = None, ttl: float = 30.0):
        self.policy = policy
        self.ttl = ttl
        self._client = client
        self._cached: tuple[float, AdmissionState] | None = None
        self._labels: dict[str, tuple[float, dict[str, str] | None]] = {}

    async def state(self) -> AdmissionState:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.ttl:
            return self._cached[1]
        st = await self._read()
        self._cached = (now, st)
        return st

    async def state_for(self, namespace: str) -> AdmissionState:
        """:meth:`state` for a factory in ``namespace`` (see :func:`for_namespace`)."""
        st = await self.state()
        if st.allow is None or not st.namespace_selector:
            return st
        labels: dict[str, str] | None = {NAME_LABEL: namespace}
        if selector_keys(st.namespace_selector) - {NAME_LABEL}:
            labels = await self._namespace_labels(namespace)
        return for_namespace(st, namespace, labels)

    async def _namespace_labels(self, namespace: str) -> dict[str, str] | None:
        now = time.monotonic()
        cached = self._labels.get(namespace)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        from lightkube import ApiError
        from lightkube.resources.core_v1 import Namespace

        labels: dict[str, str] | None
        try:
            ns = await self._client.get(Namespace, namespace)  # type: ignore[union-attr]
            labels = dict((ns.metadata.labels if ns.metadata else None) or {})
            labels.setdefault(NAME_LABEL, namespace)
        except ApiError as err:
            log.warning("cannot read namespace %s for the admission policy's namespaceSelector: %s",
                        namespace, err.status.message)
            labels = None
        self._labels[namespace] = (now, labels)
        return labels

    async def _read(self) -> AdmissionState:
        from lightkube import ApiError, AsyncClient
        from lightkube.generic_resource import create_global_resource
        from lightkube.resources.admissionregistration_v1 import (
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        )

        if self._client is None:
            self._client = AsyncClient()
        allow_res = create_global_resource(api.GROUP, api.VERSION, api.ALLOWLIST_KIND, api.ALLOWLIST_PLURAL)
        try:
            await self._client.get(ValidatingAdmissionPolicy, self.policy)
            binding = await self._client.get(ValidatingAdmissionPolicyBinding, self.policy)
            ref = binding.spec.paramRef.name if binding.spec and binding.spec.paramRef else None
            if not ref:
                return AdmissionState(self.policy, missing="its binding names no TokenFactoryAllowList")
            allow = await self._client.get(allow_res, ref)
        except ApiError as err:
            if err.status.code == 404:
                return AdmissionState(self.policy, missing="the policy, its binding or its TokenFactoryAllowList is not installed")
            if err.status.code == 403:
                log.warning("cannot read the admission policy %s: %s", self.policy, err.status.message)
                return AdmissionState(self.policy, missing="the operator may not read it (RBAC)")
            raise
        data = allow.to_dict() if hasattr(allow, "to_dict") else dict(allow)
        match = getattr(binding.spec, "matchResources", None) if binding.spec else None
        sel = getattr(match, "namespaceSelector", None)
        selector = (sel.to_dict() if hasattr(sel, "to_dict") else dict(sel)) if sel else None
        return AdmissionState(self.policy, allow=api.AllowListSpec.model_validate(data.get("spec") or {}),
                              namespace_selector=selector or None)
