"""Prometheus alerting rules for TokenFactory, generated from code.

``tokenfactory alerts`` prints the rules file; the committed copy lives at
``deploy/prometheus/tokenfactory-alerts.yaml`` (and ``charts/tokenfactory/files/``, which the chart's
PrometheusRule embeds). Tests fail when either drifts from :func:`rules_yaml`.

Every alert also lists the *data expressions* it is built from (each side of its comparison, or the
expression with the comparison stripped): the end-to-end test requires each of them to return data
on a real Prometheus fed by the operator and the simulator, so an alert can never silently watch a
metric or label that does not exist. The metric names and labels are those of ``exporter.py``:
pool-level series carry ``namespace, factory, pool, model, gpu_type`` (``pool=""`` is the factory
total); factory-level series (objectives, ``metrics_up``) carry ``namespace, factory, model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

GROUP_NAME = "tokenfactory"
OPERATOR_JOB_REGEX = ".*tokenfactory.*"
FACTORY_MATCH = "namespace, factory, model"  # labels shared by pool-level and factory-level series


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    data_exprs: tuple[str, ...] = field(default_factory=tuple)
    """Queries that must return data for the alert to be meaningful (checked end to end)."""

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description},
        }


def _compare(left: str, op: str, right: str, matching: str) -> str:
    return f"{left}\n  {op} {matching}\n{right}"


COST = 'tokenfactory_cost_per_million_tokens_dollars{pool=""}'
COST_OBJ = "tokenfactory_objective_cost_per_million_tokens_dollars"
HOURLY = 'tokenfactory_cost_per_hour_dollars{pool=""}'
HOURLY_OBJ = "tokenfactory_objective_dollars_per_hour"
TTFT = 'tokenfactory_ttft_p95_seconds{pool!=""}'
TTFT_OBJ = "tokenfactory_objective_ttft_p95_seconds"
ITL = 'tokenfactory_itl_p95_seconds{pool!=""}'
ITL_OBJ = "tokenfactory_objective_itl_p95_seconds"
READY = 'tokenfactory_replicas{state="ready", pool!=""}'
DESIRED = 'tokenfactory_replicas{state="desired", pool!=""}'
METRICS_UP = "tokenfactory_metrics_up"


def alerts(operator_job_regex: str = OPERATOR_JOB_REGEX) -> list[Alert]:
    up = f'up{{job=~"{operator_job_regex}"}}'
    where = "{{ $labels.namespace }}/{{ $labels.factory }}"
    return [
        Alert(
            name="TokenFactoryCostPerMillionTokensOverObjective",
            expr=_compare(COST, ">", COST_OBJ, f"on ({FACTORY_MATCH})"),
            for_="15m",
            severity="warning",
            summary="TokenFactory $/Mtok above its objective",
            description=(f"TokenFactory {where} serves {{{{ $labels.model }}}} at ${{{{ $value | printf \"%.3f\" }}}} per "
                         "million tokens, above spec.objectives.maxCostPerMillionTokens for 15 minutes. "
                         "Check pool mix (cheaper pool capped? idle replicas?) and demand."),
            data_exprs=(COST, COST_OBJ),
        ),
        Alert(
            name="TokenFactoryOverBudget",
            expr=_compare(HOURLY, ">", HOURLY_OBJ, f"on ({FACTORY_MATCH})"),
            for_="10m",
            severity="warning",
            summary="TokenFactory $/hour above its budget",
            description=(f"TokenFactory {where} costs ${{{{ $value | printf \"%.2f\" }}}} per hour, above "
                         "spec.objectives.maxDollarsPerHour for 10 minutes."),
            data_exprs=(HOURLY, HOURLY_OBJ),
        ),
        Alert(
            name="TokenFactoryMetricsMissing",
            expr=f"{METRICS_UP} == 0",
            for_="5m",
            severity="warning",
            summary="TokenFactory cannot read its vLLM metrics",
            description=(f"The operator has not been able to read token throughput and latency for {where} from "
                         "Prometheus for 5 minutes: cost per token, latency and autoscaling are blind. Check "
                         "spec.metrics.prometheusUrl, the vLLM scrape (PodMonitor) and the pods' /metrics."),
            data_exprs=(METRICS_UP,),
        ),
        Alert(
            name="TokenFactoryTTFTObjectiveMissed",
            expr=_compare(TTFT, ">", TTFT_OBJ, f"on ({FACTORY_MATCH}) group_left"),
            for_="10m",
            severity="warning",
            summary="TokenFactory pool misses its TTFT p95 objective",
            description=(f"Pool {{{{ $labels.pool }}}} of {where} has a time-to-first-token p95 of "
                         "{{ $value | humanizeDuration }}, above spec.objectives.ttftP95Seconds for 10 minutes."),
            data_exprs=(TTFT, TTFT_OBJ),
        ),
        Alert(
            name="TokenFactoryITLObjectiveMissed",
            expr=_compare(ITL, ">", ITL_OBJ, f"on ({FACTORY_MATCH}) group_left"),
            for_="10m",
            severity="warning",
            summary="TokenFactory pool misses its inter-token latency p95 objective",
            description=(f"Pool {{{{ $labels.pool }}}} of {where} has an inter-token latency p95 of "
                         "{{ $value | humanizeDuration }}, above spec.objectives.itlP95Seconds for 10 minutes."),
            data_exprs=(ITL, ITL_OBJ),
        ),
        Alert(
            name="TokenFactoryPoolReplicasUnavailable",
            expr=_compare(READY, "<", DESIRED, "ignoring (state)"),
            for_="15m",
            severity="warning",
            summary="TokenFactory pool has fewer ready replicas than desired",
            description=(f"Pool {{{{ $labels.pool }}}} of {where} has had fewer ready vLLM replicas "
                         "({{ $value }}) than desired for 15 minutes: GPUs short, pods unschedulable or "
                         "crash-looping? See `kubectl describe tokenfactory` and the pool's pods."),
            data_exprs=(READY, DESIRED),
        ),
        Alert(
            name="TokenFactoryOperatorDown",
            expr=f"{up} == 0",
            for_="5m",
            severity="critical",
            summary="TokenFactory operator metrics endpoint down",
            description=("Prometheus cannot scrape the TokenFactory operator ({{ $labels.instance }}) for 5 "
                         "minutes: reconciles, cost metrics and autoscaling are stopped."),
            data_exprs=(up,),
        ),
        Alert(
            name="TokenFactoryOperatorAbsent",
            expr=f"absent({up})",
            for_="10m",
            severity="critical",
            summary="TokenFactory operator is not scraped at all",
            description=("No scrape target matches the TokenFactory operator job for 10 minutes: the operator "
                         "is not running or its ServiceMonitor/scrape config is missing."),
            data_exprs=(up,),
        ),
    ]


def rules(operator_job_regex: str = OPERATOR_JOB_REGEX) -> dict[str, Any]:
    """The Prometheus rules file (``groups:``), as a dict."""
    return {"groups": [{"name": GROUP_NAME, "rules": [a.rule() for a in alerts(operator_job_regex)]}]}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)

HEADER = ("# Generated by `tokenfactory alerts` from operator/tokenfactory/alerts.py - do not edit by hand.\n"
          "# Check with: promtool check rules <this file>\n")


def rules_yaml(operator_job_regex: str = OPERATOR_JOB_REGEX) -> str:
    return HEADER + yaml.dump(rules(operator_job_regex), Dumper=_Dumper, sort_keys=False, width=10000)
