"""The standard traces and user traces, as picklable recipes (:class:`Case`) that each worker builds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokenfactory.sim.traces import AZURE_CODE_TRACE, RequestTrace, TimeScaled, Trace, parse_trace

DAY = 86400.0

# Built-in traces: (name, spec in the simulator's --trace syntax, seconds, quick time-compression).
# Each crosses the GB300 boundary (2 x 24,000 tok/s): peaks 56-60K tok/s, troughs a few thousand.
# --quick plays diurnal/step/ramp 6x faster over 4 h; bursty keeps its burst lengths, over 4 h.
TRACES = (
    ("diurnal", "diurnal:32k,28k", DAY, 6.0),  # 4K at 02:00 .. 60K at 14:00
    ("step", "step:4k,30k@21600,58k@43200,12k@64800", DAY, 6.0),
    ("ramp", "ramp:3k,60k@1800,72000", DAY, 6.0),  # rises for 20 h, then holds the peak
    ("bursty", "bursty:6k,58k@1200,300,0.5", DAY, 1.0),  # 5-min bursts in half of the 20-min windows
)
QUICK_SECONDS = 4 * 3600.0

# The real one: Azure LLM inference trace 2023, code service (8,819 requests in 57 min, 2,048 prompt / 28
# output tokens on average: prefill-heavy; CC-BY 4.0, see tokenfactory/sim/data/README.md), replayed
# as given, rate-scaled to load the example factory (same span in --quick).
AZURE = ("azure_code", AZURE_CODE_TRACE)
AZURE_PEAK_LOAD = 1.0  # auto rate scale: its busiest minute asks what the cheapest pool's maxReplicas carry within SLO


@dataclass(frozen=True)
class Case:
    """One trace as the benchmark plays it: a recipe (spec, seed, time compression) that any worker
    process turns into the same :class:`Trace` (``trace`` short-cuts that for in-process runs)."""

    name: str
    spec: str
    duration: float
    desc: str
    seed: int = 0
    time_scale: float = 1.0
    rate_scale: float = 1.0
    trace: Trace | None = field(default=None, compare=False, hash=False, repr=False)

    def build(self) -> Trace:
        if self.trace is not None:
            return self.trace
        tr = parse_trace(self.spec, seed=self.seed, rate_scale=self.rate_scale)
        return TimeScaled(tr, self.time_scale) if self.time_scale != 1.0 else tr

    @property
    def is_file(self) -> bool:
        return self.spec.split(":", 1)[0] not in ("constant", "step", "ramp", "diurnal", "bursty")


_BUILT: dict[Case, Trace] = {}


def build(case: Case) -> Trace:
    """``case.build()``, once per process."""
    if case.trace is not None:
        return case.trace
    if case not in _BUILT:
        _BUILT[case] = case.build()
    return _BUILT[case]


def peak(trace: Trace, duration: float, dt: float) -> float:
    n = int(math.ceil(duration / dt))
    return max(trace(i * dt).output_tokens_per_second for i in range(n + 1))


def interval_demands(trace: Trace, duration: float, interval: float, dt: float) -> list[float]:
    """The demand rate (output tok/s) each control interval must carry: the highest rate the trace
    asks for at the simulator steps of the interval (what perfect foresight of the rate knows)."""
    n = int(math.ceil(duration / interval))
    steps = max(1, int(round(interval / dt)))
    return [max(trace(k * interval + j * dt).output_tokens_per_second for j in range(steps)) for k in range(n)]


def builtin_cases(quick: bool, seed: int = 0, azure_rate_scale: float | None = None) -> list[Case]:
    """The standard set; ``azure_rate_scale`` None = :func:`auto_rate_scale` (needs the setup: the
    caller fills it in with :func:`with_rate_scale`)."""
    out = []
    for name, spec, secs, scale in TRACES:
        if quick:
            desc = f"{spec} played {scale:g}x faster" if scale != 1.0 else spec
            out.append(Case(name, spec, QUICK_SECONDS, desc, seed, scale))
        else:
            out.append(Case(name, spec, secs, spec, seed))
    name, path = AZURE
    out.append(file_case(path, name, rate_scale=azure_rate_scale or 1.0, seed=seed))
    return out


def file_case(path: str, name: str | None = None, rate_scale: float = 1.0, seed: int = 0) -> Case:
    """A trace file (rate CSV, Azure CSV or Mooncake JSONL, by content), ``rate_scale`` x its requests/s;
    it runs for its span (at least 30 s)."""
    tr = parse_trace(path, seed=seed, rate_scale=rate_scale)
    if isinstance(tr, RequestTrace):
        span = tr.span
    else:
        rows = getattr(getattr(tr, "trace", tr), "rows", None)
        span = rows[-1][0] if rows else 30.0
    desc = f"{Path(path).name}" + (f" x{rate_scale:g} requests/s" if rate_scale != 1.0 else "")
    return Case(name or Path(path).stem, path, max(span, 30.0), desc, seed, 1.0, rate_scale)


def user_case(path: str, rate_scale: float = 1.0) -> Case:
    return file_case(path, rate_scale=rate_scale)


def auto_rate_scale(setup, path: str, load: float = AZURE_PEAK_LOAD) -> tuple[float, str]:
    """The rate scale at which the trace's busiest minute asks ``load`` x what the cheapest pool per token
    carries within the objectives at its maxReplicas (its per-replica SLO capacity measured on the
    simulator with the trace's own request sizes, :func:`tokenfactory.bench.capacity.slo_capacity`):
    it reaches that pool's limit like the synthetic traces reach GB300's. Returns (scale, why)."""
    from tokenfactory.bench.capacity import slo_capacity

    tr = parse_trace(path)
    assert isinstance(tr, RequestTrace), path
    cheapest = min(setup.profiles, key=lambda p: p.price_per_replica_hour / p.capacity if p.capacity else math.inf)
    cap = slo_capacity(setup, cheapest.name, tr)
    minute = float(np.bincount((tr.times // 60).astype(np.int64), weights=tr.output).max() / 60.0)
    scale = round(load * cheapest.max_replicas * cap / minute, 1)
    why = (f"busiest minute {minute:,.0f} output tok/s x {scale:g} = {load:g} x {cheapest.max_replicas} {cheapest.name} "
           f"replicas x {cap:,.0f} tok/s (per-replica SLO capacity for this trace's requests)")
    return scale, why


def sampled_sizes(template: Trace, rate: float, seconds: float, seed: int = 0) -> Trace:
    """Poisson arrivals at a steady ``rate`` (output tok/s) for ``seconds`` with request sizes drawn from
    ``template`` (a request trace: its own size distribution; a rate trace: its sizes at t=0)."""
    if not isinstance(template, RequestTrace):
        from tokenfactory.sim.traces import Constant

        d = template(0.0)
        return Constant(rate, d.prompt_tokens, d.output_tokens)
    rng = np.random.default_rng([seed, 104729])
    rps = rate / template.mean_output_tokens
    n = int(rng.poisson(rps * seconds)) if rps > 0 else 0
    n = max(n, 1)
    times = np.sort(rng.random(n) * seconds)
    pick = rng.integers(0, len(template.times), n)
    return RequestTrace(times, template.prompt[pick], template.output[pick], name=f"steady {rate:,.0f} tok/s",
                        period=seconds + 60.0)
