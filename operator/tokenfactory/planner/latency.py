"""How each pool's p95 latencies grow with load, learned online, and the load they allow.

Model (per replica, per latency metric): ``1 / p95(x) = a - b x`` where ``x`` is the delivered rate
per replica as a fraction of the profile's capacity. This is the shape of both mechanisms that make
vLLM slower under load: with continuous batching a step takes ``t0 + t1 x batch`` and the batch is
``rate x ITL`` (Little), so ``ITL = t0 / (1 - t1 x rate)``; and a queue's response time is
``S / (1 - utilisation)`` (M/M/1). It is linear in ``x`` after the inversion, so weighted least
squares fits it exactly and fast, and the prior enters as pseudo-observations:

* prior: the profile's calibrated operating points (``PoolProfile.latency_points``: load fraction,
  ITL p95, TTFT p95), worth ``prior_weight`` observations; without points, none (see below);
* observations: each interval's (x, p95) per pool from Prometheus, weighted 1 and forgotten with
  ``half_life_seconds``, so what the pool shows now outweighs the prior within a few intervals.

The load a pool may carry is the ``x`` at which every p95 with an objective stays within it:
``x* = (a - 1/objective) / b``, clamped to [``min_load``, ``max_load``] of the profile's capacity.
Without two distinct loads' worth of evidence the pool is planned at ``default_load``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tokenfactory.planner.types import Objectives, PoolObservation, PoolProfile, Reason

ITL = "ITL"
TTFT = "TTFT"


@dataclass(frozen=True)
class LatencyConfig:
    """Tuning of :class:`LatencyLearner` (see the module docstring)."""

    prior_weight: float = 4.0
    half_life_seconds: float = 3600.0
    min_observed_load: float = 0.05  # lighter pools say little about the curve (and p95 of few requests)
    min_load: float = 0.2
    max_load: float = 1.0
    default_load: float = 0.85
    settle_seconds: float = 60.0


@dataclass(frozen=True)
class Fit:
    """Weighted least-squares sums for ``y = a - b x`` (y = 1 / p95 seconds)."""

    w: float = 0.0
    wx: float = 0.0
    wy: float = 0.0
    wxx: float = 0.0
    wxy: float = 0.0
    n: int = 0

    def add(self, x: float, y: float, w: float = 1.0) -> Fit:
        return Fit(self.w + w, self.wx + w * x, self.wy + w * y, self.wxx + w * x * x, self.wxy + w * x * y,
                   self.n + 1)

    def scaled(self, k: float) -> Fit:
        return Fit(self.w * k, self.wx * k, self.wy * k, self.wxx * k, self.wxy * k, self.n)

    def __add__(self, other: Fit) -> Fit:
        return Fit(self.w + other.w, self.wx + other.wx, self.wy + other.wy, self.wxx + other.wxx,
                   self.wxy + other.wxy, self.n + other.n)

    def line(self) -> tuple[float, float] | None:
        """(a, b) of ``y = a - b x``; None without two distinct loads."""
        if self.w <= 0:
            return None
        det = self.w * self.wxx - self.wx * self.wx
        if det <= 1e-12 * max(1.0, self.w * self.wxx):
            return None
        slope = (self.w * self.wxy - self.wx * self.wy) / det
        a = (self.wy - slope * self.wx) / self.w
        return a, -slope


@dataclass(frozen=True)
class LatencyState:
    """Observed evidence of one pool: one fit per metric, and when it was last decayed."""

    pool: str
    itl: Fit = Fit()
    ttft: Fit = Fit()
    time: float | None = None
    ready_replicas: int | None = None
    ready_since: float | None = None


@dataclass(frozen=True)
class SafeLoad:
    """The load one replica of a pool may carry within the latency objectives.

    ``fraction`` of the profile's capacity; ``bound_by``: the metric that sets it (ITL, TTFT, or ""
    when no curve or no objective does); ``predicted_p95``: that metric's p95 at this load by the
    fitted curve; ``observations``: how many intervals of the pool's own evidence the curve has.
    """

    pool: str
    fraction: float
    tokens_per_second: float
    bound_by: str
    objective: float | None
    predicted_p95: float | None
    observations: int
    why: Reason


def _prior(profile: PoolProfile, metric: str, weight: float) -> Fit:
    pts = [(x, itl if metric == ITL else ttft) for x, itl, ttft in profile.latency_points]
    pts = [(x, v) for x, v in pts if x >= 0 and v is not None and v > 0 and math.isfinite(v)]
    fit = Fit()
    for x, v in pts:
        fit = fit.add(x, 1.0 / v, weight / len(pts))
    return fit


@dataclass(frozen=True)
class LatencyLearner:
    config: LatencyConfig = LatencyConfig()

    def initial(self, pool: PoolProfile) -> LatencyState:
        return LatencyState(pool=pool.name)

    def observe(self, state: LatencyState, profile: PoolProfile, obs: PoolObservation | None,
                now: float) -> LatencyState:
        """Decay the evidence to ``now`` and add this interval's (load, p95) points of the pool."""
        cfg = self.config
        itl, ttft = state.itl, state.ttft
        if state.time is not None and now > state.time and cfg.half_life_seconds > 0:
            k = 0.5 ** ((now - state.time) / cfg.half_life_seconds)
            itl, ttft = itl.scaled(k), ttft.scaled(k)
        base = LatencyState(pool=state.pool, itl=itl, ttft=ttft, time=now, ready_replicas=state.ready_replicas,
                            ready_since=state.ready_since)
        if obs is None or obs.ready_replicas <= 0 or profile.capacity <= 0 or not obs.tokens_per_second > 0:
            return base
        if state.ready_replicas != obs.ready_replicas or state.ready_since is None:
            return LatencyState(pool=state.pool, itl=itl, ttft=ttft, time=now, ready_replicas=obs.ready_replicas,
                                ready_since=now)
        if now - state.ready_since < cfg.settle_seconds:
            return base
        x = obs.tokens_per_second / obs.ready_replicas / profile.capacity
        if not math.isfinite(x) or x < cfg.min_observed_load:
            return base
        if _usable(obs.itl_p95_seconds):
            itl = itl.add(x, 1.0 / obs.itl_p95_seconds)  # type: ignore[operator]
        if _usable(obs.ttft_p95_seconds):
            ttft = ttft.add(x, 1.0 / obs.ttft_p95_seconds)  # type: ignore[operator]
        return LatencyState(pool=state.pool, itl=itl, ttft=ttft, time=now, ready_replicas=state.ready_replicas,
                            ready_since=state.ready_since)

    def safe_load(self, state: LatencyState, profile: PoolProfile, objectives: Objectives) -> SafeLoad:
        """The largest load fraction at which every p95 with an objective is predicted within it."""
        cfg = self.config
        best: tuple[float, str, float | None, float | None, int] | None = None
        for metric, objective, seen in ((ITL, objectives.itl_p95_seconds, state.itl),
                                        (TTFT, objectives.ttft_p95_seconds, state.ttft)):
            if objective is None or objective <= 0:
                continue
            fit = _prior(profile, metric, cfg.prior_weight) + seen
            line = fit.line()
            if line is None:
                x, p95 = cfg.default_load, None
            else:
                x, p95 = _solve(line, objective, cfg)
            if best is None or x < best[0]:
                best = (x, metric, objective, p95, seen.n)
        if best is None:
            x = cfg.max_load
            why = Reason.of("slo.no_latency_objective", pool=profile.name, fraction=x)
            return SafeLoad(profile.name, x, x * profile.capacity, "", None, None, 0, why)
        x, metric, objective, p95, n = best
        why = Reason.of("slo.bound", pool=profile.name, fraction=x, tokens_per_second=x * profile.capacity,
                        metric=metric, objective=objective, predicted=p95, observations=n,
                        prior=bool(profile.latency_points), clamped=x in (cfg.min_load, cfg.max_load))
        return SafeLoad(profile.name, x, x * profile.capacity, metric, objective, p95, n, why)


def _usable(v: float | None) -> bool:
    return v is not None and v > 0 and math.isfinite(v)


def _solve(line: tuple[float, float], objective: float, cfg: LatencyConfig) -> tuple[float, float | None]:
    """The load at which ``1 / (a - b x)`` reaches ``objective``, clamped; and the p95 there."""
    a, b = line
    target = 1.0 / objective
    if b <= 0:  # latency does not grow with load: more replicas would not change it
        x = cfg.max_load
    else:
        x = (a - target) / b
    x = min(cfg.max_load, max(cfg.min_load, x))
    y = a - b * x
    return x, (1.0 / y if y > 0 else None)


def safe_loads(learner: LatencyLearner, states: Sequence[LatencyState], pools: Sequence[PoolProfile],
               objectives: Objectives) -> dict[str, SafeLoad]:
    by_pool = {s.pool: s for s in states}
    return {p.name: learner.safe_load(by_pool.get(p.name) or learner.initial(p), p, objectives) for p in pools}
