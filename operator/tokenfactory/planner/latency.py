"""How each pool's p95 latencies grow with load, learned online, and the load they allow.

Prior: the profile's calibrated operating points (``PoolProfile.latency_points``: load as a
fraction of the profile capacity, ITL p95, TTFT p95; measured on the calibrated engine model,
``hack/latency_points.py``). Between points the p95 is interpolated linearly in log(p95), and kept
non-decreasing in load. Latency under continuous batching and queueing is flat at light load and
then climbs steeply (a queue forms when the batch is full), so what is uncertain is mostly *where*
the climb starts: the correction learned online is a load scale ``k``, ``p95(x) = prior(k x)``.

Each interval whose p95 sits on the climbing part of the prior curve (above ``informative`` x its
value at the lightest point) gives ``k = x' / x``, ``x'`` the load at which the prior shows that
p95; ``k`` moves by ``gain`` toward the median of the last ``window`` such values (at most
``sample_max_age_seconds`` old; with none left, toward the prior's 1). High latency at a load
under ``evidence_load`` x the load where the prior climbs is not evidence (a queue left over from
an overload draining, or a cause more replicas would not fix; the capacity estimator ignores it
likewise). An interval on the flat part at a load the prior calls climbing says ``k`` is at most
the load where the climb starts over x: it caps ``k``. Without points the curve is unknown and
the pool is planned at ``default_load`` until a latency objective is crossed (then ``k`` grows
from the observed load). ``WindowNoise`` then leaves room for the load a window brings.

The load a pool may carry is the ``x`` at which every p95 with an objective stays within it:
``x* = prior^-1(objective) / k``, within [``min_load``, ``max_load``].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from statistics import NormalDist, median

from tokenfactory.planner.types import Objectives, PoolObservation, PoolProfile, Reason

ITL = "ITL"
TTFT = "TTFT"


@dataclass(frozen=True)
class LatencyConfig:
    """Tuning of :class:`LatencyLearner` (see the module docstring)."""

    gain: float = 0.5
    window: int = 5
    informative: float = 3.0
    evidence_load: float = 0.5  # high latency counts only at >= this x the load where the prior climbs
    min_observed_load: float = 0.05
    min_load: float = 0.2
    max_load: float = 1.0
    default_load: float = 0.8
    min_scale: float = 0.25
    max_scale: float = 4.0
    settle_seconds: float = 60.0
    sample_max_age_seconds: float = 1800.0


@dataclass(frozen=True)
class LatencyState:
    """The learned load scale of one pool and the evidence behind it."""

    pool: str
    scale: float = 1.0
    samples: tuple[tuple[float, float], ...] = ()  # (time, k estimate), recent
    observations: int = 0
    ready_replicas: int | None = None
    ready_since: float | None = None


@dataclass(frozen=True)
class SafeLoad:
    """The load one replica of a pool may carry within the latency objectives.

    ``fraction`` of the profile's capacity (``tokens_per_second`` per replica); ``bound_by``: the
    metric that sets it (ITL, TTFT, or "" when none does); ``scale``: the learned load scale.
    """

    pool: str
    fraction: float
    tokens_per_second: float
    bound_by: str
    objective: float | None
    scale: float
    observations: int
    why: Reason


class Curve:
    """One metric's prior p95 as a function of load: log-linear between points, non-decreasing."""

    def __init__(self, points: Sequence[tuple[float, float]]):
        pts = sorted((x, v) for x, v in points if x >= 0 and v is not None and v > 0 and math.isfinite(v))
        out: list[tuple[float, float]] = []
        for x, v in pts:
            lv = math.log(v)
            if out and lv < out[-1][1]:
                lv = out[-1][1]
            if out and x <= out[-1][0]:
                continue
            out.append((x, lv))
        self.pts = out

    def __bool__(self) -> bool:
        return len(self.pts) >= 2

    def at(self, x: float) -> float:
        """p95 at load ``x`` (flat below the first point, last slope above the last)."""
        p = self.pts
        if x <= p[0][0]:
            return math.exp(p[0][1])
        for (x0, l0), (x1, l1) in pairwise(p):
            if x <= x1:
                return math.exp(l0 + (l1 - l0) * (x - x0) / (x1 - x0))
        (x0, l0), (x1, l1) = p[-2], p[-1]
        return math.exp(l1 + (l1 - l0) * (x - x1) / (x1 - x0))

    def load_for(self, value: float) -> float | None:
        """The lightest load at which the p95 reaches ``value`` (None: never, within reach)."""
        p = self.pts
        lv = math.log(value)
        if lv <= p[0][1]:
            return p[0][0]
        for (x0, l0), (x1, l1) in pairwise(p):
            if l0 < lv <= l1:
                return x0 + (x1 - x0) * (lv - l0) / (l1 - l0)
        (x0, l0), (x1, l1) = p[-2], p[-1]
        if l1 <= l0:
            return None
        return x1 + (x1 - x0) * (lv - l1) / (l1 - l0)

    def climb_start(self, informative: float) -> float:
        """The load where the p95 first exceeds ``informative`` x its lightest value."""
        return self.load_for(math.exp(self.pts[0][1]) * informative) or self.pts[-1][0]


def _curve(profile: PoolProfile, metric: str) -> Curve:
    return Curve([(x, itl if metric == ITL else ttft) for x, itl, ttft in profile.latency_points])  # type: ignore[misc]


@dataclass(frozen=True)
class LatencyLearner:
    config: LatencyConfig = LatencyConfig()

    def initial(self, pool: PoolProfile) -> LatencyState:
        return LatencyState(pool=pool.name)

    def observe(self, state: LatencyState, profile: PoolProfile, obs: PoolObservation | None, objectives: Objectives,
                now: float) -> LatencyState:
        """Learn the load scale from this interval's (load, p95) of the pool."""
        cfg = self.config
        if obs is None or obs.ready_replicas <= 0 or profile.capacity <= 0 or not obs.tokens_per_second > 0:
            return state
        if state.ready_replicas != obs.ready_replicas or state.ready_since is None:
            return LatencyState(state.pool, state.scale, state.samples, state.observations, obs.ready_replicas, now)
        if now - state.ready_since < cfg.settle_seconds:
            return state
        x = obs.tokens_per_second / obs.ready_replicas / profile.capacity
        if not math.isfinite(x) or x < cfg.min_observed_load:
            return state
        ks: list[float] = []
        cap = math.inf
        for metric, seen, objective in ((ITL, obs.itl_p95_seconds, objectives.itl_p95_seconds),
                                        (TTFT, obs.ttft_p95_seconds, objectives.ttft_p95_seconds)):
            if objective is None or seen is None or not seen > 0:
                continue
            k, bound = self._evidence(_curve(profile, metric), x, seen, objective)
            if k is not None:
                ks.append(k)
            cap = min(cap, bound)
        if not ks and cap == math.inf and not state.samples and state.scale == 1.0:
            return state
        samples = tuple(sm for sm in state.samples if now - sm[0] <= cfg.sample_max_age_seconds)
        if ks:
            samples = (samples + ((now, max(ks)),))[-cfg.window:]
        target = median(k for _, k in samples) if samples else 1.0
        scale = state.scale + cfg.gain * (target - state.scale)
        scale = min(scale, cap)
        scale = min(cfg.max_scale, max(cfg.min_scale, scale))
        return LatencyState(state.pool, scale, samples, state.observations + (1 if ks else 0), state.ready_replicas,
                            state.ready_since)

    def _evidence(self, curve: Curve, x: float, seen: float, objective: float) -> tuple[float | None, float]:
        """(k measured, upper bound on k) from one (load, p95) point of one metric."""
        cfg = self.config
        if not curve:  # no prior: a crossed objective says the load there is the limit
            if math.isinf(seen) or seen > objective:
                return cfg.default_load / x if x > 0 else None, math.inf
            return None, math.inf
        start = curve.climb_start(cfg.informative)
        base = curve.at(0.0)
        if math.isinf(seen):
            return (curve.pts[-1][0] / x if x > 0 else None), math.inf
        if seen > base * cfg.informative:
            if x < cfg.evidence_load * start:  # a queue at light load is a drain or no capacity matter
                return None, math.inf
            x_prior = curve.load_for(seen)
            return (x_prior / x if x_prior is not None else None), math.inf
        return None, (start / x if x > start else math.inf)

    def safe_load(self, state: LatencyState, profile: PoolProfile, objectives: Objectives,
                  noise: WindowNoise | None = None) -> SafeLoad:
        """The largest load fraction at which every p95 with an objective is predicted within it,
        with room for the window-to-window load noise (``noise``; None: none)."""
        cfg = self.config
        best: tuple[float, str, float] | None = None
        for metric, objective in ((ITL, objectives.itl_p95_seconds), (TTFT, objectives.ttft_p95_seconds)):
            if objective is None or objective <= 0:
                continue
            curve = _curve(profile, metric)
            if curve:
                x_prior = curve.load_for(objective)
                x = cfg.max_load if x_prior is None else x_prior / state.scale
            else:
                x = cfg.default_load / state.scale
            x = min(cfg.max_load, max(cfg.min_load, x))
            if best is None or x < best[0]:
                best = (x, metric, objective)
        if best is None:
            x = cfg.max_load
            why = Reason.of("slo.no_latency_objective", pool=profile.name, fraction=x)
            return SafeLoad(profile.name, x, x * profile.capacity, "", None, state.scale, state.observations, why)
        x_typical, metric, objective = best
        x, margin = x_typical, 0.0
        if noise is not None and x_typical < cfg.max_load:
            x, margin = noise.planned(x_typical, profile.capacity)
            x = max(cfg.min_load, x)
        why = Reason.of("slo.bound", pool=profile.name, fraction=x, tokens_per_second=x * profile.capacity,
                        metric=metric, objective=objective, scale=state.scale, observations=state.observations,
                        prior=bool(profile.latency_points), at_max=x_typical >= cfg.max_load, typical=x_typical,
                        margin=margin, quantile=noise.quantile if noise is not None else None)
        return SafeLoad(profile.name, x, x * profile.capacity, metric, objective, state.scale, state.observations,
                        why)


@dataclass(frozen=True)
class WindowNoise:
    """The load one metrics window brings a pool fluctuates around its mean (Poisson arrivals,
    request sizes): relative standard deviation ``sqrt(size_factor / N)``, ``N`` the requests the pool
    receives in ``window_seconds`` at that load (``replicas`` x per-replica rate / tokens per request).
    A pool is planned at the load whose ``quantile`` window stays below its typical safe load:
    ``x (1 + z_q sqrt(size_factor / N(x))) = x*`` (so the window p95s stay within the objectives in
    that share of windows)."""

    quantile: float
    replicas: int
    tokens_per_request: float
    window_seconds: float = 30.0
    size_factor: float = 2.0  # 1 + CV^2 of request sizes (exponential-like sizes)

    def planned(self, x_safe: float, capacity: float) -> tuple[float, float]:
        """(load fraction, relative margin z sigma at it)."""
        z = NormalDist().inv_cdf(min(max(self.quantile, 0.5), 1 - 1e-6))
        per_x = max(1, self.replicas) * capacity * self.window_seconds / max(1e-9, self.tokens_per_request)
        x, margin = x_safe, 0.0
        for _ in range(30):  # fixed point: the margin shrinks as the load (and N) grows
            n = max(1e-9, x * per_x)
            margin = z * math.sqrt(self.size_factor / n)
            nxt = x_safe / (1 + margin)
            if abs(nxt - x) < 1e-9:
                break
            x = nxt
        return x, margin


def safe_loads(learner: LatencyLearner, states: Sequence[LatencyState], pools: Sequence[PoolProfile],
               objectives: Objectives, noise: dict[str, WindowNoise] | None = None) -> dict[str, SafeLoad]:
    by_pool = {s.pool: s for s in states}
    return {p.name: learner.safe_load(by_pool.get(p.name) or learner.initial(p), p, objectives,
                                      (noise or {}).get(p.name)) for p in pools}
