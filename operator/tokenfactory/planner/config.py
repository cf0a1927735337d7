"""What :func:`decide` takes and carries: its settings, one interval's inputs, and its state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tokenfactory.planner.capacity import CapacityEstimator, CapacityState
from tokenfactory.planner.demand import DemandEstimator, DemandState
from tokenfactory.planner.forecast import ForecastErrors, ForecastState
from tokenfactory.planner.latency import LatencyLearner, LatencyState
from tokenfactory.planner.types import Objectives, Observations, PoolProfile


@dataclass(frozen=True)
class PlannerConfig:
    """Pacing and estimator settings for :func:`decide` (defaults suit a 30 s interval).

    Scale-down hysteresis: each interval the scale-down side remembers the optimum for demand x
    (1 + band) rather than the optimum for demand. The band is the demand noise measured, not a
    fixed share: ``hysteresis_noise_multiple`` x the standard deviation of the planned demand around
    its least-squares trend over the last ``hysteresis_window_seconds``, relative to its mean, at
    most ``scale_down_tolerance`` (and exactly that until ``hysteresis_min_samples`` are seen).
    Noisy demand (6 standard deviations span the whole spread of +-5% noise) keeps a band
    wide enough that noise never flaps a replica; smooth demand gets a band near 0, so nothing is
    held beyond the stabilization window (a fixed 10% of 58K tok/s would hold 8 extra 720 tok/s
    replicas of the marginal pool for as long as demand stays there).

    Short bursts (ski rental): an *excursion* is a run of intervals with a backlog that the spare
    capacity cannot drain within the start-up delay (or a queue building, as many requests waiting
    as ready replicas, just before that shows). When the excursions remembered from the last
    ``burst_memory_seconds`` (at least ``burst_min_seen``) were all over within the start-up delay,
    replicas ordered at their start only began serving after them; so a scale-up for a new
    excursion waits until it has lasted as long as the longest of them. A real step waits at most
    that long (less than the start-up delay); one excursion that outlasts the start-up delay turns
    the wait off for ``burst_memory_seconds``.

    Flap guard: the band covers demand noise, not a fit so tight that the planner's own capacity
    estimates move across it (58,000 tok/s on 14 x 720 + 48,000 = 58,080 tok/s: a 0.3% dip of the
    learned capacity asks for a 15th replica, which is released 5 minutes later, and so on). When a
    pool is scaled back up within ``flap_memory_seconds`` to no more than it had before a scale-down
    (re-adding what was released, not a new, larger need), its
    scale-downs keep one replica above the optimum (at most one extra replica of that pool) until
    that long has passed without a flap or a hold at the boundary it flapped at.
    """

    scale_down_stabilization_seconds: float = 300.0
    max_scale_down_fraction: float = 0.5
    scale_down_tolerance: float = 0.1
    hysteresis_noise_multiple: float = 6.0
    hysteresis_window_seconds: float = 600.0
    hysteresis_min_samples: int = 4
    burst_memory_seconds: float = 7200.0
    burst_min_seen: int = 2
    flap_memory_seconds: float = 1800.0
    max_metrics_age_seconds: float = 180.0
    forecast_horizon_seconds: float | None = None  # None: longest start-up among pools
    demand: DemandEstimator = DemandEstimator()
    capacity: CapacityEstimator = CapacityEstimator()
    latency: LatencyLearner = LatencyLearner()
    forecast: ForecastErrors = ForecastErrors()


ROUTINGS = ("weighted", "even")


@dataclass(frozen=True)
class PlannerInputs:
    """Everything :func:`decide` needs for one interval.

    ``current``: the replicas each pool runs now (missing = 0). ``observations``: None when
    metrics could not be read (then the plan holds; ``metrics_unavailable_reason`` says why).
    ``demand_tokens_per_second``: when set, used as the demand forecast as is (benchmarks, what-if);
    the capacity estimators still learn from ``observations`` if given.

    ``slo_attainment`` (``spec.objectives.sloAttainment``, e.g. 0.99) turns on planning for the
    SLO: each pool is sized for the load at which its learned p95 TTFT/ITL stay within the
    objectives, for the ``slo_attainment`` quantile of the demand forecast (its error measured from
    history); ``headroom`` is then an optional floor (demand x (1 + headroom), None = none). Left
    None, the planner plans demand x (1 + headroom) on the full capacity (``headroom`` None = 0).

    ``routing``: how requests reach the pods as rendered: ``weighted`` (each pool's share follows
    its replicas x the plan's capacity per replica: an HTTPRoute weighted by the plan, or a
    load-aware endpoint picker) or ``even`` (one Service: every ready pod gets the same share,
    whatever it can carry; then a mix is sized for its slowest pool's per-replica load).
    """

    pools: tuple[PoolProfile, ...]
    current: Mapping[str, int]
    observations: Observations | None = None
    objectives: Objectives = Objectives()
    headroom: float | None = 0.2
    config: PlannerConfig = PlannerConfig()
    metrics_unavailable_reason: str = "no metrics"
    demand_tokens_per_second: float | None = None
    slo_attainment: float | None = None
    routing: str = "weighted"

    def __post_init__(self) -> None:
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, got {self.routing!r}")

        if self.slo_attainment is not None and not 0.5 <= self.slo_attainment < 1.0:
            raise ValueError(f"slo_attainment must be in [0.5, 1), got {self.slo_attainment}")


@dataclass(frozen=True)
class PlannerState:
    """What :func:`decide` carries from one interval to the next (returned anew, never mutated)."""

    capacity: tuple[CapacityState, ...] = ()
    demand: DemandState = DemandState()
    recommendations: tuple[tuple[float, tuple[tuple[str, int], ...]], ...] = ()
    time: float | None = None
    demands: tuple[tuple[float, float], ...] = ()  # (time, planned demand) over the hysteresis window
    excursion_since: float | None = None  # a backlog excursion in progress: since when
    excursions: tuple[tuple[float, float], ...] = ()  # (ended at, lasted s) of recent backlog excursions
    downs: tuple[tuple[str, float, int, int], ...] = ()  # (pool, time, from, to) of recent scale-downs
    flaps: tuple[tuple[str, float, int], ...] = ()  # (pool, time, count) a pool went back up to count past a recent scale-down
    latency: tuple[LatencyState, ...] = ()  # learned latency curves per pool (SLO planning)
    forecast: ForecastState = ForecastState()  # forecast errors (SLO planning)
    planned: tuple[tuple[str, float], ...] = ()  # (pool, tokens/s per replica the last plan counted)

    def capacity_of(self, pool: str) -> CapacityState | None:
        for cs in self.capacity:
            if cs.pool == pool:
                return cs
        return None
