"""The autoscaling benchmark (tokenfactory.bench) on a short trace: structure and relations that must hold."""

import json
import math
from types import SimpleNamespace

import pytest

from tokenfactory.bench import cli, driver, policies, run, scenario, scoring
from tokenfactory.sim.traces import parse_trace


@pytest.fixture(scope="module")
def bench():
    """The package's public names, as the old single-file module exposed them."""
    return SimpleNamespace(
        load_setup=scenario.load_setup, Run=run.Run, run_trace=driver.run_trace, run_policy=driver.run_policy,
        pick_best_hpa=scoring.pick_best_hpa, StaticPeak=policies.StaticPeak, Oracle=policies.Oracle, main=cli.main)


@pytest.fixture(scope="module")
def setup(bench):
    return bench.load_setup(startup_seconds=120.0)


# one hour, 4K..40K tok/s: over one GB300 replica, within two (so static_peak carries the peak)
SHORT = "diurnal:22k,18k@3600,1800"


@pytest.fixture(scope="module")
def short_run(bench, setup):
    return bench.run_trace(setup, parse_trace(SHORT), 3600.0)


POLICIES = {"static_peak", "static_optimal_mix", "hpa", "hpa_gb300", "hpa_h200", "hpa_both", "keda_queue",
            "tokenfactory", "oracle"}
FIELDS = {"cost_dollars", "cost_per_mtok", "slo_attainment", "replica_changes", "tokens_delivered",
          "tokens_dropped", "tokens_late", "intervals"}


def test_setup_is_the_example(setup):
    caps = {p.name: p.capacity for p in setup.profiles}
    assert caps == {"gb300": 24_000.0, "h200": 720.0}
    assert {p.name: p.max_replicas for p in setup.profiles} == {"gb300": 2, "h200": 24}
    assert sum(p.capacity * p.max_replicas for p in setup.profiles) == pytest.approx(65_280.0)
    assert setup.interval == 30.0
    assert all(p.startup_seconds == 120.0 for p in setup.profiles)


def test_every_policy_reports_every_field(short_run):
    results, timelines = short_run
    assert set(results) == POLICIES
    for name, r in results.items():
        assert FIELDS <= set(r), name
        assert r["cost_dollars"] > 0, name
        assert 0.0 <= r["slo_attainment"] <= 1.0, name
        assert r["intervals"] == 120, name  # 3600 s / 30 s
        assert r["tokens_delivered"] > 0 and r["cost_per_mtok"] == pytest.approx(
            r["cost_dollars"] / (r["tokens_delivered"] / 1e6)), name
        # nothing is delivered that was not asked for (every run starts with empty queues)
        assert r["tokens_delivered"] <= r["tokens_demanded"] * (1 + 1e-9), name
        assert r["tokens_dropped"] >= 0 and r["tokens_late"] >= 0, name
        assert len(timelines[name]) == 120


def test_relations_between_policies(short_run):
    r, _ = short_run
    # the peak fits in one pool here, so static_peak carries it; perfect foresight is never dearer
    assert "carries the" in r["static_peak"]["note"] and "no single pool" not in r["static_peak"]["note"]
    assert r["oracle"]["cost_dollars"] <= r["static_peak"]["cost_dollars"] + 1e-9
    assert r["oracle"]["cost_dollars"] <= r["static_optimal_mix"]["cost_dollars"] + 1e-9
    assert r["oracle"]["slo_attainment"] >= 0.99
    assert r["static_optimal_mix"]["slo_attainment"] >= 0.99
    assert r["static_peak"]["replica_changes"] == r["static_optimal_mix"]["replica_changes"] == 0
    # the reported hpa is the best variant, SLO first: the cheapest with >= 99%, else the highest SLO
    variants = ("hpa_gb300", "hpa_h200", "hpa_both")
    assert r["hpa"]["variant"] in variants
    best = r[r["hpa"]["variant"]]
    assert r["hpa"]["cost_dollars"] == best["cost_dollars"]
    meeting = [v for v in variants if r[v]["slo_attainment"] >= 0.99]
    if meeting:
        assert best["slo_attainment"] >= 0.99
        assert best["cost_dollars"] == min(r[v]["cost_dollars"] for v in meeting)
    else:
        for v in variants:
            assert best["slo_attainment"] >= round(r[v]["slo_attainment"], 3) - 1e-3


def test_best_hpa_is_picked_by_slo_first(bench):
    res = {"hpa_a": {"slo_attainment": 0.70, "cost_dollars": 100.0},   # cheap because it drops demand
           "hpa_b": {"slo_attainment": 0.995, "cost_dollars": 900.0},
           "hpa_c": {"slo_attainment": 1.0, "cost_dollars": 1000.0}}
    assert bench.pick_best_hpa(res, list(res)) == "hpa_b"  # cheapest of those meeting 99%
    res["hpa_b"]["slo_attainment"] = 0.98
    res["hpa_c"]["slo_attainment"] = 0.97
    assert bench.pick_best_hpa(res, list(res)) == "hpa_b"  # none meets 99%: highest SLO


def test_static_peak_says_when_no_pool_carries_the_peak(bench, setup):
    run = bench.Run(setup, parse_trace("constant:60k"), 300.0)
    pol = bench.StaticPeak()
    mix = pol.initial(run)
    assert "no single pool carries" in pol.note
    assert mix == {"gb300": 2, "h200": 1}  # GB300 carries the most (48,000 tok/s); H200 at its minimum


def test_oracle_launches_ahead_of_demand(bench, setup):
    # a step to 40K at 20 min: the oracle's second GB300 must exist start-up (120 s) before it
    run = bench.Run(setup, parse_trace("step:10k,40k@1200"), 1800.0)
    orc = bench.Oracle()
    orc.initial(run)
    k_step = int(1200 / setup.interval)
    k_launch = k_step - int(math.ceil(120.0 / setup.interval))
    assert orc.plan[k_launch]["gb300"] == 2 and orc.plan[k_launch - 1]["gb300"] == 1
    res, _ = bench.run_policy(setup, parse_trace("step:10k,40k@1200"), 1800.0, bench.Oracle())
    assert res["slo_attainment"] == 1.0


def test_main_writes_json_for_a_user_csv_trace(bench, tmp_path, capsys):
    csv = tmp_path / "mine.csv"
    csv.write_text("seconds,tokens_per_second\n0,5000\n600,30000\n1200,5000\n")
    out = tmp_path / "out.json"
    assert bench.main(["--traces", "none", "--trace", str(csv), "--json", str(out), "--startup-seconds", "60"]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["traces"]) == {"mine"}
    assert POLICIES <= set(doc["traces"]["mine"])
    for r in doc["traces"]["mine"].values():
        assert {"cost_dollars", "cost_per_mtok", "slo_attainment", "replica_changes"} <= set(r)
    meta = doc["metadata"]
    assert meta["traces"]["mine"]["duration_seconds"] == 1200.0
    assert meta["wall_seconds"]["total"] > 0
    assert "tokenfactory" in capsys.readouterr().out


def test_no_operator_module_imports_the_benchmark():
    """The benchmark is tooling: nothing outside tokenfactory.bench imports it."""
    import ast
    from pathlib import Path

    import tokenfactory

    root = Path(tokenfactory.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if (root / "bench") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "tokenfactory.bench" or n.startswith("tokenfactory.bench.") for n in names):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_the_console_entry_and_the_thin_script_run_the_same_main(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for cmd in ([sys.executable, "-m", "tokenfactory.bench", "--help"],
                [sys.executable, str(root / "bench" / "autoscale.py"), "--help"]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "usage: tokenfactory-bench" in res.stdout and "--quick" in res.stdout
