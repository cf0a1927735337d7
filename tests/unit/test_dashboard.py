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
REGEN_DASHBOARD = "tokenfactory dashboard " + " ".join(f"-f {p.relative_to(ROOT)}" for p in DASHBOARD_FILES)
REGEN_ALERTS = ("tokenfactory alerts -f deploy/prometheus/tokenfactory-alerts.yaml && tokenfactory alerts --chart "
                "-f charts/tokenfactory/files/tokenfactory-alerts.yaml")
RUNBOOKS = ROOT / "docs" / "runbooks.md"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# Labels of every exported series (exporter.py), deprecated aliases left out: nothing may use them.
LABELS: dict[str, set[str]] = {f.name: set(f.labels) for f in exporter.families(deprecated_aliases=False).values()}
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


@pytest.mark.parametrize(("path", "text"), [(ALERT_FILES[0], alerts.rules_yaml), (ALERT_FILES[1], alerts.chart_rules_yaml)],
                         ids=lambda p: str(p.relative_to(ROOT)) if isinstance(p, Path) else "")
def test_committed_alerts_match_the_code(path, text):
    assert path.read_text() == text(), f"{path} drifted from alerts.py: run `{REGEN_ALERTS}`"


def test_cli_writes_dashboard_and_alerts(tmp_path, capsys):
    out = tmp_path / "dash.json"
    assert main(["dashboard", "-f", str(out)]) == 0
    assert json.loads(out.read_text())["uid"] == dashboard.UID
    assert main(["alerts"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == alerts.rules()
    assert main(["alerts", "--operator-selector", 'job="my-op"']) == 0
    assert 'up{job="my-op"}' in capsys.readouterr().out
    assert main(["alerts", "--chart"]) == 0
    assert capsys.readouterr().out == alerts.chart_rules_yaml()


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
        assert v["query"]["query"].startswith("label_values(tokenfactory_pool_cost_dollars_per_hour")


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
    # every exported metric is on the dashboard (build_info is not a figure; a factory total that is
    # the sum of the pool series shown stacked may be left out)
    sums = {exporter.FACTORY_PREFIX + s for s in exporter.ADDITIVE_TOTALS}
    assert set(LABELS) - {exporter.BUILD_INFO} - sums <= used, set(LABELS) - used


def test_dashboard_variables_filter_every_pool_query():
    for title, expr in dashboard.panel_queries(dashboard.dashboard()):
        for name, used in selectors(expr):
            assert {"namespace", "factory"} <= used, (title, expr)
            if exporter.FAMILIES[name].labels[:5] == exporter.POOL_LABELS and "$gpu_type" not in expr:
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
    res = _promtool("check", "rules", str(ALERT_FILES[0]))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alerts.alerts())} rules found" in res.stdout


def test_dashboard_and_alerts_use_no_deprecated_metric():
    exprs = [e for _t, e in dashboard.panel_queries(dashboard.dashboard())] + [a.expr for a in alerts.alerts()]
    for expr in exprs:
        for name, _ in selectors(expr):
            assert name not in exporter.DEPRECATED_GAUGES, expr


def test_alerts_cover_the_required_conditions():
    by_name = {a.name: a for a in alerts.alerts()}
    assert "tokenfactory_objective_cost_per_million_tokens_dollars" in by_name[
        "TokenFactoryCostPerMillionTokensOverObjective"].expr
    assert "tokenfactory_factory_cost_per_million_tokens_dollars" in by_name[
        "TokenFactoryCostPerMillionTokensOverObjective"].expr
    assert "tokenfactory_objective_dollars_per_hour" in by_name["TokenFactoryOverBudget"].expr
    assert by_name["TokenFactoryMetricsMissing"].expr == "tokenfactory_metrics_up == 0"
    assert by_name["TokenFactoryPoolReplicasUnavailable"].for_ == "15m"
    # the operator is selected by labels, never by a job-name regex (which matched tokenfactory-vllm)
    op = f"up{{{alerts.OPERATOR_SELECTOR}}}"
    assert by_name["TokenFactoryOperatorDown"].expr == f"{op} == 0"
    assert by_name["TokenFactoryOperatorAbsent"].expr == f"absent({op})"
    assert "job" not in alerts.OPERATOR_SELECTOR
    for a in alerts.alerts():
        check_names_and_labels(a.expr)
        assert a.data_exprs and a.severity in alerts.SEVERITIES and a.summary and a.description
        for e in a.data_exprs:
            assert e in a.expr


def test_every_alert_has_annotations_and_a_runbook_section():
    """summary, description and runbook_url on every rule; the URL's anchor is a section of
    docs/runbooks.md that names the alert's `for`, severity and threshold as the rule has them."""
    text = RUNBOOKS.read_text()
    sections = {m.group(1).lower(): m.start() for m in re.finditer(r"^## (\w+)\s*$", text, re.M)}
    rules = {r["alert"]: r for r in alerts.rules()["groups"][0]["rules"]}
    assert set(sections) == {name.lower() for name in rules}, "one runbook section per alert, no other"
    starts = sorted(sections.values()) + [len(text)]
    for a in alerts.alerts():
        ann = rules[a.name]["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}
        assert ann["runbook_url"] == f"{alerts.RUNBOOK_BASE}#{a.name.lower()}"
        start = sections[a.name.lower()]
        body = text[start:starts[starts.index(start) + 1]]
        assert f"for {a.for_}" in body and f"severity {a.severity}" in body, (a.name, body[:300])
        if a.threshold is not None:
            assert f"threshold {a.threshold:g}" in body, a.name


# promtool unit tests: each alert fires on the series that should trigger it, and stays quiet
# otherwise; the operator alerts ignore the neighbouring vLLM scrape job docs/metrics.md has users create.
L = 'namespace="llm", factory="r1", model="deepseek-r1"'
OP = 'app_kubernetes_io_part_of="tokenfactory", app_kubernetes_io_component="operator"'
OP_LABELS = {"app_kubernetes_io_part_of": "tokenfactory", "app_kubernetes_io_component": "operator"}
FACTORY = {"namespace": "llm", "factory": "r1", "model": "deepseek-r1"}
H200 = {**FACTORY, "pool": "h200", "gpu_type": "h200"}


def _series(name: str, labels: str, values: str) -> dict:
    return {"series": f"{name}{{{labels}}}", "values": values}


def _expect(t: str, name: str, *labels: dict) -> dict:
    return {"eval_time": t, "alertname": name, "exp_alerts": [{"exp_labels": dict(x)} for x in labels]}


def _w(labels: dict, severity: str = "warning") -> dict:
    return {"severity": severity, **labels}


FIRING = {
    "interval": "1m",
    "input_series": [
        _series("tokenfactory_factory_cost_per_million_tokens_dollars", L, "2x30"),
        _series("tokenfactory_pool_cost_per_million_tokens_dollars", f'{L}, pool="h200", gpu_type="h200"', "0.5x30"),
        _series("tokenfactory_objective_cost_per_million_tokens_dollars", L, "1x30"),
        _series("tokenfactory_factory_cost_dollars_per_hour", L, "500x30"),
        _series("tokenfactory_objective_dollars_per_hour", L, "400x30"),
        _series("tokenfactory_metrics_up", L, "0x30"),
        _series("tokenfactory_pool_ttft_p95_seconds", f'{L}, pool="h200", gpu_type="h200"', "3x30"),
        _series("tokenfactory_pool_ttft_p95_seconds", f'{L}, pool="gb300", gpu_type="gb300"', "1x30"),
        _series("tokenfactory_objective_ttft_p95_seconds", L, "2x30"),
        _series("tokenfactory_pool_itl_p95_seconds", f'{L}, pool="h200", gpu_type="h200"', "0.2x30"),
        _series("tokenfactory_objective_itl_p95_seconds", L, "0.1x30"),
        _series("tokenfactory_pool_replicas", f'{L}, pool="h200", gpu_type="h200", state="desired"', "4x30"),
        _series("tokenfactory_pool_replicas", f'{L}, pool="h200", gpu_type="h200", state="ready"', "2x30"),
        _series("tokenfactory_pool_replicas", f'{L}, pool="gb300", gpu_type="gb300", state="desired"', "2x30"),
        _series("tokenfactory_pool_replicas", f'{L}, pool="gb300", gpu_type="gb300", state="ready"', "2x30"),
        _series("up", f'job="tokenfactory", instance="op:8080", {OP}', "0x30"),
        _series("up", 'job="tokenfactory-vllm", instance="pod:8000"', "1x30"),
    ],
    "alert_rule_test": [
        _expect("20m", "TokenFactoryCostPerMillionTokensOverObjective", _w(FACTORY)),
        _expect("10m", "TokenFactoryCostPerMillionTokensOverObjective"),  # not yet 15m
        _expect("20m", "TokenFactoryOverBudget", _w(FACTORY)),
        _expect("10m", "TokenFactoryMetricsMissing", _w(FACTORY)),
        _expect("20m", "TokenFactoryTTFTObjectiveMissed", _w(H200)),
        _expect("20m", "TokenFactoryITLObjectiveMissed", _w(H200)),
        _expect("20m", "TokenFactoryPoolReplicasUnavailable", _w(H200)),
        _expect("10m", "TokenFactoryPoolReplicasUnavailable"),
        _expect("10m", "TokenFactoryOperatorDown",
                {"severity": "critical", "job": "tokenfactory", "instance": "op:8080", **OP_LABELS}),
        _expect("20m", "TokenFactoryOperatorAbsent"),
    ],
}
HEALTHY_BUT_VLLM_POD_DOWN = {
    "interval": "1m",
    "input_series": [
        _series("tokenfactory_factory_cost_per_million_tokens_dollars", L, "0.5x30"),
        _series("tokenfactory_objective_cost_per_million_tokens_dollars", L, "1x30"),
        _series("tokenfactory_factory_cost_dollars_per_hour", L, "300x30"),
        _series("tokenfactory_objective_dollars_per_hour", L, "400x30"),
        _series("tokenfactory_metrics_up", L, "1x30"),
        _series("tokenfactory_pool_ttft_p95_seconds", f'{L}, pool="h200", gpu_type="h200"', "1x30"),
        _series("tokenfactory_objective_ttft_p95_seconds", L, "2x30"),
        _series("tokenfactory_pool_itl_p95_seconds", f'{L}, pool="h200", gpu_type="h200"', "0.05x30"),
        _series("tokenfactory_objective_itl_p95_seconds", L, "0.1x30"),
        _series("tokenfactory_pool_replicas", f'{L}, pool="h200", gpu_type="h200", state="desired"', "4x30"),
        _series("tokenfactory_pool_replicas", f'{L}, pool="h200", gpu_type="h200", state="ready"', "4x30"),
        _series("up", f'job="tokenfactory", instance="op:8080", {OP}', "1x30"),
        # one vLLM pod of the tokenfactory-vllm job (docs/metrics.md) is down: not the operator
        _series("up", 'job="tokenfactory-vllm", instance="10.0.0.7:8000", namespace="llm", pod="r1-h200-0"', "0x30"),
        _series("up", 'job="tokenfactory-vllm", instance="10.0.0.8:8000", namespace="llm", pod="r1-h200-1"', "1x30"),
    ],
    "alert_rule_test": [_expect("20m", a.name) for a in alerts.alerts()],
}
OPERATOR_ABSENT = {
    "interval": "1m",
    "input_series": [
        # only the vLLM job and an unrelated operator with the recommended labels are scraped
        _series("up", 'job="tokenfactory-vllm", instance="10.0.0.7:8000"', "1x30"),
        _series("up", 'job="other-operator", app_kubernetes_io_part_of="other", app_kubernetes_io_component="operator"',
                "0x30"),
    ],
    "alert_rule_test": [
        _expect("20m", "TokenFactoryOperatorAbsent", {"severity": "critical", **OP_LABELS}),
        _expect("5m", "TokenFactoryOperatorAbsent"),  # not yet 10m
        _expect("20m", "TokenFactoryOperatorDown"),
    ],
}


def _promtool_test(tmp_path: Path, rules: dict, tests: list[dict]) -> subprocess.CompletedProcess:
    """Firing logic only: annotations (checked by promtool check rules) are left out of the comparison."""
    rules = json.loads(json.dumps(rules))
    for rule in rules["groups"][0]["rules"]:
        del rule["annotations"]
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    doc = {"rule_files": ["alerts.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return _promtool("test", "rules", "tests.yaml", cwd=tmp_path)


def test_alerts_fire_on_the_right_series(tmp_path):
    res = _promtool_test(tmp_path, alerts.rules(), [FIRING, HEALTHY_BUT_VLLM_POD_DOWN, OPERATOR_ABSENT])
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_is_tested_firing_and_silent():
    fired = {t["alertname"] for t in FIRING["alert_rule_test"] + OPERATOR_ABSENT["alert_rule_test"] if t["exp_alerts"]}
    silent = {t["alertname"] for t in HEALTHY_BUT_VLLM_POD_DOWN["alert_rule_test"] if not t["exp_alerts"]}
    names = {a.name for a in alerts.alerts()}
    assert fired == names and silent == names


def test_thresholds_tune_the_alerts(tmp_path):
    """Cost at 2x its objective: fires with threshold 1.5, not with 2.5; 2 replicas short: fires with 2, not 3."""
    def tuned(cost: float, replicas: float) -> dict:
        by = {"TokenFactoryCostPerMillionTokensOverObjective": cost, "TokenFactoryPoolReplicasUnavailable": replicas}
        return {"groups": [{"name": "t", "rules": [a.rule(by.get(a.name)) for a in alerts.alerts()]}]}

    fires = {**FIRING, "alert_rule_test": [
        _expect("20m", "TokenFactoryCostPerMillionTokensOverObjective", _w(FACTORY)),
        _expect("20m", "TokenFactoryPoolReplicasUnavailable", _w(H200))]}
    silent = {**FIRING, "alert_rule_test": [
        _expect("20m", "TokenFactoryCostPerMillionTokensOverObjective"),
        _expect("20m", "TokenFactoryPoolReplicasUnavailable")]}
    assert _promtool_test(tmp_path, tuned(1.5, 2), [fires]).returncode == 0
    res = _promtool_test(tmp_path, tuned(2.5, 3), [silent])
    assert res.returncode == 0, res.stdout + res.stderr
