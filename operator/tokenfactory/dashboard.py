"""The TokenFactory Grafana dashboard, generated from code as a plain JSON-model dict.

``tokenfactory dashboard`` prints it; the committed copy lives at
``deploy/grafana/tokenfactory-dashboard.json`` (and ``charts/tokenfactory/files/``, which the chart
ships as a ConfigMap labelled ``grafana_dashboard: "1"`` for the Grafana sidecar). Tests fail when
either drifts from :func:`dashboard_json`, and the end-to-end test evaluates every panel query on a
real Prometheus fed by the operator and the simulator.

Why a plain dict builder rather than grafana-foundation-sdk (or grafanalib): the dashboard JSON
model is stable, documented and small for what we need (stat, gauge and time-series panels with
Prometheus targets, rows, templating); the SDK is a large generated package whose Python API has
changed between releases and is pinned to specific Grafana versions, which would add a heavy,
churning dependency to the operator image for one static JSON file. A dozen small helpers below
give the same structure with no dependency, and the output is deterministic (sorted, stable ids).

Metric names and labels are those of ``exporter.py``: per-pool series (``tokenfactory_pool_*``,
``tokenfactory_spend_dollars_total``, ``tokenfactory_tokens_total``) carry ``namespace, factory, pool,
model, gpu_type``, factory totals (``tokenfactory_factory_*``), objectives and ``metrics_up``
``namespace, factory, model``, and ``tokenfactory_scaling_decisions_total`` ``namespace, factory,
pool, direction``. The deprecated names of the previous release are not used.
"""

from __future__ import annotations

import json
import re
from typing import Any

UID = "tokenfactory-cost"
TITLE = "TokenFactory: cost per million tokens"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Selectors with the template variables (All = ".*").
F = 'namespace=~"$namespace", factory=~"$factory", model=~"$model"'  # factory-level series and totals
P = f'{F}, gpu_type=~"$gpu_type"'  # one series per pool (tokenfactory_pool_*)
T = F  # the factory totals (tokenfactory_factory_*)
D = 'namespace=~"$namespace", factory=~"$factory"'  # scaling decisions (no model/gpu_type labels)

GRID_WIDTH = 24


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, "range": True,
            "instant": False}


def _targets(queries: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(queries)]


def timeseries(title: str, description: str, unit: str, queries: list[tuple[str, str]], *,
               stack: bool = False, decimals: int | None = None, overrides: list | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {"drawStyle": "line", "lineWidth": 2, "fillOpacity": 10 if stack else 0, "showPoints": "never",
                   "spanNulls": True, "stacking": {"mode": "normal" if stack else "none", "group": "A"}},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "mean", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": _targets(queries),
    }


def stat(title: str, description: str, unit: str, queries: list[tuple[str, str]], *,
         thresholds: list[tuple[float | None, str]] | None = None, decimals: int | None = None,
         kind: str = "stat") -> dict[str, Any]:
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    defaults: dict[str, Any] = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps},
                                "color": {"mode": "thresholds"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    options: dict[str, Any] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                               "orientation": "auto"}
    if kind == "stat":
        options.update({"colorMode": "value", "graphMode": "area", "justifyMode": "auto", "textMode": "value_and_name"})
    else:
        defaults.update({"min": 0, "max": 1.2})
        options.update({"showThresholdLabels": False, "showThresholdMarkers": True})
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": _targets(queries),
    }


def _objective_override(name_regex: str) -> dict[str, Any]:
    """Draw objective series as red dashed lines."""
    return {
        "matcher": {"id": "byRegexp", "options": name_regex},
        "properties": [
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }


OBJ = _objective_override(".*objective.*")


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
    }


def templating() -> dict[str, Any]:
    base = "tokenfactory_pool_cost_dollars_per_hour"
    return {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "refresh": 1,
         "current": {}, "hide": 0, "includeAll": False, "multi": False},
        variable("namespace", "Namespace", f"label_values({base}, namespace)"),
        variable("factory", "Factory", f'label_values({base}{{namespace=~"$namespace"}}, factory)'),
        variable("model", "Model", f'label_values({base}{{namespace=~"$namespace", factory=~"$factory"}}, model)'),
        variable("gpu_type", "GPU type",
                 f'label_values({base}{{namespace=~"$namespace", factory=~"$factory"}}, gpu_type)'),
    ]}


def rows() -> list[tuple[str, list[tuple[dict[str, Any], int, int]]]]:
    """(row title, [(panel, width, height)])."""
    pool_legend = "{{factory}}/{{pool}} ({{gpu_type}})"
    total_legend = "{{factory}} (all pools)"
    return [
        ("Cost", [
            (stat("$ per million tokens (factory)", "Live cost per million delivered tokens of each factory, all pools "
                  "together: $/hour of the GPUs held divided by delivered tokens/hour.", "currencyUSD",
                  [(f"tokenfactory_factory_cost_per_million_tokens_dollars{{{T}}}", "{{factory}}")], decimals=3), 6, 6),
            (stat("$ per hour (factory)", "What the GPUs held by each factory cost per hour, idle ones included.",
                  "currencyUSD", [(f"tokenfactory_factory_cost_dollars_per_hour{{{T}}}", "{{factory}}")], decimals=2), 6, 6),
            (stat("Budget use", "$/hour over spec.objectives.maxDollarsPerHour (1 = the whole budget).",
                  "percentunit", [(f"tokenfactory_factory_cost_dollars_per_hour{{{T}}}\n  / on (namespace, factory, model)\n"
                                   f"tokenfactory_objective_dollars_per_hour{{{F}}}", "{{factory}}")],
                  thresholds=[(None, "green"), (0.8, "orange"), (1.0, "red")], decimals=0, kind="gauge"), 6, 6),
            (stat("Cost objective use", "$ per million tokens over spec.objectives.maxCostPerMillionTokens "
                  "(above 1 = too expensive).", "percentunit",
                  [(f"tokenfactory_factory_cost_per_million_tokens_dollars{{{T}}}\n  / on (namespace, factory, model)\n"
                    f"tokenfactory_objective_cost_per_million_tokens_dollars{{{F}}}", "{{factory}}")],
                  thresholds=[(None, "green"), (0.8, "orange"), (1.0, "red")], decimals=0, kind="gauge"), 6, 6),
            (timeseries("$ per million tokens, per pool and factory", "Cost per million delivered tokens of each pool "
                        "and of the factory; dashed red: the objective.", "currencyUSD", [
                            (f"tokenfactory_pool_cost_per_million_tokens_dollars{{{P}}}", pool_legend),
                            (f"tokenfactory_factory_cost_per_million_tokens_dollars{{{T}}}", total_legend),
                            (f"tokenfactory_objective_cost_per_million_tokens_dollars{{{F}}}", "{{factory}} objective"),
                        ], decimals=3, overrides=[OBJ]), 12, 9),
            (timeseries("$ per hour, per pool", "Stacked $/hour of each pool (GPUs held x price); dashed red: the "
                        "budget.", "currencyUSD", [
                            (f"tokenfactory_pool_cost_dollars_per_hour{{{P}}}", pool_legend),
                            (f"tokenfactory_objective_dollars_per_hour{{{F}}}", "{{factory}} objective budget"),
                        ], stack=True, decimals=2,
                        overrides=[OBJ, {"matcher": {"id": "byRegexp", "options": ".*objective.*"},
                                         "properties": [{"id": "custom.stacking", "value": {"mode": "none"}}]}]), 12, 9),
        ]),
        ("Throughput and efficiency", [
            (timeseries("Tokens per second", "Delivered tokens per second per pool, by token type.", "short", [
                (f"sum by (factory, pool, kind) (tokenfactory_pool_tokens_per_second{{{P}}})",
                 "{{factory}}/{{pool}} {{kind}}"),
            ], stack=True), 12, 8),
            (timeseries("Tokens per second per GPU", "Delivered (headline) tokens per second per GPU held.", "short", [
                (f"tokenfactory_pool_tokens_per_second_per_gpu{{{P}}}", pool_legend),
                (f"tokenfactory_factory_tokens_per_second_per_gpu{{{T}}}", total_legend),
            ]), 12, 8),
            (timeseries("Tokens per second per megawatt", "Delivered (headline) tokens per second per MW of all-in "
                        "power (GPU power x PUE).", "short", [
                            (f"tokenfactory_pool_tokens_per_joule{{{P}}} * 1e6", pool_legend),
                            (f"tokenfactory_factory_tokens_per_joule{{{T}}} * 1e6", total_legend),
                        ]), 12, 8),
            (timeseries("Power", "All-in power of the GPUs held, per pool (stacked).", "watt", [
                (f"tokenfactory_pool_power_watts{{{P}}}", pool_legend),
            ], stack=True), 12, 8),
            (timeseries("Share of traffic, per pool", "Each pool's share of the tokens its factory delivers (prompt + "
                        "generated), stacked to 100%. With spec.routing.mode HTTPRoute it follows the route's weights "
                        "(status.routing.weights, out of 1000: ready replicas x capacity) while no pool is saturated; "
                        "with one Service every replica gets the same share whatever it can carry.", "percentunit", [
                            (f"sum by (namespace, factory, pool) (tokenfactory_pool_tokens_per_second{{{P}}})\n"
                             "  / on (namespace, factory) group_left\n"
                             f"sum by (namespace, factory) (tokenfactory_pool_tokens_per_second{{{P}}})",
                             "{{factory}}/{{pool}}"),
                        ], stack=True, decimals=1), 24, 8),
        ]),
        ("Spend and tokens (counters)", [
            (stat("Spend over the time range", "Dollars spent on the GPUs held over the dashboard's time range "
                  "(increase of tokenfactory_spend_dollars_total, all pools).", "currencyUSD",
                  [(f"sum by (factory) (increase(tokenfactory_spend_dollars_total{{{P}}}[$__range]))", "{{factory}}")],
                  decimals=2), 6, 8),
            (stat("Tokens delivered over the time range", "Prompt and generation tokens delivered over the "
                  "dashboard's time range (increase of tokenfactory_tokens_total, all pools).", "short",
                  [(f"sum by (factory, kind) (increase(tokenfactory_tokens_total{{{P}}}[$__range]))",
                    "{{factory}} {{kind}}")], decimals=0), 6, 8),
            (timeseries("Spend rate, per pool", "$/hour from the spend counter: rate(tokenfactory_spend_dollars_total) "
                        "x 3600, per pool (stacked).", "currencyUSD", [
                            (f"sum by (factory, pool) (rate(tokenfactory_spend_dollars_total{{{P}}}[$__rate_interval]))"
                             " * 3600", "{{factory}}/{{pool}}"),
                        ], stack=True, decimals=2), 12, 8),
        ]),
        ("Scaling", [
            (timeseries("Replicas: desired vs ready", "vLLM replicas the operator wants and those that are Ready, "
                        "per pool.", "short", [
                            (f"tokenfactory_pool_replicas{{{P}}}", "{{factory}}/{{pool}} {{state}}"),
                        ], decimals=0), 8, 8),
            (timeseries("GPUs held", "GPUs held by the scheduled vLLM pods, per pool (stacked).", "short", [
                (f"tokenfactory_pool_gpus{{{P}}}", pool_legend),
            ], stack=True, decimals=0), 8, 8),
            (timeseries("Scaling decisions", "Scale-ups and scale-downs decided by the planner over the interval.",
                        "short", [
                            (f"sum by (factory, pool, direction) "
                             f"(increase(tokenfactory_scaling_decisions_total{{{D}}}[$__rate_interval]))",
                             "{{factory}}/{{pool}} {{direction}}"),
                        ], decimals=0), 8, 8),
        ]),
        ("Latency and metrics health", [
            (timeseries("TTFT p95 vs objective", "Time to first token, 95th percentile, per pool; dashed red: "
                        "spec.objectives.ttftP95Seconds.", "s", [
                            (f"tokenfactory_pool_ttft_p95_seconds{{{P}}}", pool_legend),
                            (f"tokenfactory_objective_ttft_p95_seconds{{{F}}}", "{{factory}} objective"),
                        ], overrides=[OBJ]), 9, 8),
            (timeseries("ITL p95 vs objective", "Inter-token latency, 95th percentile, per pool; dashed red: "
                        "spec.objectives.itlP95Seconds.", "s", [
                            (f"tokenfactory_pool_itl_p95_seconds{{{P}}}", pool_legend),
                            (f"tokenfactory_objective_itl_p95_seconds{{{F}}}", "{{factory}} objective"),
                        ], overrides=[OBJ]), 9, 8),
            (stat("vLLM metrics readable", "1 when the operator could read the factory's vLLM figures from "
                  "Prometheus at its last pass; 0 means cost, latency and autoscaling are blind.", "none",
                  [(f"tokenfactory_metrics_up{{{F}}}", "{{factory}}")],
                  thresholds=[(None, "red"), (1, "green")], decimals=0), 6, 8),
        ]),
    ]


def dashboard() -> dict[str, Any]:
    ids = _Ids()
    panels: list[dict[str, Any]] = []
    y = 0
    for title, items in rows():
        panels.append({"type": "row", "title": title, "collapsed": False, "id": ids(), "panels": [],
                       "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1}})
        y += 1
        x, row_h = 0, 0
        for panel, w, h in items:
            if x + w > GRID_WIDTH:
                x, y, row_h = 0, y + row_h, 0
            panels.append({"id": ids(), "gridPos": {"x": x, "y": y, "w": w, "h": h}, **panel})
            x += w
            row_h = max(row_h, h)
        y += row_h
    return {
        "uid": UID,
        "title": TITLE,
        "description": "Live cost per million tokens, throughput, efficiency, latency and scaling of TokenFactory "
                       "vLLM fleets, from the operator's tokenfactory_* metrics.",
        "tags": ["tokenfactory", "vllm", "cost", "llm"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "links": [],
        "templating": templating(),
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


# ------------------------------------------------------------------------- helpers for checks


def panel_queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expr) of every target of every panel in a dashboard JSON model."""
    out = []
    for p in model.get("panels", []):
        for sub in [p, *p.get("panels", [])]:
            for t in sub.get("targets", []):
                if t.get("expr"):
                    out.append((sub.get("title", ""), t["expr"]))
    return out


_VAR = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def expand(expr: str, values: dict[str, str] | None = None, rate_interval: str = "1m") -> str:
    """Substitute Grafana variables the way Grafana would with everything on "All" (``.*``)."""
    values = dict(values or {})

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name in ("__rate_interval", "__interval", "__range"):
            return rate_interval
        return values.get(name, ".*")

    return _VAR.sub(sub, expr)
