#!/usr/bin/env python3
"""Benchmark of autoscaling policies on the fast-forwarded fleet simulator.

Every policy drives the same :class:`tokenfactory.sim.fleet.Fleet` (simulated clock, the code the
tests and the demo use) for the two-pool DeepSeek-R1 example
(``deploy/examples/deepseek-r1-h200-gb300.yaml``), with the same start-up delays, control interval,
objectives and demand trace, and is scored on what the simulator says happened:

* dollars: every replica that exists (starting or serving) is paid for, per second;
* $/Mtok delivered: dollars / output tokens actually generated;
* SLO attainment: share of control intervals whose TTFT p95 and ITL p95 (over the requests that
  completed in the interval, all pools together) meet the objectives, with nothing dropped;
* tokens dropped (queues full / nobody serving) and tokens late (generated in a violating interval);
* replica changes: pods added plus pods removed.

Policies: static_peak, static_optimal_mix, hpa_<pool> (an HPA on one pool type, the others at their
minReplicas), hpa_both (an HPA on each pool), keda_queue, tokenfactory (the real planner fed like the
operator feeds it) and oracle (perfect foresight). ``hpa`` repeats the best HPA variant, SLO first: the
cheapest with SLO attainment >= 99%, else the highest SLO; every variant is reported too. See
docs/benchmarks.md.

Usage::

    python bench/autoscale.py --quick --json out.json --plot plots/
    python bench/autoscale.py --trace my.csv --traces none      # only a user trace
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "operator") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "operator"))

import yaml  # noqa: E402

from tokenfactory import api, planner  # noqa: E402
from tokenfactory.metrics_source import MetricsUnavailable  # noqa: E402
from tokenfactory.sim.fleet import EngineSpec, Fleet  # noqa: E402
from tokenfactory.sim.source import FleetMetricsSource  # noqa: E402
from tokenfactory.sim.traces import TimeScaled, Trace, parse_trace  # noqa: E402

EXAMPLE = ROOT / "deploy/examples/deepseek-r1-h200-gb300.yaml"
NAMESPACE = "bench"
DAY = 86400.0

# Built-in traces: (name, spec in the simulator's --trace syntax, seconds, quick time-compression).
# Each crosses the GB300 boundary (2 x 24,000 tok/s): peaks 56-60K tok/s, troughs a few thousand.
# --quick plays diurnal/step/ramp 6x faster over 4 h; bursty keeps its burst lengths, over 4 h.
TRACES = (
    ("diurnal", "diurnal:32k,28k", DAY, 6.0),  # 4K at 02:00 .. 60K at 14:00
    ("step", "step:4k,30k@21600,58k@43200,12k@64800", DAY, 6.0),
    ("ramp", "ramp:3k,60k@1800,72000", DAY, 6.0),  # rises for 20 h, then holds the peak
    ("bursty", "bursty:6k,58k@1200,300,0.5", DAY, 1.0),  # 5-min bursts in half of the 20-min windows
)
QUICK_SECONDS = 4 * 3600.0


# ============================================================================================
# Setup: the example factory, as the operator resolves it
# ============================================================================================


@dataclass
class Setup:
    factory: str
    spec: api.TokenFactorySpec
    resolved: list  # api.ResolvedPool
    profiles: tuple[planner.PoolProfile, ...]
    objectives: planner.Objectives
    interval: float  # control interval, s
    window: float  # metrics window, s
    headroom: float
    stabilization: float
    accounting: str
    dt: float  # simulator step, s

    @property
    def by_name(self) -> dict[str, planner.PoolProfile]:
        return {p.name: p for p in self.profiles}

    def price(self, pool: str) -> float:
        return self.by_name[pool].price_per_replica_hour

    def capacity(self, mix: dict[str, int]) -> float:
        return sum(self.by_name[n].capacity * v for n, v in mix.items())

    def dollars_per_hour(self, mix: dict[str, int]) -> float:
        return sum(self.by_name[n].price_per_replica_hour * v for n, v in mix.items())

    def minimums(self) -> dict[str, int]:
        return {p.name: p.min_replicas for p in self.profiles}

    def planner_config(self) -> planner.PlannerConfig:
        """Exactly what measure.py passes (no tuning)."""
        return planner.PlannerConfig(scale_down_stabilization_seconds=self.stabilization,
                                     max_metrics_age_seconds=max(180.0, 3 * self.interval))


def load_setup(path: Path = EXAMPLE, startup_seconds: float | None = None, dt: float = 10.0,
               headroom: float | None = None) -> Setup:
    """Parse the example with tokenfactory.api; ``startup_seconds`` overrides every pool's
    (as ``spec.pools[].startupSeconds`` would), None keeps the sheet's; ``headroom`` overrides
    ``spec.scaling.headroom`` (what the operator passes to the planner), None keeps the example's."""
    doc = yaml.safe_load(path.read_text())
    if headroom is not None:
        doc["spec"]["scaling"]["headroom"] = headroom
    if startup_seconds is not None:
        for p in doc["spec"]["pools"]:
            p["startupSeconds"] = startup_seconds
    obj = api.parse_object(doc)
    spec = obj.spec
    resolved = spec.resolve_pools()
    interval = api.parse_duration(spec.scaling.interval)
    if interval % dt:
        raise ValueError(f"control interval {interval}s must be a multiple of the simulator step {dt}s")
    return Setup(
        factory=doc["metadata"]["name"],
        spec=spec, resolved=resolved,
        profiles=tuple(planner.PoolProfile.from_resolved(rp) for rp in resolved),
        objectives=planner.Objectives.from_spec(spec.objectives),
        interval=interval, window=api.parse_duration(spec.metrics.window),
        headroom=spec.scaling.headroom, stabilization=api.parse_duration(spec.scaling.scale_down_stabilization),
        accounting=spec.metrics.token_accounting, dt=dt,
    )


# ============================================================================================
# One run: a fleet, its engines per pool, and the scorekeeping
# ============================================================================================


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _meets(groups: list[tuple[float, float, float]], objective: float | None, q: float = 0.95) -> bool:
    """True when the q-quantile of a mix of log-normals (median, weight, sigma) is <= objective:
    the mixture CDF at the objective is >= q (exact, no bisection)."""
    if objective is None:
        return True
    total = sum(w for _, w, _ in groups)
    if total <= 0:
        return True
    lo = math.log(objective)
    cdf = sum(w * _phi((lo - math.log(m)) / s) for m, w, s in groups if m > 0)
    return cdf >= q * total * (1 - 1e-9)


@dataclass
class PoolView:
    """What a Kubernetes autoscaler sees of one pool (cheap, straight from the fleet)."""

    desired: int
    ready: int
    starting: int
    utilisations: list[float]  # per ready pod, delivered / capacity over the metrics window
    waiting: float


class Run:
    def __init__(self, setup: Setup, trace: Trace, duration: float):
        self.setup = setup
        self.trace = trace
        self.duration = duration
        self.fleet = Fleet(trace, window_seconds=setup.window)
        self.source = FleetMetricsSource(self.fleet)
        self.names: dict[str, list[str]] = {p.name: [] for p in setup.profiles}
        self.serial = 0
        self.now = 0.0
        self.cost = 0.0
        self.added = 0
        self.removed = 0
        self.scale_events = 0
        self.intervals = 0
        self.good = 0
        self.late_tokens = 0.0
        self.timeline: list[dict] = []
        self._last_gen = 0.0
        self._last_drop = 0.0
        self._demand_tokens = 0.0
        self.peak_replicas = {p.name: 0 for p in setup.profiles}
        self._success: deque = deque()  # (t, {pool: requests completed so far}), one per interval

    # -- engines -----------------------------------------------------------------------------
    def replicas(self) -> dict[str, int]:
        return {p: len(v) for p, v in self.names.items()}

    def apply(self, target: dict[str, int], warm: bool = False) -> None:
        """Make each pool run ``target`` replicas: new pods start now (serving after start-up, or at
        once when ``warm``); a scale-down removes the newest pods first (not-ready ones go first, as
        a ReplicaSet does)."""
        changed = False
        for rp in self.setup.resolved:
            names = self.names[rp.name]
            want = int(target.get(rp.name, len(names)))
            while len(names) < want:
                self.serial += 1
                name = f"{self.setup.factory}-{rp.name}-{self.serial}"
                self.fleet.add_engine(EngineSpec(
                    name=name, namespace=NAMESPACE, factory=self.setup.factory, pool=rp.name, gpu_type=rp.gpu_type,
                    gpus=rp.gpus_per_replica, startup_seconds=rp.startup_seconds,
                    ready_at=(self.now - rp.startup_seconds) if warm else None), self.now)
                names.append(name)
                if not warm:
                    self.added += 1
                    changed = True
            while len(names) > want:
                self.fleet.remove_engine(names.pop())
                self.removed += 1
                changed = True
            self.peak_replicas[rp.name] = max(self.peak_replicas[rp.name], len(names))
        self.scale_events += changed

    def view(self, pool: str) -> PoolView:
        now = self.now
        ready, starting, utils, waiting = 0, 0, [], 0.0
        for name in self.names[pool]:
            e = self.fleet.engines[name]
            if not e.serving(now):
                starting += 1
                continue
            ready += 1
            h = e.history
            rate = (h[-1][1] - h[0][1]) / (h[-1][0] - h[0][0]) if len(h) > 1 and h[-1][0] > h[0][0] else 0.0
            utils.append(min(1.0, rate / e.capacity) if e.capacity > 0 else 0.0)
            waiting += e.waiting
        return PoolView(desired=len(self.names[pool]), ready=ready, starting=starting, utilisations=utils,
                        waiting=waiting)

    def ready(self) -> dict[str, int]:
        return {p: self.view(p).ready for p in self.names}

    def _record_success(self) -> None:
        done = {key[2]: st.success for key, st in self.fleet.pools.items() if key[:2] == (NAMESPACE, self.setup.factory)}
        self._success.append((self.now, done))
        while len(self._success) > 1 and self._success[1][0] <= self.now - self.setup.window:
            self._success.popleft()

    def with_request_rates(self, fm):
        """``fm`` with each pool's requests_per_second filled in: what
        ``sum by (pool) (rate(vllm:request_success_total[window]))`` answers (FleetMetricsSource does
        not read it), from the fleet's per-pool completion counters over the metrics window."""
        if len(self._success) < 2:
            return fm
        (t0, a), (t1, b) = self._success[0], self._success[-1]
        if t1 <= t0:
            return fm
        pools = {name: replace(pm, requests_per_second=max(0.0, b.get(name, 0.0) - a.get(name, 0.0)) / (t1 - t0))
                 for name, pm in fm.pools.items()}
        return replace(fm, pools=pools)

    # -- time --------------------------------------------------------------------------------
    def advance(self) -> None:
        """One control interval of simulator steps, then score the interval."""
        s = self.setup
        t0 = self.now
        end = min(self.duration, t0 + s.interval)
        dph = sum(s.price(p) * len(v) for p, v in self.names.items())
        demand_max = 0.0
        t = t0
        while t < end - 1e-9:
            nxt = min(end, t + s.dt)
            d = self.trace(t).output_tokens_per_second  # the fleet reads the trace at the step's start
            demand_max = max(demand_max, d)
            self._demand_tokens += d * (nxt - t)
            self.fleet.step(nxt, nxt - t)
            t = nxt
        self.now = end
        self._record_success()
        span = end - t0
        cost = dph * span / 3600.0
        self.cost += cost
        self._score(t0, end, span, cost, dph, demand_max)

    def _score(self, t0: float, t1: float, span: float, cost: float, dph: float, demand_max: float) -> None:
        f, o = self.fleet, self.setup.objectives
        ttft, itl = [], []
        completions = 0.0
        gen = drop = 0.0
        cap = {}
        for key, st in f.pools.items():
            prof = f.profile(st.gpu_type)
            for (t, n, tt, nitl, il, _e2e) in reversed(st.latency):
                if t <= t0:
                    break
                ttft.append((tt, n, prof.ttft_sigma))
                itl.append((il, nitl, prof.itl_sigma))
                completions += n
            gen += st.generation
            drop += st.dropped
        for fs in f.factories.values():
            drop += fs.dropped
        for p, names in self.names.items():
            cap[p] = sum(f.engines[n].capacity for n in names if f.engines[n].serving(t1))
        d_gen, d_drop = gen - self._last_gen, drop - self._last_drop
        self._last_gen, self._last_drop = gen, drop
        ok = d_drop <= 1e-6 and _meets(ttft, o.ttft_p95_seconds) and _meets(itl, o.itl_p95_seconds)
        if demand_max > 0 and completions <= 0:
            ok = False
        self.intervals += 1
        self.good += ok
        if not ok:
            self.late_tokens += d_gen
        self.timeline.append({
            "t": t1, "demand": self.trace(t0).output_tokens_per_second, "capacity": cap,
            "replicas": self.replicas(), "dollars_per_hour": dph, "tokens": d_gen, "cost": cost, "ok": ok,
        })

    # -- results -----------------------------------------------------------------------------
    def result(self) -> dict:
        f = self.fleet
        gen = sum(st.generation for st in f.pools.values())
        dropped_req = sum(st.dropped for st in f.pools.values()) + sum(fs.dropped for fs in f.factories.values())
        out_tokens = self.trace(0.0).output_tokens
        return {
            "cost_dollars": self.cost,
            "cost_per_mtok": self.cost / (gen / 1e6) if gen > 0 else None,
            "slo_attainment": self.good / self.intervals if self.intervals else 0.0,
            "replica_changes": self.added + self.removed,
            "scale_events": self.scale_events,
            "tokens_delivered": gen,
            "tokens_demanded": self._demand_tokens,
            "tokens_dropped": dropped_req * out_tokens,
            "tokens_late": self.late_tokens,
            "mean_dollars_per_hour": self.cost / (self.duration / 3600.0) if self.duration > 0 else 0.0,
            "peak_replicas": dict(self.peak_replicas),
            "intervals": self.intervals,
        }


# ============================================================================================
# Policies
# ============================================================================================


class Policy:
    """``initial(run)`` -> the mix already serving at t=0; ``decide(run)`` -> the mix to run now
    (or None: leave it), called every control interval."""

    name = "policy"
    note = ""

    def initial(self, run: Run) -> dict[str, int]:
        raise NotImplementedError

    def decide(self, run: Run) -> dict[str, int] | None:
        return None


def _peak(trace: Trace, duration: float, dt: float) -> float:
    n = int(math.ceil(duration / dt))
    return max(trace(i * dt).output_tokens_per_second for i in range(n + 1))


def _warm_mix(setup: Setup, demand: float) -> dict[str, int]:
    """The mix a running operator would have settled on for ``demand`` (start state of the dynamic
    policies: every one begins warm, from the same mix)."""
    return dict(planner.plan_for_demand(setup.profiles, demand, objectives=setup.objectives,
                                        headroom=setup.headroom or 0.0).replicas)


class StaticPeak(Policy):
    """The cheapest single pool type that carries the trace's peak alone; the other pools stay at their
    minReplicas. When no pool carries the peak within maxReplicas, the pool that carries the most."""

    name = "static_peak"

    def initial(self, run: Run) -> dict[str, int]:
        s = run.setup
        peak = _peak(run.trace, run.duration, s.dt)
        mins = s.minimums()
        options = []
        for p in s.profiles:
            n = max(p.min_replicas, math.ceil(peak / p.capacity - 1e-9)) if p.capacity > 0 else p.max_replicas
            mix = {**mins, p.name: min(n, p.max_replicas)}
            options.append((n <= p.max_replicas, s.dollars_per_hour(mix), -p.capacity * p.max_replicas, p.name, mix))
        carrying = [o for o in options if o[0]]
        if carrying:
            _, _, _, name, mix = min(carrying, key=lambda o: (o[1], o[3]))
            self.note = f"{name} x{mix[name]} carries the {peak:,.0f} tok/s peak alone"
        else:
            _, _, negcap, name, mix = min(options, key=lambda o: (o[2], o[1]))
            self.note = (f"no single pool carries the {peak:,.0f} tok/s peak within maxReplicas; {name} carries the "
                         f"most ({-negcap:,.0f} tok/s at x{mix[name]})")
        return mix


class StaticOptimalMix(Policy):
    """planner.solve once for the trace's peak (Melange-style offline mix), no headroom."""

    name = "static_optimal_mix"

    def initial(self, run: Run) -> dict[str, int]:
        s = run.setup
        peak = _peak(run.trace, run.duration, s.dt)
        sol = planner.solve(s.profiles, peak, max_dollars_per_hour=s.objectives.max_dollars_per_hour,
                            max_megawatts=s.objectives.max_megawatts)
        self.note = (f"solve({peak:,.0f} tok/s) -> {sol.replicas}"
                     + ("" if sol.covers_required else f" (cannot cover: limited by {', '.join(sol.limited_by)})"))
        return dict(sol.replicas)


class _K8sAutoscaler(Policy):
    """HPA semantics shared by hpa and keda: tolerance on the usage ratio, scale-up at most
    max(2 x current, current + 4) per interval (HPA's default policies), scale-down to the highest
    recommendation of the last ``stabilization`` seconds, clamped to min/max."""

    tolerance = 0.1

    def __init__(self, pools: tuple[str, ...], stabilization: float = 300.0):
        self.pools = pools
        self.stabilization = stabilization
        self.history: dict[str, deque] = {p: deque() for p in pools}

    def recommend(self, run: Run, pool: str, v: PoolView) -> int | None:
        raise NotImplementedError

    def initial(self, run: Run) -> dict[str, int]:
        s = run.setup
        mix = _warm_mix(s, run.trace(0.0).output_tokens_per_second)
        mins = s.minimums()
        if len(self.pools) == 1:  # one Deployment scaled; the rest at its floor
            scaled = self.pools[0]
            rest = {**mins, scaled: 0}
            need = run.trace(0.0).output_tokens_per_second * (1 + (s.headroom or 0.0)) - s.capacity(rest)
            p = s.by_name[scaled]
            mix = {**mins, scaled: min(p.max_replicas, max(p.min_replicas, math.ceil(max(0.0, need) / p.capacity)))}
        return mix

    def decide(self, run: Run) -> dict[str, int] | None:
        now = run.now
        out = run.replicas()
        for pool in self.pools:
            p = run.setup.by_name[pool]
            v = run.view(pool)
            cur = v.desired
            rec = self.recommend(run, pool, v)
            if rec is None:
                rec = cur
            rec = min(max(rec, p.min_replicas), p.max_replicas)
            rec = min(rec, max(2 * cur, cur + 4))
            h = self.history[pool]
            h.append((now, rec))
            while h and h[0][0] <= now - self.stabilization:
                h.popleft()
            if rec < cur:
                rec = min(cur, max(r for _, r in h))
            out[pool] = rec
        return out


class HPA(_K8sAutoscaler):
    """Kubernetes HPA on average utilisation (delivered / capacity per ready pod, over the metrics
    window), target 70%: desired = ceil(pods x util / 0.70). As in the HPA controller, not-yet-ready
    pods count as 0% when scaling up (so a scale-up is not repeated while pods start)."""

    target = 0.70

    def __init__(self, pools: tuple[str, ...], stabilization: float = 300.0, name: str | None = None):
        super().__init__(pools, stabilization)
        self.name = name or "hpa_" + "_".join(pools)

    def recommend(self, run: Run, pool: str, v: PoolView) -> int | None:
        if v.ready == 0:
            return None
        total = sum(v.utilisations)
        ratio = total / v.ready / self.target
        if abs(ratio - 1) <= self.tolerance:
            return v.desired
        if ratio > 1 and v.starting:
            ratio2 = total / (v.ready + v.starting) / self.target
            if ratio2 <= 1 + self.tolerance:
                return v.desired
            return math.ceil(ratio2 * (v.ready + v.starting))
        return math.ceil(ratio * v.ready)


class KedaQueue(_K8sAutoscaler):
    """KEDA (HPA with an AverageValue external metric) on vllm:num_requests_waiting: one
    ScaledObject per pool, ``target`` waiting requests per replica: desired = ceil(waiting / target),
    at least minReplicas (KEDA's activation never goes below minReplicaCount = 1)."""

    name = "keda_queue"

    def __init__(self, pools: tuple[str, ...], stabilization: float = 300.0, target: float = 10.0):
        super().__init__(pools, stabilization)
        self.target = target

    def recommend(self, run: Run, pool: str, v: PoolView) -> int | None:
        if v.ready == 0:
            return None
        ratio = v.waiting / (self.target * v.ready)
        if abs(ratio - 1) <= self.tolerance:
            return v.desired
        return math.ceil(v.waiting / self.target)


class TokenFactory(Policy):
    """The real planner: ``planner.decide`` fed each interval as measure.py feeds it: metrics from
    ``FleetMetricsSource`` (the simulator's own figures over the factory's 2 m metrics window, i.e.
    what the Prometheus queries return), ready replicas = serving engines, current = the replicas
    the Deployments ask for, PlannerConfig and headroom from the spec; Auto mode applies the plan."""

    name = "tokenfactory"

    def __init__(self, config: planner.PlannerConfig | None = None):
        self.config = config
        self.state: planner.PlannerState | None = None
        self.holds = 0

    def initial(self, run: Run) -> dict[str, int]:
        return _warm_mix(run.setup, run.trace(0.0).output_tokens_per_second)

    def decide(self, run: Run) -> dict[str, int] | None:
        s = run.setup
        try:
            fm = run.source.read(NAMESPACE, s.factory, s.window)
            problem = None
        except MetricsUnavailable as err:
            fm, problem = None, err
        ready = run.ready()
        obs = None
        if fm is not None:  # as measure.py: waiting requests at the measured tokens per completed request
            fm = run.with_request_rates(fm)
            obs = planner.Observations.from_factory_metrics(fm, ready, s.accounting,
                                                            tokens_per_request=fm.tokens_per_request(s.accounting))
        inputs = planner.PlannerInputs(
            pools=s.profiles, current=run.replicas(), observations=obs, objectives=s.objectives,
            headroom=s.headroom, slo_attainment=s.spec.objectives.slo_attainment,
            routing="even" if run.fleet.routing == "Service" else "weighted",
            config=self.config or s.planner_config(),
            metrics_unavailable_reason=f"metrics unavailable ({problem.reason})" if problem else "no metrics")
        plan, self.state = planner.decide(self.state, inputs, run.now)
        if plan.holding:
            self.holds += 1
        if plan.changes and not plan.holding:
            return dict(plan.replicas)
        return None


class Oracle(Policy):
    """Perfect foresight: for every interval the cheapest mix (planner.solve, same budget/power
    limits and minReplicas, no headroom) for the highest demand in that interval; pods are launched
    ``startup`` seconds before their interval and kept while needed again within a start-up delay
    (cheaper than stopping and relaunching). Pods are removed the moment nothing needs them."""

    name = "oracle"

    def __init__(self) -> None:
        self.plan: list[dict[str, int]] = []

    def _schedule(self, run: Run) -> None:
        s = run.setup
        n = int(math.ceil(run.duration / s.interval))
        steps = int(round(s.interval / s.dt))
        cache: dict[float, dict[str, int]] = {}
        need = []
        for k in range(n):
            d = max(run.trace(k * s.interval + j * s.dt).output_tokens_per_second for j in range(steps))
            if d not in cache:
                cache[d] = dict(planner.solve(s.profiles, d, max_dollars_per_hour=s.objectives.max_dollars_per_hour,
                                              max_megawatts=s.objectives.max_megawatts).replicas)
            need.append(cache[d])
        ahead = {p.name: int(math.ceil(p.startup_seconds / s.interval)) for p in s.profiles}
        self.plan = [{p: max(need[j][p] for j in range(k, min(n, k + ahead[p] + 1))) for p in need[k]}
                     for k in range(n)]

    def initial(self, run: Run) -> dict[str, int]:
        self._schedule(run)
        return dict(self.plan[0])

    def decide(self, run: Run) -> dict[str, int] | None:
        k = int(round(run.now / run.setup.interval))
        return dict(self.plan[k]) if k < len(self.plan) else None


def make_policies(setup: Setup) -> list[Callable[[], Policy]]:
    pools = tuple(p.name for p in setup.profiles)
    st = setup.stabilization
    out: list[Callable[[], Policy]] = [StaticPeak, StaticOptimalMix]
    for p in pools:
        out.append(lambda p=p: HPA((p,), st))
    out.append(lambda: HPA(pools, st, name="hpa_both"))
    out.append(lambda: KedaQueue(pools, st))
    out.append(TokenFactory)
    out.append(Oracle)
    return out


# ============================================================================================
# Driver
# ============================================================================================


def run_policy(setup: Setup, trace: Trace, duration: float, policy: Policy) -> tuple[dict, list[dict]]:
    run = Run(setup, trace, duration)
    run.apply(policy.initial(run), warm=True)
    while run.now < duration - 1e-9:
        if run.now > 0:
            target = policy.decide(run)
            if target is not None:
                run.apply(target)
        run.advance()
    res = run.result()
    if policy.note:
        res["note"] = policy.note
    if isinstance(policy, TokenFactory):
        res["planner_holds"] = policy.holds
    return res, run.timeline


SLO_TARGET = 0.99


def pick_best_hpa(results: dict[str, dict], names: list[str]) -> str:
    """The best HPA variant, SLO first: the cheapest variant whose SLO attainment is >= 99%; when
    none reaches it, the highest SLO attainment (to 0.1%), then the lowest cost. A variant that is
    cheap because it drops demand is not the best."""
    meeting = [n for n in names if results[n]["slo_attainment"] >= SLO_TARGET]
    if meeting:
        return min(meeting, key=lambda n: (results[n]["cost_dollars"], n))
    return min(names, key=lambda n: (-round(results[n]["slo_attainment"], 3), results[n]["cost_dollars"], n))


def run_trace(setup: Setup, trace: Trace, duration: float) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    results: dict[str, dict] = {}
    timelines: dict[str, list[dict]] = {}
    for make in make_policies(setup):
        pol = make()
        res, tl = run_policy(setup, trace, duration, pol)
        results[pol.name] = res
        timelines[pol.name] = tl
    variants = [f"hpa_{p.name}" for p in setup.profiles] + ["hpa_both"]
    best = pick_best_hpa(results, variants)
    results["hpa"] = {**results[best], "variant": best}
    timelines["hpa"] = timelines[best]
    return results, timelines


def builtin_traces(quick: bool, seed: int = 0) -> list[tuple[str, Trace, float, str]]:
    out = []
    for name, spec, secs, scale in TRACES:
        tr = parse_trace(spec, seed=seed)
        if quick:
            if scale != 1.0:
                tr = TimeScaled(tr, scale)
            desc = f"{spec} played {scale:g}x faster" if scale != 1.0 else spec
            out.append((name, tr, QUICK_SECONDS, desc))
        else:
            out.append((name, tr, secs, spec))
    return out


def user_trace(path: str) -> tuple[str, Trace, float, str]:
    tr = parse_trace(f"csv:{path}")
    last = tr.rows[-1][0]  # type: ignore[attr-defined]
    return Path(path).stem, tr, max(last, 30.0), f"csv:{path}"


ORDER = ("static_peak", "static_optimal_mix", "hpa", "keda_queue", "tokenfactory", "oracle")


def table(report: dict) -> str:
    lines = []
    hdr = (f"{'trace':<9} {'policy':<19} {'cost $':>9} {'$/Mtok':>7} {'SLO %':>6} {'changes':>7} "
           f"{'dropped Mtok':>12} {'late Mtok':>9}  notes")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for tname, res in report["traces"].items():
        names = [n for n in ORDER if n in res] + sorted(n for n in res if n not in ORDER)
        for n in names:
            r = res[n]
            note = r.get("note", "")
            if n == "hpa":
                note = f"= {r['variant']}"
            cpm = f"{r['cost_per_mtok']:.3f}" if r["cost_per_mtok"] is not None else "-"
            lines.append(f"{tname:<9} {n:<19} {r['cost_dollars']:>9,.0f} {cpm:>7} {100 * r['slo_attainment']:>6.1f} "
                         f"{r['replica_changes']:>7} {r['tokens_dropped'] / 1e6:>12.2f} {r['tokens_late'] / 1e6:>9.1f}  "
                         f"{note[:70]}")
        lines.append("")
    return "\n".join(lines)


def targets(report: dict) -> dict:
    """The brief's targets, checked per trace (reported, not tuned for)."""
    out = {}
    for tname, res in report["traces"].items():
        tf, orc, hpa = res["tokenfactory"], res["oracle"], res["hpa"]
        out[tname] = {
            "cost_vs_oracle": tf["cost_dollars"] / orc["cost_dollars"],
            "within_1_05_of_oracle": tf["cost_dollars"] <= 1.05 * orc["cost_dollars"],
            "slo_at_least_99": tf["slo_attainment"] >= 0.99,
            # the first target is both together: a policy that misses the SLO can undercut the oracle
            "cost_and_slo_target_met": (tf["cost_dollars"] <= 1.05 * orc["cost_dollars"]
                                        and tf["slo_attainment"] >= 0.99),
            "saving_vs_best_hpa": 1 - tf["cost_dollars"] / hpa["cost_dollars"],
            "at_least_25pct_cheaper_than_hpa": tf["cost_dollars"] <= 0.75 * hpa["cost_dollars"],
            "hpa_variant": hpa["variant"],
            "hpa_slo_attainment": hpa["slo_attainment"],
        }
        if "hpa_both" in res:
            out[tname]["saving_vs_hpa_both"] = 1 - tf["cost_dollars"] / res["hpa_both"]["cost_dollars"]
    return out


def plot(path: Path, tname: str, timelines: dict[str, list[dict]], results: dict[str, dict], setup: Setup) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["tokenfactory", "oracle", "hpa"]
    pools = [p.name for p in setup.profiles]
    colors = {pools[i]: c for i, c in enumerate(["tab:green", "tab:orange", "tab:purple", "tab:brown"][:len(pools)])}
    fig, axes = plt.subplots(len(shown) + 1, 1, figsize=(11, 3 * (len(shown) + 1)), sharex=True)
    for ax, name in zip(axes, shown):
        tl = timelines[name]
        hours = [r["t"] / 3600 for r in tl]
        stacks = [[r["capacity"].get(p, 0.0) / 1000 for r in tl] for p in pools]
        ax.stackplot(hours, *stacks, labels=[f"{p} capacity" for p in pools], colors=[colors[p] for p in pools],
                     alpha=0.6, step="pre")
        ax.plot(hours, [r["demand"] / 1000 for r in tl], color="black", lw=1.2, label="demand")
        bad = [h for h, r in zip(hours, tl) if not r["ok"]]
        if bad:
            ax.plot(bad, [0] * len(bad), "|", color="red", ms=8, label="SLO missed")
        r = results[name]
        title = name if name != "hpa" else f"hpa (best variant: {r['variant']})"
        ax.set_title(f"{tname}: {title} — \\${r['cost_dollars']:,.0f}, "
                     f"\\${r['cost_per_mtok'] or 0:.3f}/Mtok, SLO {100 * r['slo_attainment']:.1f}%", fontsize=10)
        ax.set_ylabel("K tok/s")
        ax.legend(loc="upper left", fontsize=8)
    ax = axes[-1]
    for name, c in zip(shown, ["tab:blue", "black", "tab:red"]):
        tl = timelines[name]
        k = max(1, int(round(600 / setup.interval)))  # 10-minute rolling $/Mtok
        xs, ys = [], []
        for i in range(len(tl)):
            w = tl[max(0, i - k + 1): i + 1]
            tok = sum(r["tokens"] for r in w)
            if tok > 0:
                xs.append(tl[i]["t"] / 3600)
                ys.append(sum(r["cost"] for r in w) / (tok / 1e6))
        ax.plot(xs, ys, color=c, lw=1, label=name)
    ax.set_yscale("log")
    ax.set_ylabel("\\$/Mtok (10 min rolling)")
    ax.set_xlabel("hours")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4-hour traces (compressed), for CI: < 1 min")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--plot", metavar="DIR", help="write one PNG per trace")
    ap.add_argument("--trace", action="append", default=[], metavar="CSV",
                    help="a user trace (columns seconds,tokens_per_second); repeatable; added to the set")
    ap.add_argument("--traces", default="all",
                    help="built-in traces to run: all, none, or a comma list of "
                         + ",".join(t[0] for t in TRACES))
    ap.add_argument("--example", default=str(EXAMPLE), help="TokenFactory YAML (default: the DeepSeek-R1 example)")
    ap.add_argument("--startup-seconds", type=float, default=None,
                    help="override every pool's start-up delay (default: the GPU sheet's, 300 s)")
    ap.add_argument("--headroom", type=float, default=None,
                    help="override spec.scaling.headroom (what tokenfactory plans above demand; default: the example's 0.2)")
    ap.add_argument("--dt", type=float, default=10.0, help="simulator step, seconds (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bursty trace")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    setup = load_setup(Path(args.example), args.startup_seconds, args.dt, args.headroom)
    if args.traces == "all":
        chosen = builtin_traces(args.quick, args.seed)
    elif args.traces == "none":
        chosen = []
    else:
        want = [x.strip() for x in args.traces.split(",") if x.strip()]
        known = {t[0] for t in TRACES}
        bad = [w for w in want if w not in known]
        if bad:
            ap.error(f"unknown trace(s) {bad}; known: {sorted(known)}")
        chosen = [t for t in builtin_traces(args.quick, args.seed) if t[0] in want]
    chosen += [user_trace(p) for p in args.trace]
    if not chosen:
        ap.error("no trace to run")

    report: dict = {"metadata": {
        "example": str(args.example), "factory": setup.factory, "quick": args.quick,
        "control_interval_seconds": setup.interval, "metrics_window_seconds": setup.window,
        "simulator_step_seconds": setup.dt, "headroom": setup.headroom,
        "scale_down_stabilization_seconds": setup.stabilization,
        "objectives": {"ttft_p95_seconds": setup.objectives.ttft_p95_seconds,
                       "itl_p95_seconds": setup.objectives.itl_p95_seconds},
        "pools": {rp.name: {"gpu_type": rp.gpu_type, "replica_tokens_per_second": rp.tokens_per_second_per_replica,
                            "replica_dollars_per_hour": rp.price_per_replica_hour,
                            "min_replicas": rp.min_replicas, "max_replicas": rp.max_replicas,
                            "startup_seconds": rp.startup_seconds} for rp in setup.resolved},
        "tokenfactory_metrics": "FleetMetricsSource (simulator figures over the metrics window)",
        "traces": {}, "wall_seconds": {},
    }, "traces": {}}
    for tname, trace, duration, desc in chosen:
        t0 = time.perf_counter()
        results, timelines = run_trace(setup, trace, duration)
        wall = time.perf_counter() - t0
        report["traces"][tname] = results
        report["metadata"]["traces"][tname] = {"spec": desc, "duration_seconds": duration,
                                               "peak_tokens_per_second": _peak(trace, duration, setup.dt)}
        report["metadata"]["wall_seconds"][tname] = wall
        print(f"# {tname}: {desc}, {duration / 3600:.1f} h simulated in {wall:.1f} s", file=sys.stderr)
        if args.plot:
            os.makedirs(args.plot, exist_ok=True)
            plot(Path(args.plot) / f"{tname}.png", tname, timelines, results, setup)
    report["targets"] = targets(report)
    report["metadata"]["wall_seconds"]["total"] = time.perf_counter() - t_start
    report["metadata"]["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(table(report))
    for tname, tg in report["targets"].items():
        print(f"{tname:<9} tokenfactory/oracle cost {tg['cost_vs_oracle']:.3f} "
              f"({'<=' if tg['within_1_05_of_oracle'] else '>'} 1.05), SLO>=99% {'yes' if tg['slo_at_least_99'] else 'NO'} "
              f"(target {'met' if tg['cost_and_slo_target_met'] else 'missed'}), "
              f"{100 * tg['saving_vs_best_hpa']:+.1f}% cheaper than best hpa "
              f"({'meets' if tg['at_least_25pct_cheaper_than_hpa'] else 'misses'} 25%; that hpa is "
              f"{tg['hpa_variant']}, SLO {100 * tg['hpa_slo_attainment']:.1f}%), "
              f"{100 * tg.get('saving_vs_hpa_both', math.nan):+.1f}% vs hpa_both")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
