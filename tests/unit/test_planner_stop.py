"""The solver's time budget: a caller's ``stop`` ends the search with the best mix found so far."""

from __future__ import annotations

from tokenfactory.planner import Objectives, PlannerInputs, PoolProfile, decide, solve

# near-tied pools with many replicas: the exact search needs thousands of nodes
POOLS = tuple(PoolProfile(f"p{i}", "custom", price_per_replica_hour=10.0 + 0.01 * i, capacity=1000.0 + 7 * i,
                          max_replicas=60, kilowatts_per_replica=5.0 + 0.1 * i) for i in range(8))


def test_stop_ends_the_search_with_a_covering_mix_and_says_it_is_not_proven():
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) >= 2

    full = solve(POOLS, 45_000.0, max_dollars_per_hour=480.0, max_megawatts=0.25)
    stopped = solve(POOLS, 45_000.0, max_dollars_per_hour=480.0, max_megawatts=0.8, stop=stop)
    assert full.nodes > 2 * 128 and not full.stopped  # without a stop it runs past where it was stopped
    assert stopped.stopped and not stopped.exact
    assert len(asked) == 2  # asked at the first node and at node 129, then never again
    assert stopped.dollars_per_hour <= 480.0 and stopped.kilowatts <= 250.0
    assert stopped.capacity_tokens_per_second > 0


def test_a_stop_that_never_fires_changes_nothing():
    a = solve(POOLS, 45_000.0, max_dollars_per_hour=480.0, max_megawatts=0.25)
    b = solve(POOLS, 45_000.0, max_dollars_per_hour=480.0, max_megawatts=0.8, stop=lambda: False)
    assert (a.replicas, a.exact, a.nodes, b.stopped) == (b.replicas, b.exact, b.nodes, False)


def test_decide_passes_stop_and_the_summary_says_so():
    inputs = PlannerInputs(pools=POOLS, current={p.name: 0 for p in POOLS}, demand_tokens_per_second=36_000.0,
                           objectives=Objectives(max_dollars_per_hour=480.0, max_megawatts=0.25), headroom=0.2)
    plan, _ = decide(None, inputs, 0.0, stop=lambda: True)
    assert "time budget reached" in plan.summary and "best mix found so far" in plan.summary
    assert plan.summary_why[-1].code == "summary.stopped"
    small = PlannerInputs(pools=POOLS[:2], current={}, demand_tokens_per_second=3_000.0, headroom=0.2)
    calm, _ = decide(None, small, 0.0, stop=lambda: False)
    assert "time budget" not in calm.summary and calm.summary_why[-1].code != "summary.stopped"
