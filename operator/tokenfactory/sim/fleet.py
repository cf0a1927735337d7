"""The simulator's core: a deterministic fluid model of vLLM engines, stepped by a clock.

``Fleet.step(now, dt)`` advances every engine over ``(now - dt, now]``; nothing reads a clock,
so the same calls give the same numbers (a benchmark fast-forwards a day with a simulated clock).

Model, per factory (a router in front of all its engines, like the factory's Service):

* demand (output tokens/s) comes from the factory's trace; arrivals in a step are split across
  *serving* engines (Ready, and ``startup_seconds`` past their start) by free capacity: first
  proportionally to each engine's free room this step, and what exceeds all free room
  proportionally to capacity, where it waits in the engine's queue;
* an engine serves at most ``capacity x dt`` output tokens per step (capacity = profile tok/s per
  GPU x GPUs x ``capacity_factor``); the rest waits, up to ``max_waiting_requests_per_engine``
  requests; beyond that requests are dropped (counted);
* latency follows load (see :mod:`tokenfactory.sim.profiles`); each completed request is an
  observation of TTFT and e2e latency, each generated token after the first one of ITL. Per
  request latencies are log-normal around the model's medians; histogram buckets get the
  expected count per bucket (deterministic), so ``histogram_quantile`` matches the true p95 to
  within bucket interpolation.
* with no serving engine, arrivals are dropped (nobody answers); an engine's queue is re-routed
  when it goes away.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from tokenfactory.sim.profiles import Profile, default_startup_seconds, profile_for
from tokenfactory.sim.traces import Constant, Demand, Trace

# vLLM V1 bucket boundaries (vllm/v1/metrics/loggers.py)
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

Z95 = 1.6448536269514722  # standard normal 95th percentile
_KEY_SCALE = 400.0  # medians are grouped on a log grid of 0.25 % for histogram folding


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@lru_cache(maxsize=65536)
def _cdf_row(buckets: tuple[float, ...], sigma: float, key: int) -> tuple[float, ...]:
    mu = key / _KEY_SCALE
    return tuple(_phi((math.log(le) - mu) / sigma) for le in buckets)


class LogNormalHistogram:
    """Cumulative histogram fed with groups of log-normal observations (median, count)."""

    __slots__ = ("buckets", "sigma", "_pending", "_cum", "count", "sum", "_mean_factor")

    def __init__(self, buckets: tuple[float, ...], sigma: float):
        self.buckets = buckets
        self.sigma = sigma
        self._pending: dict[int, float] = {}
        self._cum = [0.0] * len(buckets)
        self.count = 0.0
        self.sum = 0.0
        self._mean_factor = math.exp(sigma * sigma / 2.0)

    def observe(self, median: float, n: float) -> None:
        if n <= 0 or median <= 0:
            return
        key = round(math.log(median) * _KEY_SCALE)
        p = self._pending
        p[key] = p.get(key, 0.0) + n
        self.count += n
        self.sum += n * median * self._mean_factor

    def _fold(self) -> None:
        if not self._pending:
            return
        cum = self._cum
        for key, n in self._pending.items():
            row = _cdf_row(self.buckets, self.sigma, key)
            for i, c in enumerate(row):
                cum[i] += n * c
        self._pending.clear()

    def cumulative(self) -> list[tuple[float, int]]:
        """[(le, cumulative count)] including +Inf; counts are whole requests (rounded)."""
        self._fold()
        out = [(le, int(round(c))) for le, c in zip(self.buckets, self._cum)]
        out.append((math.inf, int(round(self.count))))
        return out


def mixture_quantile(groups: Iterable[tuple[float, float]], sigma: float, q: float = 0.95) -> float | None:
    """Quantile ``q`` of a mix of log-normals given as (median, weight); None without weight."""
    merged: dict[int, float] = {}
    for m, w in groups:
        if w > 0 and m > 0:
            k = round(math.log(m) * _KEY_SCALE)
            merged[k] = merged.get(k, 0.0) + w
    if not merged:
        return None
    total = sum(merged.values())
    items = [(k / _KEY_SCALE, w / total) for k, w in merged.items()]
    lo = min(mu for mu, _ in items) - 6 * sigma
    hi = max(mu for mu, _ in items) + 6 * sigma
    for _ in range(60):
        mid = (lo + hi) / 2
        cdf = sum(w * _phi((mid - mu) / sigma) for mu, w in items)
        if cdf < q:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


@dataclass(frozen=True)
class EngineSpec:
    """One vLLM engine (one pod). ``name`` is unique in the fleet; ``pod`` is the ``pod`` label
    (default: the name). ``ready_at``: when the pod became Ready (None: when added)."""

    name: str
    pod: str | None = None
    namespace: str = "default"
    factory: str = "sim"
    pool: str = "default"
    gpu_type: str = "h200"
    gpus: int = 8
    capacity_factor: float = 1.0
    startup_seconds: float | None = None
    ready_at: float | None = None


class PoolStats:
    """Cumulative truth for one pool (survives its engines)."""

    __slots__ = ("key", "gpu_type", "prompt", "generation", "success", "dropped", "history", "latency")

    def __init__(self, key: tuple[str, str, str], gpu_type: str):
        self.key = key
        self.gpu_type = gpu_type
        self.prompt = 0.0
        self.generation = 0.0
        self.success = 0.0
        self.dropped = 0.0
        self.history: deque = deque()  # (t, generation, prompt) after each step
        self.latency: deque = deque()  # (t, requests, ttft, tokens, itl, e2e) per engine-step


class Engine:
    __slots__ = (
        "spec", "profile", "capacity", "serving_from", "added_at", "backlog", "prompt_tokens",
        "generation_tokens", "success", "dropped", "running", "waiting", "kv", "utilisation",
        "ttft", "itl", "e2e", "ttft_hist", "itl_hist", "e2e_hist", "pool_stats", "history",
        "max_backlog_requests",
    )  # fmt: skip

    def __init__(self, spec: EngineSpec, profile: Profile, startup_seconds: float, now: float, pool_stats: PoolStats):
        self.spec = spec
        self.profile = profile
        self.capacity = profile.tokens_per_second_per_gpu * spec.gpus * spec.capacity_factor
        start = spec.ready_at if spec.ready_at is not None else now
        self.added_at = start
        self.serving_from = start + startup_seconds
        self.backlog = 0.0  # output tokens waiting
        self.prompt_tokens = 0.0
        self.generation_tokens = 0.0
        self.success = 0.0
        self.dropped = 0.0
        self.running = 0.0
        self.waiting = 0.0
        self.kv = 0.0
        self.utilisation = 0.0
        self.ttft = profile.base_ttft_seconds
        self.itl = profile.base_itl_seconds
        self.e2e = 0.0
        self.ttft_hist = LogNormalHistogram(TTFT_BUCKETS, profile.ttft_sigma)
        self.itl_hist = LogNormalHistogram(ITL_BUCKETS, profile.itl_sigma)
        self.e2e_hist = LogNormalHistogram(E2E_BUCKETS, profile.e2e_sigma)
        self.pool_stats = pool_stats
        self.history: deque = deque()
        self.max_backlog_requests = profile.max_waiting_requests_per_engine

    def serving(self, now: float) -> bool:
        return now >= self.serving_from

    def serving_fraction(self, now: float, dt: float) -> float:
        """Share of the step ``(now - dt, now]`` during which the engine was serving."""
        if now <= self.serving_from:
            return 0.0
        if now - dt >= self.serving_from:
            return 1.0
        return (now - self.serving_from) / dt


@dataclass
class FactoryState:
    trace: Trace
    carry_tokens: float = 0.0  # re-routed backlog of removed engines (output tokens)
    dropped: float = 0.0  # requests dropped (no engine, or queues full)
    last_demand: Demand = field(default_factory=lambda: Demand(0.0))


class Fleet:
    """Engines of one or more factories, stepped by :meth:`step` (deterministic, no clock)."""

    def __init__(
        self,
        trace: Trace | None = None,
        *,
        traces: Mapping[tuple[str, str], Trace] | None = None,
        start_time: float = 0.0,
        startup_seconds: float | None = None,
        window_seconds: float = 60.0,
        model: str = "deepseek-ai/DeepSeek-R1",
        profiles: Mapping[str, Profile] | None = None,
    ):
        self.default_trace: Trace = trace if trace is not None else Constant(0.0)
        self.traces = dict(traces or {})
        self.start_time = start_time
        self.now = start_time
        self.default_startup_seconds = startup_seconds  # None: the GPU sheet's per type
        self.window_seconds = window_seconds
        self.model = model
        self.profiles = dict(profiles or {})
        self.engines: dict[str, Engine] = {}
        self.pools: dict[tuple[str, str, str], PoolStats] = {}
        self.factories: dict[tuple[str, str], FactoryState] = {}
        self.steps = 0

    # -- engines ---------------------------------------------------------------------------

    def profile(self, gpu_type: str) -> Profile:
        key = gpu_type.lower()
        if key not in self.profiles:
            self.profiles[key] = profile_for(key)
        return self.profiles[key]

    def _factory(self, namespace: str, factory: str) -> FactoryState:
        key = (namespace, factory)
        st = self.factories.get(key)
        if st is None:
            st = self.factories[key] = FactoryState(trace=self.traces.get(key, self.default_trace))
        return st

    def add_engine(self, spec: EngineSpec, now: float | None = None) -> Engine:
        now = self.now if now is None else now
        if spec.name in self.engines:
            raise ValueError(f"engine {spec.name!r} exists")
        if spec.gpus <= 0 or spec.capacity_factor < 0:
            raise ValueError(f"engine {spec.name!r}: gpus must be > 0 and capacity_factor >= 0")
        startup = spec.startup_seconds
        if startup is None:
            startup = self.default_startup_seconds
        if startup is None:
            startup = default_startup_seconds(spec.gpu_type)
        pkey = (spec.namespace, spec.factory, spec.pool)
        stats = self.pools.get(pkey)
        if stats is None:
            stats = self.pools[pkey] = PoolStats(pkey, spec.gpu_type.lower())
        self._factory(spec.namespace, spec.factory)
        e = Engine(spec, self.profile(spec.gpu_type), startup, now, stats)
        self.engines[spec.name] = e
        return e

    def remove_engine(self, name: str) -> None:
        e = self.engines.pop(name, None)
        if e is not None and e.backlog > 0:
            self._factory(e.spec.namespace, e.spec.factory).carry_tokens += e.backlog

    def set_engines(self, specs: Iterable[EngineSpec], now: float | None = None) -> None:
        """Make the engine set equal to ``specs`` (by name); a changed spec restarts its engine."""
        wanted = {s.name: s for s in specs}
        for name in list(self.engines):
            if name not in wanted or self.engines[name].spec != wanted[name]:
                self.remove_engine(name)
        for name, s in wanted.items():
            if name not in self.engines:
                self.add_engine(s, now)

    # -- stepping --------------------------------------------------------------------------

    def step(self, now: float, dt: float) -> None:
        """Advance every engine over ``(now - dt, now]``."""
        if dt <= 0:
            raise ValueError("dt must be > 0")
        t_rel = now - dt - self.start_time
        by_factory: dict[tuple[str, str], list[tuple[Engine, float]]] = {k: [] for k in self.factories}
        for e in self.engines.values():
            f = e.serving_fraction(now, dt)
            if f > 0.0:
                by_factory[(e.spec.namespace, e.spec.factory)].append((e, f))
        for key, serving in by_factory.items():
            st = self.factories[key]
            demand = st.trace(t_rel)
            st.last_demand = demand
            out_tokens = demand.output_tokens
            arrivals = demand.output_tokens_per_second * dt + st.carry_tokens
            st.carry_tokens = 0.0
            if not serving:
                st.dropped += arrivals / out_tokens
                continue
            routable = max(f for _, f in serving)
            if routable < 1.0:  # the first engine came up during this step: earlier arrivals found nobody
                st.dropped += arrivals * (1.0 - routable) / out_tokens
                arrivals *= routable
            # Route: by free room first, then the excess by capacity.
            caps = [e.capacity * dt * f for e, f in serving]
            free = [max(0.0, c - e.backlog) for (e, _), c in zip(serving, caps)]
            total_free = sum(free)
            if arrivals <= total_free and total_free > 0:
                shares = [arrivals * fr / total_free for fr in free]
            else:
                total_cap = sum(caps)
                excess = arrivals - total_free
                if total_cap > 0:
                    shares = [fr + excess * c / total_cap for fr, c in zip(free, caps)]
                else:
                    shares = [excess / len(serving) for _ in serving]
            for (e, _), cap, share in zip(serving, caps, shares):
                self._serve(e, cap, share, dt, now, demand)
        for stats in self.pools.values():
            stats.history.append((now, stats.generation, stats.prompt))
            self._prune(stats.history, now)
            self._prune(stats.latency, now)
        self.now = now
        self.steps += 1

    def _prune(self, dq: deque, now: float) -> None:
        horizon = now - self.window_seconds
        while len(dq) > 1 and dq[1][0] <= horizon:
            dq.popleft()

    def _serve(self, e: Engine, cap: float, arriving: float, dt: float, now: float, demand: Demand) -> None:
        p = e.profile
        out_tokens = demand.output_tokens
        work = e.backlog + arriving
        served = cap if work > cap else work
        backlog = work - served
        max_backlog = e.max_backlog_requests * out_tokens
        stats = e.pool_stats
        if backlog > max_backlog:
            dropped = (backlog - max_backlog) / out_tokens
            e.dropped += dropped
            stats.dropped += dropped
            backlog = max_backlog
        e.backlog = backlog
        full_cap = e.capacity * dt
        u = served / full_cap if full_cap > 0 else 0.0
        if u > 1.0:
            u = 1.0
        itl = p.base_itl_seconds * (1.0 + p.itl_load_factor * u * u)
        wait = backlog / e.capacity if e.capacity > 0 else 0.0
        ttft = p.base_ttft_seconds * (demand.prompt_tokens / 1000.0) * (1.0 + u) + wait
        e2e = ttft + itl * max(0.0, out_tokens - 1.0)
        completions = served / out_tokens
        prompt = completions * demand.prompt_tokens
        e.generation_tokens += served
        e.prompt_tokens += prompt
        e.success += completions
        stats.generation += served
        stats.prompt += prompt
        stats.success += completions
        e.utilisation = u
        e.itl = itl
        e.ttft = ttft
        e.e2e = e2e
        e.running = served / dt * itl
        e.waiting = backlog / out_tokens
        max_running = e.capacity * p.base_itl_seconds * (1.0 + p.itl_load_factor)
        e.kv = min(1.0, 0.9 * u + (0.1 * min(1.0, e.waiting / max_running) if max_running > 0 else 0.0))
        itl_obs = served - completions
        e.ttft_hist.observe(ttft, completions)
        e.itl_hist.observe(itl, itl_obs)
        e.e2e_hist.observe(e2e, completions)
        stats.latency.append((now, completions, ttft, itl_obs, itl, e2e))
        e.history.append((now, e.generation_tokens, e.prompt_tokens))
        self._prune(e.history, now)

    def run(self, until: float, dt: float) -> None:
        """Fast-forward from :attr:`now` to ``until`` in steps of ``dt`` (last one shorter)."""
        t = self.now
        while t < until - 1e-9:
            nxt = min(until, t + dt)
            self.step(nxt, nxt - t)
            t = nxt

    # -- truth -----------------------------------------------------------------------------

    @staticmethod
    def _rate(history: deque, now: float) -> tuple[float, float]:
        if len(history) < 2:
            return 0.0, 0.0
        t0, g0, p0 = history[0]
        t1, g1, p1 = history[-1]
        if t1 <= t0:
            return 0.0, 0.0
        return (g1 - g0) / (t1 - t0), (p1 - p0) / (t1 - t0)

    def truth(self) -> dict:
        """Ground truth as plain data (for ``/truth`` and tests)."""
        now = self.now
        engines = []
        for e in sorted(self.engines.values(), key=lambda x: x.spec.name):
            s = e.spec
            serving = e.serving(now)
            gen_rate, prompt_rate = self._rate(e.history, now) if serving else (0.0, 0.0)
            engines.append(
                {
                    "name": s.name,
                    "pod": s.pod or s.name,
                    "namespace": s.namespace,
                    "factory": s.factory,
                    "pool": s.pool,
                    "gpu_type": s.gpu_type.lower(),
                    "gpus": s.gpus,
                    "state": "serving" if serving else "starting",
                    "serving_from": e.serving_from,
                    "capacity_tokens_per_second": e.capacity,
                    "prompt_tokens_total": e.prompt_tokens,
                    "generation_tokens_total": e.generation_tokens,
                    "requests_success_total": e.success,
                    "requests_dropped_total": e.dropped,
                    "prompt_tokens_per_second": prompt_rate,
                    "generation_tokens_per_second": gen_rate,
                    "utilisation": e.utilisation if serving else 0.0,
                    "ttft_median_seconds": e.ttft,
                    "ttft_p95_seconds": e.ttft * math.exp(Z95 * e.profile.ttft_sigma),
                    "itl_median_seconds": e.itl,
                    "itl_p95_seconds": e.itl * math.exp(Z95 * e.profile.itl_sigma),
                    "requests_waiting": e.waiting if serving else 0.0,
                    "requests_running": e.running if serving else 0.0,
                    "kv_cache_usage": e.kv if serving else 0.0,
                }
            )
        pools = []
        for key, st in sorted(self.pools.items()):
            members = [e for e in self.engines.values() if e.pool_stats is st]
            serving = [e for e in members if e.serving(now)]
            prof = self.profile(st.gpu_type)
            gen_rate, prompt_rate = self._rate(st.history, now)
            lat = list(st.latency)
            pools.append(
                {
                    "namespace": key[0],
                    "factory": key[1],
                    "pool": key[2],
                    "gpu_type": st.gpu_type,
                    "replicas_serving": len(serving),
                    "replicas_starting": len(members) - len(serving),
                    "gpus": sum(e.spec.gpus for e in members),
                    "capacity_tokens_per_second": sum(e.capacity for e in serving),
                    "prompt_tokens_total": st.prompt,
                    "generation_tokens_total": st.generation,
                    "requests_success_total": st.success,
                    "requests_dropped_total": st.dropped,
                    "prompt_tokens_per_second": prompt_rate,
                    "generation_tokens_per_second": gen_rate,
                    "ttft_p95_seconds": mixture_quantile(((r[2], r[1]) for r in lat), prof.ttft_sigma),
                    "itl_p95_seconds": mixture_quantile(((r[4], r[3]) for r in lat), prof.itl_sigma),
                    "e2e_p95_seconds": mixture_quantile(((r[5], r[1]) for r in lat), prof.e2e_sigma),
                    "requests_waiting": sum(e.waiting for e in serving),
                    "requests_running": sum(e.running for e in serving),
                }
            )
        factories = []
        for (ns, name), st in sorted(self.factories.items()):
            d = st.last_demand
            factories.append(
                {
                    "namespace": ns,
                    "factory": name,
                    "demand_output_tokens_per_second": d.output_tokens_per_second,
                    "demand_prompt_tokens_per_second": d.prompt_tokens_per_second,
                    "demand_requests_per_second": d.requests_per_second,
                    "prompt_tokens_per_request": d.prompt_tokens,
                    "output_tokens_per_request": d.output_tokens,
                    "requests_dropped_unrouted_total": st.dropped,
                }
            )
        return {
            "now": now,
            "window_seconds": self.window_seconds,
            "model": self.model,
            "engines": engines,
            "pools": pools,
            "factories": factories,
        }
