"""``tokenfactory plan`` and the pure what-if analysis behind it (tokenfactory.whatif)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfactory import cli, planner, whatif

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "deepseek-r1-h200-gb300.yaml"


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_parse_demand():
    assert whatif.parse_demand("40k, 60K,1.5M,2500") == [40_000, 60_000, 1_500_000, 2500]
    for bad in ("forty", "-5k", "1e400", ""):
        with pytest.raises(ValueError):
            whatif.parse_demand(bad)


def test_bad_demand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(["plan", str(EXAMPLE), "--demand", "40k,lots"])
    assert ei.value.code == 2 and "'lots' is not a demand" in capsys.readouterr().err


def test_invalid_file_exits_1(tmp_path, capsys):
    f = tmp_path / "tf.yaml"
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["pools"][0]["maxReplicas"] = 0
    f.write_text(yaml.safe_dump(doc))
    code, out, err = run(capsys, "plan", str(f), "--demand", "1k")
    assert code == 1 and out == "" and "spec.pools[0]: minReplicas (1) must be less than or equal to maxReplicas (0)" in err


def test_example_levels_json(capsys):
    # the example sets no headroom (SLO planning); --headroom 0.2 asks the what-if with a 20% floor
    code, out, err = run(capsys, "plan", str(EXAMPLE), "--demand", "40k,60k", "--headroom", "0.2", "-o", "json")
    assert code == 0, err
    data = json.loads(out)
    low, high = data["levels"]
    # 40k x 1.2 = 48k: both GB300 replicas (2 x 24,000) plus the H200 minimum
    assert low["replicas"] == {"gb300": 2, "h200": 1} and low["coversHeadroom"]
    assert low["dollarsPerHour"] == pytest.approx(2 * 4 * 2.65 + 8 * 1.41)
    assert low["costPerMillionTokens"] == pytest.approx(low["dollarsPerHour"] / (40_000 * 3600) * 1e6)
    assert low["tokensPerSecondPerGpu"] == pytest.approx(40_000 / 16)
    assert low["tokensPerSecondPerMegawatt"] == pytest.approx(40_000 / (low["megawatts"]))
    assert low["binding"] == ["demand", "h200 minReplicas 1"]
    nb = low["nextBest"]
    # the best mix without its second GB300: 24,000 + 24 x 720 = 41,280 tok/s (short of 48,000)
    assert nb["replicas"] == {"gb300": 1, "h200": 24} and nb["fewerOf"] == "gb300"
    assert nb["deltaDollarsPerHour"] == pytest.approx(nb["dollarsPerHour"] - low["dollarsPerHour"])
    assert nb["coversDemand"] and not nb["coversHeadroom"]
    # 60k x 1.2 = 72k exceeds 2 x 24,000 + 24 x 720 = 65,280: both maxReplicas bind, budget and power do not
    assert high["replicas"] == {"gb300": 2, "h200": 24} and not high["coversHeadroom"] and high["coversDemand"]
    assert high["binding"] == ["gb300 maxReplicas 2", "h200 maxReplicas 24"]


def test_text_output(capsys):
    code, out, _ = run(capsys, "plan", str(EXAMPLE), "--demand", "40k", "--headroom", "0.2")
    assert code == 0
    assert "mix         gb300=2, h200=1: 48,720 tok/s, covers demand x headroom" in out
    assert "$/hour      $32.48    $/Mtok $0.2256 at 40,000 tok/s" in out
    assert "next best   gb300=1, h200=24: 41,280 tok/s, $281.32/h (+$248.84/h)" in out


def _pools():
    return (
        planner.PoolProfile("a", "x", price_per_replica_hour=10.0, capacity=1000.0, min_replicas=0, max_replicas=8,
                            kilowatts_per_replica=5.0),
        planner.PoolProfile("b", "y", price_per_replica_hour=4.0, capacity=300.0, min_replicas=0, max_replicas=20,
                            kilowatts_per_replica=4.0),
    )


def test_budget_and_power_bind_only_when_relaxing_them_changes_the_mix():
    pools = _pools()
    free = whatif.what_if(pools, 5000, objectives=planner.Objectives(), headroom=0.0)
    assert free["binding"] == ["demand"] and free["replicas"] == {"a": 5, "b": 0}
    budget = whatif.what_if(pools, 5000, objectives=planner.Objectives(max_dollars_per_hour=30), headroom=0.0)
    assert "budget $30/h" in budget["binding"] and not budget["coversDemand"] and budget["dollarsPerHour"] <= 30
    power = whatif.what_if(pools, 5000, objectives=planner.Objectives(max_megawatts=0.02), headroom=0.0)
    assert power["binding"] == ["power cap 0.02 MW"] and power["megawatts"] <= 0.02
    slack = whatif.what_if(pools, 5000, objectives=planner.Objectives(max_dollars_per_hour=1000, max_megawatts=1),
                           headroom=0.0)
    assert slack["binding"] == ["demand"]


@settings(max_examples=60, deadline=None)
@given(
    prices=st.lists(st.integers(1, 30), min_size=2, max_size=3),
    caps=st.lists(st.integers(1, 20), min_size=3, max_size=3),
    mins=st.lists(st.integers(0, 1), min_size=3, max_size=3),
    spans=st.lists(st.integers(0, 4), min_size=3, max_size=3),
    demand=st.integers(0, 60),
    budget=st.one_of(st.none(), st.integers(5, 120)),
)
def test_next_best_is_the_cheapest_non_dominated_alternative(prices, caps, mins, spans, demand, budget):
    """Brute force over every mix: the next best is the optimum (shortfall, then $/h) among mixes within
    bounds and budget that have fewer replicas than the best in some pool."""
    pools = tuple(planner.PoolProfile(f"p{i}", "g", price_per_replica_hour=float(prices[i]), capacity=float(caps[i]),
                                      min_replicas=mins[i], max_replicas=mins[i] + spans[i])
                  for i in range(len(prices)))
    objectives = planner.Objectives(max_dollars_per_hour=budget)
    out = whatif.what_if(pools, float(demand), objectives=objectives, headroom=0.0)
    best = out["replicas"]

    def key(mix):
        cap = sum(p.capacity * n for p, n in zip(pools, mix))
        return (max(0.0, demand - cap), sum(p.price_per_replica_hour * n for p, n in zip(pools, mix)))

    ranges = [range(p.min_replicas, p.max_replicas + 1) for p in pools]
    feasible = [m for m in itertools.product(*ranges) if budget is None or key(m)[1] <= budget + 1e-9]
    if not feasible:
        return
    assert key(tuple(best[p.name] for p in pools)) == min(key(m) for m in feasible)
    alternatives = [m for m in feasible if any(n < best[p.name] for p, n in zip(pools, m))]
    if not alternatives:
        assert out["nextBest"] is None
        return
    nb = out["nextBest"]
    assert nb is not None
    assert key(tuple(nb["replicas"][p.name] for p in pools)) == min(key(m) for m in alternatives)
