"""Stage 5, status: what the pass saw and did, as an ``api.TokenFactoryStatus`` (the same pydantic model
the CRD schema is generated from, so what is written cannot drift from the schema), the exported
series (``ports.MetricsExporter``), and the Events.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from tokenfactory import api, childhealth, gpusheet, render, routing
from tokenfactory.exporter import FactoryFigures, Objectives
from tokenfactory.pipeline.assess import tidy
from tokenfactory.pipeline.model import (
    Actuation, Assessment, Collected, Event, FactoryMemory, FactoryRef, Measurement, PlanOutcome, PoolObservation,
    condition,
)
from tokenfactory.ports import KubeClient, MetricsExporter


def invalid(c: Collected) -> tuple[api.TokenFactoryStatus, Event]:
    """Status and Event for a spec that cannot be served (nothing was changed)."""
    message = "spec cannot be served, nothing was changed: " + "; ".join(c.problems)
    prev, gen, now = c.ref.previous_conditions, c.ref.generation, c.now
    status = api.TokenFactoryStatus(observed_generation=gen, conditions=[
        condition("Ready", False, "InvalidSpec", message, gen, prev, now),
        condition("Progressing", False, "InvalidSpec", "waiting for a valid spec", gen, prev, now),
        condition("Degraded", True, "InvalidSpec", message, gen, prev, now),
    ])
    return status, Event("Warning", "InvalidSpec", message)


def measurement(c: Collected, a: Assessment, p: PlanOutcome) -> Measurement:
    """The figures of a measuring pass, with each pool's capacity (the planner's learned tokens/s per
    replica, else the profile's, x ready replicas) and utilisation."""
    ready = c.ready()
    pools = {}
    for rp, f in zip(c.pools, a.cost.pools):
        capacity = p.capacities.get(rp.name, rp.tokens_per_second_per_replica) * ready[rp.name]
        fig = dataclasses.replace(a.pools[rp.name], capacity_tokens_per_second=tidy(capacity))
        if c.reading.metrics is not None:
            fig = dataclasses.replace(fig, utilization=tidy(f.headline_tokens_per_second / capacity) if capacity > 0 else None)
        pools[rp.name] = fig
    return Measurement(pools=pools, total=a.total, conditions=a.conditions, decision=p.decision)


def pending(c: Collected) -> api.Condition:
    """MetricsAvailable before the first reading (the pools were only just created)."""
    return condition("MetricsAvailable", None, "NotReadYet", "metrics are read once the pools exist",
                     c.ref.generation, c.ref.previous_conditions, c.now)


def creation_report(act: Actuation) -> childhealth.Report | None:
    """Pods the apiserver refuses to create for the children (Pod Security, quota, ...): ReplicaFailure
    conditions on the Deployments, as ``childhealth`` reads them."""
    deployments = [obs.deployment for obs in act.children.values() if obs.deployment is not None]
    return childhealth.report(childhealth.creation_failures(deployments))


def creation_events(act: Actuation) -> list[Event]:
    """One Warning per Deployment whose pods cannot be created (repeats are dropped by ``write``)."""
    failed = creation_report(act)
    return [Event("Warning", reason, message) for reason, message in failed.events] if failed else []


def throughput_profile(c: Collected) -> api.Condition:
    """ThroughputProfile: True when every pool's throughput is measured for this model or set in the spec;
    False (SheetProfileForOtherModel) when pools take the GPU sheet's figure for another model."""
    assert c.spec is not None
    prev, gen, now = c.ref.previous_conditions, c.ref.generation, c.now
    note = gpusheet.throughput_note(c.spec.model.name, c.pools)
    if note is None:
        return condition("ThroughputProfile", True, "MatchesModel",
                         "pool throughputs are the sheet's figures for this model or set in the spec", gen, prev, now)
    return condition("ThroughputProfile", False, "SheetProfileForOtherModel", note, gen, prev, now)


def build(c: Collected, act: Actuation, replicas: Mapping[str, int], shown: Measurement | None,
          decision: api.Decision | None, extra_conditions: tuple[api.Condition, ...] = ()) -> api.TokenFactoryStatus:
    """The whole status of a servable factory: replica counts and conditions from the children, figures from
    the last measurement (``shown``), the planner's last decision."""
    spec = c.spec
    assert spec is not None
    prev, gen, now = c.ref.previous_conditions, c.ref.generation, c.now
    pools: list[api.PoolStatus] = []
    not_ready, rolling, unschedulable = [], [], []
    weights = routing.pool_weights(act.routing) if act.routing is not None else {}  # routing.py: HTTPRoute weights
    for p in spec.pools:
        obs = act.children.get(p.name) or PoolObservation(p.name)
        figs = shown.pools.get(p.name) if shown is not None else None
        pools.append(api.PoolStatus(
            name=p.name, gpu_type=p.gpu_type.lower(), deployment=render.deployment_name(c.ref.name, p.name),
            desired_replicas=replicas[p.name], ready_replicas=obs.ready_replicas, gpus=obs.scheduled_gpus(),
            route_weight=weights.get(p.name),
            **(dataclasses.asdict(figs) if figs is not None else {}),
        ))
        if obs.ready_replicas < replicas[p.name]:
            not_ready.append(f"{p.name} {obs.ready_replicas}/{replicas[p.name]} ready")
        if obs.deployment is None or obs.updated_replicas < replicas[p.name] or obs.ready_replicas != replicas[p.name]:
            rolling.append(p.name)
        stuck = obs.unschedulable()
        if stuck:
            unschedulable.append(f"pool {p.name}: {len(stuck)} pod(s) cannot be scheduled: {stuck[0]}")
    total_ready = sum(p.ready_replicas for p in pools)
    total_desired = sum(p.desired_replicas for p in pools)
    failed = creation_report(act)
    if act.conflicts:
        degraded = condition("Degraded", True, "NameConflict", "; ".join(act.conflicts), gen, prev, now)
    elif act.errors:
        degraded = condition("Degraded", True, "ApplyFailed", "; ".join(act.errors), gen, prev, now)
    elif failed is not None:
        degraded = condition("Degraded", True, failed.reason, failed.message, gen, prev, now)
    elif unschedulable:
        degraded = condition("Degraded", True, "Unschedulable", "; ".join(unschedulable), gen, prev, now)
    else:
        degraded = condition("Degraded", False, "AsExpected", "all children applied", gen, prev, now)
    if not_ready or act.errors or act.conflicts:
        ready = condition("Ready", False, "PoolsNotReady",
                          ", ".join(not_ready) or ("name conflict" if act.conflicts else "apply failed"), gen, prev, now)
    else:
        ready = condition("Ready", True, "AllPoolsReady", f"{total_ready}/{total_desired} replicas ready", gen, prev, now)
    if rolling:
        progressing = condition("Progressing", True, "Reconciling", "pools converging: " + ", ".join(rolling), gen, prev, now)
    else:
        progressing = condition("Progressing", False, "Converged", "every pool is at its desired replicas", gen, prev, now)
    conditions = [ready, progressing, degraded, *(shown.conditions if shown is not None else ()), *extra_conditions,
                  throughput_profile(c)]
    # --- routing (routing.py): the Routed condition and status.routing ---
    routing_status = None
    if act.routing is not None and act.routed is not None:
        conditions.append(condition(routing.CONDITION, act.routed.status, act.routed.reason, act.routed.message, gen, prev, now))
        routing_status = api.RoutingStatus(**routing.status_fields(act.routing))
    totals = dataclasses.asdict(shown.total) if shown is not None else {}
    return api.TokenFactoryStatus(
        observed_generation=gen, conditions=conditions, replicas=f"{total_ready}/{total_desired}",
        ready_replicas=total_ready, desired_replicas=total_desired, gpus=sum(p.gpus for p in pools),
        pools=pools, last_decision=decision, routing=routing_status, **totals,
    )


def export(exporter: MetricsExporter, c: Collected, a: Assessment, p: PlanOutcome, known_pools: frozenset[str]) -> frozenset[str]:
    """Publish the factory's series (measuring passes only); returns the pools now exported."""
    spec = c.spec
    assert spec is not None
    ns, name = c.ref.namespace, c.ref.name
    for pool, direction in p.directions:
        exporter.record_scaling_decision(ns, name, pool, direction)
    ready = c.ready()
    metrics_up = c.reading.metrics is not None
    latency: dict[str, tuple[float | None, float | None]] = {}
    if metrics_up:
        latency = {n: (f.ttft_p95_seconds, f.itl_p95_seconds) for n, f in a.pools.items()}
    latency[""] = (a.total.ttft_p95_seconds, a.total.itl_p95_seconds)
    o = spec.objectives
    figures = FactoryFigures.from_cost(
        a.cost, replicas={rp.name: (p.replicas.get(rp.name, 0), ready[rp.name]) for rp in c.pools}, latency=latency,
        metrics_up=metrics_up,
        objectives=Objectives(cost_per_million_tokens=o.max_cost_per_million_tokens, dollars_per_hour=o.max_dollars_per_hour,
                              ttft_p95_seconds=o.ttft_p95_seconds, itl_p95_seconds=o.itl_p95_seconds))
    pools = frozenset(rp.name for rp in c.pools)
    for gone in known_pools - pools:
        exporter.forget_pool(ns, name, gone)
    exporter.publish(ns, name, spec.served_name, figures)
    return pools


def to_patch_body(status: api.TokenFactoryStatus) -> dict[str, Any]:
    """The status as the apiserver stores it: camelCase, absent figures left out."""
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def _same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return {k: v for k, v in old.items() if v is not None} == {k: v for k, v in new.items() if v is not None}


async def write(kube: KubeClient, memory: FactoryMemory, ref: FactoryRef, status: api.TokenFactoryStatus,
                events: list[Event]) -> None:
    """Emit the Events (a Warning identical to one of the last pass is not repeated) and merge-patch the
    status when it changed; fields written before and now absent are removed (merge-patch null)."""
    # the same warning again is in status already: no Event (no spam); the others go out together
    await asyncio.gather(*(kube.emit_event(ref.involved, e.type, e.reason, e.message) for e in events
                           if not (e.type == "Warning" and (e.reason, e.message) in memory.last_event_keys)))
    memory.last_event_keys = {(e.reason, e.message) for e in events if e.type == "Warning"}
    body = to_patch_body(status)
    if _same(ref.old_status, body):
        return
    patch: dict[str, Any] = dict(body)
    for k in ref.old_status:
        if k not in patch:
            patch[k] = None
    await kube.patch_status(ref.namespace, ref.name, patch)
