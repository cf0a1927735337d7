"""Speed of the planner's exact solver (issue 16: "the solve stays exact and fast: under 5 ms for 20
pools"): a benchmark that prints JSON, not a timed test.

    .venv/bin/python bench/planner_speed.py [--pools 20] [--cases 50] [--seed 0]

Each case is a random fleet of ``--pools`` pools (prices, capacities and power drawn from GPU-like
ranges, minReplicas 0-1, maxReplicas 4-40) and a demand between 10% and 90% of the fleet's full
capacity, solved under no limit, a budget, and a budget plus a power cap; the same problem under
even routing (one Service) is solved as ``decide`` does it (one solve per candidate slowest pool).
Reported: median / p95 / max milliseconds per solve, search nodes, and whether every search finished
(``exact``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from tokenfactory import planner  # noqa: E402
from tokenfactory.planner.config import PlannerInputs  # noqa: E402
from tokenfactory.planner.decide import _solve_routed  # noqa: E402


def fleet(rng: random.Random, k: int) -> list[planner.PoolProfile]:
    pools = []
    for i in range(k):
        gpus = rng.choice([1, 2, 4, 8])
        per_gpu_price = rng.uniform(0.8, 4.0)
        per_gpu_tps = rng.choice([60.0, 90.0, 300.0, 900.0, 2500.0, 6000.0]) * rng.uniform(0.8, 1.2)
        pools.append(planner.PoolProfile(
            f"p{i:02d}", "gpu", price_per_replica_hour=per_gpu_price * gpus, capacity=per_gpu_tps * gpus,
            min_replicas=rng.choice([0, 0, 1]), max_replicas=rng.randint(4, 40),
            kilowatts_per_replica=rng.uniform(0.7, 2.2) * gpus, gpus_per_replica=gpus))
    return pools


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000.0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pools", type=int, default=20)
    ap.add_argument("--cases", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    res: dict[str, list[float]] = {"no_limit": [], "budget": [], "budget_and_power": [], "even_routing": []}
    nodes: dict[str, list[int]] = {k: [] for k in res}
    exact = True
    for _ in range(args.cases):
        pools = fleet(rng, args.pools)
        full = sum(p.capacity * p.max_replicas for p in pools)
        demand = full * rng.uniform(0.1, 0.9)
        cheapest = sorted(pools, key=lambda p: p.price_per_replica_hour / p.capacity)
        budget = sum(p.price_per_replica_hour * p.max_replicas for p in cheapest) * rng.uniform(0.2, 0.6)
        mw = sum(p.kilowatts_per_replica * p.max_replicas for p in pools) / 1000.0 * rng.uniform(0.3, 0.7)
        current = {p.name: rng.randint(p.min_replicas, p.max_replicas) for p in pools}
        for name, kw in (("no_limit", {}), ("budget", {"max_dollars_per_hour": budget}),
                         ("budget_and_power", {"max_dollars_per_hour": budget, "max_megawatts": mw})):
            ms, sol = timed(lambda pools=pools, demand=demand, current=current, kw=kw: planner.solve(
                pools, demand, current=current, **kw))
            res[name].append(ms)
            nodes[name].append(sol.nodes)
            exact &= sol.exact
        caps = {p.name: p.capacity * rng.uniform(0.6, 1.0) for p in pools}
        inputs = PlannerInputs(pools=tuple(pools), current=current, routing="even")
        ms, (sol, _) = timed(lambda pools=pools, demand=demand, inputs=inputs, current=current, caps=caps: _solve_routed(
            pools, demand * 0.05, inputs, current, caps))
        res["even_routing"].append(ms)
        nodes["even_routing"].append(sol.nodes)
        exact &= sol.exact

    def summary(v: list[float]) -> dict[str, float]:
        s = sorted(v)
        return {"median_ms": round(statistics.median(s), 3), "p95_ms": round(s[int(0.95 * (len(s) - 1))], 3),
                "max_ms": round(s[-1], 3)}

    out = {
        "benchmark": "planner.solve", "pools": args.pools, "cases": args.cases, "seed": args.seed,
        "python": sys.version.split()[0], "exact": exact, "target_ms": 5.0,
        "results": {k: {**summary(v), "median_nodes": int(statistics.median(nodes[k])), "max_nodes": max(nodes[k])}
                    for k, v in res.items()},
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
