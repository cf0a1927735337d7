"""Capacity learning: each pool's real tokens/s per replica, starting from its profile."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import median

from tokenfactory.planner.explain import render_capacity
from tokenfactory.planner.types import INF, Objectives, PoolObservation, PoolProfile, Reason

SATURATED = "saturated"
LATENCY = "latency"
UTILIZATION = "utilization"
LOWER_BOUND = "lower"
_DIRECT = (SATURATED, LATENCY)


@dataclass(frozen=True)
class CapacityConfig:
    """Tuning of :class:`CapacityEstimator`.

    gain: EWMA step toward the robust target per observation. max_step: the most one update can
    multiply or divide the estimate by. min_factor/max_factor: hard bounds relative to the
    profile. window: samples kept per kind (the target is their median, padded with the current
    estimate up to 3 values, so one sample alone never moves it). queue_per_replica: waiting
    requests per ready replica that count as a queue building. kv_saturated: KV-cache usage that
    counts as saturated. kv_min_extrapolate: smallest KV usage from which delivered x
    kv_at_capacity / usage is used as a capacity estimate on a healthy pool (kv_at_capacity: the
    KV usage a replica shows at full throughput); only while p95 latencies are below latency_room x
    their objectives, so a pool near its latency bound is not extrapolated past it. latency_floor: the latency-bounded capacity
    is at least this fraction of the delivered rate. latency_min_load: latency over objective
    counts against capacity only when the pool is at least this loaded (KV usage / kv_at_capacity,
    or delivered / estimate without KV figures); on a lighter pool more replicas would not help (the
    objective is out of reach at any load), so such samples are ignored.
    settle_seconds: after the number of ready replicas changes, observations are not used for this
    long (rates over a window would still count replicas that came or went; use the rate window).
    """

    gain: float = 0.6
    max_step: float = 1.5
    min_factor: float = 0.2
    max_factor: float = 5.0
    window: int = 5
    sample_max_age_seconds: float = 1800.0
    queue_per_replica: float = 1.0
    kv_saturated: float = 0.9
    kv_min_extrapolate: float = 0.25
    kv_at_capacity: float = 0.9
    latency_room: float = 0.8
    extrapolate_from_kv: bool = True
    latency_floor: float = 0.5
    latency_min_load: float = 0.5
    settle_seconds: float = 60.0


@dataclass(frozen=True)
class CapacitySample:
    time: float
    kind: str  # saturated | latency | utilization | lower
    tokens_per_second_per_replica: float


@dataclass(frozen=True)
class CapacityState:
    """Learned capacity of one pool (tokens/s per replica) and the evidence behind it.

    ``reason`` is the rendered text of ``why`` (structured ``cap.*`` reasons)."""

    pool: str
    profile: float
    estimate: float
    samples: tuple[CapacitySample, ...] = ()
    reason: str = "profile"
    ready_replicas: int | None = None
    ready_since: float | None = None
    why: tuple[Reason, ...] = ()

    @property
    def factor(self) -> float:
        return self.estimate / self.profile if self.profile > 0 else 1.0


def _explained(state: CapacityState, *why: Reason, **changes: object) -> CapacityState:
    return replace(state, reason=render_capacity(why), why=why, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CapacityEstimator:
    """Online per-replica capacity, starting from the profile.

    Each observation of a pool with ready replicas gives the delivered rate per replica ``d`` and
    is classified:

    * saturated (queue building, or KV cache nearly full): ``d`` is a direct capacity measurement
      (times ITL objective / ITL p95 when ITL is over objective);
    * latency (TTFT or ITL p95 over objective without a queue): the latency-bounded capacity is
      lower than ``d``: ``d x max(latency_floor, objective / observed)``;
    * utilization (healthy with latency room, KV usage u >= kv_min_extrapolate):
      ``d x kv_at_capacity / u`` estimates capacity;
    * lower bound (healthy, light): capacity is at least ``d``.

    Target: the newest regime wins: if the latest informative sample is a direct one, the median of
    the direct samples newer than the last utilization sample, else the median of the utilization
    samples newer than the last direct one; lower-bound samples newer than the last direct one can
    only raise it. Medians are padded with the current estimate to
    three values, so a single sample never moves the estimate; then the estimate moves ``gain`` of
    the way, by at most x/÷ ``max_step`` per update, within [min_factor, max_factor] x profile.
    A 0.5x or 2x wrong profile converges within ~5 intervals of informative samples.
    """

    config: CapacityConfig = CapacityConfig()

    def initial(self, pool: PoolProfile) -> CapacityState:
        return CapacityState(pool=pool.name, profile=pool.capacity, estimate=pool.capacity,
                             why=(Reason.of("cap.profile"),))

    def observe(self, state: CapacityState, obs: PoolObservation | None, objectives: Objectives,
                now: float) -> CapacityState:
        cfg = self.config
        samples = tuple(s for s in state.samples if now - s.time <= cfg.sample_max_age_seconds)
        if obs is None or obs.ready_replicas <= 0 or not (obs.tokens_per_second > 0) \
                or not math.isfinite(obs.tokens_per_second):
            return replace(state, samples=samples)
        r = obs.ready_replicas
        if state.ready_replicas != r or state.ready_since is None:
            return _explained(state, Reason.of("cap.settle_start", ready=r, settle=cfg.settle_seconds),
                              samples=samples, ready_replicas=r, ready_since=now)
        if now - state.ready_since < cfg.settle_seconds:
            return _explained(state, Reason.of("cap.settle_wait", ready=r, age=now - state.ready_since,
                                               settle=cfg.settle_seconds), samples=samples)
        sample, what = self.classify(state, obs, objectives, now)
        if sample is None:
            return _explained(state, what, samples=samples)
        samples = _trim_samples(samples + (sample,), cfg.window)
        est = state.estimate
        new = self.updated(est, state.profile, samples)
        update = Reason.of("cap.update", estimate=est, new=new, profile=state.profile)
        return CapacityState(pool=state.pool, profile=state.profile, estimate=new, samples=samples,
                             reason=render_capacity((what, update)), ready_replicas=state.ready_replicas,
                             ready_since=state.ready_since, why=(what, update))

    def classify(self, state: CapacityState, obs: PoolObservation, objectives: Objectives,
                 now: float) -> tuple[CapacitySample | None, Reason]:
        """One observation as a capacity sample (None: not informative) and why."""
        cfg = self.config
        r = obs.ready_replicas
        d = obs.tokens_per_second / r
        waiting = max(0.0, obs.requests_waiting) / r
        kv = obs.kv_cache_usage
        itl_ratio = _ratio(objectives.itl_p95_seconds, obs.itl_p95_seconds)
        ttft_ratio = _ratio(objectives.ttft_p95_seconds, obs.ttft_p95_seconds)
        queue = waiting >= cfg.queue_per_replica
        kv_full = kv is not None and kv >= cfg.kv_saturated
        latency_over = (itl_ratio is not None and itl_ratio < 1) or (ttft_ratio is not None and ttft_ratio < 1)
        if queue or kv_full:
            itl_over = itl_ratio is not None and itl_ratio < 1
            kind, value = SATURATED, d
            if itl_ratio is not None and itl_ratio < 1:
                kind, value = LATENCY, d * max(cfg.latency_floor, itl_ratio)
            why = Reason.of("cap.saturated", waiting=waiting, kv=None if queue else kv, delivered=d,
                            itl=obs.itl_p95_seconds if itl_over else None,
                            itl_objective=objectives.itl_p95_seconds if itl_over else None)
        elif latency_over and (kv / cfg.kv_at_capacity if kv is not None else
                               d / state.estimate if state.estimate > 0 else 1.0) < cfg.latency_min_load:
            return None, Reason.of("cap.light_latency", delivered=d, estimate=state.estimate)
        elif latency_over:
            ratio = min(x for x in (itl_ratio, ttft_ratio) if x is not None)
            kind, value = LATENCY, d * max(cfg.latency_floor, ratio)
            why = Reason.of("cap.latency", delivered=d, value=value)
        elif cfg.extrapolate_from_kv and kv is not None and kv >= cfg.kv_min_extrapolate and all(
                x is None or x * cfg.latency_room >= 1.0 for x in (itl_ratio, ttft_ratio)):
            kind, value = UTILIZATION, max(d, d * cfg.kv_at_capacity / min(1.0, kv))
            why = Reason.of("cap.utilization", delivered=d, kv=kv, value=value)
        else:
            kind, value = LOWER_BOUND, d
            why = Reason.of("cap.lower", delivered=d)
        return CapacitySample(now, kind, value), why

    def updated(self, est: float, profile: float, samples: tuple[CapacitySample, ...]) -> float:
        """The estimate moved toward the samples' robust target.

        The newest regime wins: direct measurements (saturated/latency) or utilization estimates,
        whichever kind the latest informative sample is, counting only samples newer than the
        last one of the other kind; "at least d" samples newer than the last direct one raise it."""
        cfg = self.config
        direct = [x for x in samples if x.kind in _DIRECT]
        util = [x for x in samples if x.kind == UTILIZATION]
        last_direct = max((x.time for x in direct), default=-INF)
        last_util = max((x.time for x in util), default=-INF)
        if direct and last_direct >= last_util:
            target = _padded_median([x.tokens_per_second_per_replica for x in direct if x.time > last_util], est)
        elif util:
            target = _padded_median([x.tokens_per_second_per_replica for x in util if x.time > last_direct], est)
        else:
            target = est
        lower = [x.tokens_per_second_per_replica for x in samples if x.kind == LOWER_BOUND and x.time > last_direct]
        if lower:
            target = max(target, _padded_median(lower, est))
        new = est + cfg.gain * (target - est)
        new = min(max(new, est / cfg.max_step), est * cfg.max_step)
        if profile > 0:
            new = min(max(new, profile * cfg.min_factor), profile * cfg.max_factor)
        return new


def _ratio(objective: float | None, observed: float | None) -> float | None:
    if objective is None or observed is None or math.isnan(observed):
        return None
    if observed <= 0:
        return None
    return 0.0 if math.isinf(observed) else objective / observed


def _padded_median(values: list[float], pad: float) -> float:
    vals = list(values)
    while len(vals) < 3:
        vals.append(pad)
    return float(median(vals))


def _trim_samples(samples: tuple[CapacitySample, ...], window: int) -> tuple[CapacitySample, ...]:
    keep: list[CapacitySample] = []
    counts: dict[str, int] = {}
    for s in reversed(samples):
        if counts.get(s.kind, 0) < window:
            counts[s.kind] = counts.get(s.kind, 0) + 1
            keep.append(s)
    return tuple(reversed(keep))
