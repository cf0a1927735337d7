"""How fast the planner's exact solver answers (prints one JSON object; no assertions: a busy machine may miss
a target, which is a benchmark's figure, not a test failure). The workloads are the ones
tests/unit/test_planner.py checks for exactness; each solve is timed as the fastest of 3 runs.

    python bench/solver_speed.py
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import replace

from tokenfactory.planner import PoolProfile, solve

H200 = PoolProfile("h200", "h200", price_per_replica_hour=8 * 1.41, capacity=8 * 90.0, min_replicas=0,
                   max_replicas=24, startup_seconds=300, kilowatts_per_replica=8 * 1.667, gpus_per_replica=8)


def fastest(fn, repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def two_pools() -> float:
    a = replace(H200, max_replicas=24)
    b = PoolProfile("b200", "b200", 8 * 2.0, 8 * 1500.0, 0, 18, kilowatts_per_replica=8 * 1.2, gpus_per_replica=8)
    return max(fastest(lambda demand=demand, budget=budget, power=power: solve((a, b), demand, max_dollars_per_hour=budget, max_megawatts=power,
                                     current={"h200": 3, "b200": 2}))
               for demand in range(0, 240_001, 7_500) for budget in (None, 150.0, 400.0) for power in (None, 0.15))


def five_pools() -> float:
    pools = (
        PoolProfile("gb300", "gb300", 10.60, 24_000, 0, 50, kilowatts_per_replica=8.572, gpus_per_replica=4),
        PoolProfile("h200", "h200", 11.28, 720, 0, 50, kilowatts_per_replica=13.336, gpus_per_replica=8),
        PoolProfile("b200", "b200", 16.0, 12_000, 0, 50, kilowatts_per_replica=9.6, gpus_per_replica=8),
        PoolProfile("h100", "h100", 8.0, 400, 0, 50, kilowatts_per_replica=10.0, gpus_per_replica=8),
        PoolProfile("mi300", "mi300", 12.0, 2_000, 0, 50, kilowatts_per_replica=12.0, gpus_per_replica=8),
    )
    return max(fastest(lambda demand=demand, budget=budget, power=power: solve(pools, demand, max_dollars_per_hour=budget, max_megawatts=power,
                                     current={"h200": 10, "mi300": 5}))
               for demand in (1_000, 50_000, 300_000, 900_000, 1_300_000, 2_000_000)
               for budget in (None, 500.0, 1500.0) for power in (None, 0.5, 1.5))


def near_tied() -> float:
    rng = random.Random(7)
    worst = 0.0
    for _ in range(5):
        pools = tuple(PoolProfile(f"p{i}", "x", rng.uniform(9, 11), rng.uniform(900, 1100), 0, 50,
                                  kilowatts_per_replica=rng.uniform(1, 10), gpus_per_replica=8) for i in range(5))
        cur = {p.name: rng.randint(0, 50) for p in pools}
        for demand in (10_000, 70_000, 150_000, 240_000):
            for budget, power in ((None, None), (1500.0, None), (None, 0.8), (800.0, 0.3)):
                worst = max(worst, fastest(lambda pools=pools, cur=cur, demand=demand, budget=budget, power=power: solve(
                    pools, demand, current=cur, max_dollars_per_hour=budget,
                                                         max_megawatts=power)))
    return worst


def identical_pools() -> float:
    pools = tuple(PoolProfile(f"p{i}", "x", 10.0, 1000.0, 0, 50) for i in range(5))
    return fastest(lambda: solve(pools, 150_000, current={"p0": 3, "p3": 40}))


def main() -> None:
    cases = {"two_pools_24_18": (two_pools, 0.05), "five_pools_50_each": (five_pools, 0.05),
             "near_tied_five_pools": (near_tied, 2.0), "identical_pools_symmetry": (identical_pools, 1.0)}
    out = {}
    for name, (fn, target) in cases.items():
        worst = fn()
        out[name] = {"worst_seconds": round(worst, 5), "target_seconds": target, "met": worst < target}
    print(json.dumps({"benchmark": "planner.solve", "cases": out}, indent=2))


if __name__ == "__main__":
    main()
