"""Stage 3, plan: the replicas to run, from the planner (``spec.scaling.mode``: Auto applies the plan,
Recommend only reports it, Off never plans). Pure apart from the planner's own state, which comes in
and goes out as a value.

The planner only runs on passes that read metrics; in between, replicas stay where they stand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Callable

from tokenfactory import api, planner, render
from tokenfactory.pipeline.assess import tidy
from tokenfactory.pipeline.inputs import planner_inputs
from tokenfactory.pipeline.model import Collected, Event, PlanOutcome, rfc3339


def hold(c: Collected, state: planner.PlannerState | None) -> PlanOutcome:
    """No planning this pass: every pool stays where it stands."""
    return PlanOutcome(replicas=dict(c.current), state=state)


def decision(plan: planner.Plan, mode: str, applied: bool, now: dt.datetime) -> api.Decision:
    return api.Decision(
        time=rfc3339(now), mode=mode, applied=applied,
        changes=[api.PoolChange.model_validate({"pool": p.name, "from": p.current, "to": p.replicas, "reason": p.reason})
                 for p in plan.changes],
        reason=plan.summary,
        demand_tokens_per_second=tidy(plan.demand_tokens_per_second),
        expected_dollars_per_hour=tidy(plan.dollars_per_hour),
        expected_cost_per_million_tokens=tidy(plan.dollars_per_million_tokens),
    )


# Issue 15: the solve runs in a worker thread with this time budget (then the best mix found so far). The
# event loop (``/healthz``, the other factories) keeps running meanwhile: the planner is pure Python, so
# the worker takes the GIL only for the interpreter's switch interval (5 ms) at a time.
PLAN_BUDGET_SECONDS = 1.0


async def plan_in_worker(c: Collected, state: planner.PlannerState | None,
                         budget_seconds: float = PLAN_BUDGET_SECONDS, hold_scale_down: str | None = None) -> PlanOutcome:
    """:func:`plan` off the event loop, the solver stopped after ``budget_seconds`` (best mix so far)."""
    deadline = time.monotonic() + budget_seconds
    return await asyncio.to_thread(plan, c, state, lambda: time.monotonic() >= deadline, hold_scale_down)


def plan(c: Collected, state: planner.PlannerState | None, stop: Callable[[], bool] | None = None,
         hold_scale_down: str | None = None) -> PlanOutcome:
    """One planning step for a pass that read metrics (``stop``: the solver's time budget, see
    :func:`plan_in_worker`; ``hold_scale_down``: why scale-downs wait this pass, e.g. right after a
    metrics gap; scale-ups still happen)."""
    spec = c.spec
    assert spec is not None
    if spec.scaling.mode == "Off" or not c.reading.read:
        return hold(c, state)
    problem = c.reading.problem
    inputs = planner_inputs(spec, c.reading.metrics, current=c.current, ready=c.ready(), pools=c.pools,
                            metrics_problem=problem.reason if problem else None)
    result, new_state = planner.decide(state, inputs, c.now.timestamp(), stop=stop)
    capacities = {pp.name: pp.capacity_per_replica for pp in result.pools}
    if not result.changes or result.holding:
        return PlanOutcome(replicas=dict(c.current), capacities=capacities, state=new_state)
    held_events: list[Event] = []
    if hold_scale_down:
        held = [pp for pp in result.changes if pp.replicas < pp.current]
        held_events = [Event("Normal", "ScaleDownHeld", f"{pp.name}: {pp.current} -> {pp.replicas} held: {hold_scale_down}")
                       for pp in held]
        if held:
            kept = {pp.name: pp.current for pp in held}
            result = dataclasses.replace(
                result, replicas={**result.replicas, **kept},
                pools=tuple(dataclasses.replace(pp, replicas=pp.current) if pp.name in kept else pp for pp in result.pools),
                summary=f"{result.summary}; {hold_scale_down}")
        if not result.changes:
            return PlanOutcome(replicas=dict(c.current), capacities=capacities, state=new_state, events=tuple(held_events))
    applied = spec.scaling.mode == "Auto"
    events, directions = list(held_events), []
    for pp in result.changes:
        direction = "up" if pp.replicas > pp.current else "down"
        directions.append((pp.name, direction))
        verb = ("Scaled" + direction.capitalize()) if applied else "Recommendation"
        events.append(Event("Normal", verb, f"{pp.name}: {pp.current} -> {pp.replicas}"
                            f"{'' if applied else ' (Recommend mode: not applied)'}: {pp.reason}"))
    replicas = render.clamp_replicas(spec, result.replicas) if applied else dict(c.current)
    return PlanOutcome(replicas=replicas, capacities=capacities, decision=decision(result, spec.scaling.mode, applied, c.now),
                       directions=tuple(directions), events=tuple(events), state=new_state)
