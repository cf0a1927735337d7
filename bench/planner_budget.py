"""The planner's time budget (issue 15): the adversarial spec that cost 12.6 s of synchronous CPU per pass,
8 near-tied custom pools with maxReplicas 1000, a budget and a power cap, planned through the operator's own
path (``pipeline.inputs.planner_inputs`` -> ``planner.decide``) without and with the operator's budget
(``pipeline.plan.PLAN_BUDGET_SECONDS``). Prints one JSON object (times are wall seconds on this machine).

    python bench/planner_budget.py [--no-unbounded]

``event_loop_max_lag_seconds_while_planning``: the longest a 10 ms asyncio ticker (standing in for
``/healthz`` and the other factories' loops) was held up while the plan ran in its worker thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from tokenfactory import api, planner
from tokenfactory.pipeline.inputs import planner_inputs
from tokenfactory.pipeline.plan import PLAN_BUDGET_SECONDS


def adversarial_spec() -> api.TokenFactorySpec:
    """8 near-tied custom pools (price, tokens/s and kW within a few percent), maxReplicas 1000 each,
    maxDollarsPerHour and maxMegawatts that bind."""
    pools = []
    for i in range(8):
        pools.append({
            "name": f"custom{i}", "gpuType": f"custom{i}", "gpusPerReplica": 8, "minReplicas": 0, "maxReplicas": 1000,
            "pricePerGpuHour": round(2.0 + 0.013 * i - 0.0007 * i * i, 4),
            "tokensPerSecondPerGpu": round(1000 + 9.7 * i - 0.9 * i * i, 3),
            "kilowattsPerGpu": round(1.0 + 0.011 * ((i * 5) % 8), 4),
            "startupSeconds": 60,
        })
    return api.parse_spec({
        "model": {"name": "deepseek-ai/DeepSeek-R1"},
        "pools": pools,
        "objectives": {"maxDollarsPerHour": 40_000, "maxMegawatts": 2.4},
        "scaling": {"mode": "Recommend"},
    })


def adversarial_inputs(demand: float = 2_400_000.0) -> planner.PlannerInputs:
    spec = adversarial_spec()
    inputs = planner_inputs(spec, None, current={p.name: 3 for p in spec.pools}, ready={p.name: 3 for p in spec.pools})
    import dataclasses

    return dataclasses.replace(inputs, demand_tokens_per_second=demand, observations=None)


def timed_decide(budget: float | None) -> tuple[float, planner.Plan]:
    inputs = adversarial_inputs()
    deadline = time.monotonic() + budget if budget is not None else None
    stop = (lambda: time.monotonic() >= deadline) if deadline is not None else None
    t0 = time.perf_counter()
    plan, _ = planner.decide(None, inputs, 1_000.0, stop=stop)
    return time.perf_counter() - t0, plan


async def loop_lag_while_planning(budget: float | None) -> tuple[float, float]:
    """Max event-loop lag (s) seen by a 10 ms ticker while decide() runs in a worker thread, as the
    operator's plan stage runs it (asyncio.to_thread), and the worker's wall time."""
    import asyncio

    inputs = adversarial_inputs()
    deadline = time.monotonic() + budget if budget is not None else None
    stop = (lambda: time.monotonic() >= deadline) if deadline is not None else None
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - t - 0.01)

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    await asyncio.to_thread(lambda: planner.decide(None, inputs, 1_000.0, stop=stop))
    took = time.perf_counter() - t0
    done = True
    await tick
    return worst, took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-unbounded", action="store_true", help="skip the run without a budget (it takes seconds)")
    args = ap.parse_args()
    out = {"benchmark": "planner_adversarial_8_near_tied_pools_max1000_budget_power",
           "budget_seconds": PLAN_BUDGET_SECONDS, "python": platform.python_version()}
    took, plan = timed_decide(PLAN_BUDGET_SECONDS)
    out.update(with_budget_seconds=round(took, 3), with_budget_replicas=plan.replicas,
               with_budget_dollars_per_hour=round(plan.dollars_per_hour, 2),
               with_budget_stopped="time budget reached" in plan.summary)
    import asyncio

    lag, took = asyncio.run(loop_lag_while_planning(PLAN_BUDGET_SECONDS))
    out.update(event_loop_max_lag_seconds_while_planning=round(lag, 4), worker_seconds=round(took, 3))
    if not args.no_unbounded:
        took, plan = timed_decide(None)
        out.update(unbounded_seconds=round(took, 3), unbounded_replicas=plan.replicas,
                   unbounded_dollars_per_hour=round(plan.dollars_per_hour, 2))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
