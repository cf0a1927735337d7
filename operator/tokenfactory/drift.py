"""Security-relevant drift of a child Deployment's pod template from what the operator rendered (issue 15).

Pure: a rendered pod spec and the live one in, the drifted field paths out. Server-side apply only owns
the fields the operator writes, so a container, a volume or ``hostNetwork: true`` added by someone else
survives every apply; ``pipeline.actuate`` therefore compares the live template with the rendered one and,
when a field below differs, replaces the whole pod spec with the rendered one (the operator owns its
children's pod spec) and emits a Warning ``DriftReverted`` naming the fields.

Compared (anything else is left to server-side apply):

- pod: the container list (names), ``initContainers``, ``ephemeralContainers``, ``volumes``,
  ``securityContext``, ``hostNetwork``, ``hostPID``, ``hostIPC``, ``hostUsers``,
  ``shareProcessNamespace``, ``serviceAccountName``/``serviceAccount``,
  ``automountServiceAccountToken``, ``nodeName``, ``runtimeClassName``, ``tolerations``,
  ``nodeSelector``, ``priorityClassName``, ``hostAliases``, ``dnsPolicy`` (absent = ``ClusterFirst``),
  ``dnsConfig``;
- each of the operator's containers: ``image``, ``command``, ``args``, ``securityContext``,
  ``volumeMounts``, ``volumeDevices``, ``env``, ``envFrom``, ``lifecycle`` (postStart/preStop hooks),
  ``ports`` (every key, ``hostPort``/``hostIP`` included; protocol defaults to TCP) and what each probe
  runs (``exec``/``httpGet``/``tcpSocket``/``grpc`` of the startup, readiness and liveness probes).

Not compared (server-side apply keeps the operator's own values of these, but does not remove what others
add): ``resources``, probe timings (periods, thresholds, timeouts), labels and annotations of the
template, ``affinity``, ``topologySpreadConstraints``, ``workingDir``, ``imagePullPolicy``,
``imagePullSecrets``, ``terminationGracePeriodSeconds`` and every other field not listed above, and the
Deployment's own spec (replicas, strategy, selector).

Fields the apiserver fills with defaults (``terminationMessagePath``, a volume's ``defaultMode``, an env
``fieldRef.apiVersion`` ...) are not drift: a live value counts as drift only when it is not the rendered
value plus defaults (dicts: the rendered keys with the same values, extra keys only where defaults are
expected); an absent field, ``false``, ``{}`` and ``[]`` are the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

POD_FIELDS = ("initContainers", "ephemeralContainers", "securityContext", "hostNetwork", "hostPID", "hostIPC",
              "hostUsers", "shareProcessNamespace", "serviceAccountName", "serviceAccount",
              "automountServiceAccountToken", "nodeName", "runtimeClassName", "tolerations", "nodeSelector",
              "priorityClassName", "hostAliases", "dnsConfig")
CONTAINER_FIELDS = ("image", "command", "args", "securityContext", "volumeMounts", "volumeDevices", "env", "envFrom",
                    "lifecycle")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
# The apiserver's default dnsPolicy when the pod spec names none (the operator names none).
_DEFAULT_DNS_POLICY = "ClusterFirst"
# Where the apiserver adds defaults inside a value, extra live keys are tolerated (rendered keys must match).
_DEFAULTED = {"volumes", "env", "tolerations"}
_PREFIX = "spec.template.spec"


def _empty(v: Any) -> bool:
    return v is None or v is False or v == {} or v == []


def _same(rendered: Any, live: Any, defaults_ok: bool) -> bool:
    """``live`` is ``rendered`` (plus apiserver defaults inside dicts when ``defaults_ok``)."""
    if _empty(rendered) and _empty(live):
        return True
    if isinstance(rendered, Mapping) and isinstance(live, Mapping):
        keys = set(rendered) | ({k for k in live if not _empty(live[k])} if not defaults_ok else set())
        return all(_same(rendered.get(k), live.get(k), defaults_ok) for k in keys)
    if isinstance(rendered, Sequence) and not isinstance(rendered, str) and isinstance(live, Sequence) and not isinstance(live, str):
        return len(rendered) == len(live) and all(_same(a, b, defaults_ok) for a, b in zip(rendered, live))
    if isinstance(rendered, (int, float)) and isinstance(live, str) or isinstance(rendered, str) and isinstance(live, (int, float)):
        return str(rendered) == str(live)  # quantities: "8" vs 8
    return rendered == live


def _by_name(items: Any) -> dict[str, Mapping[str, Any]]:
    return {c.get("name", f"#{i}"): c for i, c in enumerate(items or []) if isinstance(c, Mapping)}


def pod_spec_drift(rendered: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """The drifted fields of ``live`` (a Deployment's ``spec.template.spec``) against ``rendered``, as paths
    with what changed, e.g. ``spec.template.spec.hostNetwork`` or ``spec.template.spec.containers[sidecar] (added)``."""
    out: list[str] = []
    ours, theirs = _by_name(rendered.get("containers")), _by_name(live.get("containers"))
    for name in sorted(set(theirs) - set(ours)):
        out.append(f"{_PREFIX}.containers[{name}] (added)")
    for name in sorted(set(ours) - set(theirs)):
        out.append(f"{_PREFIX}.containers[{name}] (removed)")
    for name in sorted(set(ours) & set(theirs)):
        for f in CONTAINER_FIELDS:
            if not _same(ours[name].get(f), theirs[name].get(f), f in _DEFAULTED):
                out.append(f"{_PREFIX}.containers[{name}].{f}")
        if not _same(_ports(ours[name].get("ports")), _ports(theirs[name].get("ports")), False):
            out.append(f"{_PREFIX}.containers[{name}].ports")
        for f in PROBES:
            if not _same(_probe_handler(ours[name].get(f)), _probe_handler(theirs[name].get(f)), False):
                out.append(f"{_PREFIX}.containers[{name}].{f}")
    if not _same(_volume_shape(rendered.get("volumes")), _volume_shape(live.get("volumes")), False):
        out.append(f"{_PREFIX}.volumes")
    for f in POD_FIELDS:
        if not _same(rendered.get(f), live.get(f), f in _DEFAULTED):
            out.append(f"{_PREFIX}.{f}")
    if (rendered.get("dnsPolicy") or _DEFAULT_DNS_POLICY) != (live.get("dnsPolicy") or _DEFAULT_DNS_POLICY):
        out.append(f"{_PREFIX}.dnsPolicy")
    return out


def _ports(ports: Any) -> list[dict[str, Any]]:
    """A container's ports with the apiserver's default protocol filled in; every other key (``hostPort``,
    ``hostIP``, another ``containerPort``) is compared as written."""
    return [{"protocol": "TCP", **p} for p in ports or [] if isinstance(p, Mapping)]


def _probe_handler(probe: Any) -> dict[str, Any]:
    """What a probe runs (``exec``, ``httpGet`` with its host/path/port/headers, ``tcpSocket``, ``grpc``), with
    the default ``scheme: HTTP`` left out; its timings (period, thresholds, timeouts) are not compared."""
    if not isinstance(probe, Mapping):
        return {}
    out = {k: probe[k] for k in _HANDLERS if not _empty(probe.get(k))}
    if isinstance(out.get("httpGet"), Mapping) and out["httpGet"].get("scheme") == "HTTP":
        out["httpGet"] = {k: v for k, v in out["httpGet"].items() if k != "scheme"}
    return out


def _volume_shape(volumes: Any) -> list[tuple[str, str, str]]:
    """Volumes as (name, source type, what it points at): defaults inside a source (defaultMode, an
    emptyDir's normalised sizeLimit) are not drift, another source or target is."""
    shape = []
    for v in volumes or []:
        if not isinstance(v, Mapping):
            continue
        for kind, src in v.items():
            if kind == "name":
                continue
            target = ""
            if isinstance(src, Mapping):
                target = str(src.get("path") or src.get("secretName") or src.get("name") or src.get("claimName")
                             or src.get("medium") or "")
            shape.append((str(v.get("name")), kind, target))
    return sorted(shape)
