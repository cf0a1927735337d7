"""The engine model the oracle and the static-mix search reason with.

* :func:`slo_capacity`: the highest steady load (output tok/s) one replica of a pool carries with the
  p95 TTFT and ITL within the objectives in >= 99% of the control intervals and nothing dropped,
  measured on the simulator itself (a warm replica alone, constant rate, the trace's request sizes,
  bisection). This is the same engine model every policy is scored on, not the sheet's figure.
* :func:`mix_capacity`: the demand a mix carries under a routing mode, from those per-replica
  figures: ``Service`` splits requests evenly over ready pods (the most loaded pod type limits);
  ``HTTPRoute`` splits by weights proportional to replicas x the profile capacity (the operator's
  weights); ``InferencePool`` (an endpoint picker) fills every replica up to its own figure.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from tokenfactory.bench.scenario import Setup
from tokenfactory.bench.traces import sampled_sizes
from tokenfactory.sim.traces import Trace

ROUTING_MODES = ("Service", "HTTPRoute", "InferencePool")
CALIBRATION_SECONDS = 600.0
CALIBRATION_STEPS = 8
SLO_TARGET = 0.99


def steady_trace(template: Trace, rate: float) -> Trace:
    """A steady ``rate`` (output tok/s) with the request sizes of ``template`` (for a request trace:
    Poisson arrivals, sizes drawn from the trace's own)."""
    return sampled_sizes(template, rate, CALIBRATION_SECONDS)


def _meets_at(setup: Setup, pool: str, template: Trace, rate: float, routing: str | None) -> bool:
    from tokenfactory.bench.run import Run

    run = Run(setup, steady_trace(template, rate), CALIBRATION_SECONDS, routing=routing)
    run.apply({p.name: (1 if p.name == pool else 0) for p in setup.profiles}, warm=True)
    while run.now < run.duration - 1e-9:
        run.advance()
    res = run.result()
    return res["slo_attainment"] >= SLO_TARGET and res["tokens_dropped"] <= 0


def slo_capacity(setup: Setup, pool: str, template: Trace, routing: str | None = None,
                 steps: int = CALIBRATION_STEPS) -> float:
    """Bisection between 0 and 1.5x the profile capacity (``steps`` halvings; the result meets)."""
    cap = setup.by_name[pool].capacity
    lo, hi = 0.0, 1.5 * cap
    if _meets_at(setup, pool, template, hi, routing):
        return hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        if _meets_at(setup, pool, template, mid, routing):
            lo = mid
        else:
            hi = mid
    return lo


def mix_capacity(setup: Setup, mix: dict[str, int], caps: dict[str, float], routing: str) -> float:
    """Demand (output tok/s) ``mix`` carries within objectives under ``routing``."""
    live = {p: n for p, n in mix.items() if n > 0}
    if not live:
        return 0.0
    if routing == "Service":
        return sum(live.values()) * min(caps[p] for p in live)
    if routing == "HTTPRoute":
        prof = setup.by_name
        weight = sum(n * prof[p].capacity for p, n in live.items())
        return weight * min(caps[p] / prof[p].capacity for p in live if prof[p].capacity > 0)
    return sum(n * caps[p] for p, n in live.items())


@dataclass(frozen=True)
class MixOption:
    mix: dict[str, int]
    dollars_per_hour: float
    carries: float  # output tok/s within objectives


def mix_options(setup: Setup, caps: dict[str, float], routing: str) -> list[MixOption]:
    """Every mix within minReplicas..maxReplicas and the budget/power objectives, cheapest first."""
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
        out.append(MixOption(mix, dph, mix_capacity(setup, mix, caps, routing)))
    out.sort(key=lambda m: (m.dollars_per_hour, -m.carries, tuple(sorted(m.mix.items()))))
    return out


def cheapest_carrying(options: list[MixOption], demand: float) -> MixOption:
    """The cheapest option that carries ``demand``; when none does, the one that carries the most."""
    for m in options:
        if m.carries >= demand - 1e-9:
            return m
    return max(options, key=lambda m: (m.carries, -m.dollars_per_hour))
