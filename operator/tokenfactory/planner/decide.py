"""The planning step: estimate capacity and demand, optimise, stabilise, explain."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from tokenfactory.planner.capacity import CapacityState
from tokenfactory.planner.config import PlannerConfig, PlannerInputs, PlannerState
from tokenfactory.planner.demand import DemandState
from tokenfactory.planner.explain import render
from tokenfactory.planner.forecast import ForecastState
from tokenfactory.planner.latency import LatencyState, SafeLoad, WindowNoise, safe_loads
from tokenfactory.planner.plans import compose, hold
from tokenfactory.planner.solver import solve
from tokenfactory.planner.stabilise import Excursions, fit_limits, hysteresis_band, stabilise, track_excursions
from tokenfactory.planner.types import Objectives, Observations, Plan, PoolProfile, Reason, Solution


NO_OBJECTIVES = Objectives()  # no latency or budget limit (a frozen value: safe as a default)


def solve_for(pools: Sequence[PoolProfile], demand: float, headroom: float, objectives: Objectives,
              cur: Mapping[str, int], caps: Mapping[str, float], stop: Callable[[], bool] | None = None) -> Solution:
    """:func:`solve` for demand x (1 + headroom) within the objectives' budget and power cap."""
    required = max(0.0, demand) * (1.0 + max(0.0, headroom))
    return _solve(pools, required, objectives, cur, caps, stop)


def plan_for_demand(
    pools: Sequence[PoolProfile],
    demand: float,
    *,
    objectives: Objectives = NO_OBJECTIVES,
    headroom: float = 0.2,
    current: Mapping[str, int] | None = None,
    capacities: Mapping[str, float] | None = None,
    now: float | None = None,
) -> Plan:
    """Cheapest plan for ``demand`` tokens/s, applied at once (no forecast, no stabilization)."""
    cur = {p.name: int((current or {}).get(p.name, 0)) for p in pools}
    caps = {p.name: float((capacities or {}).get(p.name, p.capacity)) for p in pools}
    sol = solve_for(pools, demand, headroom, objectives, cur, caps)
    notes: dict[str, Reason | None] = {p.name: None for p in pools}
    return compose(pools, cur, sol.replicas, sol, demand, headroom, objectives, caps, notes, now, None)


@dataclass(frozen=True)
class DemandEstimate:
    """The demand planned for (tok/s), the estimator's new state and the note explaining it."""

    demand: float
    state: DemandState
    note: Reason | None


@dataclass(frozen=True)
class Sizing:
    """What the solver covers: ``required`` tok/s on per-replica ``caps`` (for the SLO: the loads the
    latency objectives allow), how to scale it (hysteresis), and why."""

    required: float
    caps: Mapping[str, float]
    need: Reason
    demand: float  # the point forecast (what the hysteresis band measures)
    headroom: float
    slo: Mapping[str, SafeLoad] | None = None
    latency: tuple[LatencyState, ...] = ()
    forecast: ForecastState = ForecastState()
    floor: float | None = None  # SLO planning: demand x (1 + headroom) on the full learned capacity

    def required_at(self, factor: float) -> float:
        if self.slo is None:  # demand x factor x (1 + headroom), in the order plan_for_demand uses
            return max(0.0, self.demand * factor) * (1.0 + max(0.0, self.headroom))
        return self.required * factor


def decide(state: PlannerState | None, inputs: PlannerInputs, now: float, *,
           stop: Callable[[], bool] | None = None) -> tuple[Plan, PlannerState]:
    """One planning step: estimate capacity and demand, optimise, stabilise, explain.

    ``stop`` (optional): the caller's time budget, asked by the solver as it searches; when it says
    stop, the plan is the best mix found so far and its summary says so. Without it the search runs to
    the end (or to ``solve``'s node cap).

    Steps: (1) metrics missing or older than ``max_metrics_age_seconds`` -> hold current replicas
    (clamped to min/max, trimmed to budget/power) with reason "holding: metrics unavailable (...)",
    state unchanged; (2) update each pool's learned capacity and the demand forecast (level + damped
    trend over the longest start-up delay), unless ``demand_tokens_per_second`` is given;
    (3) :func:`solve` for forecast x (1 + headroom), or, with ``slo_attainment``, for the forecast's
    ``slo_attainment`` quantile on each pool's latency-safe load (see :class:`PlannerInputs`);
    (4) scale up at once; scale down only to the
    highest count recommended within ``scale_down_stabilization_seconds`` (each interval records,
    per pool, the larger of the optimum and the optimum for demand x (1 + band), band = the measured
    demand noise, at most ``scale_down_tolerance``: hysteresis against flapping at a replica
    boundary; see :class:`PlannerConfig`) and by at most
    max(1, floor(max_scale_down_fraction x current)) replicas per call; if delayed scale-downs
    would break budget or power, release them early (least cost-efficient pool first).
    Deterministic; call it with any clock (a simulated one in benchmarks).
    """
    state = state or PlannerState()
    cfg = inputs.config
    pools = tuple(inputs.pools)
    cur = {p.name: int(inputs.current.get(p.name, 0)) for p in pools}
    obs = inputs.observations
    problem = _metrics_problem(inputs, cfg, now)
    if problem is not None:
        return hold(state, pools, cur, inputs, problem, now), state
    # (2) estimators
    cap_states = _learn_capacity(state, inputs, pools, now)
    caps = {cs.pool: cs.estimate for cs in cap_states}
    horizon = cfg.forecast_horizon_seconds
    if horizon is None:
        horizon = max((p.startup_seconds for p in pools if p.max_replicas > 0), default=0.0)
    est = _estimate_demand(state, inputs, pools, cur, caps, horizon, now)
    if isinstance(est, str):
        return hold(state, pools, cur, inputs, est, now), state
    exc = Excursions(since=state.excursion_since, recent=state.excursions)
    if inputs.demand_tokens_per_second is None and obs is not None:
        exc = track_excursions(state, cfg, obs, est.state, horizon, now)
    size = _slo_sizing(state, inputs, pools, caps, est, horizon, now) if inputs.slo_attainment is not None \
        else Sizing(required=0.0, caps=caps, need=Reason.of("need.headroom"), demand=est.demand,
                    headroom=inputs.headroom or 0.0)
    # (3) optimise, with the hysteresis band's optimum remembered for scale-downs
    demand = est.demand
    sol, routed = _solve_routed(pools, size.required_at(1.0), inputs, cur, size.caps, stop)
    if size.slo is not None:
        size, sol, routed = _slo_refined(inputs, pools, caps, size, cur, sol, routed, stop)
        sol, floor_binds = _with_floor(pools, sol, inputs, cur, caps, replace(size, caps=routed), stop=stop)
        size = replace(size, need=Reason(size.need.code, tuple(
            (k, floor_binds if k == "floor_binds" else v) for k, v in size.need.params)))
    size = replace(size, caps=routed)
    raw = sol.replicas
    demands = tuple((t, d) for t, d in state.demands if now - t < cfg.hysteresis_window_seconds and t < now)
    demands = demands + ((now, demand),)
    band, band_why = hysteresis_band(cfg, demands)
    upper = raw
    if band > 0 and demand > 0:
        upper_sol = _solve_routed(pools, size.required_at(1 + band), inputs, cur, size.caps, stop)[0]
        upper = _with_floor(pools, upper_sol, inputs, cur, caps, size, 1 + band, stop)[0].replicas
    keep = {name: max(raw[name], upper[name]) for name in raw}
    # (4) stabilise, then keep within budget and power
    st = stabilise(state, cfg, pools, cur, raw, keep, band, band_why, exc.defer, now)
    targets, trimmed = fit_limits(pools, st.targets, {p.name: raw[p.name] for p in pools}, size.caps,
                                  inputs.objectives)
    notes = dict(st.notes)
    for name in trimmed:
        notes[name] = Reason.of("released", budget=inputs.objectives.max_dollars_per_hour,
                                megawatts=inputs.objectives.max_megawatts, inner=notes[name])
    plan = compose(pools, cur, targets, sol, demand, size.headroom, inputs.objectives, size.caps, notes, now,
                   est.note, cap_states={cs.pool: cs for cs in cap_states},
                   need=size.need if size.slo is not None else None, slo=size.slo)
    if sol.stopped:
        why = Reason.of("summary.stopped", nodes=sol.nodes)
        plan = replace(plan, summary=plan.summary + render(why), summary_why=plan.summary_why + (why,))
    new_state = PlannerState(capacity=tuple(cap_states), demand=est.state, recommendations=st.history, time=now,
                             demands=demands, excursion_since=exc.since, excursions=exc.recent,
                             downs=st.downs, flaps=st.flaps, latency=size.latency or state.latency,
                             forecast=size.forecast if size.slo is not None else state.forecast,
                             planned=tuple((pp.name, pp.capacity_per_replica) for pp in plan.pools)
                             if size.slo is not None else ())
    return plan, new_state


def _solve(pools: Sequence[PoolProfile], required: float, objectives: Objectives, cur: Mapping[str, int],
           caps: Mapping[str, float], stop: Callable[[], bool] | None = None) -> Solution:
    return solve(pools, required, capacities=caps, current=cur,
                 max_dollars_per_hour=objectives.max_dollars_per_hour, max_megawatts=objectives.max_megawatts,
                 stop=stop)


def _solve_routed(pools: Sequence[PoolProfile], required: float, inputs: PlannerInputs, cur: Mapping[str, int],
                  caps: Mapping[str, float], stop: Callable[[], bool] | None = None
                  ) -> tuple[Solution, dict[str, float]]:
    """The optimum under the routing as rendered, and the load each replica then carries.

    ``weighted``: shares follow capacity, so each replica carries its own capacity (one solve).
    ``even``: every ready pod gets the same share, so a mix carries (its replicas) x (the per-replica
    load of its slowest pool): one solve per candidate slowest pool, with the pools slower than it
    left out and every replica counted at its load; the best of them (exact: the slowest pool of
    the optimum is one of the candidates)."""
    if inputs.routing != "even":
        return _solve(pools, required, inputs.objectives, cur, caps, stop), dict(caps)
    best: tuple[tuple[float, float, int, int], Solution, dict[str, float]] | None = None
    # fastest candidate first, ties kept: the kept optimum then uses a pool at its candidate load
    for r in sorted({caps[p.name] for p in pools if p.max_replicas > 0 and caps[p.name] > 0}, reverse=True):
        slower = [p for p in pools if caps[p.name] < r]
        if any(p.min_replicas > 0 for p in slower):
            continue
        allowed = tuple(p if caps[p.name] >= r else replace(p, min_replicas=0, max_replicas=0) for p in pools)
        even = {p.name: r for p in pools}
        sol = _solve(allowed, required, inputs.objectives, cur, even, stop)
        key = (max(0.0, sol.required_tokens_per_second - sol.capacity_tokens_per_second), sol.dollars_per_hour,
               sol.changes, sol.gpus)
        if best is None or key < best[0]:
            best = (key, sol, even)
    if best is None:  # every mix includes the slowest pool's minimum: all replicas at its load
        r = min((caps[p.name] for p in pools), default=0.0)
        even = {p.name: r for p in pools}
        return _solve(pools, required, inputs.objectives, cur, even, stop), even
    return best[1], best[2]


def _slo_sizing(state: PlannerState, inputs: PlannerInputs, pools: Sequence[PoolProfile], caps: Mapping[str, float],
                est: DemandEstimate, horizon: float, now: float) -> Sizing:
    """Plan for the SLO: each pool at the load its learned latency curves allow, for the
    ``slo_attainment`` quantile of the demand forecast (error measured from history)."""
    cfg, obs = inputs.config, inputs.observations
    q = float(inputs.slo_attainment or 0.99)
    by_pool = {ls.pool: ls for ls in state.latency}
    lat_states = []
    for p in pools:
        ls = by_pool.get(p.name) or cfg.latency.initial(p)
        if obs is not None:
            ls = cfg.latency.observe(ls, p, obs.pools.get(p.name), inputs.objectives, now)
        lat_states.append(ls)
    safe, eff = _safe(inputs, pools, caps, tuple(lat_states), inputs.current)
    fstate = state.forecast
    now_demand = None
    if inputs.demand_tokens_per_second is None and est.state.level is not None:
        now_demand = est.state.observed + est.state.backlog
        # errors and the recent peak on the rate served (corrected for a draining queue), not on the
        # backlog's catch-up rate
        fstate = cfg.forecast.observe(fstate, est.state.observed, est.demand, horizon, now)
    measured_tpr = obs.tokens_per_request if obs is not None and obs.tokens_per_request else None
    band = cfg.forecast.band(fstate, q, est.demand, measured_tpr)
    asked = now_demand if now_demand is not None else est.demand
    required = band.planned(est.demand, asked)
    floor = None
    if inputs.headroom is not None and inputs.headroom > 0:
        floor = est.demand * (1.0 + inputs.headroom)
    cap = band.cap(asked)
    capped = band.peak > 0 and est.demand * (1.0 + band.error) > cap and required <= cap * (1 + 1e-12)
    need = Reason.of("need.slo", demand=est.demand, quantile=q, error=band.error, samples=band.samples,
                     measured=band.measured, horizon=horizon, required=required,
                     floor=inputs.headroom if floor is not None else None, floor_binds=False,
                     peak=band.peak if capped else None, peak_band=max(0.0, band.noise),
                     peak_seconds=cfg.forecast.config.peak_seconds)
    return Sizing(required=required, caps=eff, need=need, demand=est.demand, headroom=inputs.headroom or 0.0,
                  slo=safe, latency=tuple(lat_states), forecast=fstate, floor=floor)


def _with_floor(pools: Sequence[PoolProfile], sol: Solution, inputs: PlannerInputs, cur: Mapping[str, int],
                caps: Mapping[str, float], size: Sizing, factor: float = 1.0,
                stop: Callable[[], bool] | None = None) -> tuple[Solution, bool]:
    """The headroom floor of SLO planning: the learned *full* capacity must carry demand x (1 +
    headroom), as without SLO planning; each pool gets the larger of the two optima's counts (both
    constraints hold; the floor is a user's explicit choice, not part of the exact optimum). Also
    whether the floor added replicas."""
    if size.floor is None:
        return sol, False
    floor_sol, _ = _solve_routed(pools, size.floor * factor, inputs, cur, caps, stop)
    merged = {n: max(v, floor_sol.replicas.get(n, 0)) for n, v in sol.replicas.items()}
    if merged == sol.replicas:
        return sol, False
    eff = size.caps
    by = {p.name: p for p in pools}
    capv = sum(merged[n] * eff.get(n, 0.0) for n in merged)
    return replace(
        sol, replicas=merged, capacity_tokens_per_second=capv,
        dollars_per_hour=sum(merged[n] * by[n].price_per_replica_hour for n in merged),
        kilowatts=sum(merged[n] * by[n].kilowatts_per_replica for n in merged),
        gpus=sum(merged[n] * by[n].gpus_per_replica for n in merged),
        changes=sum(abs(merged[n] - int(cur.get(n, 0))) for n in merged),
        covers_required=capv >= sol.required_tokens_per_second * (1 - 1e-9)), True


def _safe(inputs: PlannerInputs, pools: Sequence[PoolProfile], caps: Mapping[str, float],
          lat_states: tuple[LatencyState, ...], replicas: Mapping[str, int]) -> tuple[dict[str, SafeLoad],
                                                                                 dict[str, float]]:
    """Each pool's latency-safe load with room for the window noise of ``replicas`` replicas, and
    what a replica then counts for (at most its learned capacity)."""
    cfg, obs = inputs.config, inputs.observations
    q = float(inputs.slo_attainment or 0.99)
    tpr = obs.tokens_per_request if obs is not None and obs.tokens_per_request else cfg.demand.tokens_per_request
    noise = {p.name: WindowNoise(quantile=q, replicas=max(1, int(replicas.get(p.name, 0))), tokens_per_request=tpr,
                                 window_seconds=cfg.demand.reference_interval_seconds) for p in pools}
    safe = safe_loads(cfg.latency, lat_states, pools, inputs.objectives, noise)
    return safe, {p.name: min(caps[p.name], safe[p.name].tokens_per_second) for p in pools}


def _slo_refined(inputs: PlannerInputs, pools: Sequence[PoolProfile], caps: Mapping[str, float], size: Sizing,
                 cur: Mapping[str, int], sol: Solution, routed: dict[str, float],
                 stop: Callable[[], bool] | None = None) -> tuple[Sizing, Solution, dict[str, float]]:
    """The window noise depends on how many replicas share a pool's load: re-size with the counts the
    optimum plans (a few passes; kept when they agree with the counts they were sized for)."""
    for _ in range(3):
        safe, eff = _safe(inputs, pools, caps, size.latency, {n: max(v, 1) for n, v in sol.replicas.items()})
        if all(abs(eff[n] - size.caps[n]) <= 1e-9 * max(1.0, eff[n]) for n in eff):
            break
        size = replace(size, caps=eff, slo=safe)
        sol, routed = _solve_routed(pools, size.required_at(1.0), inputs, cur, size.caps, stop)
    return size, sol, routed


def _metrics_problem(inputs: PlannerInputs, cfg: PlannerConfig, now: float) -> str | None:
    """Why the metrics cannot be used (None: they can)."""
    obs = inputs.observations
    if obs is None and inputs.demand_tokens_per_second is None:
        return inputs.metrics_unavailable_reason or "no metrics"
    if obs is not None and obs.observed_at is not None and now - obs.observed_at > cfg.max_metrics_age_seconds:
        return f"stale: newest sample {now - obs.observed_at:.0f}s old"
    return None


def _learn_capacity(state: PlannerState, inputs: PlannerInputs, pools: Sequence[PoolProfile],
                    now: float) -> list[CapacityState]:
    cfg, obs = inputs.config, inputs.observations
    objectives = inputs.objectives
    if inputs.slo_attainment is not None:  # latency is the latency curves' business, not capacity's
        objectives = replace(objectives, ttft_p95_seconds=None, itl_p95_seconds=None)
    out: list[CapacityState] = []
    for p in pools:
        cs = state.capacity_of(p.name) or cfg.capacity.initial(p)
        if cs.profile != p.capacity:  # the profile changed in the spec: start again from it
            cs = cfg.capacity.initial(p)
        if obs is not None:
            cs = cfg.capacity.observe(cs, obs.pools.get(p.name), objectives, now)
        out.append(cs)
    return out


def _estimate_demand(state: PlannerState, inputs: PlannerInputs, pools: Sequence[PoolProfile],
                     cur: Mapping[str, int], caps: Mapping[str, float], horizon: float,
                     now: float) -> DemandEstimate | str:
    """The demand to plan for, or why there is none (a hold)."""
    cfg = inputs.config
    if inputs.demand_tokens_per_second is not None:
        demand = float(inputs.demand_tokens_per_second)
        if not math.isfinite(demand):
            return f"demand is {demand}"
        return DemandEstimate(demand=max(0.0, demand), state=state.demand, note=None)
    obs = inputs.observations
    assert obs is not None
    if not (math.isfinite(obs.tokens_per_second) and math.isfinite(obs.requests_waiting)):
        return "non-finite token rate or queue"
    # spare capacity serving now, and how soon a new replica could serve: a backlog that this
    # spare drains before then buys nothing
    ready_cap = sum(max(0, o.ready_replicas) * caps.get(name, 0.0) for name, o in obs.pools.items())
    spare = max(0.0, ready_cap - max(0.0, obs.tokens_per_second))
    startup = min((p.startup_seconds for p in pools if p.max_replicas > cur[p.name]), default=horizon)
    ds = cfg.demand.observe(state.demand, obs, now, spare_tokens_per_second=spare, startup_seconds=startup)
    note = _demand_note(ds, obs, spare, startup, horizon, cfg.demand.backlog_drain_seconds)
    return DemandEstimate(demand=cfg.demand.forecast(ds, horizon), state=ds, note=note)


def _demand_note(ds: DemandState, obs: Observations, spare: float, startup: float, horizon: float,
                 drain_seconds: float) -> Reason:
    return Reason.of("demand.observed", observed=ds.observed, backlog=ds.backlog, queued_tokens=ds.queued_tokens,
                     waiting=obs.requests_waiting, tokens_per_request=ds.tokens_per_request,
                     drained=ds.drained_tokens, spare=spare, startup=startup, drain_seconds=drain_seconds,
                     level=ds.level or 0.0, trend=ds.trend, horizon=horizon)
