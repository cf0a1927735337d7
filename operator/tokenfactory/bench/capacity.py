"""The engine model the oracle, the static-mix search and the load rule reason with.

The benchmark scores an interval on the p95 TTFT and ITL of *all* the factory's requests together. A p95 is
within its limit exactly when at most 5% of the observations are above it, so a mix meets the objectives in an
interval when the traffic-weighted share of late observations over its pools is at most 5%:

    sum over pools p of  share_p x late_p(load per replica of p)  <=  1 - 0.95     (TTFT and ITL each)

where ``share_p`` is the pool's share of the requests under the routing and ``late_p(x)`` is the share of one
replica's first tokens (decode tokens) above the TTFT (ITL) objective at a steady load ``x`` per replica. A small
pool may therefore run above its own p95 (an H200 taking 1.5% of the requests behind a capacity-weighted
HTTPRoute) as long as the whole factory's p95 holds, exactly as the scoring sees it; but no pool may run past
the load it sustains (its queue would grow until requests are dropped).

* :func:`measure_pool`: a pool's :class:`PoolCurve`, measured on the simulator itself (a warm replica alone,
  constant rate with Poisson arrivals, the trace's request sizes, 10 min per probe): the highest load it
  sustains (geometric bisection: nothing dropped, the queue back to at most one batch at the end) and, at
  probes up to it, the share of late first tokens and decode tokens in each 30 s interval. Same engine model
  every policy is scored on, not the sheet's figure.
* :func:`meets` / :func:`mix_capacity`: whether / up to what demand a mix meets the objectives in >= 99% of the
  calibration's intervals under a routing mode (per-interval late shares interpolated between probes, paired
  interval by interval across pools): ``Service`` splits requests evenly over ready pods; ``HTTPRoute`` by the
  operator's integer weights (ready replicas x profile capacity, :func:`tokenfactory.routing.weights`);
  ``InferencePool`` (an endpoint picker) fills every replica up to its own SLO capacity.
* :func:`slo_capacity`: one replica alone, the highest load meeting the objectives (a pool's "SLO capacity",
  reported and used under ``InferencePool``).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tokenfactory.bench.scenario import NAMESPACE, Setup, route_weights
from tokenfactory.bench.traces import sampled_sizes
from tokenfactory.sim.fleet import fine_fraction_above
from tokenfactory.sim.traces import Trace

ROUTING_MODES = ("Service", "HTTPRoute", "InferencePool")
CALIBRATION_SECONDS = 600.0
STABLE_HALVINGS = 10  # geometric bisection of the sustained load between 0.1% and 150% of the sheet's capacity
STABLE_RANGE = (0.001, 1.5)
GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)  # probes at these shares of the sustained load
SLO_TARGET = 0.99
P95_LATE = 0.05  # a p95 within its limit: at most this share of observations above it
SCAN_STEPS = 200


@dataclass(frozen=True)
class PoolCurve:
    """One replica of ``pool`` at steady loads: ``loads`` (output tok/s per replica, increasing, all sustained)
    and, per load, the share of first tokens (``ttft_late``) and decode tokens (``itl_late``) above the
    objective in each calibration interval; ``sustained``: the highest load the replica sustains (no drop,
    no growing queue)."""

    pool: str
    loads: tuple[float, ...]
    ttft_late: tuple[tuple[float, ...], ...]
    itl_late: tuple[tuple[float, ...], ...]
    sustained: float

    def at(self, load: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-interval late shares (TTFT, ITL) at ``load`` per replica: linear between probes (from none
        late at 0); None above the sustained load."""
        if load > self.sustained * (1 + 1e-9) or not self.loads:
            return None
        n = len(self.ttft_late[0])
        i = bisect.bisect_left(self.loads, load)
        if i >= len(self.loads):  # between the last probe and the sustained load: the last probe's
            return np.array(self.ttft_late[-1]), np.array(self.itl_late[-1])
        x1 = self.loads[i]
        x0 = self.loads[i - 1] if i > 0 else 0.0
        t1, i1 = np.array(self.ttft_late[i]), np.array(self.itl_late[i])
        t0, i0 = (np.array(self.ttft_late[i - 1]), np.array(self.itl_late[i - 1])) if i > 0 else (np.zeros(n),) * 2
        f = 1.0 if x1 <= x0 else (load - x0) / (x1 - x0)
        return t0 + f * (t1 - t0), i0 + f * (i1 - i0)


def step_curve(pool: str, capacity: float, intervals: int = 20) -> PoolCurve:
    """A replica that meets the objectives up to ``capacity`` and sustains nothing more (the model given
    only per-replica SLO capacities)."""
    z = (0.0,) * intervals
    return PoolCurve(pool, (float(capacity),), (z,), (z,), float(capacity))


@dataclass(frozen=True)
class EngineModel:
    """Per-pool curves for one request-size template."""

    curves: tuple[PoolCurve, ...]

    @classmethod
    def of(cls, model: EngineModel | Mapping[str, float]) -> EngineModel:
        """``model`` itself, or the step model of per-replica SLO capacities {pool: tok/s}."""
        if isinstance(model, EngineModel):
            return model
        return cls(tuple(step_curve(p, c) for p, c in sorted(model.items())))

    @property
    def by_pool(self) -> dict[str, PoolCurve]:
        return {c.pool: c for c in self.curves}

    def slo_capacities(self) -> dict[str, float]:
        """Each pool's per-replica SLO capacity: one replica alone, the highest load meeting the objectives."""
        return dict(_slo_capacities(self))

    def sustained(self) -> dict[str, float]:
        return {c.pool: c.sustained for c in self.curves}

    def describe(self) -> str:
        slo = self.slo_capacities()
        return ", ".join(f"{c.pool} {slo[c.pool]:,.0f} (sustains {c.sustained:,.0f})" for c in self.curves)


@functools.lru_cache(maxsize=64)
def _slo_capacities(model: EngineModel) -> tuple[tuple[str, float], ...]:
    return tuple((c.pool, _largest(lambda d, c=c: _meets_shares(model, {c.pool: (1, 1.0)}, d), c.sustained))
                 for c in model.curves)


# ============================================================================================
# Measuring a pool's curve on the simulator
# ============================================================================================


def steady_trace(template: Trace, rate: float) -> Trace:
    """A steady ``rate`` (output tok/s) with the request sizes of ``template`` (for a request trace:
    Poisson arrivals, sizes drawn from the trace's own)."""
    return sampled_sizes(template, rate, CALIBRATION_SECONDS)


@dataclass(frozen=True)
class Probe:
    load: float
    sustained: bool
    ttft_late: tuple[float, ...]
    itl_late: tuple[float, ...]


def probe(setup: Setup, pool: str, template: Trace, rate: float) -> Probe:
    """One warm replica of ``pool`` alone at a steady ``rate`` for CALIBRATION_SECONDS: the late shares per
    interval, and whether it sustains the rate (nothing dropped, at most one batch waiting at the end; a
    queue past four batches ends the probe early as not sustained)."""
    from tokenfactory.bench.run import Run

    run = Run(setup, steady_trace(template, rate), CALIBRATION_SECONDS)
    run.apply({p.name: (1 if p.name == pool else 0) for p in setup.profiles}, warm=True)
    (name,) = run.names[pool]
    eng = run.fleet.engines[name]
    limit = eng.profile.max_num_seqs
    o = setup.objectives
    tt, it = [], []
    while run.now < run.duration - 1e-9:
        t0 = run.now
        run.advance()
        d = run.fleet.window_fine(t0, namespace=NAMESPACE, factory=setup.factory)
        tt.append(fine_fraction_above(d[0], o.ttft_p95_seconds) if o.ttft_p95_seconds is not None else 0.0)
        it.append(fine_fraction_above(d[1], o.itl_p95_seconds) if o.itl_p95_seconds is not None else 0.0)
        if run.dropped_tokens > 0 or eng.waiting > 4 * limit:
            return Probe(rate, False, tuple(tt), tuple(it))
    return Probe(rate, eng.waiting <= limit / 4, tuple(tt), tuple(it))


def measure_pool(setup: Setup, pool: str, template: Trace) -> PoolCurve:
    """The pool's curve: the sustained load by geometric bisection, then probes at GRID shares of it (the
    bisection's sustained probes kept as well)."""
    cap = setup.by_name[pool].capacity
    lo, hi = STABLE_RANGE[0] * cap, STABLE_RANGE[1] * cap
    probes: list[Probe] = []
    top = probe(setup, pool, template, hi)
    probes.append(top)
    if top.sustained:
        lo = hi
    else:
        first = probe(setup, pool, template, lo)
        probes.append(first)
        if not first.sustained:
            return PoolCurve(pool, (), (), (), 0.0)
        for _ in range(STABLE_HALVINGS):
            mid = math.sqrt(lo * hi)
            pr = probe(setup, pool, template, mid)
            probes.append(pr)
            if pr.sustained:
                lo = mid
            else:
                hi = mid
    for share in GRID:
        x = share * lo
        if all(abs(p.load - x) > 0.02 * lo for p in probes):
            probes.append(probe(setup, pool, template, x))
    kept = sorted((p for p in probes if p.sustained and p.load <= lo * (1 + 1e-12)), key=lambda p: p.load)
    n = min(len(p.ttft_late) for p in kept)
    return PoolCurve(pool, tuple(p.load for p in kept), tuple(p.ttft_late[:n] for p in kept),
                     tuple(p.itl_late[:n] for p in kept), float(lo))


def slo_capacity(setup: Setup, pool: str, template: Trace) -> float:
    """One replica of ``pool``: the highest steady load meeting the objectives in >= 99% of the intervals."""
    return EngineModel((measure_pool(setup, pool, template),)).slo_capacities()[pool]


# ============================================================================================
# Mixes
# ============================================================================================


def shares(setup: Setup, mix: dict[str, int], routing: str) -> dict[str, tuple[int, float]]:
    """Each live pool's (replicas, share of the requests) under ``routing`` (Service: per pod; HTTPRoute: the
    operator's integer weights, ready replicas x profile capacity, as the simulator routes them)."""
    live = {p: n for p, n in mix.items() if n > 0}
    if not live:
        return {}
    if routing == "Service":
        total = sum(live.values())
        return {p: (n, n / total) for p, n in live.items()}
    if routing == "HTTPRoute":
        w = route_weights(setup, live)
        total = sum(w.values())
        return {p: (n, w.get(p, 0) / total) for p, n in live.items()} if total > 0 else {}
    raise ValueError(f"routing {routing!r}: no request split (InferencePool fills each replica)")


def _meets_shares(model: EngineModel, split: dict[str, tuple[int, float]], demand: float) -> bool:
    curves = model.by_pool
    tt: np.ndarray | float = 0.0
    it: np.ndarray | float = 0.0
    for p, (n, share) in split.items():
        if share <= 0:
            continue
        late = curves[p].at(demand * share / n)
        if late is None:
            return False
        k = min(len(late[0]), len(tt) if isinstance(tt, np.ndarray) else len(late[0]))
        tt = (tt[:k] if isinstance(tt, np.ndarray) else tt) + share * late[0][:k]
        it = (it[:k] if isinstance(it, np.ndarray) else it) + share * late[1][:k]
    if not isinstance(tt, np.ndarray) or not isinstance(it, np.ndarray):
        return True
    ok = (tt <= P95_LATE + 1e-9) & (it <= P95_LATE + 1e-9)
    return bool(ok.mean() >= SLO_TARGET) if len(ok) else True


def meets(setup: Setup, mix: dict[str, int], model: EngineModel | Mapping[str, float], demand: float,
          routing: str) -> bool:
    """Whether ``mix`` carries ``demand`` (output tok/s) within the objectives under ``routing``."""
    m = EngineModel.of(model)
    if routing == "InferencePool":
        return demand <= _inference_pool(mix, m) + 1e-9
    return _meets_shares(m, shares(setup, mix, routing), demand)


def _largest(ok, bound: float) -> float:
    """The largest demand in [0, bound] below which ``ok`` holds throughout (a scan of SCAN_STEPS, then
    bisection in the step where it first fails)."""
    if bound <= 0:
        return 0.0
    step = bound / SCAN_STEPS
    lo = 0.0
    for k in range(1, SCAN_STEPS + 1):
        d = k * step
        if not ok(d):
            hi = d
            break
        lo = d
    else:
        return bound
    for _ in range(20):
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _inference_pool(mix: dict[str, int], model: EngineModel) -> float:
    slo = model.slo_capacities()
    return sum(n * slo[p] for p, n in mix.items() if n > 0)


def mix_capacity(setup: Setup, mix: dict[str, int], model: EngineModel | Mapping[str, float], routing: str) -> float:
    """Demand (output tok/s) ``mix`` carries within objectives under ``routing`` (:func:`meets`, from 0 up)."""
    m = EngineModel.of(model)
    if routing == "InferencePool":
        return _inference_pool(mix, m)
    split = shares(setup, mix, routing)
    if not split:
        return 0.0
    curves = m.by_pool
    bound = min(curves[p].sustained * n / s for p, (n, s) in split.items() if s > 0)
    return _largest(lambda d: _meets_shares(m, split, d), bound)


@dataclass(frozen=True)
class MixOption:
    mix: dict[str, int]
    dollars_per_hour: float
    carries: float  # output tok/s within objectives


def mix_options(setup: Setup, model: EngineModel | Mapping[str, float], routing: str) -> list[MixOption]:
    """Every mix within minReplicas..maxReplicas and the budget/power objectives, cheapest first."""
    m = EngineModel.of(model)
    o = setup.objectives
    ranges = [range(p.min_replicas, p.max_replicas + 1) for p in setup.profiles]
    if math.prod(len(r) for r in ranges) > 200_000:
        raise ValueError("too many replica mixes to enumerate for the oracle (> 200,000)")
    out = []
    for counts in itertools.product(*ranges):
        mix = {p.name: n for p, n in zip(setup.profiles, counts)}
        dph = setup.dollars_per_hour(mix)
        mw = sum(p.kilowatts_per_replica * n for p, n in zip(setup.profiles, counts)) / 1000
        if o.max_dollars_per_hour is not None and dph > o.max_dollars_per_hour + 1e-9:
            continue
        if o.max_megawatts is not None and mw > o.max_megawatts + 1e-12:
            continue
        out.append(MixOption(mix, dph, mix_capacity(setup, mix, m, routing)))
    out.sort(key=lambda m: (m.dollars_per_hour, -m.carries, tuple(sorted(m.mix.items()))))
    return out


def cheapest_carrying(options: list[MixOption], demand: float) -> MixOption:
    """The cheapest option that carries ``demand``; when none does, the one that carries the most."""
    for m in options:
        if m.carries >= demand - 1e-9:
            return m
    return max(options, key=lambda m: (m.carries, -m.dollars_per_hour))
