"""The typed hand-offs of the reconcile pipeline, and the per-factory memory that outlives a pass.

One pass: ``collect`` -> :class:`Collected` -> ``assess`` -> :class:`Assessment` -> ``plan`` ->
:class:`PlanOutcome` -> ``actuate`` -> :class:`Actuation` -> ``status`` -> ``api.TokenFactoryStatus``.
Every hand-off is a frozen dataclass; only :class:`FactoryMemory` is mutable, and only the
reconciler (``pipeline.reconciler``, and ``status.write`` for the Events it sent) writes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenfactory import api, cost, planner, render
from tokenfactory.routing import Applied as RoutingApplied
from tokenfactory.routing import Assessment as RoutingVerdict
from tokenfactory.metrics_source import FactoryMetrics, MetricsUnavailable


def rfc3339(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: bool | None, reason: str, message: str, generation: int | None,
              previous: Mapping[str, Mapping[str, Any]], now: dt.datetime) -> api.Condition:
    """A condition; its lastTransitionTime is kept from ``previous`` while its status does not change."""
    value = "Unknown" if status is None else ("True" if status else "False")
    prev = previous.get(type_)
    since = prev.get("lastTransitionTime") if prev and prev.get("status") == value else None
    return api.Condition(type=type_, status=value, reason=reason, message=message,  # type: ignore[arg-type]
                         last_transition_time=since or rfc3339(now), observed_generation=generation)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class PoolObservation:
    """One pool's Deployment (None when absent) and pods, as listed this pass."""

    name: str
    deployment: Mapping[str, Any] | None = None
    pods: tuple[Mapping[str, Any], ...] = ()

    @property
    def spec_replicas(self) -> int | None:
        if self.deployment is None:
            return None
        return int(self.deployment.get("spec", {}).get("replicas", 0))

    @property
    def ready_replicas(self) -> int:
        return int(((self.deployment or {}).get("status") or {}).get("readyReplicas") or 0)

    @property
    def updated_replicas(self) -> int:
        return int(((self.deployment or {}).get("status") or {}).get("updatedReplicas") or 0)

    def scheduled_gpus(self) -> int:
        """GPUs held by the pool's pods that a node has accepted (what is being paid for)."""
        total = 0
        for pod in self.pods:
            if not pod.get("spec", {}).get("nodeName"):
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            if pod.get("metadata", {}).get("deletionTimestamp"):
                continue
            for c in pod["spec"].get("containers", []):
                limits = (c.get("resources") or {}).get("limits") or {}
                total += int(str(limits.get(render.GPU_RESOURCE, "0")))
        return total

    def unschedulable(self) -> list[str]:
        out = []
        for pod in self.pods:
            for cond in (pod.get("status") or {}).get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
                    out.append(cond.get("message") or "unschedulable")
        return out


# ------------------------------------------------------------------------------------- collect


@dataclass(frozen=True)
class FactoryRef:
    """Which object this pass is about, and what its status said before the pass."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    involved: Mapping[str, Any]  # apiVersion, kind, metadata: what Events point at
    old_status: Mapping[str, Any]

    @property
    def previous_conditions(self) -> dict[str, Mapping[str, Any]]:
        return {c["type"]: c for c in self.old_status.get("conditions") or [] if "type" in c}


@dataclass(frozen=True)
class MetricsReading:
    """The outcome of reading Prometheus once: figures, or why there are none.

    ``read`` is False when nothing was read this pass (not due, or nothing deployed yet)."""

    read: bool
    url: str | None = None
    metrics: FactoryMetrics | None = None
    problem: MetricsUnavailable | None = None


@dataclass(frozen=True)
class Collected:
    """``collect`` -> ``assess``: the spec (parsed and its pools resolved once), the children and the
    metrics, each observed once, and where every pool's replica count stands now."""

    ref: FactoryRef
    now: dt.datetime
    spec: api.TokenFactorySpec | None
    problems: tuple[str, ...]  # why the spec cannot be served (spec is None then)
    pools: tuple[api.ResolvedPool, ...]
    children: Mapping[str, PoolObservation]
    current: Mapping[str, int]  # replicas each pool stands at (memory, last status, live Deployment, minReplicas)
    reading: MetricsReading

    def ready(self) -> dict[str, int]:
        return {p.name: (self.children[p.name].ready_replicas if p.name in self.children else 0) for p in self.pools}


# -------------------------------------------------------------------------------------- assess


@dataclass(frozen=True)
class PoolFigures:
    """Measured and priced figures of one pool (names as in ``api.PoolStatus``; None = absent)."""

    price_per_gpu_hour: float | None = None
    dollars_per_hour: float | None = None
    power_kilowatts: float | None = None
    capacity_tokens_per_second: float | None = None
    tokens_per_second: float | None = None
    prompt_tokens_per_second: float | None = None
    generation_tokens_per_second: float | None = None
    cost_per_million_tokens: float | None = None
    tokens_per_second_per_gpu: float | None = None
    tokens_per_second_per_megawatt: float | None = None
    utilization: float | None = None
    ttft_p95_seconds: float | None = None
    itl_p95_seconds: float | None = None
    requests_waiting: float | None = None


@dataclass(frozen=True)
class TotalFigures:
    """Factory totals (names as in ``api.TokenFactoryStatus``; None = absent)."""

    dollars_per_hour: float | None = None
    power_kilowatts: float | None = None
    tokens_per_second: float | None = None
    cost_per_million_tokens: float | None = None
    tokens_per_second_per_gpu: float | None = None
    tokens_per_second_per_megawatt: float | None = None
    ttft_p95_seconds: float | None = None
    itl_p95_seconds: float | None = None
    last_metrics_time: str | None = None


@dataclass(frozen=True)
class Assessment:
    """``assess`` -> ``plan``: what the fleet costs and delivers now, and what is wrong with that."""

    cost: cost.FactoryCost
    pools: Mapping[str, PoolFigures]  # capacity and utilisation are filled in by ``status`` (they need the plan)
    total: TotalFigures
    conditions: tuple[api.Condition, ...]  # MetricsAvailable, BudgetExceeded
    events: tuple[Event, ...]
    metrics_warned: bool  # a MetricsUnavailable Warning is out (or was): not repeated until metrics recover


# ---------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlanOutcome:
    """``plan`` -> ``actuate``: the replicas to apply, and the decision behind them (if one was made)."""

    replicas: Mapping[str, int]
    capacities: Mapping[str, float] = field(default_factory=dict)  # learned tokens/s per replica
    decision: api.Decision | None = None
    directions: tuple[tuple[str, str], ...] = ()  # (pool, up|down) per change, for the decisions counter
    events: tuple[Event, ...] = ()
    state: planner.PlannerState | None = None


# ------------------------------------------------------------------------------------- actuate


@dataclass(frozen=True)
class Actuation:
    """``actuate`` -> ``status``: the children as they stand after applying, and what went wrong."""

    children: Mapping[str, PoolObservation]
    errors: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    conflicts: tuple[str, ...] = ()  # children left alone: an object of that name is not this factory's
    writes: int = 0  # create/apply/delete requests sent (0 at steady state)
    routing: RoutingApplied | None = None  # what the routing step applied and deleted (routing.py)
    routed: RoutingVerdict | None = None  # the Routed condition's verdict


# -------------------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class Measurement:
    """The figures of the last pass that read metrics; passes in between show them unchanged."""

    pools: Mapping[str, PoolFigures]
    total: TotalFigures
    conditions: tuple[api.Condition, ...]
    decision: api.Decision | None


@dataclass
class FactoryMemory:
    """What the operator remembers about one factory between passes (kept in kopf's per-object memo;
    lost on restart, and that is safe: replicas are re-read from the status and the cluster, and the
    planner starts cautious)."""

    desired: dict[str, int] = field(default_factory=dict)
    last_event_keys: set[tuple[str, str]] = field(default_factory=set)
    last_measure: dt.datetime | None = None
    planner_state: planner.PlannerState | None = None
    measurement: Measurement | None = None  # last figures shown in status
    last_good: Measurement | None = None  # last figures read while metrics were available
    last_decision: api.Decision | None = None
    known_pools: frozenset[str] = frozenset()
    metrics_warned: bool = False
    serving_since: dt.datetime | None = None  # since when some replica has been ready (None: none is)
    applied: dict[tuple[str, str], tuple[str, int | None]] = field(default_factory=dict)  # (kind, name) -> (digest, generation)
