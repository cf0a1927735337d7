"""The planner's data: pools, objectives, observations in; solutions, plans and reasons out.

Frozen dataclasses only; no I/O. ``Reason`` is the structured form of every explanation the
engine gives (a code and its parameters); :mod:`tokenfactory.planner.explain` renders them as text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenfactory import cost

INF = math.inf


def per_mtok(dollars_per_hour: float, tokens_per_second: float) -> float | None:
    """$/Mtok through cost.py's one formula; ``None`` without tokens."""
    if tokens_per_second <= 0:
        return None
    return cost.cost_per_million_tokens(dollars_per_hour, tokens_per_second)


@dataclass(frozen=True)
class Reason:
    """One structured explanation: a code (see ``explain.TEMPLATES``) and its parameters."""

    code: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, code: str, **params: Any) -> Reason:
        return cls(code, tuple(params.items()))

    def __getitem__(self, key: str) -> Any:
        for k, v in self.params:
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    @property
    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)


@dataclass(frozen=True)
class PoolProfile:
    """One GPU pool as the planner sees it (per *replica*, i.e. one vLLM server).

    ``capacity`` is the sheet/spec profile in tokens/s per replica (tokens/s/GPU x
    gpus_per_replica); the :class:`CapacityEstimator` learns the real figure from there.
    """

    name: str
    gpu_type: str
    price_per_replica_hour: float
    capacity: float
    min_replicas: int = 0
    max_replicas: int = 10
    startup_seconds: float = 300.0
    kilowatts_per_replica: float = 0.0
    gpus_per_replica: int = 1
    # calibrated operating points of one replica: (load as a fraction of ``capacity``, ITL p95 s,
    # TTFT p95 s); the prior of the latency curves the SLO planner learns (see planner.latency)
    latency_points: tuple[tuple[float, float | None, float | None], ...] = ()

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < self.min_replicas:
            raise ValueError(
                f"pool {self.name}: need 0 <= minReplicas <= maxReplicas, got {self.min_replicas}..{self.max_replicas}"
            )
        for label, v in (("price", self.price_per_replica_hour), ("capacity", self.capacity),
                         ("kW", self.kilowatts_per_replica), ("startup", self.startup_seconds)):
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"pool {self.name}: {label} must be finite and >= 0, got {v}")
        if self.gpus_per_replica < 1:
            raise ValueError(f"pool {self.name}: gpus_per_replica must be >= 1")

    @classmethod
    def from_resolved(cls, rp: object) -> PoolProfile:
        """From an ``api.ResolvedPool`` (duck-typed: name, gpu_type, gpus_per_replica, min/max_replicas,
        price_per_gpu_hour, tokens_per_second_per_gpu, kilowatts_per_gpu, startup_seconds)."""
        g = int(rp.gpus_per_replica)  # type: ignore[attr-defined]
        return cls(
            name=rp.name,  # type: ignore[attr-defined]
            gpu_type=rp.gpu_type,  # type: ignore[attr-defined]
            price_per_replica_hour=float(rp.price_per_gpu_hour) * g,  # type: ignore[attr-defined]
            capacity=float(rp.tokens_per_second_per_gpu) * g,  # type: ignore[attr-defined]
            min_replicas=int(rp.min_replicas),  # type: ignore[attr-defined]
            max_replicas=int(rp.max_replicas),  # type: ignore[attr-defined]
            startup_seconds=float(rp.startup_seconds),  # type: ignore[attr-defined]
            kilowatts_per_replica=float(rp.kilowatts_per_gpu) * g,  # type: ignore[attr-defined]
            gpus_per_replica=g,
            latency_points=tuple((float(a), b, c) for a, b, c in getattr(rp, "latency_points", ()) or ()),
        )

    @property
    def dollars_per_million_tokens_at_capacity(self) -> float | None:
        return per_mtok(self.price_per_replica_hour, self.capacity)


@dataclass(frozen=True)
class Objectives:
    """Latency and cost objectives; every field optional (None = no limit)."""

    ttft_p95_seconds: float | None = None
    itl_p95_seconds: float | None = None
    max_dollars_per_hour: float | None = None
    max_megawatts: float | None = None
    max_dollars_per_million_tokens: float | None = None

    @classmethod
    def from_spec(cls, spec: object) -> Objectives:
        """From an ``api.ObjectivesSpec`` (duck-typed)."""
        return cls(
            ttft_p95_seconds=getattr(spec, "ttft_p95_seconds", None),
            itl_p95_seconds=getattr(spec, "itl_p95_seconds", None),
            max_dollars_per_hour=getattr(spec, "max_dollars_per_hour", None),
            max_megawatts=getattr(spec, "max_megawatts", None),
            max_dollars_per_million_tokens=getattr(spec, "max_cost_per_million_tokens", None),
        )


@dataclass(frozen=True)
class PoolObservation:
    """What one pool did over the last metrics window.

    ``tokens_per_second`` is the pool's delivered rate (all its ready replicas together).
    Latencies may be None (no request finished) or ``inf`` (beyond the last histogram bucket).
    """

    ready_replicas: int
    tokens_per_second: float
    requests_waiting: float = 0.0
    requests_running: float = 0.0
    ttft_p95_seconds: float | None = None
    itl_p95_seconds: float | None = None
    kv_cache_usage: float | None = None

    @classmethod
    def from_pool_metrics(cls, m: object, ready_replicas: int | None = None,
                          token_accounting: str = "output") -> PoolObservation:
        """From a ``metrics_source.PoolMetrics`` (duck-typed). ``ready_replicas`` defaults to the
        number of engines reporting; ``token_accounting`` "total" adds prompt tokens."""
        tps = float(getattr(m, "generation_tokens_per_second", 0.0))
        if token_accounting == "total":
            tps += float(getattr(m, "prompt_tokens_per_second", 0.0))
        ready = ready_replicas if ready_replicas is not None else int(getattr(m, "engines_reporting", 0))
        return cls(
            ready_replicas=ready,
            tokens_per_second=tps,
            requests_waiting=float(getattr(m, "requests_waiting", 0.0)),
            requests_running=float(getattr(m, "requests_running", 0.0)),
            ttft_p95_seconds=getattr(m, "ttft_p95_seconds", None),
            itl_p95_seconds=getattr(m, "itl_p95_seconds", None),
            kv_cache_usage=getattr(m, "kv_cache_usage", None),
        )


@dataclass(frozen=True)
class Observations:
    """Metrics for the whole factory. Pools with no ready replica may be absent.

    ``observed_at`` (same clock as ``now``) lets :func:`decide` refuse stale data;
    ``tokens_per_request`` (mean tokens per request, in capacity units) converts waiting requests
    into backlog tokens; None uses :attr:`PlannerConfig.tokens_per_request`.
    """

    pools: Mapping[str, PoolObservation] = field(default_factory=dict)
    observed_at: float | None = None
    tokens_per_request: float | None = None

    @classmethod
    def from_factory_metrics(cls, fm: object, ready_replicas: Mapping[str, int] | None = None,
                             token_accounting: str = "output",
                             tokens_per_request: float | None = None) -> Observations:
        """From a ``metrics_source.FactoryMetrics`` (duck-typed)."""
        ready = ready_replicas or {}
        pools = {name: PoolObservation.from_pool_metrics(pm, ready.get(name), token_accounting)
                 for name, pm in getattr(fm, "pools").items()}
        return cls(pools=pools, observed_at=getattr(fm, "sampled_at", None), tokens_per_request=tokens_per_request)

    @property
    def tokens_per_second(self) -> float:
        return sum(p.tokens_per_second for p in self.pools.values())

    @property
    def requests_waiting(self) -> float:
        return sum(p.requests_waiting for p in self.pools.values())


@dataclass(frozen=True)
class Solution:
    """The optimiser's answer.

    ``covers_required``: capacity >= required. ``within_limits``: False only when the
    minReplicas alone already break the budget or the power cap (then the answer is the minimums).
    ``limited_by``: what stops more capacity when not covering (``maxReplicas``, ``budget``,
    ``power``). ``nodes``: search nodes visited (for tests and benchmarks). ``exact``: the search
    finished (False when it hit ``max_nodes`` or the caller's ``stop`` ended it). ``stopped``: the
    caller's ``stop`` (time budget) ended the search: the best mix found so far, not proven cheapest.
    """

    replicas: dict[str, int]
    required_tokens_per_second: float
    capacity_tokens_per_second: float
    dollars_per_hour: float
    kilowatts: float
    gpus: int
    changes: int
    exact: bool
    covers_required: bool
    within_limits: bool
    limited_by: tuple[str, ...]
    nodes: int
    stopped: bool = False


@dataclass(frozen=True)
class PoolPlan:
    """The decision for one pool. ``optimal`` is the optimiser's count before stabilization.

    ``reason`` is the rendered text of ``why`` (structured: head, need, role, ... see
    :mod:`tokenfactory.planner.explain`).
    """

    name: str
    gpu_type: str
    current: int
    replicas: int
    optimal: int
    capacity_per_replica: float
    profile_capacity_per_replica: float
    price_per_replica_hour: float
    reason: str
    capacity_reason: str = ""
    why: tuple[Reason, ...] = ()

    @property
    def changed(self) -> bool:
        return self.replicas != self.current

    @property
    def dollars_per_million_tokens_at_capacity(self) -> float | None:
        return per_mtok(self.price_per_replica_hour, self.capacity_per_replica)


@dataclass(frozen=True)
class Plan:
    """Replicas per pool with reasons, and what the plan is expected to cost and serve.

    ``replicas`` is what Auto mode applies (treat as read-only). ``demand_met``: planned capacity
    >= demand; ``headroom_met``: >= demand x (1 + headroom). ``limited``: the optimiser could not
    cover demand x headroom within maxReplicas, budget or power and serves the most that fits
    (``limited_by`` names which). ``holding``: nothing was planned (metrics unavailable).
    ``dollars_per_million_tokens`` is at the planned load, min(demand, capacity).
    ``summary`` is the rendered text of ``summary_why``.
    """

    time: float | None
    replicas: dict[str, int]
    pools: tuple[PoolPlan, ...]
    demand_tokens_per_second: float | None
    required_tokens_per_second: float | None
    capacity_tokens_per_second: float
    dollars_per_hour: float
    dollars_per_million_tokens: float | None
    megawatts: float
    gpus: int
    demand_met: bool | None
    headroom_met: bool | None
    limited: bool
    limited_by: tuple[str, ...]
    holding: bool
    within_cost_objective: bool | None
    summary: str
    summary_why: tuple[Reason, ...] = ()

    @property
    def changes(self) -> tuple[PoolPlan, ...]:
        return tuple(p for p in self.pools if p.changed)

    @property
    def reasons(self) -> tuple[str, ...]:
        """The summary, then one line per pool."""
        return (self.summary,) + tuple(p.reason for p in self.pools)
