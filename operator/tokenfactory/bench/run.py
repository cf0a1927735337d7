"""One run: a fleet, its engines per pool, and the scorekeeping.

* dollars: every replica that exists (starting or serving) is paid for, per second;
* $/Mtok delivered: dollars / output tokens actually generated;
* SLO attainment: share of control intervals whose TTFT p95 and ITL p95 (the simulator's exact
  quantiles of the first tokens and decode tokens of the interval, all pools together) meet the
  objectives, with nothing dropped;
* tokens dropped (queues full / nobody serving) and tokens late (generated in a violating interval);
* replica changes: pods added plus pods removed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from tokenfactory.bench.scenario import NAMESPACE, Setup, route_weights
from tokenfactory.sim.fleet import EngineSpec, Fleet
from tokenfactory.sim.source import FleetMetricsSource
from tokenfactory.sim.traces import Trace


@dataclass
class PoolView:
    """What a Kubernetes autoscaler sees of one pool (cheap, straight from the fleet)."""

    desired: int
    ready: int
    starting: int
    utilisations: list[float]  # per ready pod, delivered / capacity over the metrics window
    waiting: float


def routing_modes() -> tuple[str, ...]:
    """The routing modes the simulator models (none: it routes one way only)."""
    from tokenfactory.sim import fleet

    return tuple(getattr(fleet, "ROUTING_MODES", ()))


class Run:
    def __init__(self, setup: Setup, trace: Trace, duration: float, routing: str | None = None):
        self.setup = setup
        self.trace = trace
        self.duration = duration
        self.routing = routing or setup.routing
        self.fleet = Fleet(trace, window_seconds=setup.window, routing=self.routing)
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
        self.delivered = 0.0
        self.dropped_tokens = 0.0
        self.timeline: list[dict] = []
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
        """Serving pods per pool (what the Deployments' readyReplicas say)."""
        engines, now = self.fleet.engines, self.now
        return {p: sum(1 for n in names if engines[n].serving(now)) for p, names in self.names.items()}

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
        if self.routing == "HTTPRoute":  # the operator re-weights the route each interval
            self.fleet.weights = route_weights(s, self.ready())
        demand_max = 0.0
        t = t0
        while t < end - 1e-9:
            nxt = min(end, t + s.dt)
            d = self.trace(t).output_tokens_per_second  # a rate trace is read at the step's start
            demand_max = max(demand_max, d)
            self._demand_tokens += d * (nxt - t)
            self.fleet.step(nxt, nxt - t)
            t = nxt
        self.now = end
        self._record_success()
        span = end - t0
        cost = dph * span / 3600.0
        self.cost += cost
        self._score(t0, end, cost, dph, demand_max)

    def _score(self, t0: float, t1: float, cost: float, dph: float, demand_max: float) -> None:
        """The interval meets the SLO when the p95 TTFT and ITL of what happened in it (the simulator's
        exact quantiles, all pools together) are within the objectives, nothing was dropped, and, when
        requests were asked for, some got their first token (a queue that holds every request longer
        than the interval is not a met TTFT)."""
        f, o = self.fleet, self.setup.objectives
        ws = f.window_stats(t0, namespace=NAMESPACE, factory=self.setup.factory)
        ok = bool(ws.dropped <= 0 and ws.meets(o.ttft_p95_seconds, o.itl_p95_seconds))
        if demand_max > 0 and ws.ttft_observations <= 0:
            ok = False
        self.intervals += 1
        self.good += ok
        self.delivered += ws.generation_tokens
        self.dropped_tokens += ws.dropped * self.trace(t0).output_tokens
        if not ok:
            self.late_tokens += ws.generation_tokens
        cap = {p: sum(f.engines[n].capacity for n in names if f.engines[n].serving(t1))
               for p, names in self.names.items()}
        self.timeline.append({
            "t": t1, "demand": self.trace(t0).output_tokens_per_second, "capacity": cap,
            "replicas": self.replicas(), "dollars_per_hour": dph, "tokens": float(ws.generation_tokens), "cost": cost,
            "ok": ok, "ttft_p95": ws.ttft_p95_seconds, "itl_p95": ws.itl_p95_seconds,
        })

    # -- results -----------------------------------------------------------------------------
    def result(self) -> dict:
        gen = self.delivered
        return {
            "cost_dollars": float(self.cost),
            "cost_per_mtok": float(self.cost / (gen / 1e6)) if gen > 0 else None,
            "slo_attainment": float(self.good / self.intervals) if self.intervals else 0.0,
            "replica_changes": self.added + self.removed,
            "scale_events": self.scale_events,
            "tokens_delivered": float(gen),
            "tokens_demanded": float(self._demand_tokens),
            "tokens_dropped": float(self.dropped_tokens),
            "tokens_late": float(self.late_tokens),
            "mean_dollars_per_hour": self.cost / (self.duration / 3600.0) if self.duration > 0 else 0.0,
            "peak_replicas": dict(self.peak_replicas),
            "intervals": self.intervals,
        }
