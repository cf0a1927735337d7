"""docs/metrics.md, docs/deploy.md and docs/runbooks.md say what the code does: the operator's queries,
the metric names, the alerts' durations, and a scrape config that a real Prometheus can load."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tokenfactory import alerts, exporter
from tokenfactory.metrics_source import promql_queries

ROOT = Path(__file__).resolve().parents[2]
METRICS_MD = ROOT / "docs" / "metrics.md"
DEPLOY_MD = ROOT / "docs" / "deploy.md"


def fenced(text: str, lang: str, after: str) -> str:
    """The first ```lang block after the heading or sentence ``after``."""
    start = text.index(after)
    m = re.compile(rf"^```{lang}\n(.*?)^```", re.S | re.M).search(text, start)
    assert m, f"no ```{lang} block after {after!r}"
    return m.group(1)


def documented_scrape_config() -> dict:
    return yaml.safe_load(fenced(METRICS_MD.read_text(), "yaml", "### Plain Prometheus: kubernetes_sd"))


def test_metrics_md_lists_every_query_the_operator_runs():
    block = fenced(METRICS_MD.read_text(), "promql", "The operator's nine instant queries")
    assert block.splitlines() == list(promql_queries("NS", "F", 120).values())
    assert "windowSeconds" not in METRICS_MD.read_text()


def test_metrics_md_names_every_exported_metric():
    text = METRICS_MD.read_text()
    for name in exporter.families():
        assert f"`{name}" in text, name
    for name in re.findall(r"`(tokenfactory_[a-z0-9_]+)", text):
        if name.startswith("tokenfactory_dev_"):  # a sanitized pod label, not a metric
            continue
        assert name in exporter.FAMILIES, f"docs/metrics.md names {name}, which exporter.py does not export"


def test_deploy_md_alert_table_matches_the_rules():
    text = DEPLOY_MD.read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (TokenFactory\w+) \|.*\| (\w+) \|$", text, re.M)}
    assert rows == {a.name: a.for_ for a in alerts.alerts()}


def test_documented_kubernetes_sd_config_is_valid_for_the_built_prometheus(tmp_path):
    """promtool of the Prometheus the tests run (built from its Go module) accepts the documented
    config; Debian's 2.42 lacks kubernetes_sd_configs altogether."""
    from tokenfactory.localcluster import binaries

    promtool = binaries.binary("promtool")
    if binaries.missing(["prometheus"]):
        pytest.fail("Prometheus is not built: run `make setup` "
                    "(bash operator/tokenfactory/localcluster/build-binaries.sh prometheus)")
    cfg = documented_scrape_config()
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["tokenfactory-vllm", "tokenfactory-operator"]
    f = tmp_path / "prometheus.yml"
    f.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([str(promtool), "check", "config", "--syntax-only", str(f)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    # the operator job keeps exactly the targets the alerts select the operator by
    op = cfg["scrape_configs"][1]
    targets = {r.get("target_label") for r in op["relabel_configs"]}
    assert set(alerts.OPERATOR_LABELS) <= targets and op["honor_labels"] is True


def test_alert_durations_in_metrics_md_are_the_rules():
    found = re.findall(r"\((TokenFactory\w+): for (\w+)\)", METRICS_MD.read_text())
    assert len(found) >= 3
    fors = {a.name: a.for_ for a in alerts.alerts()}
    assert [(name, fors[name]) for name, _ in found] == found
    assert not re.search(r"for 10 minutes", METRICS_MD.read_text())
