"""Speed of the simulator: simulated seconds per wall second (prints JSON; no assertions).

    python -m tokenfactory.sim.speed [--hours 24] [--rate 60000] [--tick 1] [--step 10]

Runs a 20-replica fleet (18 H200 x 8 GPUs + 2 GB300 x 4 GPUs, the example's pools) on a constant
demand, stepped like the benchmark steps it (``Fleet.step`` every ``--step`` s), once per routing
mode, and reports wall and process CPU time (the CPU figure is the one to compare on a shared
machine), simulated seconds per wall / CPU second, and what the fleet served.
"""

from __future__ import annotations

import argparse
import json
import time


def run(hours: float, rate: float, tick: float, step: float, routing: str, seed: int = 0) -> dict:
    from tokenfactory.sim import kernel
    from tokenfactory.sim.fleet import EngineSpec, Fleet
    from tokenfactory.sim.traces import Constant

    f = Fleet(Constant(rate), seed=seed, tick=tick, routing=routing, window_seconds=120)
    for i in range(18):
        f.add_engine(EngineSpec(name=f"h200-{i}", pool="h200", gpu_type="h200", gpus=8, startup_seconds=0), 0.0)
    for i in range(2):
        f.add_engine(EngineSpec(name=f"gb300-{i}", pool="gb300", gpu_type="gb300", gpus=4, startup_seconds=0), 0.0)
    f.run(step, step)  # compile (numba) outside the timing
    t0, c0 = time.perf_counter(), time.process_time()
    f.run(hours * 3600.0, step)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sim = hours * 3600.0 - step
    ws = f.window_stats(f.now - 600)
    served = sum(p["generation_tokens_total"] for p in f.truth()["pools"])
    return {
        "routing": routing, "hours": hours, "demand_tokens_per_second": rate, "replicas": 20, "tick_seconds": tick,
        "step_seconds": step, "compiled": kernel.JIT, "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
        "simulated_seconds_per_wall_second": round(sim / wall),
        "simulated_seconds_per_cpu_second": round(sim / cpu), "ticks": f.ticks,
        "served_tokens_per_second": round(served / (hours * 3600.0)),
        "last_10_min": {"ttft_p95_seconds": ws.ttft_p95_seconds, "itl_p95_seconds": ws.itl_p95_seconds,
                        "requests": ws.requests, "dropped": ws.dropped},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--rate", type=float, default=60_000.0)
    p.add_argument("--tick", type=float, default=1.0)
    p.add_argument("--step", type=float, default=10.0)
    p.add_argument("--routing", action="append", default=None, help="Service, HTTPRoute, InferencePool (repeatable)")
    args = p.parse_args(argv)
    modes = args.routing or ["Service", "InferencePool"]
    print(json.dumps({"runs": [run(args.hours, args.rate, args.tick, args.step, m) for m in modes]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
