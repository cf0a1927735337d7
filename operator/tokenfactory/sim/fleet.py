"""The simulator's core: request-level vLLM engines (continuous batching), stepped by a clock.

``Fleet.step(now, dt)`` advances every engine over ``(now - dt, now]`` in ticks of at most
``tick`` seconds; nothing reads a clock and every random draw comes from the fleet's own seeded
generator, so the same calls give the same numbers (a benchmark fast-forwards a day).

Model (see :mod:`tokenfactory.sim.profiles` for the step-time model and its calibration):

* **Requests.** Each factory's requests arrive one by one: Poisson around a rate trace's rate (sizes:
  the trace's prompt/output tokens per request), or exactly as a request-level trace
  (:class:`~tokenfactory.sim.traces.RequestTrace`) gives them, with their own sizes.
* **Routing** (``routing=``), as the rendered Kubernetes objects do it, never smarter:
  ``Service`` (default; kube-proxy: each request to a uniformly random ready pod, whatever its
  capacity), ``HTTPRoute`` (a pool drawn by the integer ``weights`` among pools with a ready pod,
  then a random ready pod in it; a pool with weight but no ready pod gets its share dropped, as a
  Gateway answers 5xx for a backend without endpoints), ``InferencePool`` (the endpoint picker:
  each request to the ready pod with the least load, load = (running + waiting) / max_num_seqs,
  KV-cache usage breaking ties).
* **Engines** (one per pod) do continuous batching: a FIFO waiting queue (bounded: beyond
  ``max_waiting_requests_per_engine`` requests the newest are dropped); a request is admitted when
  fewer than ``max_num_seqs`` run and its KV (prompt + tokens generated so far) fits the KV budget;
  prompts are prefilled first come first served in chunks that share steps with the decodes; each
  running sequence gets one token per step; a step's time grows with the running sequences and the
  prefill tokens in it. When the running sequences' KV outgrows the budget the newest are
  preempted (back to the front of the queue, recomputed on re-admission). TTFT = queue wait +
  prefill; ITL = the step times a sequence sees; e2e = arrival to last token.
* **Metrics**: every TTFT / e2e is observed once per request in vLLM's buckets (whole counts),
  every generated token after the first is an ITL observation (counts of decode tokens per tick per
  step time); per pool a fine histogram (2% bins, vLLM's edges included) gives the true quantiles.
* An engine serves from ``ready_at + startup_seconds``; with no serving engine, a factory's
  arrivals are dropped (nobody answers); a removed engine's waiting and running requests are re-routed
  (running ones restart: recomputed where they land).

Resolution: within a tick, slots freed by completions are reused from the next tick, and each
engine's step time is the tick's average; TTFT, e2e and first-token times are exact to the
prefill FIFO (not rounded to ticks).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from tokenfactory.sim import kernel as K
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

ROUTING_MODES = ("Service", "HTTPRoute", "InferencePool")

# Fine histogram (true quantiles): 2% log bins from 0.1 ms to 10,000 s plus vLLM's bucket edges.
FINE_EDGES = np.unique(np.concatenate([
    np.geomspace(1e-4, 1e4, int(math.log(1e8) / math.log(1.02)) + 1),
    np.array(TTFT_BUCKETS + ITL_BUCKETS + E2E_BUCKETS, dtype=float),
]))
NFINE = len(FINE_EDGES) + 1  # last bin: above the top edge
_LO = np.concatenate([[0.0], FINE_EDGES])
_HI = np.concatenate([FINE_EDGES, [FINE_EDGES[-1] * 1.02]])
FINE_MID = np.where(_LO > 0, np.sqrt(_LO * np.maximum(_HI, 1e-12)), _HI / 2)


def _lut(buckets: tuple[float, ...]) -> np.ndarray:
    """fine bin -> vLLM bucket index (len(buckets) = the +Inf-only bucket)."""
    return np.searchsorted(np.array(buckets), _HI * (1 - 1e-12), side="left")


_LUT = {"ttft": _lut(TTFT_BUCKETS), "itl": _lut(ITL_BUCKETS), "e2e": _lut(E2E_BUCKETS)}
_BUCKETS = {"ttft": TTFT_BUCKETS, "itl": ITL_BUCKETS, "e2e": E2E_BUCKETS}
_KINDS = ("ttft", "itl", "e2e")


def fine_index(values: np.ndarray) -> np.ndarray:
    return np.searchsorted(FINE_EDGES, values, side="left")


def fine_quantile(counts: np.ndarray, q: float = 0.95) -> float | None:
    """Quantile ``q`` of a fine histogram (log-interpolated inside the bin); None when empty."""
    total = float(counts.sum())
    if total <= 0:
        return None
    cum = np.cumsum(counts)
    i = int(np.searchsorted(cum, q * total * (1 - 1e-12), side="left"))
    i = min(i, len(counts) - 1)
    prev = float(cum[i - 1]) if i > 0 else 0.0
    f = (q * total - prev) / counts[i] if counts[i] > 0 else 1.0
    f = min(1.0, max(0.0, f))
    lo, hi = float(_LO[i]), float(_HI[i])
    if lo <= 0:
        return hi * f
    return lo * (hi / lo) ** f


def mixture_quantile(groups: Iterable[tuple[float, float]], sigma: float = 0.0, q: float = 0.95) -> float | None:
    """Quantile ``q`` of weighted values [(value, weight)] (binned on the fine grid); None without
    weight. ``sigma`` is ignored (kept for callers of the fluid model's version)."""
    vals, ws = [], []
    for v, w in groups:
        if w > 0 and v > 0:
            vals.append(v)
            ws.append(w)
    if not vals:
        return None
    counts = np.bincount(fine_index(np.array(vals)), weights=np.array(ws), minlength=NFINE)
    return fine_quantile(counts, q)


def _window(rows: list, horizon: float) -> list:
    """``rows`` (sorted by time) from the last one at or before ``horizon`` on."""
    i = 0
    while i + 1 < len(rows) and rows[i + 1][0] <= horizon:
        i += 1
    return rows[i:]


class EngineHistogram:
    """A view of one engine's cumulative vLLM histogram (a row of the fleet's arrays)."""

    __slots__ = ("fleet", "row", "kind")

    def __init__(self, fleet: Fleet, row: int, kind: str):
        self.fleet, self.row, self.kind = fleet, row, kind

    @property
    def buckets(self) -> tuple[float, ...]:
        return _BUCKETS[self.kind]

    @property
    def count(self) -> float:
        return float(self.fleet._hist[self.kind][self.row].sum())

    @property
    def sum(self) -> float:
        return float(self.fleet._hsum[self.row, _KINDS.index(self.kind)])

    def cumulative(self) -> list[tuple[float, int]]:
        """[(le, cumulative count)] including +Inf; whole observations (floored)."""
        c = np.floor(np.cumsum(self.fleet._hist[self.kind][self.row]) + 1e-6)
        out = [(le, int(v)) for le, v in zip(self.buckets, c[:-1])]
        out.append((math.inf, int(c[-1])))
        return out


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
    """Cumulative truth for one pool (survives its engines). ``history``: (t, generation, prompt)
    after each :meth:`Fleet.step`; ``latency``: compatibility view for callers of the fluid model,
    groups (t, requests, ttft, itl_tokens, itl, e2e), one per non-empty fine histogram bin per step
    over the window, built when read (prefer :meth:`Fleet.window_stats`)."""

    __slots__ = ("fleet", "key", "gpu_type", "index", "prompt", "generation", "success", "dropped", "preempted")

    def __init__(self, fleet: Fleet, key: tuple[str, str, str], gpu_type: str, index: int):
        self.fleet = fleet
        self.key = key
        self.gpu_type = gpu_type
        self.index = index
        self.prompt = 0.0
        self.generation = 0.0
        self.success = 0.0
        self.dropped = 0.0
        self.preempted = 0.0

    @property
    def history(self) -> list[tuple[float, float, float]]:
        """(t, generation, prompt) totals after each step over the window (the entry at or before its
        start first)."""
        p = self.index
        rows = [(sn[0], float(sn[2][p, K.C_GEN]), float(sn[2][p, K.C_PROMPT])) if p < len(sn[2]) else (sn[0], 0.0, 0.0)
                for sn in self.fleet._snaps]
        return _window(rows, self.fleet.now - self.fleet.window_seconds)

    @property
    def latency(self) -> list[tuple[float, float, float, float, float, float]]:
        f, p = self.fleet, self.index
        horizon = f.now - f.window_seconds
        out = []
        prev = None
        for s in f._snaps:
            if prev is not None and s[0] > horizon:
                a = s[1][p] if p < len(s[1]) else np.zeros((3, NFINE))
                b = prev[1][p] if p < len(prev[1]) else 0.0
                d = a - b
                t = s[0]
                for i in np.flatnonzero(d[0] > 0):
                    v = float(FINE_MID[i])
                    out.append((t, float(d[0, i]), v, 0.0, 1e-3, v))
                for i in np.flatnonzero(d[1] > 0):
                    out.append((t, 0.0, 1e-3, float(d[1, i]), float(FINE_MID[i]), 1e-3))
            prev = s
        return out


class Engine:
    """One engine: its spec, profile and a view of its row in the fleet's arrays."""

    __slots__ = ("fleet", "row", "spec", "profile", "capacity", "serving_from", "added_at", "pool_stats",
                 "added_step", "ttft_hist", "itl_hist", "e2e_hist", "max_backlog_requests")

    def __init__(self, fleet: Fleet, row: int, spec: EngineSpec, profile: Profile, serving_from: float,
                 added_at: float, pool_stats: PoolStats):
        self.fleet = fleet
        self.row = row
        self.spec = spec
        self.profile = profile
        # nominal capacity: the sheet's tok/s per GPU x GPUs x capacity factor (the operating point)
        self.capacity = profile.tokens_per_second_per_gpu * spec.gpus * spec.capacity_factor
        self.serving_from = serving_from
        self.added_at = added_at
        self.pool_stats = pool_stats
        self.added_step = fleet.steps  # snapshots after this step are this engine's
        self.ttft_hist = EngineHistogram(fleet, row, "ttft")
        self.itl_hist = EngineHistogram(fleet, row, "itl")
        self.e2e_hist = EngineHistogram(fleet, row, "e2e")
        self.max_backlog_requests = profile.max_waiting_requests_per_engine

    def serving(self, now: float) -> bool:
        return now >= self.serving_from

    @property
    def history(self) -> list[tuple[float, float, float]]:
        """(t, generation, prompt) counters after each step since it was added, over the window (the
        entry at or before its start first)."""
        r = self.row
        rows = [(sn[0], float(sn[4][r, K.C_GEN]), float(sn[4][r, K.C_PROMPT]))
                for sn in self.fleet._snaps if sn[5] > self.added_step and r < len(sn[4])]
        return _window(rows, self.fleet.now - self.fleet.window_seconds)

    def _c(self, col: int) -> float:
        return float(self.fleet._ctr[self.row, col])

    @property
    def prompt_tokens(self) -> float:
        return self._c(K.C_PROMPT)

    @property
    def generation_tokens(self) -> float:
        return self._c(K.C_GEN)

    @property
    def success(self) -> float:
        return self._c(K.C_SUCCESS)

    @property
    def dropped(self) -> float:
        return self._c(K.C_DROPPED)

    @property
    def preemptions(self) -> float:
        return self._c(K.C_PREEMPTED)

    @property
    def running(self) -> int:
        return int(self.fleet._ei[self.row, K.NRUN])

    @property
    def waiting(self) -> int:
        ei = self.fleet._ei
        return int(ei[self.row, K.TAIL] - ei[self.row, K.HEAD])

    @property
    def kv(self) -> float:
        ef = self.fleet._ef
        cap = ef[self.row, K.KV_CAP]
        return min(1.0, float(ef[self.row, K.KV_USED] / cap)) if cap > 0 else 0.0


@dataclass(frozen=True)
class WindowStats:
    """What happened in ``(since, until]`` over the selected pools."""

    since: float
    until: float
    requests: float  # requests completed
    ttft_observations: float  # first tokens
    itl_observations: float  # decode tokens
    ttft_p95_seconds: float | None
    itl_p95_seconds: float | None
    e2e_p95_seconds: float | None
    generation_tokens: float
    prompt_tokens: float
    dropped: float  # requests dropped (queues full, or no engine to route to)
    preemptions: float

    def meets(self, ttft_p95_seconds: float | None, itl_p95_seconds: float | None) -> bool:
        """p95 TTFT and ITL within the limits (None: no limit; no observation: met)."""
        ok_t = ttft_p95_seconds is None or self.ttft_p95_seconds is None or self.ttft_p95_seconds <= ttft_p95_seconds
        ok_i = itl_p95_seconds is None or self.itl_p95_seconds is None or self.itl_p95_seconds <= itl_p95_seconds
        return ok_t and ok_i


@dataclass
class FactoryState:
    trace: Trace
    index: int
    key: tuple[str, str] = ("default", "sim")
    dropped: float = 0.0  # requests dropped with no engine to route to (or to a pool with no ready pod)
    last_demand: Demand = field(default_factory=lambda: Demand(0.0))
    carry: list = field(default_factory=list)  # re-routed requests of removed engines: (float rows, int rows)


class Fleet:
    """Engines of one or more factories, stepped by :meth:`step` (deterministic for ``seed``).

    ``trace`` (or ``traces[(namespace, factory)]``): demand per factory; ``tick``: the internal step
    (s; a ``step(now, dt)`` is cut into ceil(dt / tick) equal ticks); ``routing``: ``Service`` |
    ``HTTPRoute`` | ``InferencePool``; ``weights``: HTTPRoute weights per pool name (default: 1 per
    pool; a pool without a weight gets none of the traffic); ``window_seconds``: the window of
    :meth:`truth`'s rates and p95; ``retain_seconds``: how far back :meth:`window_stats` can look
    (default: max(window, 600 s)); ``size_jitter``: a rate trace's requests get prompt and output
    lengths uniform within +-jitter of its per-request figures (same means; 0: all equal, which keeps
    a saturated batch in lock-step waves)."""

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
        seed: int = 0,
        tick: float = 1.0,
        routing: str = "Service",
        weights: Mapping[str, int] | None = None,
        retain_seconds: float | None = None,
        size_jitter: float = 0.5,
    ):
        if routing not in ROUTING_MODES:
            raise ValueError(f"routing must be one of {', '.join(ROUTING_MODES)}, got {routing!r}")
        if not tick > 0:
            raise ValueError(f"tick must be > 0, got {tick}")
        if not 0 <= size_jitter < 1:
            raise ValueError(f"size_jitter must be in [0, 1), got {size_jitter}")
        if weights is not None:
            bad = {k: v for k, v in weights.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0}
            if bad:
                raise ValueError(f"weights: integers >= 0 per pool name wanted, got {bad}")
        self.default_trace: Trace = trace if trace is not None else Constant(0.0)
        self.traces = dict(traces or {})
        self.start_time = start_time
        self.now = start_time
        self.default_startup_seconds = startup_seconds
        self.window_seconds = window_seconds
        self.retain_seconds = retain_seconds if retain_seconds is not None else max(window_seconds, 600.0)
        self.model = model
        self.profiles = dict(profiles or {})
        self.seed = seed
        self.tick = tick
        self.size_jitter = size_jitter
        self.routing = routing
        self.weights = dict(weights) if weights is not None else None
        self.rng = np.random.default_rng(seed)
        self.engines: dict[str, Engine] = {}
        self.pools: dict[tuple[str, str, str], PoolStats] = {}
        self.factories: dict[tuple[str, str], FactoryState] = {}
        self.steps = 0
        self.ticks = 0
        self._serial = 0
        self._free_rows: list[int] = []
        self._nrows = 0
        self._cap = 0
        self._q = 0
        self._s = 0
        self._ef = np.zeros((0, K.NEF))
        self._ei = np.zeros((0, K.NEI), dtype=np.int64)
        self._ctr = np.zeros((0, K.NCTR))
        self._hist = {k: np.zeros((0, len(_BUCKETS[k]) + 1)) for k in _KINDS}
        self._hsum = np.zeros((0, 3))
        self._wf = np.zeros((0, 0, K.NRF))
        self._wi = np.zeros((0, 0, K.NRI), dtype=np.int64)
        self._rf = np.zeros((0, 0, K.NRF))
        self._ri = np.zeros((0, 0, K.NRI), dtype=np.int64)
        self._grow(8, 64, 256)
        self._pcap = 0
        self._fine = np.zeros((0, 3, NFINE))
        self._pool_ctr = np.zeros((0, K.NCTR))  # counters of removed engines, per pool
        self._pool_fac = np.zeros(0, dtype=np.int64)
        self._grow_pools(4)
        self._fdrop = np.zeros(0)
        self._snaps: deque = deque()  # (t, fine copy, pool counters, factory drops)
        self._snapshot()

    # -- arrays ----------------------------------------------------------------------------

    def _grow(self, cap: int, s: int, q: int) -> None:
        cap, s, q = max(cap, self._cap), max(s, self._s), max(q, self._q)
        if (cap, s, q) == (self._cap, self._s, self._q):
            return
        old = self._cap

        def g(a, shape, dtype=float, fill=0.0):
            n = np.full(shape, fill, dtype=dtype)
            n[tuple(slice(0, x) for x in a.shape)] = a
            return n

        self._ef = g(self._ef, (cap, K.NEF))
        self._ef[old:, K.SERVING_FROM] = np.inf
        self._ei = g(self._ei, (cap, K.NEI), np.int64)
        self._ei[old:, K.FAC] = -1
        self._ctr = g(self._ctr, (cap, K.NCTR))
        self._hist = {k: g(v, (cap, v.shape[1])) for k, v in self._hist.items()}
        self._hsum = g(self._hsum, (cap, 3))
        self._rf = g(self._rf, (cap, s, K.NRF))
        self._ri = g(self._ri, (cap, s, K.NRI), np.int64)
        # queues: re-lay each ring from slot 0
        wf = np.zeros((cap, q, K.NRF))
        wi = np.zeros((cap, q, K.NRI), dtype=np.int64)
        for row in range(old):
            n = int(self._ei[row, K.TAIL] - self._ei[row, K.HEAD])
            if n and self._q:
                pos = (self._ei[row, K.HEAD] + np.arange(n)) % self._q
                wf[row, :n] = self._wf[row, pos]
                wi[row, :n] = self._wi[row, pos]
            self._ei[row, K.HEAD], self._ei[row, K.TAIL] = 0, n
        self._wf, self._wi = wf, wi
        self._cap, self._s, self._q = cap, s, q

    def _grow_pools(self, cap: int) -> None:
        if cap <= self._pcap:
            return
        fine = np.zeros((cap, 3, NFINE))
        fine[: self._pcap] = self._fine
        ctr = np.zeros((cap, K.NCTR))
        ctr[: self._pcap] = self._pool_ctr
        pf = np.full(cap, -1, dtype=np.int64)
        pf[: self._pcap] = self._pool_fac
        self._fine, self._pool_ctr, self._pool_fac, self._pcap = fine, ctr, pf, cap

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
            st = self.factories[key] = FactoryState(trace=self.traces.get(key, self.default_trace),
                                                    index=len(self.factories), key=key)
            fd = np.zeros(len(self.factories))
            fd[: len(self._fdrop)] = self._fdrop
            self._fdrop = fd
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
        fs = self._factory(spec.namespace, spec.factory)
        pkey = (spec.namespace, spec.factory, spec.pool)
        stats = self.pools.get(pkey)
        if stats is None:
            stats = self.pools[pkey] = PoolStats(self, pkey, spec.gpu_type.lower(), len(self.pools))
            self._grow_pools(max(self._pcap, 2 * len(self.pools)))
            self._pool_fac[stats.index] = fs.index
        prof = self.profile(spec.gpu_type)
        if self._free_rows:
            row = self._free_rows.pop()
        else:
            row = self._nrows
            self._nrows += 1
        self._grow(max(self._cap, 2 * self._nrows) if self._nrows > self._cap else self._cap,
                   prof.max_num_seqs, prof.max_waiting_requests_per_engine + prof.max_num_seqs + 1)
        start = spec.ready_at if spec.ready_at is not None else now
        serving_from = start + startup
        base, per_seq, per_tok = prof.scaled(spec.gpus, spec.capacity_factor)
        ef, ei = self._ef, self._ei
        ef[row] = 0.0
        ef[row, K.SERVING_FROM] = serving_from - self.start_time
        ef[row, K.BASE], ef[row, K.PER_SEQ], ef[row, K.PER_TOK] = base, per_seq, per_tok
        ef[row, K.BUDGET] = prof.max_num_batched_tokens
        ef[row, K.KV_CAP] = prof.kv_cache_tokens_per_gpu * spec.gpus
        ei[row] = 0
        ei[row, K.ACTIVE] = 1
        ei[row, K.FAC] = fs.index
        ei[row, K.POOL] = stats.index
        ei[row, K.MAX_SEQS] = prof.max_num_seqs
        ei[row, K.MAX_WAIT] = prof.max_waiting_requests_per_engine
        self._ctr[row] = 0.0
        for h in self._hist.values():
            h[row] = 0.0
        self._hsum[row] = 0.0
        eng = Engine(self, row, spec, prof, serving_from, start, stats)
        self.engines[spec.name] = eng
        return eng

    def remove_engine(self, name: str) -> None:
        eng = self.engines.pop(name, None)
        if eng is None:
            return
        row = eng.row
        fs = self._factory(eng.spec.namespace, eng.spec.factory)
        ei = self._ei
        # waiting and running requests go back to the factory's router (running ones restart)
        n = int(ei[row, K.TAIL] - ei[row, K.HEAD])
        if n:
            pos = (ei[row, K.HEAD] + np.arange(n)) % self._q
            fs.carry.append((self._wf[row, pos].copy(), self._wi[row, pos].copy()))
        n = int(ei[row, K.NRUN])
        if n:
            fs.carry.append((self._rf[row, :n].copy(), self._ri[row, :n].copy()))
        # keep the pool's cumulative counters
        self._pool_ctr[eng.pool_stats.index] += self._ctr[row]
        self._ctr[row] = 0.0
        ei[row] = 0
        ei[row, K.FAC] = -1
        self._ef[row] = 0.0
        self._ef[row, K.SERVING_FROM] = np.inf
        self._free_rows.append(row)

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

    def _arrivals(self, ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All factories' arrivals over the ticks (sorted by time, re-routed ones first)."""
        fl, il = [], []
        rng = self.rng
        for fs in self.factories.values():
            for wf, wi in fs.carry:  # re-routed: they keep their arrival times, sizes, progress
                n = len(wf)
                a = np.zeros((n, 6))
                a[:, K.A_T] = wf[:, K.R_ARR]
                a[:, K.A_PROMPT] = wf[:, K.R_PROMPT]
                a[:, K.A_OUT] = wf[:, K.R_OUT]
                a[:, K.A_REM] = wf[:, K.R_REM]
                b = np.zeros((n, 3), dtype=np.int64)
                b[:, K.A_FAC] = fs.index
                b[:, K.A_KEY] = wi[:, K.R_KEY]
                b[:, K.A_PEND] = wi[:, K.R_PEND]
                order = np.argsort(b[:, K.A_KEY], kind="stable")
                a[:, K.A_T] = np.minimum(a[:, K.A_T], ticks[0])
                fl.append(a[order])
                il.append(b[order])
            fs.carry = []
            trace = fs.trace
            t0, t1 = float(ticks[0]), float(ticks[-1])
            d = fs.last_demand = trace(t0)  # a rate trace is read at the step's start
            requests = getattr(trace, "requests", None)
            if requests is not None:
                times, prompt, out = requests(t0, t1)
                times = np.asarray(times, dtype=float)
                prompt = np.asarray(prompt, dtype=float)
                out = np.maximum(np.asarray(out, dtype=float), 1.0)
            else:
                lam = d.requests_per_second * (t1 - t0) if d.output_tokens > 0 else 0.0
                n = int(rng.poisson(lam)) if lam > 0 else 0
                times = np.sort(t0 + rng.random(n) * (t1 - t0))
                j = self.size_jitter
                if j > 0 and n:  # sizes uniform in +-jitter around the trace's figures (same means)
                    u = 1.0 + j * (2.0 * rng.random((2, n)) - 1.0)
                    prompt = np.maximum(0.0, np.round(d.prompt_tokens * u[0]))
                    out = np.maximum(1.0, np.round(d.output_tokens * u[1]))
                else:
                    prompt = np.full(n, max(0.0, round(d.prompt_tokens)))
                    out = np.full(n, max(1.0, round(d.output_tokens)))
            n = len(times)
            if n == 0:
                continue
            a = np.empty((n, 6))
            a[:, K.A_T] = times
            a[:, K.A_PROMPT] = prompt
            a[:, K.A_OUT] = out
            a[:, K.A_REM] = out - 1.0
            a[:, K.A_U1] = 0.0
            a[:, K.A_U2] = 0.0
            b = np.empty((n, 3), dtype=np.int64)
            b[:, K.A_FAC] = fs.index
            b[:, K.A_KEY] = np.arange(self._serial, self._serial + n)
            b[:, K.A_PEND] = 1
            self._serial += n
            fl.append(a)
            il.append(b)
        if not fl:
            return np.zeros((0, 6)), np.zeros((0, 3), dtype=np.int64)
        if len(fl) == 1:
            a, b = fl[0], il[0]
        else:
            a = np.concatenate(fl)
            b = np.concatenate(il)
            order = np.argsort(a[:, K.A_T], kind="stable")
            a, b = a[order], b[order]
        a[:, K.A_U1 : K.A_U2 + 1] = rng.random((len(a), 2))  # routing draws
        return a, b

    def _pool_weights(self) -> np.ndarray:
        w = np.zeros(self._pcap)
        for st in self.pools.values():
            w[st.index] = 1.0 if self.weights is None else float(self.weights.get(st.key[2], 0))
        return w

    def step(self, now: float, dt: float) -> None:
        """Advance every engine over ``(now - dt, now]`` (in ceil(dt / tick) equal ticks)."""
        if dt <= 0:
            raise ValueError("dt must be > 0")
        t0 = now - dt - self.start_time
        n = max(1, int(math.ceil(dt / self.tick - 1e-9)))
        ticks = t0 + dt * np.arange(n + 1) / n
        ticks[-1] = now - self.start_time
        af, ai = self._arrivals(ticks)
        mode = {"Service": K.SERVICE, "HTTPRoute": K.HTTPROUTE, "InferencePool": K.INFERENCEPOOL}[self.routing]
        K.run_ticks(ticks, af, ai, self._ef, self._ei, self._ctr, self._wf, self._wi, self._rf, self._ri,
                    self._fdrop, mode, self._pool_weights(), self._pool_fac, self._nrows, len(self.pools),
                    FINE_EDGES, _LUT["ttft"], _LUT["itl"], _LUT["e2e"], self._hist["ttft"], self._hist["itl"],
                    self._hist["e2e"], self._hsum, self._fine)
        for fs in self.factories.values():
            fs.dropped = float(self._fdrop[fs.index])
        self.ticks += n
        self.now = now
        self.steps += 1
        self._after_step(now)

    def run(self, until: float, dt: float) -> None:
        """Fast-forward from :attr:`now` to ``until`` in steps of ``dt`` (last one shorter)."""
        t = self.now
        while t < until - 1e-9:
            nxt = min(until, t + dt)
            self.step(nxt, nxt - t)
            t = nxt

    # -- after each step: cumulative truth ----------------------------------------------------

    def _pool_counters(self) -> np.ndarray:
        """[pool, counter] cumulative totals (removed engines included)."""
        out = self._pool_ctr.copy()
        act = self._ei[:, K.ACTIVE] == 1
        for j in range(K.NCTR):
            out[:, j] += np.bincount(self._ei[act, K.POOL], weights=self._ctr[act, j], minlength=self._pcap)
        return out

    def _snapshot(self) -> None:
        self._snaps.append((self.now, self._fine[: len(self.pools)].copy(), self._pool_counters(), self._fdrop.copy(),
                            self._ctr.copy(), self.steps))
        horizon = self.now - self.retain_seconds
        while len(self._snaps) > 1 and self._snaps[1][0] <= horizon:
            self._snaps.popleft()

    def _after_step(self, now: float) -> None:
        self._snapshot()
        pc = self._snaps[-1][2].tolist()
        for st in self.pools.values():
            st.prompt, st.generation, st.success, st.dropped, st.preempted = pc[st.index]

    def _prune(self, dq: deque, now: float) -> None:
        horizon = now - self.window_seconds
        while len(dq) > 1 and dq[1][0] <= horizon:
            dq.popleft()

    # -- truth -----------------------------------------------------------------------------

    def _snap_at(self, t: float):
        """The latest snapshot at or before ``t`` (the oldest one kept if none)."""
        best = self._snaps[0]
        for s in self._snaps:
            if s[0] <= t + 1e-9:
                best = s
            else:
                break
        return best

    def window_stats(self, since: float, *, namespace: str | None = None, factory: str | None = None,
                     pool: str | None = None) -> WindowStats:
        """Requests, p95s (exact to the fine histogram), tokens and drops in ``(since, now]`` over the
        selected pools (all by default). ``since`` is rounded down to a :meth:`step` boundary and
        reaches back at most ``retain_seconds``; factory drops (no engine to route to) count when no
        ``pool`` is given."""
        t0, fine0, pc0, fd0 = self._snap_at(since)[:4]
        sel = [st.index for st in self.pools.values()
               if (namespace is None or st.key[0] == namespace) and (factory is None or st.key[1] == factory)
               and (pool is None or st.key[2] == pool)]
        pc1 = self._snaps[-1][2]
        d = np.zeros((3, NFINE))
        dc = np.zeros(K.NCTR)
        for p in sel:
            d += self._fine[p] - (fine0[p] if p < len(fine0) else 0.0)
            dc += pc1[p] - (pc0[p] if p < len(pc0) else 0.0)
        fdrop = 0.0
        if pool is None:
            for key, fs in self.factories.items():
                if (namespace is None or key[0] == namespace) and (factory is None or key[1] == factory):
                    fdrop += fs.dropped - (float(fd0[fs.index]) if fs.index < len(fd0) else 0.0)
        return WindowStats(
            since=t0, until=self.now, requests=float(dc[K.C_SUCCESS]), ttft_observations=float(d[0].sum()),
            itl_observations=float(d[1].sum()), ttft_p95_seconds=fine_quantile(d[0]),
            itl_p95_seconds=fine_quantile(d[1]), e2e_p95_seconds=fine_quantile(d[2]),
            generation_tokens=float(dc[K.C_GEN]), prompt_tokens=float(dc[K.C_PROMPT]),
            dropped=float(dc[K.C_DROPPED]) + fdrop, preemptions=float(dc[K.C_PREEMPTED]))

    @staticmethod
    def _rate(history: list, now: float) -> tuple[float, float]:
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
        fine0 = self._snap_at(now - self.window_seconds)[1]
        ef, ei = self._ef, self._ei
        engines = []
        for eng in sorted(self.engines.values(), key=lambda x: x.spec.name):
            s, row = eng.spec, eng.row
            serving = eng.serving(now)
            gen_rate, prompt_rate = self._rate(eng.history, now) if serving else (0.0, 0.0)
            engines.append({
                "name": s.name, "pod": s.pod or s.name, "namespace": s.namespace, "factory": s.factory,
                "pool": s.pool, "gpu_type": s.gpu_type.lower(), "gpus": s.gpus,
                "state": "serving" if serving else "starting", "serving_from": eng.serving_from,
                "capacity_tokens_per_second": eng.capacity,
                "max_num_seqs": int(ei[row, K.MAX_SEQS]), "kv_cache_tokens": float(ef[row, K.KV_CAP]),
                "prompt_tokens_total": eng.prompt_tokens, "generation_tokens_total": eng.generation_tokens,
                "requests_success_total": eng.success, "requests_dropped_total": eng.dropped,
                "preemptions_total": eng.preemptions,
                "prompt_tokens_per_second": prompt_rate, "generation_tokens_per_second": gen_rate,
                "utilisation": min(1.0, gen_rate / eng.capacity) if serving and eng.capacity > 0 else 0.0,
                "requests_waiting": eng.waiting if serving else 0,
                "requests_running": eng.running if serving else 0,
                "kv_cache_usage": eng.kv if serving else 0.0,
            })
        pools = []
        for key, st in sorted(self.pools.items()):
            members = [x for x in self.engines.values() if x.pool_stats is st]
            up = [x for x in members if x.serving(now)]
            gen_rate, prompt_rate = self._rate(st.history, now)
            d = self._fine[st.index] - (fine0[st.index] if st.index < len(fine0) else 0.0)
            pools.append({
                "namespace": key[0], "factory": key[1], "pool": key[2], "gpu_type": st.gpu_type,
                "replicas_serving": len(up), "replicas_starting": len(members) - len(up),
                "gpus": sum(x.spec.gpus for x in members),
                "capacity_tokens_per_second": sum(x.capacity for x in up),
                "prompt_tokens_total": st.prompt, "generation_tokens_total": st.generation,
                "requests_success_total": st.success, "requests_dropped_total": st.dropped,
                "preemptions_total": st.preempted,
                "prompt_tokens_per_second": prompt_rate, "generation_tokens_per_second": gen_rate,
                "ttft_p95_seconds": fine_quantile(d[0]), "itl_p95_seconds": fine_quantile(d[1]),
                "e2e_p95_seconds": fine_quantile(d[2]),
                "ttft_median_seconds": fine_quantile(d[0], 0.5), "itl_median_seconds": fine_quantile(d[1], 0.5),
                "requests_waiting": sum(x.waiting for x in up),
                "requests_running": sum(x.running for x in up),
                "kv_cache_usage": sum(x.kv for x in up) / len(up) if up else 0.0,
            })
        factories = []
        for (ns, name), fst in sorted(self.factories.items()):
            dm = fst.last_demand
            factories.append({
                "namespace": ns, "factory": name, "routing": self.routing,
                "demand_output_tokens_per_second": dm.output_tokens_per_second,
                "demand_prompt_tokens_per_second": dm.prompt_tokens_per_second,
                "demand_requests_per_second": dm.requests_per_second,
                "prompt_tokens_per_request": dm.prompt_tokens, "output_tokens_per_request": dm.output_tokens,
                "requests_dropped_unrouted_total": fst.dropped,
            })
        return {"now": now, "window_seconds": self.window_seconds, "model": self.model, "seed": self.seed,
                "routing": self.routing, "engines": engines, "pools": pools, "factories": factories}
