"""Stage 3, plan: the replicas to run, from the planner (``spec.scaling.mode``: Auto applies the plan,
Recommend only reports it, Off never plans). Pure apart from the planner's own state, which comes in
and goes out as a value.

The planner only runs on passes that read metrics; in between, replicas stay where they stand.
"""

from __future__ import annotations

import datetime as dt

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


def plan(c: Collected, state: planner.PlannerState | None) -> PlanOutcome:
    """One planning step for a pass that read metrics."""
    spec = c.spec
    assert spec is not None
    if spec.scaling.mode == "Off" or not c.reading.read:
        return hold(c, state)
    problem = c.reading.problem
    inputs = planner_inputs(spec, c.reading.metrics, current=c.current, ready=c.ready(), pools=c.pools,
                            metrics_problem=problem.reason if problem else None)
    result, new_state = planner.decide(state, inputs, c.now.timestamp())
    capacities = {pp.name: pp.capacity_per_replica for pp in result.pools}
    if not result.changes or result.holding:
        return PlanOutcome(replicas=dict(c.current), capacities=capacities, state=new_state)
    applied = spec.scaling.mode == "Auto"
    events, directions = [], []
    for pp in result.changes:
        direction = "up" if pp.replicas > pp.current else "down"
        directions.append((pp.name, direction))
        verb = ("Scaled" + direction.capitalize()) if applied else "Recommendation"
        events.append(Event("Normal", verb, f"{pp.name}: {pp.current} -> {pp.replicas}"
                            f"{'' if applied else ' (Recommend mode: not applied)'}: {pp.reason}"))
    replicas = render.clamp_replicas(spec, result.replicas) if applied else dict(c.current)
    return PlanOutcome(replicas=replicas, capacities=capacities, decision=decision(result, spec.scaling.mode, applied, c.now),
                       directions=tuple(directions), events=tuple(events), state=new_state)
