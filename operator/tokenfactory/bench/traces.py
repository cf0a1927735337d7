"""The standard traces and user traces, as picklable recipes (:class:`Case`) that each worker builds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tokenfactory.sim.traces import TimeScaled, Trace, parse_trace

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
    trace: Trace | None = field(default=None, compare=False, hash=False, repr=False)

    def build(self) -> Trace:
        if self.trace is not None:
            return self.trace
        tr = parse_trace(self.spec, seed=self.seed)
        return TimeScaled(tr, self.time_scale) if self.time_scale != 1.0 else tr


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


def builtin_cases(quick: bool, seed: int = 0) -> list[Case]:
    out = []
    for name, spec, secs, scale in TRACES:
        if quick:
            desc = f"{spec} played {scale:g}x faster" if scale != 1.0 else spec
            out.append(Case(name, spec, QUICK_SECONDS, desc, seed, scale))
        else:
            out.append(Case(name, spec, secs, spec, seed))
    return out


def user_case(path: str) -> Case:
    spec = f"csv:{path}"
    tr = parse_trace(spec)
    last = tr.rows[-1][0]  # type: ignore[attr-defined]
    return Case(Path(path).stem, spec, max(last, 30.0), spec)
