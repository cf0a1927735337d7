"""Routing: which objects carry requests to the pools, the HTTPRoute weights, and what to clean up.

``spec.routing.mode`` picks the objects (rendered by ``render.render_routing``):

* ``Service``: one Service over every pool's pods. kube-proxy splits connections evenly per pod, so pools of
  different per-replica capacity get the same requests per replica; :func:`plan` says so (condition reason
  ``UnevenCapacity`` and a Warning Event).
* ``HTTPRoute``: one Service per pool plus a Gateway API HTTPRoute whose backend weights are each pool's ready
  replicas x capacity per replica (the planner's learned figure, else the profile), as integers out of
  :data:`WEIGHT_TOTAL`; a pool with no ready replica gets 0.
* ``InferencePool``: an Inference Extension InferencePool over every pool's pods (an endpoint picker routes).

The core is pure: :func:`weights`, :func:`plan`, :func:`stale` and :func:`assess` take data and return data with
reasons. :func:`reconcile` is the one I/O step (apply, list, delete through ``kube.KubeClient``), level-triggered
like the Deployments: every pass re-applies the desired objects (hand edits are overwritten) and deletes routing
objects this factory owns that the current mode does not want.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenfactory import api, render
from tokenfactory.kube import KindNotServed
from tokenfactory.ports import KubeClient

WEIGHT_TOTAL = 1000
"""HTTPRoute weights add up to this (per mille of traffic) whenever some pool has a ready replica."""
UNEVEN_RATIO = 1.2
"""Service mode warns when the largest per-replica capacity is at least this many times the smallest."""
CONDITION = "Routed"
ROUTING_KINDS = ("Service", "HTTPRoute", "InferencePool")
"""Kinds the routing step creates and may delete (only objects carrying the factory's owner reference)."""
CRD_OF_KIND = {
    "HTTPRoute": ("GatewayAPIMissing", "httproutes.gateway.networking.k8s.io", "the Gateway API CRDs (sigs.k8s.io/gateway-api)"),
    "InferencePool": ("InferenceExtensionMissing", "inferencepools.inference.networking.k8s.io",
                      "the Gateway API Inference Extension CRDs (sigs.k8s.io/gateway-api-inference-extension)"),
}


@dataclass(frozen=True)
class PoolCapacity:
    """One pool as routing sees it: ready replicas and tokens/s per replica (and where that figure came from)."""

    name: str
    ready_replicas: int
    capacity_per_replica: float
    source: str = "profile"  # profile | learned


def weights(pools: Sequence[PoolCapacity], total: int = WEIGHT_TOTAL) -> dict[str, int]:
    """Integer weights proportional to ready replicas x capacity per replica, adding up to ``total``.

    Largest-remainder rounding (ties go to the pool listed first). A pool with no ready replica (or no capacity)
    gets 0; a pool with ready capacity whose share rounds to 0 gets 1, taken from the largest weight, so every
    serving pool keeps some traffic. All zeros when no pool has a ready replica.
    """
    raw = {p.name: max(0, p.ready_replicas) * max(0.0, p.capacity_per_replica) for p in pools}
    whole = sum(raw.values())
    if whole <= 0 or not math.isfinite(whole):
        return {p.name: 0 for p in pools}
    exact = {n: v / whole * total for n, v in raw.items()}
    out = {n: math.floor(x) for n, x in exact.items()}
    order = sorted(range(len(pools)), key=lambda i: -(exact[pools[i].name] - out[pools[i].name]))
    for i in order[: total - sum(out.values())]:
        out[pools[i].name] += 1
    for n, v in raw.items():
        if v > 0 and out[n] == 0:
            donor = max(out, key=lambda k: out[k])
            if out[donor] > 1:
                out[donor] -= 1
                out[n] = 1
    return out


def capacities(spec: api.TokenFactorySpec, ready: Mapping[str, int], learned: Mapping[str, float]) -> list[PoolCapacity]:
    """Each pool's ready replicas and per-replica capacity: the learned figure where there is one, else the profile
    (tokens/s per GPU x GPUs per replica, from the spec or the GPU sheet)."""
    out = []
    for rp in spec.resolve_pools():
        cap = learned.get(rp.name)
        if cap is not None and cap > 0 and math.isfinite(cap):
            out.append(PoolCapacity(rp.name, int(ready.get(rp.name, 0)), float(cap), "learned"))
        else:
            out.append(PoolCapacity(rp.name, int(ready.get(rp.name, 0)), rp.tokens_per_second_per_replica, "profile"))
    return out


def learned_capacities(planner_state: Any, pools: Iterable[api.ResolvedPool] | None = None) -> dict[str, float]:
    """Per-replica capacity the planner has learned, by pool (``planner.PlannerState``; None -> nothing learned).
    Given the resolved ``pools``, an estimate learned against another profile than the pool's current one (the
    spec's throughput changed since) is left out, as the planner itself does."""
    profiles = {rp.name: rp.tokens_per_second_per_replica for rp in pools} if pools is not None else None
    learned = {c.pool: float(c.estimate) for c in getattr(planner_state, "capacity", None) or ()
               if profiles is None or profiles.get(c.pool) == c.profile}
    # SLO planning counts a replica at most at its latency-safe load: route by what the last plan counted
    planned = dict(getattr(planner_state, "planned", None) or ())
    return {name: float(planned.get(name, cap)) for name, cap in learned.items()}


def _tok(x: float) -> str:
    return f"{x:,.0f}"


def uneven_capacity(pools: Sequence[PoolCapacity], ratio: float = UNEVEN_RATIO) -> str | None:
    """Why one Service over these pools mis-routes, or None when their per-replica capacities are close enough."""
    caps = [p for p in pools if p.capacity_per_replica > 0]
    if len(caps) < 2:
        return None
    lo = min(caps, key=lambda p: p.capacity_per_replica)
    hi = max(caps, key=lambda p: p.capacity_per_replica)
    if hi.capacity_per_replica < ratio * lo.capacity_per_replica:
        return None
    return (f"one Service splits requests evenly per pod, but a {hi.name} replica carries "
            f"{hi.capacity_per_replica / lo.capacity_per_replica:.1f}x what a {lo.name} replica does "
            f"({_tok(hi.capacity_per_replica)} vs {_tok(lo.capacity_per_replica)} tok/s): {lo.name} overloads while "
            f"{hi.name} idles; set spec.routing.mode to HTTPRoute (capacity-weighted) or InferencePool")


@dataclass(frozen=True)
class RoutingPlan:
    """What routing wants for one factory: the objects to apply, the weights (HTTPRoute mode) and why."""

    mode: str
    manifests: tuple[dict[str, Any], ...]
    weights: dict[str, int] = field(default_factory=dict)
    pools: tuple[PoolCapacity, ...] = ()
    uneven: str | None = None  # Service mode: why the even split mis-routes

    def keys(self) -> set[tuple[str, str]]:
        return {(m["kind"], m["metadata"]["name"]) for m in self.manifests}


def plan(owner: render.Owner, spec: api.TokenFactorySpec, ready: Mapping[str, int],
         learned: Mapping[str, float] | None = None) -> RoutingPlan:
    """The routing objects for ``spec.routing.mode``, with HTTPRoute weights from ready replicas x capacity."""
    pools = capacities(spec, ready, learned or {})
    mode = spec.routing.mode
    w = weights(pools) if mode == "HTTPRoute" else {}
    uneven = uneven_capacity(pools) if mode == "Service" else None
    return RoutingPlan(mode=mode, manifests=tuple(render.render_routing(owner, spec, w)), weights=w,
                       pools=tuple(pools), uneven=uneven)


def owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == owner_uid and r.get("kind") == api.KIND for r in refs)


def stale(desired: Iterable[tuple[str, str]], live: Iterable[Mapping[str, Any]], owner_uid: str) -> list[tuple[str, str]]:
    """Routing objects to delete: live objects this factory owns (owner reference uid) that are not desired,
    sorted by kind and name. Objects without this factory's owner reference are never returned."""
    want = set(desired)
    out = set()
    for obj in live:
        key = (obj.get("kind", ""), obj["metadata"]["name"])
        if key[0] in ROUTING_KINDS and key not in want and owned_by(obj, owner_uid):
            out.add(key)
    return sorted(out)


@dataclass
class Applied:
    """What one routing pass did."""

    plan: RoutingPlan
    applied: list[str] = field(default_factory=list)  # Kind/name
    deleted: list[str] = field(default_factory=list)
    missing_kinds: list[str] = field(default_factory=list)  # kinds the apiserver does not serve (CRDs absent)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Assessment:
    status: bool
    reason: str
    message: str
    events: tuple[tuple[str, str, str], ...] = ()  # (type, reason, message)


def _weights_text(w: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in w.items())


def assess(applied: Applied, previous_reason: str | None = None) -> Assessment:
    """The Routed condition and the Events for one pass. Warning Events only when the reason changes."""
    p = applied.plan
    events: list[tuple[str, str, str]] = [("Normal", "Deleted", f"Deleted {k}: not used by routing mode {p.mode}")
                                          for k in applied.deleted]
    if applied.missing_kinds:
        kind = applied.missing_kinds[0]
        reason, crd, what = CRD_OF_KIND.get(kind, ("RoutingKindMissing", kind, f"the CRD of {kind}"))
        message = (f"routing.mode {p.mode} needs {what}, but the apiserver does not serve {crd}; install them or pick "
                   f"another routing.mode. Deployments are unaffected; no {kind} was created")
        status, out_reason = False, reason
    elif applied.errors:
        status, out_reason, message = False, "ApplyFailed", "; ".join(applied.errors)
    elif p.mode == "HTTPRoute":
        serving = [c for c in p.pools if p.weights.get(c.name, 0) > 0]
        detail = ", ".join(f"{c.name} {p.weights.get(c.name, 0)} ({c.ready_replicas} ready x "
                           f"{_tok(c.capacity_per_replica)} tok/s {c.source})" for c in p.pools)
        if not serving:
            status, out_reason = False, "NoReadyReplicas"
            message = f"HTTPRoute {p.manifests[-1]['metadata']['name']}: no pool has a ready replica; every weight is 0"
        else:
            status, out_reason = True, "WeightsApplied"
            message = f"HTTPRoute weights out of {WEIGHT_TOTAL}: {detail}"
    elif p.mode == "InferencePool":
        status, out_reason = True, "InferencePoolApplied"
        message = "InferencePool selects every pool's pods; the endpoint picker routes by load"
    elif p.uneven:
        status, out_reason, message = True, "UnevenCapacity", p.uneven
    else:
        status, out_reason = True, "EvenSplit"
        message = "one Service over every pool's pods; their per-replica capacities are alike"
    if not status or out_reason == "UnevenCapacity":
        if out_reason != previous_reason:
            events.append(("Warning", out_reason, message))
    return Assessment(status, out_reason, message, tuple(events))


def status_fields(applied: Applied) -> dict[str, Any]:
    """``status.routing``: the mode, the objects applied and the split: pool=weight,... (HTTPRoute mode), ``even``
    (Service mode: per pod), ``endpoint-picker`` (InferencePool mode), ``none`` (the route could not be applied).
    Always set, so a merge patch replaces it on a mode switch."""
    p = applied.plan
    if applied.missing_kinds or applied.errors:
        split = "none"
    elif p.mode == "HTTPRoute":
        split = _weights_text(p.weights)
    else:
        split = "endpoint-picker" if p.mode == "InferencePool" else "even"
    return {"mode": p.mode, "objects": list(applied.applied), "weights": split}


def pool_weights(applied: Applied) -> dict[str, int]:
    """Each pool's ``routeWeight`` for status: the HTTPRoute weights when the route is applied, else nothing."""
    if applied.plan.mode != "HTTPRoute" or applied.missing_kinds:
        return {}
    return dict(applied.plan.weights)


async def reconcile(kube: KubeClient, routing_plan: RoutingPlan, namespace: str, factory: str,
                    owner_uid: str) -> Applied:
    """Apply the plan's objects (server-side, forced), then delete stale routing objects this factory owns.

    A kind the apiserver does not serve (its CRDs are not installed) is recorded in ``missing_kinds`` and skipped;
    nothing else is held back by it. Other errors are collected, not raised. Stale objects are deleted only once
    every desired object is applied, so a mode switch that cannot complete leaves the old mode's objects serving."""
    done = Applied(plan=routing_plan)
    for manifest in routing_plan.manifests:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind in done.missing_kinds:
            continue
        try:
            await kube.apply(manifest)
        except KindNotServed:
            done.missing_kinds.append(kind)
            continue
        except Exception as err:  # noqa: BLE001 - reported in status, retried next pass
            done.errors.append(f"{kind} {name}: {err}")
            continue
        done.applied.append(f"{kind}/{name}")
    if done.missing_kinds or done.errors:
        return done  # keep what routes today until the new mode's objects are in place
    selector = {render.LABEL_FACTORY: factory, "app.kubernetes.io/managed-by": render.MANAGED_BY}
    live: list[dict[str, Any]] = []
    for kind in ROUTING_KINDS:
        try:
            for obj in await kube.list(kind, namespace, selector):
                live.append({**obj, "kind": kind})
        except KindNotServed:
            continue  # nothing of that kind can exist
    for kind, name in stale(routing_plan.keys(), live, owner_uid):
        try:
            await kube.delete(kind, namespace, name)
        except Exception as err:  # noqa: BLE001
            done.errors.append(f"delete {kind} {name}: {err}")
            continue
        done.deleted.append(f"{kind}/{name}")
    return done
