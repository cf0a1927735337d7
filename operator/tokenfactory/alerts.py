"""Prometheus alerting rules for TokenFactory, generated from code.

``tokenfactory alerts`` prints the rules file with the default settings; the committed copy lives at
``deploy/prometheus/tokenfactory-alerts.yaml``. The chart's PrometheusRule is built from
``charts/tokenfactory/files/tokenfactory-alerts.yaml`` (:func:`chart_rules_yaml`): the same rules
with ``{{ .threshold }}`` in place of each threshold, so that ``prometheusRule.alerts.<Alert>`` in
the chart's values can disable an alert or change its ``severity``, ``for`` and ``threshold``. With
the default values the chart renders exactly :func:`rules`. Tests fail when a file drifts.

Every alert has ``summary``, ``description`` and ``runbook_url`` (a section of docs/runbooks.md)
and lists the *data expressions* it is built from (each side of its comparison): the end-to-end
test requires each of them to return data on a real Prometheus fed by the operator and the
simulator, so an alert can never silently watch a metric or label that does not exist. The metric
names and labels are those of ``exporter.py``: per-pool series (``tokenfactory_pool_*``) carry
``namespace, factory, pool, model, gpu_type``, factory totals (``tokenfactory_factory_*``),
objectives and ``metrics_up`` carry ``namespace, factory, model``.

The operator's own scrape target is selected by labels the chart sets, not by its job name: the
chart's ServiceMonitor copies the Service's ``app.kubernetes.io/part-of: tokenfactory`` and
``app.kubernetes.io/component: operator`` to the target labels ``app_kubernetes_io_part_of`` and
``app_kubernetes_io_component`` (:data:`OPERATOR_SELECTOR`). A job-name regex such as
``.*tokenfactory.*`` would also match the ``tokenfactory-vllm`` job of the vLLM pods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

GROUP_NAME = "tokenfactory"
OPERATOR_LABELS = {"app_kubernetes_io_part_of": "tokenfactory", "app_kubernetes_io_component": "operator"}
OPERATOR_SELECTOR = ", ".join(f'{k}="{v}"' for k, v in OPERATOR_LABELS.items())
FACTORY_MATCH = "namespace, factory, model"  # labels shared by factory-level series and pool series
RUNBOOK_BASE = "https://github.com/tokenfactory/tokenfactory/blob/main/docs/runbooks.md"
THRESHOLD = "__THRESHOLD__"  # placeholder in expression templates
SEVERITIES = ("critical", "warning", "info")


@dataclass(frozen=True)
class Alert:
    name: str
    expr_template: str
    """PromQL with :data:`THRESHOLD` where the threshold goes (if the alert has one)."""
    for_: str
    severity: str
    summary: str
    description: str
    data_exprs: tuple[str, ...] = field(default_factory=tuple)
    """Queries that must return data for the alert to be meaningful (checked end to end)."""
    threshold: float | None = None
    threshold_help: str = ""
    """What the threshold means (values.yaml comment, docs/runbooks.md)."""

    @property
    def expr(self) -> str:
        return self.expr_for(self.threshold)

    def expr_for(self, threshold: float | str | None) -> str:
        if THRESHOLD not in self.expr_template:
            return self.expr_template
        return self.expr_template.replace(THRESHOLD, _num(threshold))

    @property
    def runbook_url(self) -> str:
        return f"{RUNBOOK_BASE}#{self.name.lower()}"

    def rule(self, threshold: float | str | None = None) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr_for(self.threshold if threshold is None else threshold),
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description,
                            "runbook_url": self.runbook_url},
        }


def _num(x: float | str | None) -> str:
    if isinstance(x, str):
        return x
    if x is None:
        raise ValueError("alert has a threshold placeholder but no threshold")
    return f"{x:g}"


def _compare(left: str, op: str, right: str, matching: str) -> str:
    return f"{left}\n  {op} {matching}\n{right}"


COST = "tokenfactory_factory_cost_per_million_tokens_dollars"
COST_OBJ = "tokenfactory_objective_cost_per_million_tokens_dollars"
HOURLY = "tokenfactory_factory_cost_dollars_per_hour"
HOURLY_OBJ = "tokenfactory_objective_dollars_per_hour"
TTFT = "tokenfactory_pool_ttft_p95_seconds"
TTFT_OBJ = "tokenfactory_objective_ttft_p95_seconds"
ITL = "tokenfactory_pool_itl_p95_seconds"
ITL_OBJ = "tokenfactory_objective_itl_p95_seconds"
READY = 'tokenfactory_pool_replicas{state="ready"}'
DESIRED = 'tokenfactory_pool_replicas{state="desired"}'
METRICS_UP = "tokenfactory_metrics_up"


def alerts(operator_selector: str = OPERATOR_SELECTOR) -> list[Alert]:
    up = f"up{{{operator_selector}}}"
    where = "{{ $labels.namespace }}/{{ $labels.factory }}"
    ratio = "ratio to the objective above which it fires (1 = the objective itself)"
    return [
        Alert(
            name="TokenFactoryCostPerMillionTokensOverObjective",
            expr_template=_compare(COST, ">", f"{COST_OBJ} * {THRESHOLD}", f"on ({FACTORY_MATCH})"),
            for_="15m",
            severity="warning",
            summary="TokenFactory $/Mtok above its objective",
            description=(f"TokenFactory {where} serves {{{{ $labels.model }}}} at ${{{{ $value | printf \"%.3f\" }}}} per "
                         "million tokens, above spec.objectives.maxCostPerMillionTokens (times the alert's threshold) "
                         "for the alert's whole `for` duration. Check pool mix (cheaper pool capped? idle "
                         "replicas?) and demand."),
            data_exprs=(COST, COST_OBJ),
            threshold=1.0,
            threshold_help=ratio,
        ),
        Alert(
            name="TokenFactoryOverBudget",
            expr_template=_compare(HOURLY, ">", f"{HOURLY_OBJ} * {THRESHOLD}", f"on ({FACTORY_MATCH})"),
            for_="10m",
            severity="warning",
            summary="TokenFactory $/hour above its budget",
            description=(f"TokenFactory {where} costs ${{{{ $value | printf \"%.2f\" }}}} per hour, above "
                         "spec.objectives.maxDollarsPerHour (times the alert's threshold) for the alert's whole "
                         "`for` duration."),
            data_exprs=(HOURLY, HOURLY_OBJ),
            threshold=1.0,
            threshold_help=ratio,
        ),
        Alert(
            name="TokenFactoryMetricsMissing",
            expr_template=f"{METRICS_UP} == 0",
            for_="5m",
            severity="warning",
            summary="TokenFactory cannot read its vLLM metrics",
            description=(f"The operator cannot read token throughput and latency for {where} from Prometheus: "
                         "cost per token, latency and autoscaling are blind and replicas are held. Check "
                         "spec.metrics.prometheusUrl, the vLLM scrape (PodMonitor) and the pods' /metrics."),
            data_exprs=(METRICS_UP,),
        ),
        Alert(
            name="TokenFactoryTTFTObjectiveMissed",
            expr_template=_compare(TTFT, ">", f"{TTFT_OBJ} * {THRESHOLD}", f"on ({FACTORY_MATCH}) group_left"),
            for_="10m",
            severity="warning",
            summary="TokenFactory pool misses its TTFT p95 objective",
            description=(f"Pool {{{{ $labels.pool }}}} of {where} has a time-to-first-token p95 of "
                         "{{ $value | humanizeDuration }}, above spec.objectives.ttftP95Seconds (times the alert's "
                         "threshold) for the alert's whole `for` duration."),
            data_exprs=(TTFT, TTFT_OBJ),
            threshold=1.0,
            threshold_help=ratio,
        ),
        Alert(
            name="TokenFactoryITLObjectiveMissed",
            expr_template=_compare(ITL, ">", f"{ITL_OBJ} * {THRESHOLD}", f"on ({FACTORY_MATCH}) group_left"),
            for_="10m",
            severity="warning",
            summary="TokenFactory pool misses its inter-token latency p95 objective",
            description=(f"Pool {{{{ $labels.pool }}}} of {where} has an inter-token latency p95 of "
                         "{{ $value | humanizeDuration }}, above spec.objectives.itlP95Seconds (times the alert's "
                         "threshold) for the alert's whole `for` duration."),
            data_exprs=(ITL, ITL_OBJ),
            threshold=1.0,
            threshold_help=ratio,
        ),
        Alert(
            name="TokenFactoryPoolReplicasUnavailable",
            expr_template=f"{DESIRED}\n  - ignoring (state)\n{READY}\n  >= {THRESHOLD}",
            for_="15m",
            severity="warning",
            summary="TokenFactory pool has fewer ready replicas than desired",
            description=(f"Pool {{{{ $labels.pool }}}} of {where} has been {{{{ $value }}}} ready vLLM replica(s) "
                         "short of what the operator wants for the alert's whole `for` duration: GPUs short, pods "
                         "unschedulable or crash-looping? See `kubectl describe tokenfactory` and the pool's pods."),
            data_exprs=(DESIRED, READY),
            threshold=1.0,
            threshold_help="replicas missing (desired - ready) at or above which it fires",
        ),
        Alert(
            name="TokenFactoryOperatorDown",
            expr_template=f"{up} == 0",
            for_="5m",
            severity="critical",
            summary="TokenFactory operator metrics endpoint down",
            description=("Prometheus cannot scrape the TokenFactory operator ({{ $labels.instance }}): "
                         "reconciles, cost metrics and autoscaling are probably stopped."),
            data_exprs=(up,),
        ),
        Alert(
            name="TokenFactoryOperatorAbsent",
            expr_template=f"absent({up})",
            for_="10m",
            severity="critical",
            summary="TokenFactory operator is not scraped at all",
            description=("No scrape target carries the TokenFactory operator's labels (" + operator_selector
                         + "): the operator is not running, or its ServiceMonitor/scrape config is missing "
                         "or does not set these labels."),
            data_exprs=(up,),
        ),
    ]


def rules(operator_selector: str = OPERATOR_SELECTOR) -> dict[str, Any]:
    """The Prometheus rules file (``groups:``) with the default settings, as a dict."""
    return {"groups": [{"name": GROUP_NAME, "rules": [a.rule() for a in alerts(operator_selector)]}]}


def chart_rules(operator_selector: str = OPERATOR_SELECTOR) -> dict[str, Any]:
    """The chart's copy: each threshold is ``{{ .threshold }}`` (the chart fills it in with ``tpl``)."""
    return {"groups": [{"name": GROUP_NAME, "rules": [a.rule("{{ .threshold }}")
                                                      for a in alerts(operator_selector)]}]}


def chart_values() -> dict[str, dict[str, Any]]:
    """``prometheusRule.alerts`` of the chart's values.yaml with the defaults (a test compares)."""
    out = {}
    for a in alerts():
        v: dict[str, Any] = {"enabled": True, "severity": a.severity, "for": a.for_}
        if a.threshold is not None:
            v["threshold"] = a.threshold
        out[a.name] = v
    return out


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)

HEADER = ("# Generated by `tokenfactory alerts` from operator/tokenfactory/alerts.py - do not edit by hand.\n"
          "# Check with: promtool check rules <this file>\n")
CHART_HEADER = ("# Generated by `tokenfactory alerts --chart` from operator/tokenfactory/alerts.py - do not edit by hand.\n"
                "# templates/prometheusrule.yaml fills in {{ .threshold }} from prometheusRule.alerts in values.yaml.\n")


def _dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=10000)


def rules_yaml(operator_selector: str = OPERATOR_SELECTOR) -> str:
    return HEADER + _dump(rules(operator_selector))


def chart_rules_yaml() -> str:
    return CHART_HEADER + _dump(chart_rules())
