"""Measure the latency prior of each GPU type on the calibrated simulator (what gpus.yaml's
latencyPoints hold): one replica under Poisson arrivals at a constant load, p95 TTFT and ITL per
30 s window, the median over the windows (a pool of several replicas shows about the typical
window; the demand quantile and the online correction cover the rest), at several load fractions
of the sheet's capacity (the delivered fraction is the median over the windows).

    .venv/bin/python hack/latency_points.py            # prints YAML for data/gpus.yaml
"""

from __future__ import annotations

import statistics
import sys

from tokenfactory import gpusheet
from tokenfactory.sim.fleet import EngineSpec, Fleet
from tokenfactory.sim.traces import Constant

GPUS = {"h200": 8, "gb300": 4}
LOADS = (0.1, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
WARMUP, WINDOW, WINDOWS = 120.0, 30.0, 60


def measure(gpu_type: str, gpus: int, load: float, seed: int = 1) -> tuple[float, float | None, float | None]:
    cap = gpusheet.lookup(gpu_type).tokens_per_second_per_gpu * gpus
    fleet = Fleet(Constant(load * cap), startup_seconds=0.0, seed=seed)
    fleet.add_engine(EngineSpec(name="e0", gpu_type=gpu_type, gpus=gpus), now=0.0)
    fleet.run(WARMUP, 1.0)
    itl, ttft, delivered = [], [], []
    t = WARMUP
    for _ in range(WINDOWS):
        fleet.run(t + WINDOW, 1.0)
        w = fleet.window_stats(t)
        t += WINDOW
        if w.itl_p95_seconds is not None:
            itl.append(w.itl_p95_seconds)
        if w.ttft_p95_seconds is not None:
            ttft.append(w.ttft_p95_seconds)
        delivered.append(w.generation_tokens / WINDOW)
    x = statistics.median(delivered) / cap
    return (round(x, 3), round(statistics.median(itl), 4) if itl else None,
            round(statistics.median(ttft), 4) if ttft else None)



def main() -> int:
    for gpu_type, gpus in GPUS.items():
        print(f"  {gpu_type}:  # (load fraction delivered, ITL p95 s, TTFT p95 s), {gpus} GPUs per replica")
        pts = [measure(gpu_type, gpus, x) for x in LOADS]
        print("    latencyPoints: [" + ", ".join(f"[{a}, {b}, {c}]" for a, b, c in pts) + "]")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
