"""Structured reasons of the planner (codes + parameters) and their one renderer."""

from __future__ import annotations

import pytest
from tokenfactory import cost
from tokenfactory.planner import (
    CapacityEstimator,
    Objectives,
    PlannerConfig,
    PlannerInputs,
    PoolObservation,
    PoolProfile,
    Reason,
    decide,
    explain,
    plan_for_demand,
)

GB300 = PoolProfile("gb300", "gb300", price_per_replica_hour=4 * 2.65, capacity=24_000.0, max_replicas=2,
                    kilowatts_per_replica=4 * 2.143, gpus_per_replica=4)
H200 = PoolProfile("h200", "h200", price_per_replica_hour=8 * 1.41, capacity=720.0, max_replicas=24,
                   kilowatts_per_replica=8 * 1.667, gpus_per_replica=8)
POOLS = (GB300, H200)


def _codes(reasons):
    for r in reasons:
        yield r.code
        for _, v in r.params:
            if isinstance(v, Reason):
                yield from _codes((v,))
            elif isinstance(v, tuple) and v and all(isinstance(x, Reason) for x in v):
                yield from _codes(v)


def test_plan_text_is_the_rendering_of_its_structured_reasons():
    plan = plan_for_demand(POOLS, 60_000, objectives=Objectives(max_dollars_per_hour=100.0), current={"gb300": 1})
    assert plan.summary == explain.render_summary(plan.summary_why)
    for pp in plan.pools:
        assert pp.reason == explain.render_pool(pp.why)
        assert set(_codes(pp.why)) <= set(explain.TEMPLATES)
    h = plan.pools[1]
    role = next(r for r in h.why if r.code.startswith("role."))
    assert role.code == "role.adds" and role["n"] == plan.replicas["h200"] and role["rank"] == 1
    assert [c.code for c in role["cheaper"]] == ["cheaper.at_max"]
    limited = next(r for r in plan.summary_why if r.code == "summary.limited")
    assert "budget" in limited["limited_by"] and limited["budget"] == 100.0


def test_stabilisation_note_is_structured():
    cfg = PlannerConfig(scale_down_stabilization_seconds=300)
    plan, state = decide(None, PlannerInputs(POOLS, {"gb300": 2, "h200": 0}, demand_tokens_per_second=55_000,
                                             config=cfg), 0.0)
    cur = dict(plan.replicas)
    plan, _ = decide(state, PlannerInputs(POOLS, cur, demand_tokens_per_second=30_000, config=cfg), 60.0)
    note = next(r for r in plan.pools[1].why if r.code == "note")
    assert note["optimum"] == 0 and note["note"].code in ("down.window", "down.hysteresis")
    assert note["note"]["optimum"] == 0
    assert explain.render(note) in plan.pools[1].reason


def test_capacity_reason_is_structured():
    est = CapacityEstimator()
    cs = est.initial(GB300)
    obs = PoolObservation(ready_replicas=1, tokens_per_second=20_000, requests_waiting=5.0)
    cs = est.observe(cs, obs, Objectives(), 0.0)
    cs = est.observe(cs, obs, Objectives(), 100.0)
    assert [r.code for r in cs.why] == ["cap.saturated", "cap.update"]
    assert cs.why[0]["delivered"] == 20_000 and cs.why[1]["new"] == cs.estimate
    assert cs.reason == explain.render_capacity(cs.why)


def test_unknown_code_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown planner reason code 'nope'"):
        explain.render(Reason.of("nope"))


def test_per_mtok_is_cost_py_formula():
    assert GB300.dollars_per_million_tokens_at_capacity == cost.cost_per_million_tokens(10.6, 24_000.0)
    assert PoolProfile("z", "x", price_per_replica_hour=1.0, capacity=0.0).dollars_per_million_tokens_at_capacity is None
