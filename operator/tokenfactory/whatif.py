"""Offline what-if planning (pure): the cheapest replica mix for given demand levels, and why.

Behind ``tokenfactory plan``. It runs the operator's own planner (:func:`planner.plan_for_demand`
for the plan, :func:`planner.solve` for the analysis) on a factory's pools, bounds, budget and
power cap; nothing here reads files or clocks.

For each demand level it answers:

* the cheapest mix covering demand x (1 + headroom), or the most capacity that fits when none does,
  with $/hour, $/Mtok at the served load (min(demand, capacity)), tokens/s per GPU and per MW;
* which constraints bind: a constraint binds when relaxing it alone changes the optimum (the
  budget removed, the power cap removed, a pool's maxReplicas raised, a pool's minReplicas set
  to 0); ``demand`` binds when the mix covers demand x headroom with some pool above its minReplicas
  (the minimums alone do not cover it);
* the next-best mix: the cheapest mix that is not the best mix plus spare replicas, i.e. one
  with fewer replicas in at least one pool (every such mix has n_i <= best_i - 1 for some pool i,
  so the minimum over those sub-problems is exact), with its $/hour difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tokenfactory import planner


def _key(sol: planner.Solution) -> tuple[float, float]:
    """The optimiser's objective, smallest first: capacity shortfall, then $/hour."""
    shortfall = max(0.0, sol.required_tokens_per_second - sol.capacity_tokens_per_second)
    return (round(shortfall, 6), round(sol.dollars_per_hour, 9))


def _solve(pools: Sequence[planner.PoolProfile], required: float, objectives: planner.Objectives) -> planner.Solution:
    return planner.solve(pools, required, max_dollars_per_hour=objectives.max_dollars_per_hour,
                         max_megawatts=objectives.max_megawatts)


def _served_figures(pools: Sequence[planner.PoolProfile], replicas: dict[str, int], demand: float) -> dict[str, Any]:
    cap = sum(p.capacity * replicas[p.name] for p in pools)
    dollars = sum(p.price_per_replica_hour * replicas[p.name] for p in pools)
    kw = sum(p.kilowatts_per_replica * replicas[p.name] for p in pools)
    gpus = sum(p.gpus_per_replica * replicas[p.name] for p in pools)
    served = min(demand, cap)
    return {
        "replicas": dict(replicas),
        "capacityTokensPerSecond": cap,
        "servedTokensPerSecond": served,
        "dollarsPerHour": dollars,
        "costPerMillionTokens": dollars / (served * 3600.0) * 1e6 if served > 0 else None,
        "gpus": gpus,
        "megawatts": kw / 1000.0,
        "tokensPerSecondPerGpu": served / gpus if gpus else None,
        "tokensPerSecondPerMegawatt": served / (kw / 1000.0) if kw > 0 else None,
    }


def binding_constraints(pools: Sequence[planner.PoolProfile], required: float, objectives: planner.Objectives,
                        best: planner.Solution) -> list[str]:
    """The constraints whose relaxation alone changes the optimum, as short labels."""
    base = _key(best)
    binds: list[str] = []
    if not best.within_limits:
        binds.append("minReplicas alone exceed " + " and ".join(
            x for x, on in (("the budget", "budget" in best.limited_by), ("the power cap", "power" in best.limited_by)) if on))
    if objectives.max_dollars_per_hour is not None:
        relaxed = planner.solve(pools, required, max_megawatts=objectives.max_megawatts)
        if _key(relaxed) < base:
            binds.append(f"budget ${objectives.max_dollars_per_hour:g}/h")
    if objectives.max_megawatts is not None:
        relaxed = planner.solve(pools, required, max_dollars_per_hour=objectives.max_dollars_per_hour)
        if _key(relaxed) < base:
            binds.append(f"power cap {objectives.max_megawatts:g} MW")
    for i, p in enumerate(pools):
        if p.capacity > 0 and best.replicas[p.name] >= p.max_replicas:
            more = p.max_replicas + int(math.ceil(required / p.capacity)) + 1
            relaxed = _solve([*pools[:i], replace(p, max_replicas=more), *pools[i + 1:]], required, objectives)
            if _key(relaxed) < base:
                binds.append(f"{p.name} maxReplicas {p.max_replicas}")
        if p.min_replicas > 0 and best.replicas[p.name] <= p.min_replicas:
            relaxed = _solve([*pools[:i], replace(p, min_replicas=0), *pools[i + 1:]], required, objectives)
            if _key(relaxed) < base:
                binds.append(f"{p.name} minReplicas {p.min_replicas}")
    if best.covers_required and best.within_limits and required > 0 \
            and any(best.replicas[p.name] > p.min_replicas for p in pools):
        binds.insert(0, "demand")
    return binds


def next_best(pools: Sequence[planner.PoolProfile], required: float, objectives: planner.Objectives,
              best: planner.Solution) -> tuple[planner.Solution, str] | None:
    """The cheapest mix with fewer replicas than ``best`` in at least one pool, and that pool."""
    found: tuple[tuple[float, float], planner.Solution, str] | None = None
    for i, p in enumerate(pools):
        b = best.replicas[p.name]
        if b <= p.min_replicas:
            continue
        alt = _solve([*pools[:i], replace(p, max_replicas=b - 1), *pools[i + 1:]], required, objectives)
        if not alt.within_limits:
            continue
        k = _key(alt)
        if found is None or k < found[0]:
            found = (k, alt, p.name)
    return (found[1], found[2]) if found else None


def what_if(pools: Sequence[planner.PoolProfile], demand: float, *, objectives: planner.Objectives,
            headroom: float) -> dict[str, Any]:
    """Everything ``tokenfactory plan`` shows for one demand level (JSON-ready)."""
    plan = planner.plan_for_demand(pools, demand, objectives=objectives, headroom=headroom)
    required = plan.required_tokens_per_second or 0.0
    best = _solve(pools, required, objectives)
    if best.replicas != plan.replicas:  # pragma: no cover - plan_for_demand solves the same problem
        raise AssertionError(f"planner disagrees with itself: {best.replicas} vs {plan.replicas}")
    out: dict[str, Any] = {
        "demandTokensPerSecond": demand,
        "headroom": headroom,
        "requiredTokensPerSecond": required,
        **_served_figures(pools, plan.replicas, demand),
        "coversDemand": plan.demand_met,
        "coversHeadroom": plan.headroom_met,
        "limitedBy": list(plan.limited_by),
        "withinCostObjective": plan.within_cost_objective,
        "binding": binding_constraints(pools, required, objectives, best),
        "summary": plan.summary,
        "nextBest": None,
    }
    alt = next_best(pools, required, objectives, best)
    if alt is not None:
        sol, fewer = alt
        fig = _served_figures(pools, sol.replicas, demand)
        out["nextBest"] = {
            **fig,
            "coversHeadroom": sol.covers_required,
            "coversDemand": fig["capacityTokensPerSecond"] >= demand - 1e-7 * max(1.0, demand),
            "fewerOf": fewer,
            "deltaDollarsPerHour": fig["dollarsPerHour"] - out["dollarsPerHour"],
        }
    return out


def parse_demand(text: str) -> list[float]:
    """``40k,60k,1.5M,2500`` -> tokens/s; raises ValueError naming the bad part."""
    out = []
    for part in text.split(","):
        s = part.strip()
        mult = 1.0
        if s[-1:] in ("k", "K"):
            s, mult = s[:-1], 1e3
        elif s[-1:] in ("m", "M"):
            s, mult = s[:-1], 1e6
        try:
            v = float(s) * mult
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a demand in tokens/s (e.g. 40000, 40k, 1.5M)") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{part.strip()!r}: demand must be a finite number >= 0")
        out.append(v)
    return out
