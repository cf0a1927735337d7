"""Measure, price and plan one factory: Prometheus figures -> cost -> planner -> status, Events, exported metrics.

Called by the reconcile loop once per ``spec.scaling.interval``. It reads what each pool delivered
(``metrics_source``), prices it (``cost``), asks the planner for replicas (``planner``), and returns
the replicas to apply plus the status fields and Events to write. The exported series
(``exporter``) are updated here too. When metrics cannot be read it never acts on the gap: replicas
hold, the last good figures stay in status with their timestamp, and MetricsAvailable says why.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenfactory import api, cost, planner
from tokenfactory.controller import Event, FactoryMemory, PoolObservation, condition, rfc3339
from tokenfactory.exporter import FactoryFigures, MetricsExporter, Objectives
from tokenfactory.metrics_source import MetricsSource, MetricsUnavailable, PrometheusSource

log = logging.getLogger("tokenfactory.measure")


def _round(x: float | None, digits: int = 6) -> float | None:
    """Round to ``digits`` significant digits (tidy status, no churn from float noise); None/inf -> None."""
    if x is None or not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    return round(x, -int(math.floor(math.log10(abs(x)))) + digits - 1)


@dataclass
class MeasureResult:
    replicas: dict[str, int]
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)


@dataclass
class _Memory:
    """Per-factory state kept in FactoryMemory.extra['measure']."""

    planner_state: planner.PlannerState | None = None
    last_good: dict[str, Any] = field(default_factory=dict)  # status fields from the last good reading
    last_decision: dict[str, Any] | None = None
    known_pools: set[str] = field(default_factory=set)
    metrics_ok: bool | None = None


class Measurer:
    def __init__(self, exporter: MetricsExporter | None = None, default_prometheus_url: str | None = None,
                 prometheus_timeout: float = 5.0, sources: Mapping[str, MetricsSource] | None = None):
        self.exporter = exporter
        self.default_url = default_prometheus_url
        self.timeout = prometheus_timeout
        self._sources: dict[str, MetricsSource] = dict(sources or {})

    def source(self, url: str) -> MetricsSource:
        if url not in self._sources:
            self._sources[url] = PrometheusSource(url, timeout=self.timeout)
        return self._sources[url]

    def forget(self, namespace: str, name: str) -> None:
        if self.exporter is not None:
            self.exporter.forget(namespace, name)

    async def measure(self, obj: Mapping[str, Any], spec: api.TokenFactorySpec, replicas: Mapping[str, int],
                      observed: Mapping[str, PoolObservation], memory: FactoryMemory, now: dt.datetime) -> MeasureResult:
        meta = obj["metadata"]
        name, namespace, generation = meta["name"], meta.get("namespace") or "default", meta.get("generation")
        prev = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or [] if "type" in c}
        mem: _Memory = memory.extra.setdefault("measure", _Memory())
        accounting = spec.metrics.token_accounting
        window = api.parse_duration(spec.metrics.window)
        pools = spec.resolve_pools()
        events: list[Event] = []
        conditions: list[dict[str, Any]] = []

        # 1. read ----------------------------------------------------------------------------------
        url = spec.metrics.prometheus_url or self.default_url
        fm = None
        if url is None:
            problem: MetricsUnavailable | None = MetricsUnavailable("NoPrometheusURL", "set spec.metrics.prometheusUrl or run the operator with --prometheus-url")
        else:
            try:
                fm = await self.source(url).pool_metrics(namespace, name, window, now.timestamp())
                problem = None
            except MetricsUnavailable as err:
                problem = err
        if problem is None:
            conditions.append(condition("MetricsAvailable", True, "MetricsRead", f"read from {url} over {spec.metrics.window}",
                                        generation, prev, now))
        else:
            conditions.append(condition("MetricsAvailable", False, problem.reason, problem.message, generation, prev, now))
            if mem.metrics_ok is not False:
                events.append(Event("Warning", "MetricsUnavailable", f"{problem.reason}: {problem.message}; holding replicas"))
        mem.metrics_ok = problem is None

        # 2. price -----------------------------------------------------------------------------------
        metrics_by_pool = fm.pools if fm is not None else {}
        inputs = []
        for rp in pools:
            pm = metrics_by_pool.get(rp.name)
            obs = observed.get(rp.name)
            inputs.append(cost.PoolInput(
                name=rp.name, gpu_type=rp.gpu_type,
                gpus=obs.scheduled_gpus() if obs else 0,
                price_per_gpu_hour=rp.price_per_gpu_hour, kilowatts_per_gpu=rp.kilowatts_per_gpu,
                prompt_tokens_per_second=pm.prompt_tokens_per_second if pm else 0.0,
                generation_tokens_per_second=pm.generation_tokens_per_second if pm else 0.0,
            ))
        fc = cost.factory_cost(inputs, accounting)

        # 3. plan ------------------------------------------------------------------------------------
        profiles = tuple(planner.PoolProfile.from_resolved(rp) for rp in pools)
        objectives = planner.Objectives.from_spec(spec.objectives)
        ready = {rp.name: (observed[rp.name].ready_replicas if rp.name in observed else 0) for rp in pools}
        observations = None
        if fm is not None:
            # waiting requests become backlog tokens at the measured tokens per completed request
            # (rate of generation [+ prompt] tokens / rate of vllm:request_success_total); None when
            # nothing completed in the window (the planner then uses its default)
            observations = planner.Observations.from_factory_metrics(
                fm, ready, accounting, tokens_per_request=fm.tokens_per_request(accounting))
        decision_status: dict[str, Any] | None = mem.last_decision
        new_replicas = dict(replicas)
        capacities: dict[str, float] = {}
        if spec.scaling.mode != "Off":
            plan_inputs = planner.PlannerInputs(
                pools=profiles, current=dict(replicas), observations=observations, objectives=objectives,
                headroom=spec.scaling.headroom, slo_attainment=spec.objectives.slo_attainment,
                config=planner.PlannerConfig(
                    scale_down_stabilization_seconds=api.parse_duration(spec.scaling.scale_down_stabilization),
                    max_metrics_age_seconds=max(180.0, 3 * api.parse_duration(spec.scaling.interval))),
                metrics_unavailable_reason=f"metrics unavailable ({problem.reason})" if problem else "no metrics",
            )
            plan, mem.planner_state = planner.decide(mem.planner_state, plan_inputs, now.timestamp())
            capacities = {pp.name: pp.capacity_per_replica for pp in plan.pools}
            if plan.changes and not plan.holding:
                applied = spec.scaling.mode == "Auto"
                if applied:
                    new_replicas = dict(plan.replicas)
                decision_status = self._decision(plan, spec.scaling.mode, applied, now)
                for pp in plan.changes:
                    direction = "up" if pp.replicas > pp.current else "down"
                    if self.exporter is not None:
                        self.exporter.record_scaling_decision(namespace, name, pp.name, direction)
                    verb = ("Scaled" + direction.capitalize()) if applied else "Recommendation"
                    events.append(Event("Normal", verb, f"{pp.name}: {pp.current} -> {pp.replicas}"
                                        f"{'' if applied else ' (Recommend mode: not applied)'}: {pp.reason}"))
                mem.last_decision = decision_status

        # 4. status ----------------------------------------------------------------------------------
        latency = {}
        pool_fields: dict[str, dict[str, Any]] = {}
        for rp, figures in zip(pools, fc.pools):
            pm = metrics_by_pool.get(rp.name)
            cap_per_replica = capacities.get(rp.name, rp.tokens_per_second_per_replica)
            capacity = cap_per_replica * ready[rp.name]
            entry: dict[str, Any] = {
                "pricePerGpuHour": _round(rp.price_per_gpu_hour),
                "dollarsPerHour": _round(figures.dollars_per_hour),
                "powerKilowatts": _round(figures.power_kilowatts),
                "capacityTokensPerSecond": _round(capacity),
            }
            if fm is not None:
                entry.update({
                    "tokensPerSecond": _round(figures.headline_tokens_per_second),
                    "promptTokensPerSecond": _round(figures.prompt_tokens_per_second),
                    "generationTokensPerSecond": _round(figures.generation_tokens_per_second),
                    "costPerMillionTokens": _round(figures.cost_per_million_tokens),
                    "tokensPerSecondPerGpu": _round(figures.tokens_per_second_per_gpu),
                    "tokensPerSecondPerMegawatt": _round(figures.tokens_per_second_per_megawatt),
                    "utilization": _round(figures.headline_tokens_per_second / capacity) if capacity > 0 else None,
                    "ttftP95Seconds": _round(pm.ttft_p95_seconds) if pm else None,
                    "itlP95Seconds": _round(pm.itl_p95_seconds) if pm else None,
                    "requestsWaiting": _round(pm.requests_waiting) if pm else None,
                })
                latency[rp.name] = (entry["ttftP95Seconds"], entry["itlP95Seconds"])
            else:  # keep the last good token figures, marked by the old lastMetricsTime
                entry = {**{k: v for k, v in mem.last_good.get("pools", {}).get(rp.name, {}).items()
                            if k not in entry}, **entry}
            pool_fields[rp.name] = entry
        total = fc.total
        top: dict[str, Any] = {
            "dollarsPerHour": _round(total.dollars_per_hour),
            "powerKilowatts": _round(total.power_kilowatts),
        }
        if fm is not None:
            ttfts = [v[0] for v in latency.values() if v[0] is not None]
            itls = [v[1] for v in latency.values() if v[1] is not None]
            top.update({
                "tokensPerSecond": _round(total.headline_tokens_per_second),
                "costPerMillionTokens": _round(total.cost_per_million_tokens),
                "tokensPerSecondPerGpu": _round(total.tokens_per_second_per_gpu),
                "tokensPerSecondPerMegawatt": _round(total.tokens_per_second_per_megawatt),
                "ttftP95Seconds": max(ttfts) if ttfts else None,
                "itlP95Seconds": max(itls) if itls else None,
                "lastMetricsTime": rfc3339(now),
            })
            mem.last_good = {"pools": pool_fields, "top": top}
        else:
            top = {**{k: v for k, v in mem.last_good.get("top", {}).items() if k not in top}, **top}
        latency[""] = (top.get("ttftP95Seconds"), top.get("itlP95Seconds"))

        # 5. budget ---------------------------------------------------------------------------------
        over = []
        o = spec.objectives
        if o.max_cost_per_million_tokens is not None and top.get("costPerMillionTokens") is not None \
                and top["costPerMillionTokens"] > o.max_cost_per_million_tokens:
            over.append(f"${top['costPerMillionTokens']:.4g}/Mtok is over maxCostPerMillionTokens ${o.max_cost_per_million_tokens:g}")
        if o.max_dollars_per_hour is not None and total.dollars_per_hour > o.max_dollars_per_hour:
            over.append(f"${total.dollars_per_hour:.2f}/h is over maxDollarsPerHour ${o.max_dollars_per_hour:g}")
        if o.max_cost_per_million_tokens is None and o.max_dollars_per_hour is None:
            conditions.append(condition("BudgetExceeded", False, "NoBudget", "no cost objective set", generation, prev, now))
        elif over:
            conditions.append(condition("BudgetExceeded", True, "OverBudget", "; ".join(over), generation, prev, now))
            if prev.get("BudgetExceeded", {}).get("status") != "True":
                events.append(Event("Warning", "BudgetExceeded", "; ".join(over)))
        else:
            conditions.append(condition("BudgetExceeded", False, "WithinBudget", "cost within objectives", generation, prev, now))

        # 6. export -----------------------------------------------------------------------------------
        if self.exporter is not None:
            desired = {rp.name: (new_replicas.get(rp.name, 0), ready[rp.name]) for rp in pools}
            figures = FactoryFigures.from_cost(
                fc, replicas=desired, latency=latency, metrics_up=fm is not None,
                objectives=Objectives(cost_per_million_tokens=o.max_cost_per_million_tokens,
                                      dollars_per_hour=o.max_dollars_per_hour,
                                      ttft_p95_seconds=o.ttft_p95_seconds, itl_p95_seconds=o.itl_p95_seconds))
            for gone in mem.known_pools - {rp.name for rp in pools}:
                self.exporter.forget_pool(namespace, name, gone)
            mem.known_pools = {rp.name for rp in pools}
            self.exporter.publish(namespace, name, spec.served_name, figures)

        status = {**top, "poolFigures": pool_fields, "conditions": conditions}
        if decision_status is not None:
            status["lastDecision"] = decision_status
        return MeasureResult(replicas=new_replicas, status=status, events=events)

    @staticmethod
    def _decision(plan: planner.Plan, mode: str, applied: bool, now: dt.datetime) -> dict[str, Any]:
        return {
            "time": rfc3339(now),
            "mode": mode,
            "applied": applied,
            "changes": [{"pool": p.name, "from": p.current, "to": p.replicas, "reason": p.reason} for p in plan.changes],
            "reason": plan.summary,
            "demandTokensPerSecond": _round(plan.demand_tokens_per_second),
            "expectedDollarsPerHour": _round(plan.dollars_per_hour),
            "expectedCostPerMillionTokens": _round(plan.dollars_per_million_tokens),
        }


def build_measurer(*, prometheus_url: str | None, prometheus_timeout: float, metrics_port: int,
                   metrics_address: str) -> tuple[Measurer, Any]:
    """The real wiring for ``tokenfactory run``: a prometheus-client exporter served on ``metrics_port``."""
    from tokenfactory.exporter import PrometheusExporter

    exporter = PrometheusExporter()
    if metrics_port:
        exporter.start(metrics_port, metrics_address)
    measurer = Measurer(exporter=exporter, default_prometheus_url=prometheus_url, prometheus_timeout=prometheus_timeout)
    return measurer, measurer.forget
