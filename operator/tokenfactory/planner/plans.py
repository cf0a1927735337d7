"""Building :class:`Plan` values: totals, per-pool roles and the summary as structured reasons
(rendered once, by :mod:`tokenfactory.planner.explain`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tokenfactory.planner.capacity import CapacityState
from tokenfactory.planner.config import PlannerInputs, PlannerState
from tokenfactory.planner.explain import render_pool, render_summary
from tokenfactory.planner.latency import SafeLoad
from tokenfactory.planner.stabilise import fit_limits
from tokenfactory.planner.types import INF, Objectives, Plan, PoolPlan, PoolProfile, Reason, Solution, per_mtok


def totals(pools: Sequence[PoolProfile], replicas: Mapping[str, int],
           caps: Mapping[str, float]) -> tuple[float, float, float, int]:
    """(capacity tok/s, $/hour, kW, GPUs) of a replica mix."""
    capv = sum(replicas[p.name] * caps.get(p.name, p.capacity) for p in pools)
    cost = sum(replicas[p.name] * p.price_per_replica_hour for p in pools)
    kwv = sum(replicas[p.name] * p.kilowatts_per_replica for p in pools)
    gpus = sum(replicas[p.name] * p.gpus_per_replica for p in pools)
    return capv, cost, kwv, gpus


def _limits(objectives: Objectives) -> dict[str, float | None]:
    return {"budget": objectives.max_dollars_per_hour, "megawatts": objectives.max_megawatts}


def _head(name: str, current: int, target: int) -> Reason:
    if target != current:
        return Reason.of("pool.change", pool=name, current=current, target=target)
    return Reason.of("pool.stay", pool=name, current=current)


def hold(state: PlannerState, pools: Sequence[PoolProfile], cur: Mapping[str, int], inputs: PlannerInputs,
         problem: str, now: float) -> Plan:
    """Keep the current replicas (clamped to min/max, trimmed to budget/power): no usable metrics."""
    targets = {p.name: min(max(cur[p.name], p.min_replicas), p.max_replicas) for p in pools}
    caps = {}
    for p in pools:
        cs = state.capacity_of(p.name)
        caps[p.name] = cs.estimate if cs is not None and cs.profile == p.capacity else p.capacity
    floors = {p.name: p.min_replicas for p in pools}
    targets, trimmed = fit_limits(pools, targets, floors, caps, inputs.objectives)
    holding = Reason.of("holding", problem=problem)
    lines = []
    for p in pools:
        c, t = cur[p.name], targets[p.name]
        why: tuple[Reason, ...] = (_head(p.name, c, t), holding)
        if t != c and p.name in trimmed:
            why += (Reason.of("hold.lowered", **_limits(inputs.objectives)),)
        elif t != c:
            why += (Reason.of("hold.clamped", min=p.min_replicas, max=p.max_replicas),)
        lines.append(PoolPlan(name=p.name, gpu_type=p.gpu_type, current=c, replicas=t, optimal=t,
                              capacity_per_replica=caps[p.name], profile_capacity_per_replica=p.capacity,
                              price_per_replica_hour=p.price_per_replica_hour, reason=render_pool(why), why=why))
    capv, cost, kwv, gpus = totals(pools, targets, caps)
    return Plan(time=now, replicas=targets, pools=tuple(lines), demand_tokens_per_second=None,
                required_tokens_per_second=None, capacity_tokens_per_second=capv, dollars_per_hour=cost,
                dollars_per_million_tokens=None, megawatts=kwv / 1000.0, gpus=gpus, demand_met=None,
                headroom_met=None, limited=False, limited_by=(), holding=True, within_cost_objective=None,
                summary=render_summary((holding,)), summary_why=(holding,))


@dataclass(frozen=True)
class Context:
    """What every pool line of one plan shares."""

    pools: Sequence[PoolProfile]
    sol: Solution
    caps: Mapping[str, float]
    objectives: Objectives
    ranked: list[PoolProfile]

    def eff(self, p: PoolProfile) -> float:
        """$/Mtok at (learned) capacity."""
        return per_mtok(p.price_per_replica_hour, self.caps[p.name]) or INF


def compose(pools: Sequence[PoolProfile], cur: Mapping[str, int], targets: Mapping[str, int], sol: Solution,
            demand: float, headroom: float, objectives: Objectives, caps: Mapping[str, float],
            notes: Mapping[str, Reason | None], now: float | None, demand_note: Reason | None,
            cap_states: Mapping[str, CapacityState] | None = None, need: Reason | None = None,
            slo: Mapping[str, SafeLoad] | None = None) -> Plan:
    """The plan for ``targets`` (after stabilisation) given the optimum ``sol``, with reasons.

    ``need`` (default: demand x headroom) says what the requirement is; ``slo`` (SLO planning) the
    load each pool is planned at and which latency limit sets it (``caps`` are then those loads)."""
    required = sol.required_tokens_per_second
    capv, cost, kwv, gpus = totals(pools, targets, caps)
    served = min(demand, capv)
    mtok_now = per_mtok(cost, served) if served > 0 else None
    within_cost = None
    if objectives.max_dollars_per_million_tokens is not None and mtok_now is not None:
        within_cost = mtok_now <= objectives.max_dollars_per_million_tokens + 1e-12
    eps = 1e-7 * max(1.0, required)
    demand_met = capv >= demand - eps
    headroom_met = capv >= required - eps
    limited = not sol.covers_required or not sol.within_limits
    ctx = Context(pools=pools, sol=sol, caps=caps, objectives=objectives, ranked=[])
    ranked = sorted(pools, key=lambda p: (ctx.eff(p), p.name))
    ctx = Context(pools=pools, sol=sol, caps=caps, objectives=objectives, ranked=ranked)
    if need is None:
        need = Reason.of("need.headroom", demand=demand, headroom=headroom, required=required)
    lines: list[PoolPlan] = []
    for p in pools:
        c, t, o = cur[p.name], targets[p.name], sol.replicas[p.name]
        cap = caps[p.name]
        why: tuple[Reason, ...] = (_head(p.name, c, t), need, _role(ctx, p, required))
        if slo is not None and p.name in slo:
            why += (slo[p.name].why,)
        others = tuple((q.name, sol.replicas[q.name], caps[q.name]) for q in pools if q.name != p.name)
        if others:
            why += (Reason.of("others", items=others),)
        learned = cap_states[p.name].estimate if slo is not None and cap_states and p.name in cap_states else cap
        if cap_states is not None and p.capacity > 0 and abs(learned / p.capacity - 1) > 0.05:
            why += (Reason.of("learned", capacity=learned, profile=p.capacity),)
        note = notes.get(p.name)
        if note is not None:
            why += (Reason.of("note", note=note, optimum=o),)
        if limited and t != c:
            why += (Reason.of("serving_most"),)
        lines.append(PoolPlan(name=p.name, gpu_type=p.gpu_type, current=c, replicas=t, optimal=o,
                              capacity_per_replica=cap, profile_capacity_per_replica=p.capacity,
                              price_per_replica_hour=p.price_per_replica_hour, reason=render_pool(why),
                              capacity_reason=cap_states[p.name].reason if cap_states and p.name in cap_states
                              else "", why=why))
    summary = _summary(pools, targets, sol, demand, headroom, objectives, demand_note, capv, cost, kwv,
                       mtok_now, served, demand_met, within_cost, need if slo is not None else None)
    return Plan(time=now, replicas=dict(targets), pools=tuple(lines), demand_tokens_per_second=demand,
                required_tokens_per_second=required, capacity_tokens_per_second=capv, dollars_per_hour=cost,
                dollars_per_million_tokens=mtok_now, megawatts=kwv / 1000.0, gpus=gpus, demand_met=demand_met,
                headroom_met=headroom_met, limited=limited, limited_by=sol.limited_by, holding=False,
                within_cost_objective=within_cost, summary=render_summary(summary), summary_why=summary)


def _summary(pools: Sequence[PoolProfile], targets: Mapping[str, int], sol: Solution, demand: float,
             headroom: float, objectives: Objectives, demand_note: Reason | None, capv: float, cost: float,
             kwv: float, mtok_now: float | None, served: float, demand_met: bool,
             within_cost: bool | None, slo_need: Reason | None) -> tuple[Reason, ...]:
    required = sol.required_tokens_per_second
    mix = tuple((p.name, targets[p.name]) for p in pools)
    why: tuple[Reason, ...] = (Reason.of(
        "summary.plan", demand=demand, demand_note=demand_note, headroom=headroom, required=required,
        mix=mix, capacity=capv, cost=cost),)
    if slo_need is not None:
        why = (Reason.of("summary.slo", demand=demand, demand_note=demand_note, need=slo_need, required=required,
                         mix=mix, capacity=capv, cost=cost),)
    if mtok_now is not None:
        why += (Reason.of("summary.per_mtok", per_mtok=mtok_now, served=served),)
    if kwv > 0:
        why += (Reason.of("summary.mw", kilowatts=kwv),)
    if not sol.within_limits:
        why += (Reason.of("summary.minimums", dollars=sol.dollars_per_hour, kilowatts=sol.kilowatts,
                          **_limits(objectives)),)
    elif not sol.covers_required:
        why += (Reason.of("summary.limited", required=required, limited_by=sol.limited_by,
                          capacity=sol.capacity_tokens_per_second,
                          unserved=None if demand_met else max(0.0, demand - capv), **_limits(objectives)),)
    if within_cost is False:
        why += (Reason.of("summary.over_cost", per_mtok=mtok_now or 0.0,
                          objective=objectives.max_dollars_per_million_tokens or 0.0),)
    return why


def _role(ctx: Context, p: PoolProfile, required: float) -> Reason:
    """Why a pool takes the share the optimum gives it."""
    opt, caps, sol = ctx.sol.replicas, ctx.caps, ctx.sol
    o, eff = opt[p.name], ctx.eff(p)
    rank = next(i for i, q in enumerate(ctx.ranked) if q.name == p.name)
    if o > p.min_replicas or (o > 0 and _needed(p, opt, caps, required)):
        if rank == 0:
            return Reason.of("role.cheapest", pool=p.name, eff=eff, n=o, cap=caps[p.name])
        cheaper = tuple(_pool_state(q, opt, caps, ctx.pools, ctx.objectives) for q in ctx.ranked[:rank])
        return Reason.of("role.adds", pool=p.name, eff=eff, rank=rank, n=o, cap=caps[p.name], cheaper=cheaper)
    if o > 0:
        return Reason.of("role.min", pool=p.name, min=p.min_replicas, eff=eff)
    if p.max_replicas == 0:
        return Reason.of("role.max_zero", pool=p.name)
    if required <= 0:
        return Reason.of("role.no_demand", pool=p.name, eff=eff)
    if not sol.covers_required and sol.limited_by:
        return Reason.of("role.no_room", pool=p.name, eff=eff, **_limits(ctx.objectives))
    return Reason.of("role.not_needed", pool=p.name, eff=eff)


def _needed(p: PoolProfile, opt: Mapping[str, int], caps: Mapping[str, float], required: float) -> bool:
    """Whether the pool's capacity at its minimum is part of covering the requirement."""
    others = sum(opt[n] * caps[n] for n in opt if n != p.name)
    return others < required


def _pool_state(q: PoolProfile, opt: Mapping[str, int], caps: Mapping[str, float], pools: Sequence[PoolProfile],
                objectives: Objectives) -> Reason:
    """Why a cheaper pool ``q`` does not take more of the load."""
    n, cap = opt[q.name], caps[q.name]
    if n >= q.max_replicas:
        return Reason.of("cheaper.at_max", pool=q.name, max=q.max_replicas, n=n, cap=cap)
    _, cost, kwv, _ = totals(pools, opt, caps)
    budget, mw = objectives.max_dollars_per_hour, objectives.max_megawatts
    if budget is not None and cost + q.price_per_replica_hour > budget + 1e-9:
        return Reason.of("cheaper.budget", pool=q.name, n=n, cap=cap, budget=budget)
    if mw is not None and (kwv + q.kilowatts_per_replica) / 1000 > mw + 1e-12:
        return Reason.of("cheaper.power", pool=q.name, n=n, cap=cap, megawatts=mw)
    return Reason.of("cheaper.costlier", pool=q.name, n=n, cap=cap)
