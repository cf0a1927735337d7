"""Stage 2, assess: price what the fleet holds and delivers (``cost``), and judge it: are metrics
available, is the factory over budget. Pure: a function of the collected facts and the last good
figures.

When metrics cannot be read the stage never invents numbers: $/hour and power (which need no
metrics) are current, every token figure is the last good one, marked by its old lastMetricsTime,
and MetricsAvailable says why. A Warning Event goes out once per outage, and not at all while the
pools have not yet served long enough to have series (a new factory is not an outage).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import TypeVar

from tokenfactory import api, cost
from tokenfactory.metrics_source import NO_SERIES
from tokenfactory.pipeline.model import (
    Assessment, Collected, Event, TotalFigures, Measurement, PoolFigures, condition, rfc3339,
)

# Token figures: measured, so kept from the last good reading while metrics are unavailable.
_POOL_TOKEN_FIELDS = ("tokens_per_second", "prompt_tokens_per_second", "generation_tokens_per_second",
                      "cost_per_million_tokens", "tokens_per_second_per_gpu", "tokens_per_second_per_megawatt",
                      "utilization", "ttft_p95_seconds", "itl_p95_seconds", "requests_waiting")
_TOTAL_TOKEN_FIELDS = ("tokens_per_second", "cost_per_million_tokens", "tokens_per_second_per_gpu",
                       "tokens_per_second_per_megawatt", "ttft_p95_seconds", "itl_p95_seconds", "last_metrics_time")


def tidy(x: float | None, digits: int = 6) -> float | None:
    """Round to ``digits`` significant digits (tidy status, no churn from float noise); None/inf -> None."""
    if x is None or not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    return round(x, -int(math.floor(math.log10(abs(x)))) + digits - 1)


def price(c: Collected) -> cost.FactoryCost:
    """Cost figures of every pool: GPUs held by scheduled pods x price, over the tokens delivered."""
    assert c.spec is not None
    by_pool = c.reading.metrics.pools if c.reading.metrics is not None else {}
    inputs = []
    for rp in c.pools:
        pm = by_pool.get(rp.name)
        obs = c.children.get(rp.name)
        inputs.append(cost.PoolInput(
            name=rp.name, gpu_type=rp.gpu_type,
            gpus=obs.scheduled_gpus() if obs else 0,
            price_per_gpu_hour=rp.price_per_gpu_hour, kilowatts_per_gpu=rp.kilowatts_per_gpu,
            prompt_tokens_per_second=pm.prompt_tokens_per_second if pm else 0.0,
            generation_tokens_per_second=pm.generation_tokens_per_second if pm else 0.0,
        ))
    return cost.factory_cost(inputs, c.spec.metrics.token_accounting)


F = TypeVar("F", PoolFigures, TotalFigures)


def _keep(fresh: F, old: F | None, names: tuple[str, ...]) -> F:
    """``fresh`` with the fields ``names`` taken from ``old`` (when there is one)."""
    if old is None:
        return fresh
    return dataclasses.replace(fresh, **{n: getattr(old, n) for n in names})


def figures(c: Collected, fc: cost.FactoryCost, last_good: Measurement | None) -> tuple[dict[str, PoolFigures], TotalFigures]:
    fm = c.reading.metrics
    pools: dict[str, PoolFigures] = {}
    for rp, f in zip(c.pools, fc.pools):
        base = PoolFigures(price_per_gpu_hour=tidy(rp.price_per_gpu_hour), dollars_per_hour=tidy(f.dollars_per_hour),
                           power_kilowatts=tidy(f.power_kilowatts))
        pm = fm.pools.get(rp.name) if fm is not None else None
        if fm is not None:
            pools[rp.name] = dataclasses.replace(
                base,
                tokens_per_second=tidy(f.headline_tokens_per_second),
                prompt_tokens_per_second=tidy(f.prompt_tokens_per_second),
                generation_tokens_per_second=tidy(f.generation_tokens_per_second),
                cost_per_million_tokens=tidy(f.cost_per_million_tokens),
                tokens_per_second_per_gpu=tidy(f.tokens_per_second_per_gpu),
                tokens_per_second_per_megawatt=tidy(f.tokens_per_second_per_megawatt),
                ttft_p95_seconds=tidy(pm.ttft_p95_seconds) if pm else None,
                itl_p95_seconds=tidy(pm.itl_p95_seconds) if pm else None,
                requests_waiting=tidy(pm.requests_waiting) if pm else None,
            )
        else:  # keep the last good token figures, marked by the old lastMetricsTime
            pools[rp.name] = _keep(base, last_good.pools.get(rp.name) if last_good else None, _POOL_TOKEN_FIELDS)
    t = fc.total
    total = TotalFigures(dollars_per_hour=tidy(t.dollars_per_hour), power_kilowatts=tidy(t.power_kilowatts))
    if fm is not None:
        ttfts = [p.ttft_p95_seconds for p in pools.values() if p.ttft_p95_seconds is not None]
        itls = [p.itl_p95_seconds for p in pools.values() if p.itl_p95_seconds is not None]
        total = dataclasses.replace(
            total,
            tokens_per_second=tidy(t.headline_tokens_per_second),
            cost_per_million_tokens=tidy(t.cost_per_million_tokens),
            tokens_per_second_per_gpu=tidy(t.tokens_per_second_per_gpu),
            tokens_per_second_per_megawatt=tidy(t.tokens_per_second_per_megawatt),
            ttft_p95_seconds=max(ttfts) if ttfts else None,
            itl_p95_seconds=max(itls) if itls else None,
            last_metrics_time=rfc3339(c.now),
        )
    else:
        total = _keep(total, last_good.total if last_good else None, _TOTAL_TOKEN_FIELDS)
    return pools, total


def serving_grace_seconds(spec: api.TokenFactorySpec) -> float:
    """How long pools must have had a ready replica before missing series count as an outage: one
    metrics window (a rate needs samples in it), at least two intervals."""
    return max(api.parse_duration(spec.metrics.window), 2 * api.parse_duration(spec.scaling.interval))


def metrics_condition(c: Collected, warned: bool, serving_since: dt.datetime | None) -> tuple[api.Condition, list[Event], bool]:
    """MetricsAvailable, the Warning to emit (if any), and whether a Warning is now out."""
    assert c.spec is not None
    prev, gen, problem = c.ref.previous_conditions, c.ref.generation, c.reading.problem
    if problem is None:
        msg = f"read from {c.reading.url} over {c.spec.metrics.window}"
        return condition("MetricsAvailable", True, "MetricsRead", msg, gen, prev, c.now), [], False
    starting = problem.reason == NO_SERIES and (
        serving_since is None or (c.now - serving_since).total_seconds() < serving_grace_seconds(c.spec))
    message = problem.message + ("; the pools have not served long enough to have series yet" if starting else "")
    cond = condition("MetricsAvailable", False, problem.reason, message, gen, prev, c.now)
    if warned or starting:
        return cond, [], warned
    return cond, [Event("Warning", "MetricsUnavailable", f"{problem.reason}: {problem.message}; holding replicas")], True


def budget_condition(c: Collected, total: TotalFigures, fc: cost.FactoryCost) -> tuple[api.Condition, list[Event]]:
    assert c.spec is not None
    o, prev, gen = c.spec.objectives, c.ref.previous_conditions, c.ref.generation
    over = []
    cpm = total.cost_per_million_tokens
    if o.max_cost_per_million_tokens is not None and cpm is not None and cpm > o.max_cost_per_million_tokens:
        over.append(f"${cpm:.4g}/Mtok is over maxCostPerMillionTokens ${o.max_cost_per_million_tokens:g}")
    if o.max_dollars_per_hour is not None and fc.total.dollars_per_hour > o.max_dollars_per_hour:
        over.append(f"${fc.total.dollars_per_hour:.2f}/h is over maxDollarsPerHour ${o.max_dollars_per_hour:g}")
    if o.max_cost_per_million_tokens is None and o.max_dollars_per_hour is None:
        return condition("BudgetExceeded", False, "NoBudget", "no cost objective set", gen, prev, c.now), []
    if over:
        events = [] if prev.get("BudgetExceeded", {}).get("status") == "True" else [Event("Warning", "BudgetExceeded", "; ".join(over))]
        return condition("BudgetExceeded", True, "OverBudget", "; ".join(over), gen, prev, c.now), events
    return condition("BudgetExceeded", False, "WithinBudget", "cost within objectives", gen, prev, c.now), []


def assess(c: Collected, last_good: Measurement | None, metrics_warned: bool,
           serving_since: dt.datetime | None) -> Assessment:
    """Price and judge one reading (``c.reading.read`` must be True)."""
    fc = price(c)
    pools, total = figures(c, fc, last_good)
    metrics, events, warned = metrics_condition(c, metrics_warned, serving_since)
    budget, budget_events = budget_condition(c, total, fc)
    return Assessment(cost=fc, pools=pools, total=total, conditions=(metrics, budget),
                      events=tuple(events + budget_events), metrics_warned=warned)
