"""The generated Grafana dashboard and Prometheus alert rules: drift, structure, metric/label names
against the exporter, PromQL syntax and alert behaviour (promtool)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tokenfactory import alerts, dashboard, exporter
from tokenfactory.cli import main

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILES = [ROOT / "deploy" / "grafana" / "tokenfactory-dashboard.json",
                   ROOT / "charts" / "tokenfactory" / "files" / "tokenfactory-dashboard.json"]
ALERT_FILES = [ROOT / "deploy" / "prometheus" / "tokenfactory-alerts.yaml",
               ROOT / "charts" / "tokenfactory" / "files" / "tokenfactory-alerts.yaml"]
REGEN_DASHBOARD = "tokenfactory dashboard " + " ".join(f"-o {p.relative_to(ROOT)}" for p in DASHBOARD_FILES)
REGEN_ALERTS = "tokenfactory alerts " + " ".join(f"-o {p.relative_to(ROOT)}" for p in ALERT_FILES)
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# Labels of every exported series (exporter.py).
LABELS: dict[str, set[str]] = {}
for _name, (_help, _extra) in exporter.POOL_GAUGES.items():
    LABELS[_name] = set(exporter.POOL_LABELS) | ({_extra} if _extra else set())
for _name in exporter.FACTORY_GAUGES:
    LABELS[_name] = set(exporter.FACTORY_LABELS)
LABELS[exporter.DECISIONS + "_total"] = set(exporter.DECISION_LABELS)
TARGET_LABELS = {"job", "instance"}  # attached by the scrape

SELECTOR = re.compile(r"\b(tokenfactory_\w+)\s*(\{[^}]*\})?")
LABEL_MATCHER = re.compile(r"(\w+)\s*(=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|on|ignoring|without)\s*\(([^)]*)\)")


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every tokenfactory_* selector in ``expr``."""
    return [(m.group(1), {n for n, _ in LABEL_MATCHER.findall(m.group(2) or "")}) for m in SELECTOR.finditer(expr)]


def check_names_and_labels(expr: str) -> None:
    metrics = []
    for name, used in selectors(expr):
        assert name in LABELS, f"{name} is not exported by exporter.py (in {expr!r})"
        assert used <= LABELS[name] | TARGET_LABELS, f"{name} has no label(s) {used - LABELS[name]} (in {expr!r})"
        metrics.append(name)
    for group in GROUPING.findall(expr):
        names = {g.strip() for g in group.split(",") if g.strip()}
        for metric in metrics:
            assert names <= LABELS[metric] | TARGET_LABELS, f"{metric} lacks {names - LABELS[metric]} used in {expr!r}"


# ---------------------------------------------------------------------------------------- drift


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_dashboard_matches_the_code(path):
    assert path.read_text() == dashboard.dashboard_json(), f"{path} drifted from dashboard.py: run `{REGEN_DASHBOARD}`"


@pytest.mark.parametrize("path", ALERT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_alerts_match_the_code(path):
    assert path.read_text() == alerts.rules_yaml(), f"{path} drifted from alerts.py: run `{REGEN_ALERTS}`"


def test_cli_writes_dashboard_and_alerts(tmp_path, capsys):
    out = tmp_path / "d" / "dash.json"
    assert main(["dashboard", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["uid"] == dashboard.UID
    assert main(["alerts"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == alerts.rules()
    assert main(["alerts", "--operator-job-regex", "my-op"]) == 0
    assert 'up{job=~"my-op"}' in capsys.readouterr().out


# ------------------------------------------------------------------------------------ dashboard


def test_dashboard_layout_is_valid():
    model = dashboard.dashboard()
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    boxes = []
    for p in model["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for (x, y, w, h) in boxes:  # no overlapping panels
            assert g["x"] >= x + w or x >= g["x"] + g["w"] or g["y"] >= y + h or y >= g["y"] + g["h"], p["title"]
        boxes.append((g["x"], g["y"], g["w"], g["h"]))
        if p["type"] != "row":
            refs = [t["refId"] for t in p["targets"]]
            assert refs and len(refs) == len(set(refs)), p["title"]
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p["description"], p["title"]


def test_dashboard_has_the_template_variables():
    names = [v["name"] for v in dashboard.dashboard()["templating"]["list"]]
    assert names == ["datasource", "namespace", "factory", "model", "gpu_type"]
    for v in dashboard.dashboard()["templating"]["list"][1:]:
        assert v["allValue"] == ".*" and v["includeAll"] and v["multi"]
        assert v["query"]["query"].startswith("label_values(tokenfactory_cost_per_hour_dollars")


def test_dashboard_has_the_required_panels():
    titles = " | ".join(p["title"] for p in dashboard.dashboard()["panels"]).lower()
    for want in ("$ per million tokens, per pool and factory", "$ per hour", "tokens per second", "per gpu",
                 "per megawatt", "power", "desired vs ready", "ttft p95 vs objective", "itl p95 vs objective",
                 "budget use", "scaling decisions", "share of traffic"):
        assert want in titles, want


def test_dashboard_queries_use_exported_metrics_and_labels():
    queries = dashboard.panel_queries(dashboard.dashboard())
    used = set()
    for _title, expr in queries:
        check_names_and_labels(expr)
        used |= {name for name, _ in selectors(expr)}
    # every exported metric is on the dashboard
    assert set(LABELS) <= used, set(LABELS) - used


def test_dashboard_variables_filter_every_pool_query():
    for title, expr in dashboard.panel_queries(dashboard.dashboard()):
        for name, used in selectors(expr):
            assert {"namespace", "factory"} <= used, (title, expr)
            if name in exporter.POOL_GAUGES and "pool!=" in expr and "$gpu_type" not in expr:
                pytest.fail(f"{title}: per-pool query without the gpu_type variable: {expr}")


def test_expand_substitutes_grafana_variables():
    assert dashboard.expand('x{a=~"$namespace", b=~"${factory}"}[$__rate_interval]') == 'x{a=~".*", b=~".*"}[1m]'
    assert dashboard.expand('x{a=~"$namespace"}', {"namespace": "ns"}) == 'x{a=~"ns"}'


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool is missing: install Debian's prometheus package (make setup)")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every panel query (wrapped as recording rules, variables expanded)."""
    queries = dashboard.panel_queries(dashboard.dashboard())
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": dashboard.expand(expr)} for i, (_t, expr) in enumerate(queries)]}]}
    f = tmp_path / "dashboard-queries.yaml"
    f.write_text(yaml.safe_dump(rules))
    res = _promtool("check", "rules", str(f))
    assert res.returncode == 0, res.stdout + res.stderr


# --------------------------------------------------------------------------------------- alerts


def test_alert_rules_pass_promtool_check():
    for path in ALERT_FILES:
        res = _promtool("check", "rules", str(path))
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"SUCCESS: {len(alerts.alerts())} rules found" in res.stdout


def test_alerts_cover_the_required_conditions():
    by_name = {a.name: a for a in alerts.alerts()}
    assert "tokenfactory_objective_cost_per_million_tokens_dollars" in by_name[
        "TokenFactoryCostPerMillionTokensOverObjective"].expr
    assert 'pool=""' in by_name["TokenFactoryCostPerMillionTokensOverObjective"].expr
    assert "tokenfactory_objective_dollars_per_hour" in by_name["TokenFactoryOverBudget"].expr
    assert by_name["TokenFactoryMetricsMissing"].expr == "tokenfactory_metrics_up == 0"
    assert by_name["TokenFactoryPoolReplicasUnavailable"].for_ == "15m"
    assert 'up{job=~".*tokenfactory.*"} == 0' == by_name["TokenFactoryOperatorDown"].expr
    assert by_name["TokenFactoryOperatorAbsent"].expr.startswith("absent(")
    for a in alerts.alerts():
        check_names_and_labels(a.expr)
        assert a.data_exprs and a.severity in ("warning", "critical") and a.summary and a.description
        for e in a.data_exprs:
            assert e in a.expr


# promtool unit tests: each alert fires on the series that should trigger it, and stays quiet otherwise.
L = 'namespace="llm", factory="r1", model="deepseek-r1"'
PROMTOOL_TESTS = {
    "rule_files": ["alerts.yaml"],
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {"series": f'tokenfactory_cost_per_million_tokens_dollars{{{L}, pool="", gpu_type=""}}', "values": "2x30"},
                {"series": f'tokenfactory_cost_per_million_tokens_dollars{{{L}, pool="h200", gpu_type="h200"}}',
                 "values": "9x30"},
                {"series": f"tokenfactory_objective_cost_per_million_tokens_dollars{{{L}}}", "values": "1x30"},
                {"series": f'tokenfactory_cost_per_hour_dollars{{{L}, pool="", gpu_type=""}}', "values": "500x30"},
                {"series": f"tokenfactory_objective_dollars_per_hour{{{L}}}", "values": "400x30"},
                {"series": f"tokenfactory_metrics_up{{{L}}}", "values": "0x30"},
                {"series": f'tokenfactory_ttft_p95_seconds{{{L}, pool="h200", gpu_type="h200"}}', "values": "3x30"},
                {"series": f'tokenfactory_ttft_p95_seconds{{{L}, pool="gb300", gpu_type="gb300"}}', "values": "1x30"},
                {"series": f"tokenfactory_objective_ttft_p95_seconds{{{L}}}", "values": "2x30"},
                {"series": f'tokenfactory_itl_p95_seconds{{{L}, pool="h200", gpu_type="h200"}}', "values": "0.2x30"},
                {"series": f"tokenfactory_objective_itl_p95_seconds{{{L}}}", "values": "0.1x30"},
                {"series": f'tokenfactory_replicas{{{L}, pool="h200", gpu_type="h200", state="desired"}}', "values": "4x30"},
                {"series": f'tokenfactory_replicas{{{L}, pool="h200", gpu_type="h200", state="ready"}}', "values": "2x30"},
                {"series": f'tokenfactory_replicas{{{L}, pool="gb300", gpu_type="gb300", state="desired"}}',
                 "values": "2x30"},
                {"series": f'tokenfactory_replicas{{{L}, pool="gb300", gpu_type="gb300", state="ready"}}', "values": "2x30"},
                {"series": 'up{job="tokenfactory", instance="op:8080"}', "values": "0x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "TokenFactoryCostPerMillionTokensOverObjective", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": "llm", "factory": "r1", "model": "deepseek-r1"}}]},
                {"eval_time": "10m", "alertname": "TokenFactoryCostPerMillionTokensOverObjective", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "TokenFactoryOverBudget", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": "llm", "factory": "r1", "model": "deepseek-r1"}}]},
                {"eval_time": "10m", "alertname": "TokenFactoryMetricsMissing", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": "llm", "factory": "r1",
                                    "model": "deepseek-r1"}}]},
                {"eval_time": "20m", "alertname": "TokenFactoryTTFTObjectiveMissed", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": "llm", "factory": "r1", "model": "deepseek-r1",
                                    "pool": "h200", "gpu_type": "h200"}}]},
                {"eval_time": "20m", "alertname": "TokenFactoryITLObjectiveMissed", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": "llm", "factory": "r1", "model": "deepseek-r1",
                                    "pool": "h200", "gpu_type": "h200"}}]},
                {"eval_time": "20m", "alertname": "TokenFactoryPoolReplicasUnavailable", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": "llm", "factory": "r1", "model": "deepseek-r1",
                                    "pool": "h200", "gpu_type": "h200"}}]},
                {"eval_time": "10m", "alertname": "TokenFactoryPoolReplicasUnavailable", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "TokenFactoryOperatorDown", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "job": "tokenfactory", "instance": "op:8080"}}]},
                {"eval_time": "20m", "alertname": "TokenFactoryOperatorAbsent", "exp_alerts": []},
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {"series": f'tokenfactory_cost_per_million_tokens_dollars{{{L}, pool="", gpu_type=""}}', "values": "0.5x30"},
                {"series": f"tokenfactory_objective_cost_per_million_tokens_dollars{{{L}}}", "values": "1x30"},
                {"series": f"tokenfactory_metrics_up{{{L}}}", "values": "1x30"},
                {"series": 'up{job="vllm", instance="pod:8000"}', "values": "1x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "TokenFactoryCostPerMillionTokensOverObjective", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "TokenFactoryMetricsMissing", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "TokenFactoryOperatorDown", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "TokenFactoryOperatorAbsent", "exp_alerts": [
                    {"exp_labels": {"severity": "critical"}}]},
            ],
        },
    ],
}


def test_alerts_fire_on_the_right_series(tmp_path):
    """Firing logic only: annotations (checked by promtool check rules) are left out of the comparison."""
    rules = alerts.rules()
    for rule in rules["groups"][0]["rules"]:
        del rule["annotations"]
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(PROMTOOL_TESTS, sort_keys=False))
    res = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
