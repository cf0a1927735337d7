"""Unit tests of the planner (tokenfactory.planner): solver, estimators, stabilization, reasons."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from tokenfactory.planner import (
    CapacityEstimator,
    CapacityState,
    DemandEstimator,
    DemandState,
    Objectives,
    Observations,
    PlannerConfig,
    PlannerInputs,
    PlannerState,
    PoolObservation,
    PoolProfile,
    decide,
    plan_for_demand,
    solve,
)

# The two-pool reference: gb300 replica = 4 GPUs x 6000 tok/s at 4 x $2.65; h200 replica = 8 x 90 at 8 x $1.41
GB300 = PoolProfile("gb300", "gb300", price_per_replica_hour=4 * 2.65, capacity=4 * 6000.0, min_replicas=0,
                    max_replicas=2, startup_seconds=300, kilowatts_per_replica=4 * 2.143, gpus_per_replica=4)
H200 = PoolProfile("h200", "h200", price_per_replica_hour=8 * 1.41, capacity=8 * 90.0, min_replicas=0,
                   max_replicas=24, startup_seconds=300, kilowatts_per_replica=8 * 1.667, gpus_per_replica=8)
POOLS = (GB300, H200)


def toy_observation(pools, replicas, demand, true_capacity, backlog_requests=0.0):
    """A crude fleet: demand spread over ready replicas by capacity; saturated pools build a queue."""
    total_cap = sum(replicas[p.name] * true_capacity[p.name] for p in pools)
    out = {}
    for p in pools:
        n = replicas[p.name]
        if n <= 0:
            continue
        cap = n * true_capacity[p.name]
        share = demand * cap / total_cap if total_cap > 0 else 0.0
        delivered = min(share, cap)
        waiting = (share - delivered) / 100.0 + backlog_requests * cap / total_cap
        out[p.name] = PoolObservation(ready_replicas=n, tokens_per_second=delivered, requests_waiting=waiting,
                                      kv_cache_usage=min(1.0, 0.9 * share / cap))  # vLLM-like: ~90% KV at capacity
    return out


# ------------------------------------------------------------------------------------- the reference


def test_reference_profile_figures():
    assert GB300.capacity == 24_000 and GB300.price_per_replica_hour == pytest.approx(10.60)
    assert H200.capacity == 720 and H200.price_per_replica_hour == pytest.approx(11.28)
    assert GB300.dollars_per_million_tokens_at_capacity == pytest.approx(0.1227, abs=1e-4)
    assert H200.dollars_per_million_tokens_at_capacity == pytest.approx(4.352, abs=1e-3)


def test_reference_gb300_covers_31200():
    plan = plan_for_demand(POOLS, 31_200, headroom=0.2, current={"gb300": 1, "h200": 0})
    assert plan.replicas == {"gb300": 2, "h200": 0}
    assert plan.required_tokens_per_second == pytest.approx(37_440)
    assert plan.capacity_tokens_per_second == 48_000
    assert plan.dollars_per_hour == pytest.approx(21.20)
    assert plan.dollars_per_million_tokens == pytest.approx(21.20 / (31_200 * 3600) * 1e6)
    assert plan.demand_met and plan.headroom_met and not plan.limited
    gb = plan.pools[0]
    assert gb.reason.startswith("gb300: 1 -> 2: demand 31,200 tok/s forecast x1.2 headroom needs 37,440 tok/s")
    assert "gb300 is cheapest per token ($0.12/Mtok at capacity)" in gb.reason
    assert "h200 covers 0" in gb.reason
    assert plan.pools[1].reason.startswith("h200: stays at 0")
    assert "$21.20/h" in plan.summary


def test_reference_overflow_onto_h200_above_48000():
    # 50,000 x 1.2 = 60,000; gb300 gives 2 x 24,000 = 48,000 at its maxReplicas; h200 covers 12,000 -> 17 replicas
    plan = plan_for_demand(POOLS, 50_000, headroom=0.2)
    assert plan.replicas == {"gb300": 2, "h200": 17}
    assert plan.capacity_tokens_per_second == 48_000 + 17 * 720
    assert plan.dollars_per_hour == pytest.approx(2 * 10.60 + 17 * 11.28)
    h = plan.pools[1]
    assert h.reason.startswith("h200: 0 -> 17")
    assert "gb300 at maxReplicas 2 = 48,000 tok/s" in h.reason
    assert "17 x 720 = 12,240 tok/s" in h.reason
    # just below the boundary nothing overflows
    assert plan_for_demand(POOLS, 40_000, headroom=0.2).replicas == {"gb300": 2, "h200": 0}


def test_reference_beyond_all_capacity_serves_the_most_that_fits():
    plan = plan_for_demand(POOLS, 100_000, headroom=0.2)
    assert plan.replicas == {"gb300": 2, "h200": 24}
    assert plan.limited and not plan.demand_met
    assert "maxReplicas" in plan.limited_by
    assert "serving the most that fits" in plan.summary
    assert "34,720 tok/s of demand unserved" in plan.summary


def test_budget_limits_and_says_so():
    obj = Objectives(max_dollars_per_hour=100.0)
    plan = plan_for_demand(POOLS, 60_000, headroom=0.2, objectives=obj)
    # after 2 gb300 ($21.20) the budget buys floor(78.80 / 11.28) = 6 h200
    assert plan.replicas == {"gb300": 2, "h200": 6}
    assert plan.dollars_per_hour <= 100.0
    assert plan.limited and "budget" in plan.limited_by
    assert "within maxReplicas and the $100.00/h budget: serving the most that fits" in plan.summary


def test_power_cap_limits():
    # 2 gb300 = 17.144 kW; each h200 13.336 kW; cap 0.1 MW leaves room for 6 h200
    obj = Objectives(max_megawatts=0.1)
    plan = plan_for_demand(POOLS, 60_000, headroom=0.2, objectives=obj)
    assert plan.replicas == {"gb300": 2, "h200": 6}
    assert plan.megawatts <= 0.1
    assert "power" in plan.limited_by and "0.1 MW power cap" in plan.summary


def test_minimums_over_budget_keep_minimums_and_flag():
    pools = (replace(GB300, min_replicas=2), replace(H200, min_replicas=5))
    sol = solve(pools, 1000.0, max_dollars_per_hour=30.0)
    assert not sol.within_limits
    assert sol.replicas == {"gb300": 2, "h200": 5}
    assert "minReplicas" in sol.limited_by and "budget" in sol.limited_by
    plan = plan_for_demand(pools, 1000.0, objectives=Objectives(max_dollars_per_hour=30.0))
    assert "minReplicas alone" in plan.summary


def test_zero_demand_goes_to_minimums():
    pools = (replace(GB300, min_replicas=1), H200)
    plan = plan_for_demand(pools, 0.0, current={"gb300": 2, "h200": 3})
    assert plan.replicas == {"gb300": 1, "h200": 0}
    assert plan.dollars_per_million_tokens is None


def test_cost_objective_flagged():
    plan = plan_for_demand(POOLS, 1_000, objectives=Objectives(max_dollars_per_million_tokens=1.0))
    # one gb300 ($10.60/h) serving 1,000 tok/s: $2.94/Mtok
    assert plan.within_cost_objective is False
    assert "over the $1.00/Mtok objective" in plan.summary


# -------------------------------------------------------------------------------------------- solver


def test_solver_prefers_fewer_changes_then_fewer_gpus_on_ties():
    a = PoolProfile("a", "h200", 10.0, 1000.0, 0, 10, gpus_per_replica=8)
    b = PoolProfile("b", "h200", 10.0, 1000.0, 0, 10, gpus_per_replica=8)
    # 5 replicas at equal cost either way: keep the split that changes least
    assert solve((a, b), 5000, current={"a": 1, "b": 4}).replicas == {"a": 1, "b": 4}
    assert solve((a, b), 5000, current={"a": 5, "b": 0}).replicas == {"a": 5, "b": 0}
    # same price and capacity, fewer GPUs wins
    c = PoolProfile("c", "x", 10.0, 1000.0, 0, 10, gpus_per_replica=4)
    assert solve((a, c), 3000).replicas == {"a": 0, "c": 3}


def test_solver_is_deterministic():
    pools = tuple(PoolProfile(f"p{i}", "x", 10.0, 1000.0, 0, 20) for i in range(4))
    first = solve(pools, 33_000, current={"p1": 7})
    for _ in range(3):
        assert solve(pools, 33_000, current={"p1": 7}) == first


def test_solver_replicas_keep_input_order():
    sol = solve((H200, GB300), 30_000)
    assert list(sol.replicas) == ["h200", "gb300"]


def test_solver_prefers_integer_optimum_over_greedy():
    # greedy by $/token takes 'big' (cheaper per token) but one small replica covers the remainder cheaper
    big = PoolProfile("big", "x", 100.0, 10_000.0, 0, 10)
    small = PoolProfile("small", "x", 12.0, 1_000.0, 0, 10)
    sol = solve((big, small), 10_500)
    assert sol.replicas == {"big": 1, "small": 1}
    assert sol.dollars_per_hour == pytest.approx(112.0)


def test_solver_exact_two_pools_24_18():  # its speed: bench/solver_speed.py
    a = replace(H200, max_replicas=24)
    b = PoolProfile("b200", "b200", 8 * 2.0, 8 * 1500.0, 0, 18, kilowatts_per_replica=8 * 1.2, gpus_per_replica=8)
    for demand in range(0, 240_001, 7_500):
        for budget in (None, 150.0, 400.0):
            for power in (None, 0.15):
                sol = solve((a, b), demand, max_dollars_per_hour=budget, max_megawatts=power,
                                               current={"h200": 3, "b200": 2})
                assert sol.exact


def test_solver_exact_five_pools_50_each():  # its speed: bench/solver_speed.py
    pools = (
        PoolProfile("gb300", "gb300", 10.60, 24_000, 0, 50, kilowatts_per_replica=8.572, gpus_per_replica=4),
        PoolProfile("h200", "h200", 11.28, 720, 0, 50, kilowatts_per_replica=13.336, gpus_per_replica=8),
        PoolProfile("b200", "b200", 16.0, 12_000, 0, 50, kilowatts_per_replica=9.6, gpus_per_replica=8),
        PoolProfile("h100", "h100", 8.0, 400, 0, 50, kilowatts_per_replica=10.0, gpus_per_replica=8),
        PoolProfile("mi300", "mi300", 12.0, 2_000, 0, 50, kilowatts_per_replica=12.0, gpus_per_replica=8),
    )
    for demand in (1_000, 50_000, 300_000, 900_000, 1_300_000, 2_000_000):
        for budget in (None, 500.0, 1500.0):
            for power in (None, 0.5, 1.5):
                sol = solve(pools, demand, max_dollars_per_hour=budget, max_megawatts=power,
                                               current={"h200": 10, "mi300": 5})
                assert sol.exact


def test_solver_near_tied_five_pools_stays_exact():  # its speed: bench/solver_speed.py
    rng = random.Random(7)
    for _ in range(5):
        pools = tuple(PoolProfile(f"p{i}", "x", rng.uniform(9, 11), rng.uniform(900, 1100), 0, 50,
                                  kilowatts_per_replica=rng.uniform(1, 10), gpus_per_replica=8) for i in range(5))
        cur = {p.name: rng.randint(0, 50) for p in pools}
        for demand in (10_000, 70_000, 150_000, 240_000):
            for budget, power in ((None, None), (1500.0, None), (None, 0.8), (800.0, 0.3)):
                sol = solve(pools, demand, current=cur, max_dollars_per_hour=budget,
                                               max_megawatts=power)
                assert sol.exact


def test_solver_identical_pools_symmetry():
    pools = tuple(PoolProfile(f"p{i}", "x", 10.0, 1000.0, 0, 50) for i in range(5))
    sol = solve(pools, 150_000, current={"p0": 3, "p3": 40})
    assert sol.capacity_tokens_per_second == 150_000
    assert sol.changes == 150 - 43 + 0  # only additions; nothing removed


# ------------------------------------------------------------------------------------------ decide()


def inputs(current, demand=None, obs=None, **kw):
    return PlannerInputs(pools=POOLS, current=current, observations=obs, demand_tokens_per_second=demand, **kw)


def test_decide_holds_when_metrics_unavailable():
    state = PlannerState()
    plan, new_state = decide(state, inputs({"gb300": 2, "h200": 5}, metrics_unavailable_reason="Timeout: 5s"), 100.0)
    assert plan.holding
    assert plan.replicas == {"gb300": 2, "h200": 5}
    assert plan.summary == "holding: metrics unavailable (Timeout: 5s)"
    assert all("holding: metrics unavailable (Timeout: 5s)" in p.reason for p in plan.pools)
    assert new_state is state


def test_decide_holds_on_stale_metrics():
    obs = Observations(pools={"gb300": PoolObservation(1, 10_000)}, observed_at=0.0)
    plan, _ = decide(None, inputs({"gb300": 1, "h200": 0}, obs=obs), 1000.0)
    assert plan.holding and "stale" in plan.summary and plan.replicas == {"gb300": 1, "h200": 0}


def test_decide_hold_still_respects_bounds_and_budget():
    cur = {"gb300": 5, "h200": 10}  # gb300 above its maxReplicas 2
    plan, _ = decide(None, inputs(cur, objectives=Objectives(max_dollars_per_hour=60.0)), 0.0)
    assert plan.replicas["gb300"] == 2
    assert plan.dollars_per_hour <= 60.0
    assert plan.replicas["h200"] == 3  # (60 - 21.20) / 11.28 -> 3, the costlier per token pool trimmed


def test_decide_scales_up_at_once_and_down_after_stabilization():
    cfg = PlannerConfig(scale_down_stabilization_seconds=300)
    cur = {"gb300": 2, "h200": 0}
    state = None
    plan, state = decide(state, inputs(cur, demand=55_000, config=cfg), 0.0)
    assert plan.replicas["h200"] == min(24, math.ceil((66_000 - 48_000) / 720))  # 25 > maxReplicas
    cur = dict(plan.replicas)
    assert cur == {"gb300": 2, "h200": 24}
    # demand falls to 30,000: the optimum is h200=0, but the scale-down waits 300 s
    for t in (30, 60, 120, 240, 299):
        plan, state = decide(state, inputs(cur, demand=30_000, config=cfg), float(t))
        assert plan.replicas == cur, t
        assert plan.pools[1].optimal == 0
        assert "waits" in plan.pools[1].reason and "300s stabilization window" in plan.pools[1].reason or "scale-down tolerance" in plan.pools[1].reason
    # once the last high recommendation has left the window: at most 50% per interval
    plan, state = decide(state, inputs(cur, demand=30_000, config=cfg), 300.0)
    assert plan.replicas["h200"] == 12
    assert "limited to 12 replica(s) per interval" in plan.pools[1].reason
    cur = dict(plan.replicas)
    plan, state = decide(state, inputs(cur, demand=30_000, config=cfg), 330.0)
    assert plan.replicas["h200"] == 6
    cur = dict(plan.replicas)
    seen = []
    for t in (360, 390, 420, 450):  # 6 -> 3 -> 2 -> 1 -> 0: max(1, floor(50%)) per interval
        plan, state = decide(state, inputs(cur, demand=30_000, config=cfg), float(t))
        cur = dict(plan.replicas)
        seen.append(cur["h200"])
    assert seen == [3, 2, 1, 0]


def test_decide_scale_down_uses_window_max():
    cfg = PlannerConfig(scale_down_stabilization_seconds=100, max_scale_down_fraction=1.0, scale_down_tolerance=0.0)
    cur = {"gb300": 2, "h200": 20}
    state = None
    # recommendations 20 (t=0), 10 (t=50), 5 (t=90): at t=90 the window max is 20 -> hold
    plan, state = decide(state, inputs(cur, demand=(48_000 + 20 * 720) / 1.2), 0.0)
    assert plan.replicas["h200"] == 20
    plan, state = decide(state, inputs(cur, demand=(48_000 + 10 * 720) / 1.2, config=cfg), 50.0)
    assert plan.replicas["h200"] == 20
    plan, state = decide(state, inputs(cur, demand=(48_000 + 5 * 720) / 1.2, config=cfg), 90.0)
    assert plan.replicas["h200"] == 20
    # t=120: the 20 left the window; the highest left is 10 (t=50)
    plan, state = decide(state, inputs(cur, demand=(48_000 + 5 * 720) / 1.2, config=cfg), 120.0)
    assert plan.replicas["h200"] == 10
    plan, state = decide(state, inputs({"gb300": 2, "h200": 10}, demand=(48_000 + 5 * 720) / 1.2, config=cfg), 160.0)
    assert plan.replicas["h200"] == 5


def test_decide_scale_down_hysteresis_follows_measured_noise():
    cfg = PlannerConfig(scale_down_stabilization_seconds=60, scale_down_tolerance=0.05)
    # 41,000 x 1.2 = 49,200 -> 2 gb300 (48,000) + 2 h200
    plan, state = decide(None, inputs({"gb300": 2, "h200": 0}, demand=41_000, config=cfg), 0.0)
    assert plan.replicas == {"gb300": 2, "h200": 2}
    # demand jitters 3% (41,000 / 39,800): the optimum at 39,800 is 0 h200, but the measured noise
    # (band capped at 5%) says 2 would be needed again: hold
    cur = dict(plan.replicas)
    for i, t in enumerate(range(30, 600, 30)):
        d = 39_800 if i % 2 == 0 else 41_000
        plan, state = decide(state, inputs(cur, demand=d, config=cfg), float(t))
        assert plan.replicas == cur, t
    plan, state = decide(state, inputs(cur, demand=39_800, config=cfg), 600.0)
    assert plan.replicas == cur
    assert "would be needed at 5.0% more demand (scale-down hysteresis: " in plan.pools[1].reason
    assert "capped at 5%" in plan.pools[1].reason
    # demand settles at 39,800 with no noise: the band shrinks with the noise and h200 is released
    # once the window has forgotten the jitter (no share-of-demand margin held for good)
    for t in range(630, 1500, 30):
        plan, state = decide(state, inputs(cur, demand=39_800, config=cfg), float(t))
        cur = dict(plan.replicas)
    assert cur == {"gb300": 2, "h200": 0}


def test_decide_smooth_plateau_holds_no_extra_marginal_replicas():
    # 58,000 tok/s flat (no headroom): the optimum is 2 gb300 + 14 h200. A fixed 10% tolerance held
    # the optimum for 63,800 (22 h200) for as long as the plateau lasted; the measured-noise band is
    # ~0 on smooth demand, so the extra h200 go after the stabilization window
    cfg = PlannerConfig(scale_down_stabilization_seconds=300)
    cur = {"gb300": 2, "h200": 24}
    state = None
    for t in range(0, 1800, 30):
        plan, state = decide(state, PlannerInputs(pools=POOLS, current=cur, demand_tokens_per_second=58_000,
                                                  headroom=0.0, config=cfg), float(t))
        cur = dict(plan.replicas)
    assert cur == {"gb300": 2, "h200": 14}


def test_decide_delayed_scale_down_never_breaks_budget():
    # gb300 is unavailable (maxReplicas 0): h200 carries 10,000 x 1.2 -> 17 replicas. Then gb300 opens
    # up: the optimum moves to 1 gb300, but holding h200 at 17 through the stabilization window with
    # the new gb300 would cost 17 x 11.28 + 10.60 = $202.36 > $200, so h200 steps down early.
    obj = Objectives(max_dollars_per_hour=200.0)
    pools0 = (replace(GB300, max_replicas=0), H200)
    plan, state = decide(None, PlannerInputs(pools=pools0, current={"gb300": 0, "h200": 0},
                                             demand_tokens_per_second=10_000, objectives=obj), 0.0)
    assert plan.replicas == {"gb300": 0, "h200": 17}
    plan, state = decide(state, PlannerInputs(pools=POOLS, current=plan.replicas,
                                              demand_tokens_per_second=10_000, objectives=obj), 30.0)
    assert plan.replicas == {"gb300": 1, "h200": 16}
    assert plan.dollars_per_hour <= 200.0
    assert "released early to stay within the $200.00/h budget" in plan.pools[1].reason


def test_decide_with_observations_estimates_demand_with_backlog():
    # saturated: 1 gb300 delivers its 24,000 tok/s with 30 requests waiting, no spare capacity: the
    # backlog is 30 x 500 (the measured tokens per request) drained over 60 s = 250 tok/s
    obs = Observations(pools={"gb300": PoolObservation(1, 24_000, requests_waiting=30)}, observed_at=0.0,
                       tokens_per_request=500.0)
    plan, state = decide(None, inputs({"gb300": 1, "h200": 0}, obs=obs), 0.0)
    assert plan.demand_tokens_per_second == pytest.approx(24_250)
    assert "observed 24,000 + backlog 250 (30 waiting x 500 tok/request, the rest over 60s)" in plan.summary
    assert state.demand.level == pytest.approx(24_250)
    assert state.demand.tokens_per_request == 500.0


def test_decide_backlog_drained_before_startup_buys_nothing():
    # 1 gb300 delivers 20,000 of its 24,000 tok/s: the 4,000 tok/s spare drains 1.2M tokens in the
    # 300 s a new replica needs to start; 1,000 waiting x 500 = 500,000 queued tokens drain before
    # then, so the backlog adds nothing (it used to add 1,000 x 1,000 / 60 = 16,667 tok/s)
    obs = Observations(pools={"gb300": PoolObservation(1, 20_000, requests_waiting=1_000)}, observed_at=0.0,
                       tokens_per_request=500.0)
    plan, state = decide(None, inputs({"gb300": 1, "h200": 0}, obs=obs), 0.0)
    assert plan.demand_tokens_per_second == pytest.approx(20_000)
    assert state.demand.backlog == 0.0 and state.demand.drained_tokens == pytest.approx(500_000)
    assert "backlog 0 (1,000 waiting x 500 tok/request, 500,000 tok of it drained by 4,000 tok/s" in plan.summary
    # 3,000 waiting = 1.5M tokens: 1.2M drain before start-up, the other 300,000 over 60 s = 5,000 tok/s
    obs = replace(obs, pools={"gb300": PoolObservation(1, 20_000, requests_waiting=3_000)})
    plan, state = decide(None, inputs({"gb300": 1, "h200": 0}, obs=obs), 0.0)
    assert state.demand.backlog == pytest.approx(5_000)
    assert plan.demand_tokens_per_second == pytest.approx(25_000)
    # without a measured figure the estimator's default (1,000 tokens per request) is used
    est = DemandEstimator()
    assert est.raw(Observations(pools={"a": PoolObservation(1, 0.0, requests_waiting=6)}))[1] == pytest.approx(100.0)
    assert est.raw(Observations(pools={"a": PoolObservation(1, 0.0, requests_waiting=6)}, tokens_per_request=500.0),
                   spare_tokens_per_second=5.0, startup_seconds=300)[1] == pytest.approx(1_500 / 60)


def test_decide_forecast_anticipates_a_ramp():
    state = None
    cur = {"gb300": 2, "h200": 0}
    dem = DemandEstimator()
    for i in range(20):
        d = 10_000 + 1_000 * i  # +1,000 tok/s every 30 s
        obs = Observations(pools={"gb300": PoolObservation(2, d)}, observed_at=30.0 * i)
        plan, state = decide(state, inputs(cur, obs=obs), 30.0 * i)
    # the smoothed level lags a little, the damped trend over the 300 s start-up leads
    assert state.demand.trend == pytest.approx(1000 / 30, rel=0.15)
    assert plan.demand_tokens_per_second > 29_000 + 3_000
    # with no horizon the smoothed level alone would lag the ramp; the forecast never plans below what is observed
    assert state.demand.level < 29_000
    assert dem.forecast(state.demand, 0) == pytest.approx(29_000)


def test_decide_does_not_project_falling_demand():
    est = DemandEstimator()
    st = DemandState()
    for i in range(10):
        st = est.observe(st, Observations(pools={"a": PoolObservation(1, 50_000 - 3_000 * i)}), 30.0 * i)
    assert st.trend < 0
    assert est.forecast(st, 300) == pytest.approx(st.level)


def test_decide_reasons_mention_learned_capacity():
    true_cap = {"gb300": 12_000.0, "h200": 720.0}
    cur = {"gb300": 2, "h200": 0}
    state = None
    for i in range(12):
        obs = Observations(pools=toy_observation(POOLS, cur, 30_000, true_cap), observed_at=30.0 * i)
        plan, state = decide(state, inputs(cur, obs=obs), 30.0 * i)
        cur = dict(plan.replicas)
    gb = plan.pools[0]
    assert gb.capacity_per_replica == pytest.approx(12_000, rel=0.1)
    assert "learned capacity" in gb.reason and "vs profile 24,000" in gb.reason
    # 30,000 x 1.2 = 36,000 > 2 x 12,000: overflow onto h200
    assert cur["h200"] > 0


def test_plan_reasons_property_lists_summary_then_pools():
    plan = plan_for_demand(POOLS, 31_200, current={"gb300": 1})
    assert plan.reasons[0] == plan.summary
    assert [r.split(":")[0] for r in plan.reasons[1:]] == ["gb300", "h200"]
    assert [p.name for p in plan.changes] == ["gb300"]


def test_pool_profile_validation():
    with pytest.raises(ValueError):
        PoolProfile("x", "x", 1.0, 1.0, min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError):
        PoolProfile("x", "x", -1.0, 1.0)


def test_from_resolved_pool_and_objectives_spec():
    api = pytest.importorskip("tokenfactory.api")
    spec_pool = api.PoolSpec(name="gb300", gpu_type="gb300", gpus_per_replica=4, min_replicas=0, max_replicas=2)
    prof = PoolProfile.from_resolved(api.resolve_pool(spec_pool))
    assert prof.capacity == 24_000 and prof.price_per_replica_hour == pytest.approx(10.60)
    assert prof.kilowatts_per_replica == pytest.approx(4 * 2.143) and prof.startup_seconds == 300
    obj = Objectives.from_spec(api.ObjectivesSpec(max_dollars_per_hour=50, max_cost_per_million_tokens=1.0))
    assert obj.max_dollars_per_hour == 50 and obj.max_dollars_per_million_tokens == 1.0


def test_observations_from_factory_metrics():
    ms = pytest.importorskip("tokenfactory.metrics_source")
    fm = ms.FactoryMetrics(namespace="ns", factory="f", window_seconds=120, sampled_at=42.0, pools={
        "gb300": ms.PoolMetrics(pool="gb300", prompt_tokens_per_second=100.0, generation_tokens_per_second=900.0,
                                requests_waiting=3, kv_cache_usage=0.5, engines_reporting=2, itl_p95_seconds=math.inf),
    })
    obs = Observations.from_factory_metrics(fm)
    assert obs.observed_at == 42.0
    assert obs.pools["gb300"].tokens_per_second == 900.0 and obs.pools["gb300"].ready_replicas == 2
    total = Observations.from_factory_metrics(fm, ready_replicas={"gb300": 3}, token_accounting="total")
    assert total.pools["gb300"].tokens_per_second == 1000.0 and total.pools["gb300"].ready_replicas == 3


# ------------------------------------------------------------------------------------ capacity learning


def run_estimator(profile, true_capacity, kind, steps, objectives=Objectives(itl_p95_seconds=0.05)):
    est = CapacityEstimator()
    pool = PoolProfile("p", "x", 10.0, profile, 0, 10)
    st = est.initial(pool)
    history = [st.estimate]
    for i in range(steps):
        if kind == "saturated":  # queue building, delivering the true capacity
            obs = PoolObservation(4, 4 * true_capacity, requests_waiting=40, itl_p95_seconds=0.04, kv_cache_usage=0.95)
        elif kind == "utilization":  # healthy at 40% of true capacity, KV usage tracks load
            obs = PoolObservation(4, 4 * 0.4 * true_capacity, kv_cache_usage=0.9 * 0.4, itl_p95_seconds=0.03)
        else:
            raise AssertionError(kind)
        st = est.observe(st, obs, objectives, 30.0 * i)
        history.append(st.estimate)
    return st, history


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_capacity_converges_from_wrong_profile_at_saturation(factor):
    st, hist = run_estimator(24_000, 24_000 * factor, "saturated", 9)  # 2 settle + ~6 informative
    assert st.estimate == pytest.approx(24_000 * factor, rel=0.06), hist
    assert "saturated" in st.reason


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_capacity_converges_from_wrong_profile_by_kv_extrapolation(factor):
    st, hist = run_estimator(24_000, 24_000 * factor, "utilization", 9)
    assert st.estimate == pytest.approx(24_000 * factor, rel=0.06), hist


def test_capacity_single_outlier_does_not_move_estimate():
    est = CapacityEstimator()
    st = est.initial(replace(GB300))
    bad = PoolObservation(2, 2 * 100.0, requests_waiting=50)  # one glitchy saturated sample
    st2 = est.observe(st, bad, Objectives(), 0.0)
    assert st2.estimate == st.estimate
    # amid good samples a single outlier is ignored by the median
    good = PoolObservation(2, 2 * 24_000.0, requests_waiting=50)
    for i in range(1, 6):
        st2 = est.observe(st2, good, Objectives(), 30.0 * i)
    before = st2.estimate
    st3 = est.observe(st2, bad, Objectives(), 200.0)
    assert st3.estimate == pytest.approx(before, rel=1e-9)


def test_capacity_bounded_step_and_range():
    est = CapacityEstimator()
    st = est.initial(GB300)
    low = PoolObservation(2, 2 * 10.0, requests_waiting=50)
    prev = st.estimate
    for i in range(40):
        st = est.observe(st, low, Objectives(), 30.0 * i)
        assert st.estimate >= prev / est.config.max_step - 1e-9
        prev = st.estimate
    assert st.estimate == pytest.approx(24_000 * est.config.min_factor)


def test_capacity_latency_bounded():
    est = CapacityEstimator()
    st = est.initial(GB300)
    # no queue, KV at 50%, but ITL p95 is twice the objective: capacity is effectively lower than delivered
    obs = PoolObservation(2, 2 * 16_000.0, itl_p95_seconds=0.1, kv_cache_usage=0.5)
    for i in range(8):
        st = est.observe(st, obs, Objectives(itl_p95_seconds=0.05), 30.0 * i)
    assert st.estimate == pytest.approx(8_000, rel=0.06)
    assert "latency over objective" in st.reason


def test_capacity_light_load_is_a_lower_bound_only():
    est = CapacityEstimator()
    st = est.initial(GB300)
    for i in range(10):
        st = est.observe(st, PoolObservation(2, 2 * 5_000.0), Objectives(), 30.0 * i)
    assert st.estimate == 24_000  # light and healthy: says nothing against the profile
    for i in range(10, 20):
        st = est.observe(st, PoolObservation(2, 2 * 30_000.0), Objectives(), 30.0 * i)
    assert st.estimate == pytest.approx(30_000, rel=0.02)  # healthy at 30,000: capacity at least that


def test_capacity_ignores_pools_without_ready_replicas():
    est = CapacityEstimator()
    st = est.initial(GB300)
    assert est.observe(st, None, Objectives(), 0.0).estimate == 24_000
    assert est.observe(st, PoolObservation(0, 0.0, requests_waiting=5), Objectives(), 0.0).estimate == 24_000


def test_capacity_state_resets_when_profile_changes():
    state = PlannerState(capacity=(CapacityState(pool="gb300", profile=1.0, estimate=2.0),))
    obs = Observations(pools={}, observed_at=0.0)
    plan, new = decide(state, inputs({"gb300": 1, "h200": 0}, obs=obs), 0.0)
    assert new.capacity_of("gb300").estimate == 24_000


def test_capacity_latency_at_light_load_is_not_a_capacity_limit():
    est = CapacityEstimator()
    st = est.initial(GB300)
    obs = PoolObservation(2, 2 * 1_000.0, ttft_p95_seconds=math.inf, kv_cache_usage=0.05)
    for i in range(10):
        st = est.observe(st, obs, Objectives(ttft_p95_seconds=1.0), 30.0 * i)
    assert st.estimate == 24_000
    assert "not a capacity limit" in st.reason


def test_decide_holds_on_non_finite_metrics():
    obs = Observations(pools={"gb300": PoolObservation(1, math.nan)}, observed_at=0.0)
    plan, state = decide(None, inputs({"gb300": 1, "h200": 0}, obs=obs), 0.0)
    assert plan.holding and "non-finite" in plan.summary
    plan, _ = decide(None, inputs({"gb300": 1, "h200": 0}, demand=math.inf), 0.0)
    assert plan.holding


def test_capacity_waits_for_rates_to_settle_after_replica_changes():
    est = CapacityEstimator()
    st = est.initial(GB300)
    # a window rate that still counts a removed replica: 3 replicas' worth over 2 ready ones
    st = est.observe(st, PoolObservation(3, 3 * 20_000.0), Objectives(), 0.0)
    st = est.observe(st, PoolObservation(2, 3 * 20_000.0), Objectives(), 30.0)
    st = est.observe(st, PoolObservation(2, 3 * 20_000.0), Objectives(), 60.0)
    assert st.estimate == 24_000 and "settle" in st.reason


def _burst_obs(t, saturated, ready=1):
    if saturated:  # ready gb300 delivering all it can, 1,000 requests queued (500 tok each): no spare
        pools = {"gb300": PoolObservation(ready, 24_000.0 * ready, requests_waiting=1_000.0)}
    else:
        pools = {"gb300": PoolObservation(ready, 6_000.0)}
    return Observations(pools=pools, observed_at=t, tokens_per_request=500.0)


def _run_bursts(state, t, bursts, burst_seconds=120, calm_seconds=900):
    """Bursts of saturation; the cluster never adds replicas (ready stays 1)."""
    cur = {"gb300": 1, "h200": 0}
    plans = []
    for b in range(bursts):
        for k in range(0, burst_seconds, 30):
            plan, state = decide(state, inputs(cur, obs=_burst_obs(t, True)), float(t))
            plans.append((t, True, plan))
            t += 30
        for k in range(0, calm_seconds, 30):
            plan, state = decide(state, inputs(cur, obs=_burst_obs(t, False)), float(t))
            plans.append((t, False, plan))
            t += 30
    return state, t, plans


def test_decide_short_bursts_do_not_buy_replicas_that_arrive_after_them():
    state, t, plans = _run_bursts(None, 0, 2)
    # the first two bursts order capacity at once (nothing known yet)
    first = [p for _, sat, p in plans if sat][0]
    assert first.replicas["h200"] > 0 or first.replicas["gb300"] > 1
    assert [e[1] for e in state.excursions] == [120.0, 120.0]
    # both were over within 120 s < the 300 s start-up: the third burst's scale-up waits 120 s
    state, t, plans = _run_bursts(state, t, 1, burst_seconds=240)
    sat = [(tt, p) for tt, s, p in plans if s]
    t0 = sat[0][0]
    for tt, p in sat:
        if tt - t0 < 120:
            assert p.replicas == {"gb300": 1, "h200": 0}, (tt - t0, p.replicas)
            reason = " ".join(p.reasons)
            assert "scale-up waits: queue for" in reason and "were over within 120s (<= the 300s start-up)" in reason
        else:  # it lasted as long as the longest remembered: order now
            assert p.replicas != {"gb300": 1, "h200": 0}


def test_decide_excursion_longer_than_startup_turns_the_wait_off():
    state, t, _ = _run_bursts(None, 0, 2)
    # a third excursion outlasts the 300 s start-up (waiting 120 s, then scaling up helped)
    state, t, _ = _run_bursts(state, t, 1, burst_seconds=360)
    assert state.excursions[-1][1] == 360.0
    state, t, plans = _run_bursts(state, t, 1)
    first = [p for _, sat, p in plans if sat][0]
    assert first.replicas != {"gb300": 1, "h200": 0}
    assert "scale-up waits" not in " ".join(first.reasons)


def test_demand_does_not_count_queue_drain_as_new_demand():
    est = DemandEstimator()
    st = est.observe(DemandState(), Observations(pools={"a": PoolObservation(1, 24_000, requests_waiting=1_000)},
                                                 tokens_per_request=500.0), 0.0, spare_tokens_per_second=0.0,
                     startup_seconds=300)
    # 30 s later the queue has shrunk by 600 requests (300,000 tokens): 10,000 of the 24,000 tok/s
    # delivered served the queue, not new arrivals
    st = est.observe(st, Observations(pools={"a": PoolObservation(1, 24_000, requests_waiting=400)},
                                      tokens_per_request=500.0), 30.0, spare_tokens_per_second=0.0, startup_seconds=300)
    assert st.observed == pytest.approx(14_000)
