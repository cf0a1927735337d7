"""The standard traces and user traces."""

from __future__ import annotations

import math
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


def peak(trace: Trace, duration: float, dt: float) -> float:
    n = int(math.ceil(duration / dt))
    return max(trace(i * dt).output_tokens_per_second for i in range(n + 1))



def builtin_traces(quick: bool, seed: int = 0) -> list[tuple[str, Trace, float, str]]:
    out = []
    for name, spec, secs, scale in TRACES:
        tr = parse_trace(spec, seed=seed)
        if quick:
            if scale != 1.0:
                tr = TimeScaled(tr, scale)
            desc = f"{spec} played {scale:g}x faster" if scale != 1.0 else spec
            out.append((name, tr, QUICK_SECONDS, desc))
        else:
            out.append((name, tr, secs, spec))
    return out


def user_trace(path: str) -> tuple[str, Trace, float, str]:
    tr = parse_trace(f"csv:{path}")
    last = tr.rows[-1][0]  # type: ignore[attr-defined]
    return Path(path).stem, tr, max(last, 30.0), f"csv:{path}"

