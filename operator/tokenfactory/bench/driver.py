"""Runs policies over a trace: one :class:`Run` per policy, warm start, a decision every control interval."""

from __future__ import annotations

from tokenfactory.bench.policies import Policy, make_policies
from tokenfactory.bench.policies.tokenfactory import TokenFactory
from tokenfactory.bench.run import Run
from tokenfactory.bench.scenario import Setup
from tokenfactory.bench.scoring import pick_best_hpa
from tokenfactory.sim.traces import Trace


def run_policy(setup: Setup, trace: Trace, duration: float, policy: Policy) -> tuple[dict, list[dict]]:
    run = Run(setup, trace, duration)
    run.apply(policy.initial(run), warm=True)
    while run.now < duration - 1e-9:
        if run.now > 0:
            target = policy.decide(run)
            if target is not None:
                run.apply(target)
        run.advance()
    res = run.result()
    if policy.note:
        res["note"] = policy.note
    if isinstance(policy, TokenFactory):
        res["planner_holds"] = policy.holds
    return res, run.timeline



def run_trace(setup: Setup, trace: Trace, duration: float) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    results: dict[str, dict] = {}
    timelines: dict[str, list[dict]] = {}
    for make in make_policies(setup):
        pol = make()
        res, tl = run_policy(setup, trace, duration, pol)
        results[pol.name] = res
        timelines[pol.name] = tl
    variants = [f"hpa_{p.name}" for p in setup.profiles] + ["hpa_both"]
    best = pick_best_hpa(results, variants)
    results["hpa"] = {**results[best], "variant": best}
    timelines["hpa"] = timelines[best]
    return results, timelines

