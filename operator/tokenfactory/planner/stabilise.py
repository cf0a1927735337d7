"""Stabilisation rules of :func:`decide`: scale-down hysteresis (measured demand noise), the
stabilisation window and step limit, the flap guard, short-burst deferral of scale-ups, and
trimming to budget and power. Each rule returns data and a :class:`Reason`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tokenfactory.planner.config import PlannerConfig, PlannerState
from tokenfactory.planner.demand import DemandState
from tokenfactory.planner.types import INF, Objectives, Observations, PoolProfile, Reason


def hysteresis_band(cfg: PlannerConfig, demands: Sequence[tuple[float, float]]) -> tuple[float, Reason]:
    """The scale-down hysteresis band (a fraction of demand) and how it was set.

    Noise = standard deviation of the planned demands over the window around their least-squares
    line (so a steady ramp is not noise), relative to their mean; band = the noise multiple x noise,
    at most ``scale_down_tolerance``; the cap itself until enough samples are seen. The default
    multiple 6 spans +-3 standard deviations: the whole spread of the noise (uniform noise of +-a has
    a standard deviation of a / sqrt(3), so 6 of them are 3.5a > 2a).
    """
    cap = max(0.0, cfg.scale_down_tolerance)
    if cap <= 0:
        return 0.0, Reason.of("band.disabled")
    n = len(demands)
    if n < max(3, cfg.hysteresis_min_samples):
        return cap, Reason.of("band.warmup", cap=cap)
    ts = [t for t, _ in demands]
    ds = [d for _, d in demands]
    mt, md = sum(ts) / n, sum(ds) / n
    if md <= 0:
        return 0.0, Reason.of("band.no_demand")
    var_t = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (d - md) for t, d in demands) / var_t if var_t > 0 else 0.0
    resid2 = sum((d - (md + slope * (t - mt))) ** 2 for t, d in demands)
    noise = math.sqrt(resid2 / max(1, n - 2)) / md
    band = min(cap, max(0.0, cfg.hysteresis_noise_multiple) * noise)
    return band, Reason.of("band.noise", multiple=cfg.hysteresis_noise_multiple, noise=noise,
                           window=cfg.hysteresis_window_seconds, capped=band >= cap, cap=cap)


@dataclass(frozen=True)
class Excursions:
    """Backlog excursions: the one in progress (since when), the recent ones, and the scale-up
    deferral they imply (None: scale up at once)."""

    since: float | None
    recent: tuple[tuple[float, float], ...]
    defer: Reason | None = None


def track_excursions(state: PlannerState, cfg: PlannerConfig, obs: Observations, demand: DemandState,
                     horizon: float, now: float) -> Excursions:
    """Runs of intervals with a backlog that needs new replicas, and short-burst deferral (ski rental):
    when the remembered excursions were all over within the start-up delay, a scale-up for a new one
    waits until it has lasted as long as the longest of them."""
    recent = tuple(e for e in state.excursions if now - e[0] < cfg.burst_memory_seconds)
    since = state.excursion_since
    if demand.backlog > 0 and since is None:
        since = now
    elif demand.backlog <= 0 and since is not None:
        recent = recent + ((now, now - since),)
        since = None
    # a queue building (as many waiting requests as ready replicas: the capacity estimator's
    # saturation signal) is the start of an excursion even while the spare, measured over the
    # lagging metrics window, still looks able to drain it
    ready_total = sum(max(0, o.ready_replicas) for o in obs.pools.values())
    queue_building = ready_total > 0 and \
        obs.requests_waiting >= cfg.capacity.config.queue_per_replica * ready_total
    start = since if since is not None else (now if queue_building else None)
    defer = None
    if start is not None and len(recent) >= max(1, cfg.burst_min_seen) \
            and all(lasted <= horizon for _, lasted in recent):
        longest = max(lasted for _, lasted in recent)
        if now - start < longest:
            defer = Reason.of("defer", queued_for=now - start, count=len(recent), longest=longest, horizon=horizon)
    return Excursions(since=since, recent=recent, defer=defer)


@dataclass(frozen=True)
class Stabilised:
    """Targets per pool after the scale-up/scale-down rules, with notes and the state they carry."""

    targets: dict[str, int]
    notes: dict[str, Reason | None]
    history: tuple[tuple[float, tuple[tuple[str, int], ...]], ...]
    downs: tuple[tuple[str, float, int, int], ...]
    flaps: tuple[tuple[str, float, int], ...]


def stabilise(state: PlannerState, cfg: PlannerConfig, pools: Sequence[PoolProfile], cur: Mapping[str, int],
              raw: Mapping[str, int], keep: Mapping[str, int], band: float, band_why: Reason,
              defer: Reason | None, now: float) -> Stabilised:
    """Scale up at once (unless a short burst defers it); scale down only to the highest count
    recommended within the stabilisation window, by at most the step limit, keeping one replica
    above the optimum for a pool that flapped."""
    window = cfg.scale_down_stabilization_seconds
    history = tuple((t, recs) for t, recs in state.recommendations if now - t < window and t <= now)
    history = history + ((now, tuple(sorted(keep.items()))),)
    mem = cfg.flap_memory_seconds
    downs = tuple(d for d in state.downs if now - d[1] < mem and d[1] <= now)
    flaps = tuple(f for f in state.flaps if now - f[1] < mem and f[1] <= now)
    targets: dict[str, int] = {}
    notes: dict[str, Reason | None] = {}
    for p in pools:
        c, r = cur[p.name], raw[p.name]
        note: Reason | None = None
        if r > c and defer is not None:
            t = c
            note = Reason(defer.code, defer.params + (("optimum", r),))
        elif r >= c:
            t = r
            if r > c and any(name == p.name and to < r <= frm for name, _, frm, to in downs):
                flaps = flaps + ((p.name, now, r),)
        else:
            t, note, flaps = _scale_down(cfg, p, c, r, keep[p.name], band, band_why, history, flaps, now)
        t = min(max(t, p.min_replicas), p.max_replicas)
        if t < c:
            downs = downs + ((p.name, now, c, t),)
        targets[p.name] = t
        notes[p.name] = note
    return Stabilised(targets=targets, notes=notes, history=history, downs=downs, flaps=flaps)


def _scale_down(cfg: PlannerConfig, p: PoolProfile, c: int, r: int, keep: int, band: float, band_why: Reason,
                history: Sequence[tuple[float, tuple[tuple[str, int], ...]]],
                flaps: tuple[tuple[str, float, int], ...],
                now: float) -> tuple[int, Reason | None, tuple[tuple[str, float, int], ...]]:
    """The count a pool above its optimum ``r`` goes down to now, why, and the flaps it records."""
    window, mem = cfg.scale_down_stabilization_seconds, cfg.flap_memory_seconds
    wmax = max(dict(recs).get(p.name, 0) for _, recs in history)
    t = min(c, wmax)
    note: Reason | None = None
    if t > r and keep >= t:
        note = Reason.of("down.hysteresis", optimum=r, keep=keep, band=band, band_why=band_why)
    elif t > r:
        note = Reason.of("down.window", optimum=r, window_max=wmax, window=window)
    flapped = [(ft, n) for name, ft, n in flaps if name == p.name]
    if flapped and t < r + 1 <= c:
        t = r + 1
        note = Reason.of("down.flap", optimum=r, pool=p.name, memory=mem)
        if t == c and any(n == c for _, n in flapped):  # still at the boundary it flapped at
            flaps = flaps + ((p.name, now, c),)
    step = max(1, math.floor(c * cfg.max_scale_down_fraction))
    if t < c - step:
        t = c - step
        note = Reason.of("down.step", optimum=r, step=step)
    return t, note, flaps


def fit_limits(pools: Sequence[PoolProfile], targets: Mapping[str, int], floors: Mapping[str, int],
               caps: Mapping[str, float], objectives: Objectives) -> tuple[dict[str, int], tuple[str, ...]]:
    """Lower replicas above ``floors`` (least cost-efficient first) until budget and power hold."""
    t = dict(targets)
    B = INF if objectives.max_dollars_per_hour is None else objectives.max_dollars_per_hour
    P = INF if objectives.max_megawatts is None else objectives.max_megawatts * 1000.0
    by_name = {p.name: p for p in pools}
    trimmed: list[str] = []

    def over() -> bool:
        cost = sum(by_name[n].price_per_replica_hour * v for n, v in t.items())
        kwv = sum(by_name[n].kilowatts_per_replica * v for n, v in t.items())
        return cost > B * (1 + 1e-12) + 1e-9 or kwv > P * (1 + 1e-12) + 1e-9

    def inefficiency(p: PoolProfile) -> tuple[float, str]:
        cap = caps.get(p.name, p.capacity)
        return (p.price_per_replica_hour / cap if cap > 0 else INF, p.name)

    while over():
        candidates = [p for p in pools if t[p.name] > floors[p.name]]
        if not candidates:
            break
        worst = max(candidates, key=inefficiency)
        t[worst.name] -= 1
        if worst.name not in trimmed:
            trimmed.append(worst.name)
    return t, tuple(trimmed)
