"""The planner: how many replicas each GPU pool should run, and why.

Pure: no I/O, no clocks (``now`` is always passed in), frozen dataclasses in and out. Every
decision carries plain-English reasons meant for ``kubectl describe`` and Events.

Public API
----------
``decide(state, inputs, now) -> (Plan, PlannerState)``
    The one call the operator (Auto applies ``plan.replicas``; Recommend only reports it) and the
    benchmark make every interval. ``state`` is ``None`` the first time; feed back the returned
    state next time. ``now`` is any monotone clock in seconds (a simulated clock works).
``plan_for_demand(pools, demand, ...) -> Plan``
    One-shot cheapest plan for a given demand, with no estimators and no stabilization.
``solve(pools, required, ...) -> Solution``
    The exact integer optimiser underneath.
``CapacityEstimator`` / ``DemandEstimator``
    The online estimators ``decide`` uses (usable on their own).

The optimisation (:func:`solve`)::

    minimise    sum_i price_i * n_i                                ($/hour)
    subject to  sum_i capacity_i * n_i >= demand * (1 + headroom)  (tokens/s)
                min_i <= n_i <= max_i                              (integers)
                sum_i price_i * n_i <= budget                      ($/hour)
                sum_i kW_i * n_i / 1000 <= power cap               (MW)

When no mix covers the demand inside budget and power (or maxReplicas), the objective becomes:
serve the most capacity that fits, then cheapest ("serving the most that fits"). Ties break
deterministically: fewer replica changes from the current counts, then fewer GPUs, then the first
mix found in a fixed search order.

Units: capacities and demand are in the same tokens/s as the GPU profile (the operator chooses
output or total tokens); prices in $/hour; power in kW per replica and MW for the cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import median

__all__ = [
    "PoolProfile",
    "Objectives",
    "PoolObservation",
    "Observations",
    "CapacityConfig",
    "CapacitySample",
    "CapacityState",
    "CapacityEstimator",
    "DemandState",
    "DemandEstimator",
    "PlannerConfig",
    "PlannerInputs",
    "PlannerState",
    "PoolPlan",
    "Plan",
    "Solution",
    "solve",
    "plan_for_demand",
    "decide",
]

INF = math.inf

# ============================================================================================
# Inputs
# ============================================================================================


@dataclass(frozen=True)
class PoolProfile:
    """One GPU pool as the planner sees it (per *replica*, i.e. one vLLM server).

    ``capacity`` is the sheet/spec profile in tokens/s per replica (tokens/s/GPU x
    gpus_per_replica); the :class:`CapacityEstimator` learns the real figure from there.
    """

    name: str
    gpu_type: str
    price_per_replica_hour: float
    capacity: float
    min_replicas: int = 0
    max_replicas: int = 10
    startup_seconds: float = 300.0
    kilowatts_per_replica: float = 0.0
    gpus_per_replica: int = 1

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < self.min_replicas:
            raise ValueError(
                f"pool {self.name}: need 0 <= minReplicas <= maxReplicas, got {self.min_replicas}..{self.max_replicas}"
            )
        for label, v in (("price", self.price_per_replica_hour), ("capacity", self.capacity),
                         ("kW", self.kilowatts_per_replica), ("startup", self.startup_seconds)):
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"pool {self.name}: {label} must be finite and >= 0, got {v}")
        if self.gpus_per_replica < 1:
            raise ValueError(f"pool {self.name}: gpus_per_replica must be >= 1")

    @classmethod
    def from_resolved(cls, rp: object) -> PoolProfile:
        """From an ``api.ResolvedPool`` (duck-typed: name, gpu_type, gpus_per_replica, min/max_replicas,
        price_per_gpu_hour, tokens_per_second_per_gpu, kilowatts_per_gpu, startup_seconds)."""
        g = int(rp.gpus_per_replica)  # type: ignore[attr-defined]
        return cls(
            name=rp.name,  # type: ignore[attr-defined]
            gpu_type=rp.gpu_type,  # type: ignore[attr-defined]
            price_per_replica_hour=float(rp.price_per_gpu_hour) * g,  # type: ignore[attr-defined]
            capacity=float(rp.tokens_per_second_per_gpu) * g,  # type: ignore[attr-defined]
            min_replicas=int(rp.min_replicas),  # type: ignore[attr-defined]
            max_replicas=int(rp.max_replicas),  # type: ignore[attr-defined]
            startup_seconds=float(rp.startup_seconds),  # type: ignore[attr-defined]
            kilowatts_per_replica=float(rp.kilowatts_per_gpu) * g,  # type: ignore[attr-defined]
            gpus_per_replica=g,
        )

    @property
    def dollars_per_million_tokens_at_capacity(self) -> float | None:
        return _per_mtok(self.price_per_replica_hour, self.capacity)


@dataclass(frozen=True)
class Objectives:
    """Latency and cost objectives; every field optional (None = no limit)."""

    ttft_p95_seconds: float | None = None
    itl_p95_seconds: float | None = None
    max_dollars_per_hour: float | None = None
    max_megawatts: float | None = None
    max_dollars_per_million_tokens: float | None = None

    @classmethod
    def from_spec(cls, spec: object) -> Objectives:
        """From an ``api.ObjectivesSpec`` (duck-typed)."""
        return cls(
            ttft_p95_seconds=getattr(spec, "ttft_p95_seconds", None),
            itl_p95_seconds=getattr(spec, "itl_p95_seconds", None),
            max_dollars_per_hour=getattr(spec, "max_dollars_per_hour", None),
            max_megawatts=getattr(spec, "max_megawatts", None),
            max_dollars_per_million_tokens=getattr(spec, "max_cost_per_million_tokens", None),
        )


@dataclass(frozen=True)
class PoolObservation:
    """What one pool did over the last metrics window.

    ``tokens_per_second`` is the pool's delivered rate (all its ready replicas together).
    Latencies may be None (no request finished) or ``inf`` (beyond the last histogram bucket).
    """

    ready_replicas: int
    tokens_per_second: float
    requests_waiting: float = 0.0
    requests_running: float = 0.0
    ttft_p95_seconds: float | None = None
    itl_p95_seconds: float | None = None
    kv_cache_usage: float | None = None

    @classmethod
    def from_pool_metrics(cls, m: object, ready_replicas: int | None = None,
                          token_accounting: str = "output") -> PoolObservation:
        """From a ``metrics_source.PoolMetrics`` (duck-typed). ``ready_replicas`` defaults to the
        number of engines reporting; ``token_accounting`` "total" adds prompt tokens."""
        tps = float(getattr(m, "generation_tokens_per_second", 0.0))
        if token_accounting == "total":
            tps += float(getattr(m, "prompt_tokens_per_second", 0.0))
        ready = ready_replicas if ready_replicas is not None else int(getattr(m, "engines_reporting", 0))
        return cls(
            ready_replicas=ready,
            tokens_per_second=tps,
            requests_waiting=float(getattr(m, "requests_waiting", 0.0)),
            requests_running=float(getattr(m, "requests_running", 0.0)),
            ttft_p95_seconds=getattr(m, "ttft_p95_seconds", None),
            itl_p95_seconds=getattr(m, "itl_p95_seconds", None),
            kv_cache_usage=getattr(m, "kv_cache_usage", None),
        )


@dataclass(frozen=True)
class Observations:
    """Metrics for the whole factory. Pools with no ready replica may be absent.

    ``observed_at`` (same clock as ``now``) lets :func:`decide` refuse stale data;
    ``tokens_per_request`` (mean tokens per request, in capacity units) converts waiting requests
    into backlog tokens; None uses :attr:`PlannerConfig.tokens_per_request`.
    """

    pools: Mapping[str, PoolObservation] = field(default_factory=dict)
    observed_at: float | None = None
    tokens_per_request: float | None = None

    @classmethod
    def from_factory_metrics(cls, fm: object, ready_replicas: Mapping[str, int] | None = None,
                             token_accounting: str = "output",
                             tokens_per_request: float | None = None) -> Observations:
        """From a ``metrics_source.FactoryMetrics`` (duck-typed)."""
        ready = ready_replicas or {}
        pools = {name: PoolObservation.from_pool_metrics(pm, ready.get(name), token_accounting)
                 for name, pm in getattr(fm, "pools").items()}
        return cls(pools=pools, observed_at=getattr(fm, "sampled_at", None), tokens_per_request=tokens_per_request)

    @property
    def tokens_per_second(self) -> float:
        return sum(p.tokens_per_second for p in self.pools.values())

    @property
    def requests_waiting(self) -> float:
        return sum(p.requests_waiting for p in self.pools.values())


# ============================================================================================
# Exact solver
# ============================================================================================


@dataclass(frozen=True)
class Solution:
    """The optimiser's answer.

    ``covers_required``: capacity >= required. ``within_limits``: False only when the
    minReplicas alone already break the budget or the power cap (then the answer is the minimums).
    ``limited_by``: what stops more capacity when not covering (``maxReplicas``, ``budget``,
    ``power``). ``nodes``: search nodes visited (for tests and benchmarks). ``exact``: the search
    finished (False only when it hit ``max_nodes``).
    """

    replicas: dict[str, int]
    required_tokens_per_second: float
    capacity_tokens_per_second: float
    dollars_per_hour: float
    kilowatts: float
    gpus: int
    changes: int
    exact: bool
    covers_required: bool
    within_limits: bool
    limited_by: tuple[str, ...]
    nodes: int
    stopped: bool = False  # the caller's ``stop`` ended the search (time budget): best mix found so far


def solve(
    pools: Sequence[PoolProfile],
    required: float,
    *,
    capacities: Mapping[str, float] | None = None,
    current: Mapping[str, int] | None = None,
    max_dollars_per_hour: float | None = None,
    max_megawatts: float | None = None,
    max_nodes: int = 200_000,
    stop: Callable[[], bool] | None = None,
) -> Solution:
    """Exact cheapest integer replica mix covering ``required`` tokens/s.

    ``capacities`` overrides per-replica capacity by pool name (learned figures); ``current`` is
    used only to break ties (fewer changes). Lexicographic objective, smallest first:
    (capacity shortfall, $/hour, replica changes, GPUs); the shortfall is
    max(0, required - capacity), so a coverable demand is met at least cost and an uncoverable one
    gets the largest capacity that fits, then the cheapest such mix.

    Method: depth-first branch and bound over pools sorted by $ per token/s (cheapest first),
    one integer per level. Bounds at a node (pools j.. still free):
      * shortfall: fractional (LP) knapsack of the free pools' extra capacity under the remaining
        budget and, separately, the remaining power, and their maxReplicas (the smallest of the
        three is a valid upper bound on capacity);
      * $/hour: cost so far + free pools at minimum + the fractional covering cost of the capacity
        still needed to match the incumbent's shortfall (LP relaxation of the covering problem);
      * changes / GPUs: what the free pools must change at least to sit inside their bounds.
    A node is pruned unless its bound is strictly better than the incumbent; equal partial states
    (same depth, capacity, cost, power) already visited with no more changes and GPUs are skipped
    (removes the symmetry of identical pools). The last pool is set in closed form (the smallest
    count that reaches the best shortfall, or the one nearest the current count when free).
    ``stop`` (issue 15, time budget): asked at the first node and every 128 after; when it answers True the search ends
    and returns the best mix found so far with ``exact=False, stopped=True`` (the greedy dive always
    gives one). The solver itself reads no clock: the caller's ``stop`` does.
    ``max_nodes`` is a safety valve: past it the search stops and returns the best mix found
    with ``exact=False`` (never reached in the tests; adversarial near-tied pools need ~10^4 nodes).
    Complexity: worst case O(prod_{i<k}(max_i - min_i + 1) * k) for k pools (exponential in k, as
    the problem is NP-hard in general: it contains knapsack), O(k) per node; in practice the LP
    bounds keep it to tens or hundreds of nodes: 2 pools x (24, 18) or 5 pools x 50 take
    milliseconds (see tests/unit/test_planner.py).
    """
    caps = dict(capacities or {})
    cur_map = dict(current or {})
    k = len(pools)
    R = max(0.0, float(required))
    B = INF if max_dollars_per_hour is None else float(max_dollars_per_hour)
    P = INF if max_megawatts is None else float(max_megawatts) * 1000.0  # kW

    def cap_of(p: PoolProfile) -> float:
        return max(0.0, float(caps.get(p.name, p.capacity)))

    def dollars_per_cap(i: int) -> float:
        ci = cap_of(pools[i])
        return pools[i].price_per_replica_hour / ci if ci > 0 else INF

    def kw_per_cap(i: int) -> float:
        ci = cap_of(pools[i])
        return pools[i].kilowatts_per_replica / ci if ci > 0 else INF

    order = sorted(range(k), key=lambda i: (dollars_per_cap(i), pools[i].price_per_replica_hour, pools[i].name))
    if P < INF:
        # When the cheapest fractional cover breaks the power cap, power decides: search the most
        # power-efficient pools first (good incumbents early). Any order is exact.
        need, lp_kw = R - sum(p.min_replicas * cap_of(p) for p in pools), sum(p.min_replicas * p.kilowatts_per_replica for p in pools)
        for i in order:
            room = (pools[i].max_replicas - pools[i].min_replicas) * cap_of(pools[i])
            take = min(max(0.0, need), room)
            if take > 0:
                lp_kw += take * kw_per_cap(i)
                need -= take
        if lp_kw > P:
            order = sorted(range(k), key=lambda i: (kw_per_cap(i), dollars_per_cap(i), pools[i].name))
    ps = [pools[i] for i in order]
    c = [cap_of(p) for p in ps]
    pr = [p.price_per_replica_hour for p in ps]
    kw = [p.kilowatts_per_replica for p in ps]
    g = [p.gpus_per_replica for p in ps]
    lo = [p.min_replicas for p in ps]
    hi = [p.max_replicas for p in ps]
    cur = [int(cur_map.get(p.name, 0)) for p in ps]

    eps_cap = 1e-7 * max(1.0, R, max(c, default=0.0))
    eps_cost = 1e-9 * max(1.0, sum(pr[i] * hi[i] for i in range(k)))
    eps_kw = 1e-9 * max(1.0, sum(kw[i] * hi[i] for i in range(k)))

    def make(ns: Sequence[int], nodes: int, within: bool) -> Solution:
        capv = sum(n * ci for n, ci in zip(ns, c))
        cost = sum(n * pi for n, pi in zip(ns, pr))
        kwv = sum(n * ki for n, ki in zip(ns, kw))
        covers = capv >= R - eps_cap
        limited: list[str] = []
        if not covers or not within:
            if not within:
                if cost > B + eps_cost:
                    limited.append("budget")
                if kwv > P + eps_kw:
                    limited.append("power")
                limited.append("minReplicas")
            else:
                if any(ns[i] >= hi[i] for i in range(k) if c[i] > 0) or not any(c):
                    limited.append("maxReplicas")
                if any(ns[i] < hi[i] and cost + pr[i] > B + eps_cost for i in range(k) if c[i] > 0):
                    limited.append("budget")
                if any(ns[i] < hi[i] and kwv + kw[i] > P + eps_kw for i in range(k) if c[i] > 0):
                    limited.append("power")
        return Solution(
            replicas={p.name: int(dict(zip((q.name for q in ps), ns))[p.name]) for p in pools},
            required_tokens_per_second=R,
            capacity_tokens_per_second=capv,
            dollars_per_hour=cost,
            kilowatts=kwv,
            gpus=sum(n * gi for n, gi in zip(ns, g)),
            changes=sum(abs(n - ci) for n, ci in zip(ns, cur)),
            exact=nodes <= max_nodes,
            covers_required=covers,
            within_limits=within,
            limited_by=tuple(limited),
            nodes=nodes,
        )

    if k == 0:
        return make([], 0, True)
    if sum(lo[i] * pr[i] for i in range(k)) > B + eps_cost or sum(lo[i] * kw[i] for i in range(k)) > P + eps_kw:
        return make(lo, 0, False)

    # suffix sums over the sorted order (index j = first free pool)
    s_cap = [0.0] * (k + 1)
    s_cost = [0.0] * (k + 1)
    s_kw = [0.0] * (k + 1)
    s_gpus = [0] * (k + 1)
    s_chg = [0] * (k + 1)
    for j in range(k - 1, -1, -1):
        s_cap[j] = s_cap[j + 1] + lo[j] * c[j]
        s_cost[j] = s_cost[j + 1] + lo[j] * pr[j]
        s_kw[j] = s_kw[j + 1] + lo[j] * kw[j]
        s_gpus[j] = s_gpus[j + 1] + lo[j] * g[j]
        s_chg[j] = s_chg[j + 1] + max(0, lo[j] - cur[j], cur[j] - hi[j])
    # per suffix: free pools ordered by kW per token/s (for the power knapsack bound)
    # per suffix: free pools ordered by $ and by kW per token/s (for the LP bounds)
    cost_order = [sorted(range(j, k), key=lambda t: pr[t] / c[t] if c[t] > 0 else INF) for j in range(k + 1)]
    power_order = [sorted(range(j, k), key=lambda t: kw[t] / c[t] if c[t] > 0 else INF) for j in range(k + 1)]

    def extra_ub(j: int, budget_left: float, power_left: float) -> float:
        """Upper bounds on the capacity the free pools j.. can add above their minimums:
        (maxReplicas only, fractional knapsack under the budget, under the power left)."""
        room_total = 0.0
        ub_b = 0.0
        bl = budget_left
        for t in cost_order[j]:
            room = (hi[t] - lo[t]) * c[t]
            if room <= 0:
                continue
            room_total += room
            if bl == INF or pr[t] <= 0:
                ub_b += room
                continue
            if bl <= 0:
                continue
            take = min(room, bl / pr[t] * c[t])
            ub_b += take
            bl -= take / c[t] * pr[t]
        if power_left == INF:
            return room_total, ub_b, INF
        ub_p = 0.0
        pl = power_left
        for t in power_order[j]:
            room = (hi[t] - lo[t]) * c[t]
            if room <= 0:
                continue
            if kw[t] <= 0:
                ub_p += room
                continue
            if pl <= 0:
                continue
            take = min(room, pl / kw[t] * c[t])
            ub_p += take
            pl -= take / c[t] * kw[t]
        return room_total, ub_b, ub_p

    def cover_cost(j: int, need: float) -> float:
        """LP lower bound on the $/hour the free pools j.. need to add ``need`` tokens/s above minimums."""
        total = 0.0
        for t in cost_order[j]:
            if need <= 0:
                return total
            room = (hi[t] - lo[t]) * c[t]
            if room <= 0:
                continue
            take = min(room, need)
            total += take / c[t] * pr[t]
            need -= take
        return total if need <= eps_cap else INF

    def joint_extra_ub(j: int, budget_left: float, power_left: float) -> float:
        """LP bound on extra capacity under budget and power together (Lagrangian dual on power:
        min over mu >= 0 of mu x power_left + fractional knapsack of values c - mu x kW under the
        budget; convex piecewise linear in mu, so its minimum is at one of the breakpoints)."""
        free = [t for t in range(j, k) if hi[t] > lo[t] and c[t] > 0]
        mus = {0.0}
        for t in free:
            if kw[t] > 0:
                mus.add(c[t] / kw[t])
        for a_i, a in enumerate(free):
            for b in free[a_i + 1:]:
                den = kw[b] * pr[a] - kw[a] * pr[b]
                if den != 0:
                    mu = (c[b] * pr[a] - c[a] * pr[b]) / den
                    if mu > 0:
                        mus.add(mu)
        best_val = INF
        for mu in mus:
            items = []
            val = mu * power_left
            for t in free:
                v = c[t] - mu * kw[t]
                if v <= 0:
                    continue
                if pr[t] <= 0 or budget_left == INF:
                    val += v * (hi[t] - lo[t])
                else:
                    items.append((v / pr[t], t))
            bl = budget_left
            for ratio, t in sorted(items, reverse=True):
                if bl <= 0:
                    break
                x = min(hi[t] - lo[t], bl / pr[t])
                val += ratio * pr[t] * x
                bl -= x * pr[t]
            best_val = min(best_val, val)
        return best_val

    def joint_cover_cost(j: int, need: float, power_left: float) -> float:
        """LP bound on the $/hour to add ``need`` tokens/s within the power left (Lagrangian dual on
        power: max over mu >= 0 of -mu x power_left + fractional cover at prices p + mu x kW)."""
        free = [t for t in range(j, k) if hi[t] > lo[t] and c[t] > 0]
        # power-efficient cover first: if even that breaks the cap, nothing does
        rest, used = need, 0.0
        for t in sorted(free, key=lambda t: kw[t] / c[t]):
            take = min((hi[t] - lo[t]) * c[t], rest)
            used += take / c[t] * kw[t]
            rest -= take
            if rest <= 0:
                break
        if rest > eps_cap or used > power_left + eps_kw:
            return INF
        mus = {0.0}
        for a_i, a in enumerate(free):
            for b in free[a_i + 1:]:
                den = kw[a] / c[a] - kw[b] / c[b]
                if den != 0:
                    mu = (pr[b] / c[b] - pr[a] / c[a]) / den
                    if mu > 0:
                        mus.add(mu)
        best_val = -INF
        for mu in mus:
            val = -mu * power_left
            rest = need
            for t in sorted(free, key=lambda t: (pr[t] + mu * kw[t]) / c[t]):
                take = min((hi[t] - lo[t]) * c[t], rest)
                val += take / c[t] * (pr[t] + mu * kw[t])
                rest -= take
                if rest <= 0:
                    break
            best_val = max(best_val, val)
        return max(0.0, best_val)

    best_key: tuple[float, float, int, int] | None = None
    best_ns: list[int] | None = None
    nodes = 0
    memo: dict[tuple[int, float, float, float], list[tuple[int, int]]] = {}

    def better(a: tuple[float, float, int, int], b: tuple[float, float, int, int]) -> bool:
        if a[0] < b[0] - eps_cap:
            return True
        if a[0] > b[0] + eps_cap:
            return False
        if a[1] < b[1] - eps_cost:
            return True
        if a[1] > b[1] + eps_cost:
            return False
        if a[2] != b[2]:
            return a[2] < b[2]
        return a[3] < b[3]

    def bound(j: int, capv: float, cost: float, kwv: float, chg: int, gpus: int) -> tuple[float, float, int, int] | None:
        mc = cost + s_cost[j]
        mk = kwv + s_kw[j]
        if mc > B + eps_cost or mk > P + eps_kw:
            return None
        base = capv + s_cap[j]
        room_total, ub_b, ub_p = extra_ub(j, B - mc, P - mk)
        short_lb = max(0.0, R - base - min(room_total, ub_b, ub_p))
        cost_lb = mc
        need = 0.0
        if best_key is not None:
            need = R - best_key[0] - eps_cap - base
            if need > 0:
                cost_lb += cover_cost(j, need)
        key = (short_lb, cost_lb, chg + s_chg[j], gpus + s_gpus[j])
        if best_key is not None and not better(key, best_key):
            return key  # the cheap bounds already prune
        # second stage, only for survivors: both limits at once
        if B < INF and P < INF and max(ub_b, ub_p) < room_total:
            short_lb = max(short_lb, R - base - joint_extra_ub(j, B - mc, P - mk))
            key = (short_lb, cost_lb, chg + s_chg[j], gpus + s_gpus[j])
            if best_key is not None and not better(key, best_key):
                return key
        if P < INF and need > 0 and best_key is not None and short_lb >= best_key[0] - eps_cap:
            cost_lb = max(cost_lb, mc + joint_cover_cost(j, need, P - mk))
        return (short_lb, cost_lb, chg + s_chg[j], gpus + s_gpus[j])

    def leaf(ns: list[int], capv: float, cost: float, kwv: float, chg: int, gpus: int) -> None:
        nonlocal best_key, best_ns
        j = k - 1
        hi_fit = hi[j]
        if pr[j] > 0 and B < INF:
            hi_fit = min(hi_fit, math.floor((B - cost + eps_cost) / pr[j]))
        if kw[j] > 0 and P < INF:
            hi_fit = min(hi_fit, math.floor((P - kwv + eps_kw) / kw[j]))
        if hi_fit < lo[j]:
            return
        need = R - capv
        if c[j] > 0 and need > eps_cap:
            n_cov = math.ceil(need / c[j] - 1e-9)
            n_star = max(lo[j], n_cov) if n_cov <= hi_fit else hi_fit
        else:
            n_star = lo[j]
        for n in sorted({n_star, min(max(cur[j], n_star), hi_fit)}):
            cap_n = capv + n * c[j]
            key = (max(0.0, R - cap_n), cost + n * pr[j], chg + abs(n - cur[j]), gpus + n * g[j])
            if best_key is None or better(key, best_key):
                best_key = key
                best_ns = ns + [n]

    stopped = False

    def dfs(j: int, ns: list[int], capv: float, cost: float, kwv: float, chg: int, gpus: int) -> None:
        nonlocal nodes, stopped
        nodes += 1
        if nodes > max_nodes or stopped:
            return
        if stop is not None and nodes % 128 == 1 and stop():
            stopped = True
            return
        if j == k - 1:
            leaf(ns, capv, cost, kwv, chg, gpus)
            return
        if j > 0:
            mkey = (j, round(capv, 6), round(cost, 9), round(kwv, 9))
            seen = memo.setdefault(mkey, [])
            if any(a <= chg and b <= gpus for a, b in seen):
                return
            seen.append((chg, gpus))
        need_here = R - capv - s_cap[j + 1]
        n_pref = math.ceil(need_here / c[j] - 1e-9) if c[j] > 0 and need_here > 0 else lo[j]
        n_pref = min(hi[j], max(lo[j], n_pref))
        candidates = list(range(n_pref, lo[j] - 1, -1)) + list(range(n_pref + 1, hi[j] + 1))
        children: list[tuple[tuple[float, float, int, int], int]] = []
        for n in candidates:
            ascending = n > n_pref
            lb = bound(j + 1, capv + n * c[j], cost + n * pr[j], kwv + n * kw[j], chg + abs(n - cur[j]), gpus + n * g[j])
            if lb is None:
                if ascending:
                    break  # budget/power only get tighter as n grows
                continue
            if best_key is not None and not better(lb, best_key):
                if ascending and pr[j] > 0 and lb[0] <= eps_cap and best_key[0] <= eps_cap and lb[1] > best_key[1] + eps_cost:
                    break  # past the cover point the cost bound only grows with n
                continue
            children.append((lb, n))
        children.sort(key=lambda x: (x[0][0] + 0.0, x[0][1], x[0][2], x[0][3], x[1]))  # most promising first
        for lb, n in children:
            if best_key is not None and not better(lb, best_key):
                continue
            dfs(j + 1, ns + [n], capv + n * c[j], cost + n * pr[j], kwv + n * kw[j],
                chg + abs(n - cur[j]), gpus + n * g[j])

    def dive() -> None:
        """A greedy first incumbent: each pool takes what it alone would need, as far as limits allow."""
        ns: list[int] = []
        capv = cost = kwv = 0.0
        chg = gpus = 0
        for j in range(k - 1):
            need_here = R - capv - s_cap[j + 1]
            n = math.ceil(need_here / c[j] - 1e-9) if c[j] > 0 and need_here > 0 else lo[j]
            n = min(hi[j], max(lo[j], n))
            while n > lo[j] and (cost + n * pr[j] + s_cost[j + 1] > B + eps_cost
                                 or kwv + n * kw[j] + s_kw[j + 1] > P + eps_kw):
                n -= 1
            ns.append(n)
            capv += n * c[j]
            cost += n * pr[j]
            kwv += n * kw[j]
            chg += abs(n - cur[j])
            gpus += n * g[j]
        leaf(ns, capv, cost, kwv, chg, gpus)

    dive()
    dfs(0, [], 0.0, 0.0, 0.0, 0, 0)
    assert best_ns is not None  # the minimums fit, so at least one leaf is feasible
    sol = make(best_ns, nodes, True)
    return replace(sol, exact=False, stopped=True) if stopped else sol


# ============================================================================================
# Capacity learning
# ============================================================================================

SATURATED = "saturated"
LATENCY = "latency"
UTILIZATION = "utilization"
LOWER_BOUND = "lower"
_DIRECT = (SATURATED, LATENCY)


@dataclass(frozen=True)
class CapacityConfig:
    """Tuning of :class:`CapacityEstimator`.

    gain: EWMA step toward the robust target per observation. max_step: the most one update can
    multiply or divide the estimate by. min_factor/max_factor: hard bounds relative to the
    profile. window: samples kept per kind (the target is their median, padded with the current
    estimate up to 3 values, so one sample alone never moves it). queue_per_replica: waiting
    requests per ready replica that count as a queue building. kv_saturated: KV-cache usage that
    counts as saturated. kv_min_extrapolate: smallest KV usage from which delivered x
    kv_at_capacity / usage is used as a capacity estimate on a healthy pool (kv_at_capacity: the
    KV usage a replica shows at full throughput); only while p95 latencies are below latency_room x
    their objectives, so a pool near its latency bound is not extrapolated past it. latency_floor: the latency-bounded capacity
    is at least this fraction of the delivered rate. latency_min_load: latency over objective
    counts against capacity only when the pool is at least this loaded (KV usage / kv_at_capacity,
    or delivered / estimate without KV figures); on a lighter pool more replicas would not help (the
    objective is out of reach at any load), so such samples are ignored.
    settle_seconds: after the number of ready replicas changes, observations are not used for this
    long (rates over a window would still count replicas that came or went; use the rate window).
    """

    gain: float = 0.6
    max_step: float = 1.5
    min_factor: float = 0.2
    max_factor: float = 5.0
    window: int = 5
    sample_max_age_seconds: float = 1800.0
    queue_per_replica: float = 1.0
    kv_saturated: float = 0.9
    kv_min_extrapolate: float = 0.25
    kv_at_capacity: float = 0.9
    latency_room: float = 0.8
    extrapolate_from_kv: bool = True
    latency_floor: float = 0.5
    latency_min_load: float = 0.5
    settle_seconds: float = 60.0


@dataclass(frozen=True)
class CapacitySample:
    time: float
    kind: str  # saturated | latency | utilization | lower
    tokens_per_second_per_replica: float


@dataclass(frozen=True)
class CapacityState:
    """Learned capacity of one pool (tokens/s per replica) and the evidence behind it."""

    pool: str
    profile: float
    estimate: float
    samples: tuple[CapacitySample, ...] = ()
    reason: str = "profile"
    ready_replicas: int | None = None
    ready_since: float | None = None

    @property
    def factor(self) -> float:
        return self.estimate / self.profile if self.profile > 0 else 1.0


@dataclass(frozen=True)
class CapacityEstimator:
    """Online per-replica capacity, starting from the profile.

    Each observation of a pool with ready replicas gives the delivered rate per replica ``d`` and
    is classified:

    * saturated (queue building, or KV cache nearly full): ``d`` is a direct capacity measurement
      (times ITL objective / ITL p95 when ITL is over objective);
    * latency (TTFT or ITL p95 over objective without a queue): the latency-bounded capacity is
      lower than ``d``: ``d x max(latency_floor, objective / observed)``;
    * utilization (healthy with latency room, KV usage u >= kv_min_extrapolate):
      ``d x kv_at_capacity / u`` estimates capacity;
    * lower bound (healthy, light): capacity is at least ``d``.

    Target: the newest regime wins: if the latest informative sample is a direct one, the median of
    the direct samples newer than the last utilization sample, else the median of the utilization
    samples newer than the last direct one; lower-bound samples newer than the last direct one can
    only raise it. Medians are padded with the current estimate to
    three values, so a single sample never moves the estimate; then the estimate moves ``gain`` of
    the way, by at most x/÷ ``max_step`` per update, within [min_factor, max_factor] x profile.
    A 0.5x or 2x wrong profile converges within ~5 intervals of informative samples.
    """

    config: CapacityConfig = CapacityConfig()

    def initial(self, pool: PoolProfile) -> CapacityState:
        return CapacityState(pool=pool.name, profile=pool.capacity, estimate=pool.capacity)

    def observe(self, state: CapacityState, obs: PoolObservation | None, objectives: Objectives,
                now: float) -> CapacityState:
        cfg = self.config
        samples = tuple(s for s in state.samples if now - s.time <= cfg.sample_max_age_seconds)
        if obs is None or obs.ready_replicas <= 0 or not (obs.tokens_per_second > 0) \
                or not math.isfinite(obs.tokens_per_second):
            return replace(state, samples=samples)
        r = obs.ready_replicas
        if state.ready_replicas != r or state.ready_since is None:
            return replace(state, samples=samples, ready_replicas=r, ready_since=now,
                           reason=f"{r} ready replica(s) since now: waiting {cfg.settle_seconds:.0f}s for rates to settle")
        if now - state.ready_since < cfg.settle_seconds:
            return replace(state, samples=samples,
                           reason=f"{r} ready replica(s) for {now - state.ready_since:.0f}s: waiting "
                                  f"{cfg.settle_seconds:.0f}s for rates to settle")
        d = obs.tokens_per_second / r
        waiting = max(0.0, obs.requests_waiting) / r
        kv = obs.kv_cache_usage
        itl_ratio = _ratio(objectives.itl_p95_seconds, obs.itl_p95_seconds)
        ttft_ratio = _ratio(objectives.ttft_p95_seconds, obs.ttft_p95_seconds)
        queue = waiting >= cfg.queue_per_replica
        kv_full = kv is not None and kv >= cfg.kv_saturated
        if queue or kv_full:
            why = f"{waiting:.1f} waiting/replica" if queue else f"KV cache {kv:.0%}"
            if itl_ratio is not None and itl_ratio < 1:
                kind, value = LATENCY, d * max(cfg.latency_floor, itl_ratio)
                why += f", ITL p95 {obs.itl_p95_seconds:.3g}s over {objectives.itl_p95_seconds:g}s"
            else:
                kind, value = SATURATED, d
            what = f"saturated ({why}): delivering {_tok(d)} tok/s/replica"
        elif ((itl_ratio is not None and itl_ratio < 1) or (ttft_ratio is not None and ttft_ratio < 1)) \
                and (kv / cfg.kv_at_capacity if kv is not None else
                     d / state.estimate if state.estimate > 0 else 1.0) < cfg.latency_min_load:
            what = (f"latency over objective at light load ({_tok(d)} tok/s/replica): not a capacity limit, "
                    f"estimate kept at {_tok(state.estimate)} tok/s/replica")
            return replace(state, samples=samples, reason=what)
        elif (itl_ratio is not None and itl_ratio < 1) or (ttft_ratio is not None and ttft_ratio < 1):
            ratio = min(x for x in (itl_ratio, ttft_ratio) if x is not None)
            kind, value = LATENCY, d * max(cfg.latency_floor, ratio)
            what = (f"latency over objective at {_tok(d)} tok/s/replica "
                    f"(latency-bounded capacity {_tok(value)})")
        elif cfg.extrapolate_from_kv and kv is not None and kv >= cfg.kv_min_extrapolate and all(
                x is None or x * cfg.latency_room >= 1.0 for x in (itl_ratio, ttft_ratio)):
            kind, value = UTILIZATION, max(d, d * cfg.kv_at_capacity / min(1.0, kv))
            what = f"healthy at {_tok(d)} tok/s/replica with KV cache {kv:.0%} (extrapolates to {_tok(value)})"
        else:
            kind, value = LOWER_BOUND, d
            what = f"healthy at {_tok(d)} tok/s/replica (capacity at least that)"
        samples = _trim_samples(samples + (CapacitySample(now, kind, value),), cfg.window)

        est = state.estimate
        # the newest regime wins: direct measurements (saturated/latency) or utilization estimates,
        # whichever kind the latest informative sample is, counting only samples newer than the
        # last one of the other kind; "at least d" samples newer than the last direct one raise it
        direct = [x for x in samples if x.kind in _DIRECT]
        util = [x for x in samples if x.kind == UTILIZATION]
        last_direct = max((x.time for x in direct), default=-INF)
        last_util = max((x.time for x in util), default=-INF)
        if direct and last_direct >= last_util:
            target = _padded_median([x.tokens_per_second_per_replica for x in direct if x.time > last_util], est)
        elif util:
            target = _padded_median([x.tokens_per_second_per_replica for x in util if x.time > last_direct], est)
        else:
            target = est
        lower = [x.tokens_per_second_per_replica for x in samples if x.kind == LOWER_BOUND and x.time > last_direct]
        if lower:
            target = max(target, _padded_median(lower, est))
        new = est + cfg.gain * (target - est)
        new = min(max(new, est / cfg.max_step), est * cfg.max_step)
        if state.profile > 0:
            new = min(max(new, state.profile * cfg.min_factor), state.profile * cfg.max_factor)
        reason = f"{what}; estimate {_tok(est)} -> {_tok(new)} tok/s/replica (profile {_tok(state.profile)})"
        return CapacityState(pool=state.pool, profile=state.profile, estimate=new, samples=samples, reason=reason,
                             ready_replicas=state.ready_replicas, ready_since=state.ready_since)


def _ratio(objective: float | None, observed: float | None) -> float | None:
    if objective is None or observed is None or math.isnan(observed):
        return None
    if observed <= 0:
        return None
    return 0.0 if math.isinf(observed) else objective / observed


def _padded_median(values: list[float], pad: float) -> float:
    vals = list(values)
    while len(vals) < 3:
        vals.append(pad)
    return float(median(vals))


def _trim_samples(samples: tuple[CapacitySample, ...], window: int) -> tuple[CapacitySample, ...]:
    keep: list[CapacitySample] = []
    counts: dict[str, int] = {}
    for s in reversed(samples):
        if counts.get(s.kind, 0) < window:
            counts[s.kind] = counts.get(s.kind, 0) + 1
            keep.append(s)
    return tuple(reversed(keep))


# ============================================================================================
# Demand estimate
# ============================================================================================


@dataclass(frozen=True)
class DemandState:
    """Holt's linear-trend state (tokens/s and tokens/s per second) plus the last raw inputs."""

    level: float | None = None
    trend: float = 0.0
    time: float | None = None
    observed: float = 0.0
    backlog: float = 0.0
    queued_tokens: float = 0.0  # waiting requests x tokens per request
    drained_tokens: float = 0.0  # of those, what the spare capacity serving now drains within the start-up delay
    tokens_per_request: float = 0.0


@dataclass(frozen=True)
class DemandEstimator:
    """Demand = observed token rate + queue backlog, smoothed with Holt's linear trend (smoothing
    constants are per ``reference_interval_seconds`` and adapt to irregular intervals), forecast
    over a horizon (the pools' start-up delay) with a damped, non-negative trend so scale-ups
    anticipate start-up while falling demand is left to the scale-down stabilization.

    Backlog: waiting requests x tokens per request (measured, ``Observations.tokens_per_request``;
    ``tokens_per_request`` here only when no figure is given). When the spare capacity serving now
    (ready capacity - delivered rate) is known, what it drains before a new replica could start
    (``startup_seconds``) needs no new replica and is left out; only the rest counts, as a rate that
    drains it in ``backlog_drain_seconds`` once new replicas serve.
    """

    level_smoothing: float = 0.5
    trend_smoothing: float = 0.1
    trend_damping: float = 0.9
    reference_interval_seconds: float = 30.0
    backlog_drain_seconds: float = 60.0
    tokens_per_request: float = 1000.0

    def backlog(self, obs: Observations, spare_tokens_per_second: float | None = None,
                startup_seconds: float = 0.0) -> tuple[float, float, float, float]:
        """(backlog tok/s, queued tokens, of which drained before start-up, tokens per request used)."""
        tpr = obs.tokens_per_request if obs.tokens_per_request is not None else self.tokens_per_request
        tpr = max(0.0, tpr) if math.isfinite(tpr) else self.tokens_per_request
        queued = max(0.0, obs.requests_waiting) * tpr
        drained = 0.0
        if spare_tokens_per_second is not None and math.isfinite(spare_tokens_per_second):
            drained = min(queued, max(0.0, spare_tokens_per_second) * max(0.0, startup_seconds))
        return (queued - drained) / max(1e-9, self.backlog_drain_seconds), queued, drained, tpr

    def raw(self, obs: Observations, spare_tokens_per_second: float | None = None,
            startup_seconds: float = 0.0) -> tuple[float, float]:
        """(observed tok/s, backlog tok/s) from one observation."""
        return max(0.0, obs.tokens_per_second), self.backlog(obs, spare_tokens_per_second, startup_seconds)[0]

    def observe(self, state: DemandState, obs: Observations, now: float,
                spare_tokens_per_second: float | None = None, startup_seconds: float = 0.0) -> DemandState:
        observed = max(0.0, obs.tokens_per_second)
        backlog, queued, drained, tpr = self.backlog(obs, spare_tokens_per_second, startup_seconds)
        if state.time is not None and now > state.time and queued < state.queued_tokens:
            # tokens served from a shrinking queue are old demand, not new arrivals
            observed = max(0.0, observed - (state.queued_tokens - queued) / (now - state.time))
        extra = dict(observed=observed, backlog=backlog, queued_tokens=queued, drained_tokens=drained,
                     tokens_per_request=tpr)
        x = observed + backlog
        if state.level is None or state.time is None:
            return DemandState(level=x, trend=0.0, time=now, **extra)
        dt = now - state.time
        if dt <= 0:
            level = self.level_smoothing * x + (1 - self.level_smoothing) * state.level
            return DemandState(level=level, trend=state.trend, time=state.time, **extra)
        steps = dt / self.reference_interval_seconds
        a = 1 - (1 - self.level_smoothing) ** steps
        b = 1 - (1 - self.trend_smoothing) ** steps
        predicted = state.level + state.trend * dt
        level = max(0.0, a * x + (1 - a) * predicted)
        trend = b * (level - state.level) / dt + (1 - b) * state.trend
        return DemandState(level=level, trend=trend, time=now, **extra)

    def forecast(self, state: DemandState, horizon_seconds: float) -> float:
        """Level plus the damped upward trend over ``horizon_seconds``, and never less than what is
        observed right now (observed + backlog): smoothing must not delay a scale-up while demand
        climbs (the level lags a ramp by about trend x smoothing time); falling demand is left to the
        scale-down stabilization, which already looks at the window's highest recommendation."""
        if state.level is None:
            return 0.0
        steps = max(0.0, horizon_seconds) / self.reference_interval_seconds
        phi = self.trend_damping
        damped = steps if phi >= 1 else phi * (1 - phi ** steps) / (1 - phi)
        up = max(0.0, state.trend) * self.reference_interval_seconds * damped
        return max(state.level + up, state.observed + state.backlog)


# ============================================================================================
# Plans
# ============================================================================================


@dataclass(frozen=True)
class PlannerConfig:
    """Pacing and estimator settings for :func:`decide` (defaults suit a 30 s interval).

    Scale-down hysteresis: each interval the scale-down side remembers the optimum for demand x
    (1 + band) rather than the optimum for demand. The band is the demand noise measured, not a
    fixed share: ``hysteresis_noise_multiple`` x the standard deviation of the planned demand around
    its least-squares trend over the last ``hysteresis_window_seconds``, relative to its mean, at
    most ``scale_down_tolerance`` (and exactly that until ``hysteresis_min_samples`` are seen).
    Noisy demand (6 standard deviations span the whole spread of +-5% noise) keeps a band
    wide enough that noise never flaps a replica; smooth demand gets a band near 0, so nothing is
    held beyond the stabilization window (a fixed 10% of 58K tok/s would hold 8 extra 720 tok/s
    replicas of the marginal pool for as long as demand stays there).

    Short bursts (ski rental): an *excursion* is a run of intervals with a backlog that the spare
    capacity cannot drain within the start-up delay (or a queue building, as many requests waiting
    as ready replicas, just before that shows). When the excursions remembered from the last
    ``burst_memory_seconds`` (at least ``burst_min_seen``) were all over within the start-up delay,
    replicas ordered at their start only began serving after them; so a scale-up for a new
    excursion waits until it has lasted as long as the longest of them. A real step waits at most
    that long (less than the start-up delay); one excursion that outlasts the start-up delay turns
    the wait off for ``burst_memory_seconds``.

    Flap guard: the band covers demand noise, not a fit so tight that the planner's own capacity
    estimates move across it (58,000 tok/s on 14 x 720 + 48,000 = 58,080 tok/s: a 0.3% dip of the
    learned capacity asks for a 15th replica, which is released 5 minutes later, and so on). When a
    pool is scaled back up within ``flap_memory_seconds`` to no more than it had before a scale-down
    (re-adding what was released, not a new, larger need), its
    scale-downs keep one replica above the optimum (at most one extra replica of that pool) until
    that long has passed without a flap or a hold at the boundary it flapped at.
    """

    scale_down_stabilization_seconds: float = 300.0
    max_scale_down_fraction: float = 0.5
    scale_down_tolerance: float = 0.1
    hysteresis_noise_multiple: float = 6.0
    hysteresis_window_seconds: float = 600.0
    hysteresis_min_samples: int = 4
    burst_memory_seconds: float = 7200.0
    burst_min_seen: int = 2
    flap_memory_seconds: float = 1800.0
    max_metrics_age_seconds: float = 180.0
    forecast_horizon_seconds: float | None = None  # None: longest start-up among pools
    demand: DemandEstimator = DemandEstimator()
    capacity: CapacityEstimator = CapacityEstimator()


@dataclass(frozen=True)
class PlannerInputs:
    """Everything :func:`decide` needs for one interval.

    ``current``: the replicas each pool runs now (missing = 0). ``observations``: None when
    metrics could not be read (then the plan holds; ``metrics_unavailable_reason`` says why).
    ``demand_tokens_per_second``: when set, used as the demand forecast as is (benchmarks, what-if);
    the capacity estimators still learn from ``observations`` if given.
    """

    pools: tuple[PoolProfile, ...]
    current: Mapping[str, int]
    observations: Observations | None = None
    objectives: Objectives = Objectives()
    headroom: float = 0.2
    config: PlannerConfig = PlannerConfig()
    metrics_unavailable_reason: str = "no metrics"
    demand_tokens_per_second: float | None = None


@dataclass(frozen=True)
class PlannerState:
    """What :func:`decide` carries from one interval to the next (returned anew, never mutated)."""

    capacity: tuple[CapacityState, ...] = ()
    demand: DemandState = DemandState()
    recommendations: tuple[tuple[float, tuple[tuple[str, int], ...]], ...] = ()
    time: float | None = None
    demands: tuple[tuple[float, float], ...] = ()  # (time, planned demand) over the hysteresis window
    excursion_since: float | None = None  # a backlog excursion in progress: since when
    excursions: tuple[tuple[float, float], ...] = ()  # (ended at, lasted s) of recent backlog excursions
    downs: tuple[tuple[str, float, int, int], ...] = ()  # (pool, time, from, to) of recent scale-downs
    flaps: tuple[tuple[str, float, int], ...] = ()  # (pool, time, count) a pool went back up to count past a recent scale-down

    def capacity_of(self, pool: str) -> CapacityState | None:
        for cs in self.capacity:
            if cs.pool == pool:
                return cs
        return None


@dataclass(frozen=True)
class PoolPlan:
    """The decision for one pool. ``optimal`` is the optimiser's count before stabilization."""

    name: str
    gpu_type: str
    current: int
    replicas: int
    optimal: int
    capacity_per_replica: float
    profile_capacity_per_replica: float
    price_per_replica_hour: float
    reason: str
    capacity_reason: str = ""

    @property
    def changed(self) -> bool:
        return self.replicas != self.current

    @property
    def dollars_per_million_tokens_at_capacity(self) -> float | None:
        return _per_mtok(self.price_per_replica_hour, self.capacity_per_replica)


@dataclass(frozen=True)
class Plan:
    """Replicas per pool with reasons, and what the plan is expected to cost and serve.

    ``replicas`` is what Auto mode applies (treat as read-only). ``demand_met``: planned capacity
    >= demand; ``headroom_met``: >= demand x (1 + headroom). ``limited``: the optimiser could not
    cover demand x headroom within maxReplicas, budget or power and serves the most that fits
    (``limited_by`` names which). ``holding``: nothing was planned (metrics unavailable).
    ``dollars_per_million_tokens`` is at the planned load, min(demand, capacity).
    """

    time: float | None
    replicas: dict[str, int]
    pools: tuple[PoolPlan, ...]
    demand_tokens_per_second: float | None
    required_tokens_per_second: float | None
    capacity_tokens_per_second: float
    dollars_per_hour: float
    dollars_per_million_tokens: float | None
    megawatts: float
    gpus: int
    demand_met: bool | None
    headroom_met: bool | None
    limited: bool
    limited_by: tuple[str, ...]
    holding: bool
    within_cost_objective: bool | None
    summary: str

    @property
    def changes(self) -> tuple[PoolPlan, ...]:
        return tuple(p for p in self.pools if p.changed)

    @property
    def reasons(self) -> tuple[str, ...]:
        """The summary, then one line per pool."""
        return (self.summary,) + tuple(p.reason for p in self.pools)


def plan_for_demand(
    pools: Sequence[PoolProfile],
    demand: float,
    *,
    objectives: Objectives = Objectives(),
    headroom: float = 0.2,
    current: Mapping[str, int] | None = None,
    capacities: Mapping[str, float] | None = None,
    now: float | None = None,
) -> Plan:
    """Cheapest plan for ``demand`` tokens/s, applied at once (no forecast, no stabilization)."""
    cur = {p.name: int((current or {}).get(p.name, 0)) for p in pools}
    caps = {p.name: float((capacities or {}).get(p.name, p.capacity)) for p in pools}
    sol = _solve_for(pools, demand, headroom, objectives, cur, caps)
    notes = {p.name: "" for p in pools}
    return _compose(pools, cur, sol.replicas, sol, demand, headroom, objectives, caps, notes, now, "")


def decide(state: PlannerState | None, inputs: PlannerInputs, now: float, *,
           stop: Callable[[], bool] | None = None) -> tuple[Plan, PlannerState]:
    """One planning step: estimate capacity and demand, optimise, stabilise, explain.

    ``stop`` (optional, issue 15): the caller's time budget, asked by the solver as it searches; when it
    says stop, the plan is the best mix found so far and its summary says so. Without it the search runs
    to the end (or to ``solve``'s node cap).

    Steps: (1) metrics missing or older than ``max_metrics_age_seconds`` -> hold current replicas
    (clamped to min/max, trimmed to budget/power) with reason "holding: metrics unavailable (...)",
    state unchanged; (2) update each pool's learned capacity and the demand forecast (level + damped
    trend over the longest start-up delay), unless ``demand_tokens_per_second`` is given;
    (3) :func:`solve` for forecast x (1 + headroom); (4) scale up at once; scale down only to the
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

    problem = None
    if obs is None and inputs.demand_tokens_per_second is None:
        problem = inputs.metrics_unavailable_reason or "no metrics"
    elif obs is not None and obs.observed_at is not None and now - obs.observed_at > cfg.max_metrics_age_seconds:
        problem = f"stale: newest sample {now - obs.observed_at:.0f}s old"
    if problem is not None:
        return _hold(state, pools, cur, inputs, problem, now), state

    # (2) estimators
    cap_states: list[CapacityState] = []
    for p in pools:
        cs = state.capacity_of(p.name) or cfg.capacity.initial(p)
        if cs.profile != p.capacity:  # the profile changed in the spec: start again from it
            cs = cfg.capacity.initial(p)
        if obs is not None:
            cs = cfg.capacity.observe(cs, obs.pools.get(p.name), inputs.objectives, now)
        cap_states.append(cs)
    caps = {cs.pool: cs.estimate for cs in cap_states}
    horizon = cfg.forecast_horizon_seconds
    if horizon is None:
        horizon = max((p.startup_seconds for p in pools if p.max_replicas > 0), default=0.0)
    demand_state = state.demand
    demand_note = ""
    if inputs.demand_tokens_per_second is not None:
        demand = float(inputs.demand_tokens_per_second)
        if not math.isfinite(demand):
            return _hold(state, pools, cur, inputs, f"demand is {demand}", now), state
        demand = max(0.0, demand)
    else:
        assert obs is not None
        if not (math.isfinite(obs.tokens_per_second) and math.isfinite(obs.requests_waiting)):
            return _hold(state, pools, cur, inputs, "non-finite token rate or queue", now), state
        # spare capacity serving now, and how soon a new replica could serve: a backlog that this
        # spare drains before then buys nothing
        ready_cap = sum(max(0, o.ready_replicas) * caps.get(name, 0.0) for name, o in obs.pools.items())
        spare = max(0.0, ready_cap - max(0.0, obs.tokens_per_second))
        startup = min((p.startup_seconds for p in pools if p.max_replicas > cur[p.name]), default=horizon)
        demand_state = cfg.demand.observe(state.demand, obs, now, spare_tokens_per_second=spare,
                                          startup_seconds=startup)
        demand = cfg.demand.forecast(demand_state, horizon)
        backlog_txt = f"backlog {_tok(demand_state.backlog)}"
        if demand_state.queued_tokens > 0:
            backlog_txt += (f" ({obs.requests_waiting:,.0f} waiting x {_tok(demand_state.tokens_per_request)}"
                            f" tok/request"
                            + (f", {_tok(demand_state.drained_tokens)} tok of it drained by {_tok(spare)} tok/s"
                               f" spare capacity within the {startup:.0f}s start-up"
                               if demand_state.drained_tokens > 0 else "")
                            + (f", the rest over {cfg.demand.backlog_drain_seconds:.0f}s"
                               if demand_state.backlog > 0 else "") + ")")
        demand_note = (f" (observed {_tok(demand_state.observed)} + {backlog_txt}"
                       f", smoothed {_tok(demand_state.level or 0.0)}, trend {demand_state.trend:+,.1f} tok/s/s"
                       f" over {horizon:.0f}s start-up)")

    # excursions (runs of intervals with a backlog that needs new replicas) and short-burst deferral
    exc_since, excursions = state.excursion_since, state.excursions
    defer_note = ""
    if inputs.demand_tokens_per_second is None and obs is not None:
        excursions = tuple(e for e in excursions if now - e[0] < cfg.burst_memory_seconds)
        if demand_state.backlog > 0 and exc_since is None:
            exc_since = now
        elif demand_state.backlog <= 0 and exc_since is not None:
            excursions = excursions + ((now, now - exc_since),)
            exc_since = None
        # a queue building (as many waiting requests as ready replicas: the capacity estimator's
        # saturation signal) is the start of an excursion even while the spare, measured over the
        # lagging metrics window, still looks able to drain it
        ready_total = sum(max(0, o.ready_replicas) for o in obs.pools.values())
        queue_building = ready_total > 0 and \
            obs.requests_waiting >= cfg.capacity.config.queue_per_replica * ready_total
        since = exc_since if exc_since is not None else (now if queue_building else None)
        if since is not None and len(excursions) >= max(1, cfg.burst_min_seen) \
                and all(lasted <= horizon for _, lasted in excursions):
            longest = max(lasted for _, lasted in excursions)
            if now - since < longest:
                defer_note = (f"scale-up waits: queue for {now - since:.0f}s; the last {len(excursions)} "
                              f"excursion(s) above capacity were over within {longest:.0f}s (<= the {horizon:.0f}s "
                              f"start-up), so replicas ordered at their start served after them; ordering if "
                              f"this one lasts {longest:.0f}s")

    # (3) optimise
    sol = _solve_for(pools, demand, inputs.headroom, inputs.objectives, cur, caps, stop)
    raw = sol.replicas
    # what the scale-down side remembers: the optimum for demand x (1 + band), band = the measured
    # demand noise (hysteresis: a replica added on an upward blip is released only once demand is
    # lower by more than its noise)
    demands = tuple((t, d) for t, d in state.demands if now - t < cfg.hysteresis_window_seconds and t < now)
    demands = demands + ((now, demand),)
    band, band_txt = _hysteresis_band(cfg, demands)
    if band > 0 and demand > 0:
        upper = _solve_for(pools, demand * (1 + band), inputs.headroom, inputs.objectives, cur, caps, stop).replicas
    else:
        upper = raw
    keep = {name: max(raw[name], upper[name]) for name in raw}

    # (4) stabilise
    window = cfg.scale_down_stabilization_seconds
    history = tuple((t, recs) for t, recs in state.recommendations if now - t < window and t <= now)
    history = history + ((now, tuple(sorted(keep.items()))),)
    targets: dict[str, int] = {}
    notes: dict[str, str] = {}
    mem = cfg.flap_memory_seconds
    downs = tuple(d for d in state.downs if now - d[1] < mem and d[1] <= now)
    flaps = tuple(f for f in state.flaps if now - f[1] < mem and f[1] <= now)
    for p in pools:
        c, r = cur[p.name], raw[p.name]
        if r > c and defer_note:
            t = c
            note = f"{defer_note} (scale-up to {r})"
        elif r >= c:
            t = r
            note = ""
            if r > c and any(name == p.name and to < r <= frm for name, _, frm, to in downs):
                flaps = flaps + ((p.name, now, r),)
        else:
            wmax = max(dict(recs).get(p.name, 0) for _, recs in history)
            t = min(c, wmax)
            note = ""
            if t > r and keep[p.name] >= t:
                note = (f"scale-down to {r} waits: {keep[p.name]} would be needed at "
                        f"{band:.1%} more demand (scale-down hysteresis: {band_txt})")
            elif t > r:
                note = (f"scale-down to {r} waits: up to {wmax} recommended within the last "
                        f"{window:.0f}s stabilization window")
            flapped = [(ft, n) for name, ft, n in flaps if name == p.name]
            if flapped and t < r + 1 <= c:
                t = r + 1
                note = (f"scale-down keeps one replica above the optimum {r}: {p.name} went back up past a "
                        f"scale-down within the last {mem:.0f}s (the optimum sits at a replica boundary)")
                if t == c and any(n == c for _, n in flapped):  # still at the boundary it flapped at
                    flaps = flaps + ((p.name, now, c),)
            step = max(1, math.floor(c * cfg.max_scale_down_fraction))
            if t < c - step:
                t = c - step
                note = f"scale-down to {r} limited to {step} replica(s) per interval"
        t = min(max(t, p.min_replicas), p.max_replicas)
        if t < c:
            downs = downs + ((p.name, now, c, t),)
        targets[p.name] = t
        notes[p.name] = note
    floors = {p.name: raw[p.name] for p in pools}
    targets, trimmed = _fit_limits(pools, targets, floors, caps, inputs.objectives)
    for name in trimmed:
        notes[name] = (f"released early to stay within {_limits_text(inputs.objectives)}"
                       + (f" ({notes[name]})" if notes[name] else ""))
    plan = _compose(pools, cur, targets, sol, demand, inputs.headroom, inputs.objectives, caps, notes, now,
                    demand_note, cap_states={cs.pool: cs for cs in cap_states})
    if sol.stopped:
        plan = replace(plan, summary=plan.summary + f"; time budget reached after {sol.nodes:,} search nodes: "
                                                    f"best mix found so far, not proven cheapest")
    new_state = PlannerState(capacity=tuple(cap_states), demand=demand_state, recommendations=history, time=now,
                             demands=demands, excursion_since=exc_since, excursions=excursions,
                             downs=downs, flaps=flaps)
    return plan, new_state


def _hysteresis_band(cfg: PlannerConfig, demands: Sequence[tuple[float, float]]) -> tuple[float, str]:
    """The scale-down hysteresis band (a fraction of demand) and how it was set.

    Noise = standard deviation of the planned demands over the window around their least-squares
    line (so a steady ramp is not noise), relative to their mean; band = the noise multiple x noise,
    at most ``scale_down_tolerance``; the cap itself until enough samples are seen. The default
    multiple 6 spans +-3 standard deviations: the whole spread of the noise (uniform noise of +-a has
    a standard deviation of a / sqrt(3), so 6 of them are 3.5a > 2a).
    """
    cap = max(0.0, cfg.scale_down_tolerance)
    if cap <= 0:
        return 0.0, "disabled"
    n = len(demands)
    if n < max(3, cfg.hysteresis_min_samples):
        return cap, f"{cap:.0%} until the demand noise is measured"
    ts = [t for t, _ in demands]
    ds = [d for _, d in demands]
    mt, md = sum(ts) / n, sum(ds) / n
    if md <= 0:
        return 0.0, "no demand"
    var_t = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (d - md) for t, d in demands) / var_t if var_t > 0 else 0.0
    resid2 = sum((d - (md + slope * (t - mt))) ** 2 for t, d in demands)
    noise = math.sqrt(resid2 / max(1, n - 2)) / md
    band = min(cap, max(0.0, cfg.hysteresis_noise_multiple) * noise)
    txt = (f"{cfg.hysteresis_noise_multiple:g} x the {noise:.2%} standard deviation of demand around its trend over "
           f"{cfg.hysteresis_window_seconds:.0f}s" + (f", capped at {cap:.0%}" if band >= cap else ""))
    return band, txt


# ============================================================================================
# Internals
# ============================================================================================


def _solve_for(pools: Sequence[PoolProfile], demand: float, headroom: float, objectives: Objectives,
               cur: Mapping[str, int], caps: Mapping[str, float], stop: Callable[[], bool] | None = None) -> Solution:
    required = max(0.0, demand) * (1.0 + max(0.0, headroom))
    return solve(pools, required, capacities=caps, current=cur,
                 max_dollars_per_hour=objectives.max_dollars_per_hour, max_megawatts=objectives.max_megawatts,
                 stop=stop)


def _fit_limits(pools: Sequence[PoolProfile], targets: Mapping[str, int], floors: Mapping[str, int],
                caps: Mapping[str, float], objectives: Objectives) -> tuple[dict[str, int], tuple[str, ...]]:
    """Lower replicas above ``floors`` (least cost-efficient first) until budget and power hold."""
    t = dict(targets)
    B = INF if objectives.max_dollars_per_hour is None else objectives.max_dollars_per_hour
    P = INF if objectives.max_megawatts is None else objectives.max_megawatts * 1000.0
    by_name = {p.name: p for p in pools}
    trimmed: list[str] = []

    def over() -> bool:
        cost = sum(by_name[n].price_per_replica_hour * v for n, v in t.items())
        kwv = sum(by_name[n].kilowatts_per_replica * v for n, v in t.items())
        return cost > B * (1 + 1e-12) + 1e-9 or kwv > P * (1 + 1e-12) + 1e-9

    def inefficiency(p: PoolProfile) -> tuple[float, str]:
        cap = caps.get(p.name, p.capacity)
        return (p.price_per_replica_hour / cap if cap > 0 else INF, p.name)

    while over():
        candidates = [p for p in pools if t[p.name] > floors[p.name]]
        if not candidates:
            break
        worst = max(candidates, key=inefficiency)
        t[worst.name] -= 1
        if worst.name not in trimmed:
            trimmed.append(worst.name)
    return t, tuple(trimmed)


def _hold(state: PlannerState, pools: Sequence[PoolProfile], cur: Mapping[str, int], inputs: PlannerInputs,
          problem: str, now: float) -> Plan:
    targets = {p.name: min(max(cur[p.name], p.min_replicas), p.max_replicas) for p in pools}
    caps = {}
    for p in pools:
        cs = state.capacity_of(p.name)
        caps[p.name] = cs.estimate if cs is not None and cs.profile == p.capacity else p.capacity
    floors = {p.name: p.min_replicas for p in pools}
    targets, trimmed = _fit_limits(pools, targets, floors, caps, inputs.objectives)
    head = f"holding: metrics unavailable ({problem})"
    lines = []
    for p in pools:
        c, t = cur[p.name], targets[p.name]
        line = f"{p.name}: {c} -> {t}: {head}" if t != c else f"{p.name}: stays at {c}: {head}"
        if t != c and p.name in trimmed:
            line += f"; lowered to stay within {_limits_text(inputs.objectives)}"
        elif t != c:
            line += f"; kept within minReplicas {p.min_replicas} .. maxReplicas {p.max_replicas}"
        lines.append(PoolPlan(name=p.name, gpu_type=p.gpu_type, current=c, replicas=t, optimal=t,
                              capacity_per_replica=caps[p.name], profile_capacity_per_replica=p.capacity,
                              price_per_replica_hour=p.price_per_replica_hour, reason=line))
    capv, cost, kwv, gpus = _totals(pools, targets, caps)
    return Plan(time=now, replicas=targets, pools=tuple(lines), demand_tokens_per_second=None,
                required_tokens_per_second=None, capacity_tokens_per_second=capv, dollars_per_hour=cost,
                dollars_per_million_tokens=None, megawatts=kwv / 1000.0, gpus=gpus, demand_met=None,
                headroom_met=None, limited=False, limited_by=(), holding=True, within_cost_objective=None,
                summary=head)


def _totals(pools: Sequence[PoolProfile], replicas: Mapping[str, int],
            caps: Mapping[str, float]) -> tuple[float, float, float, int]:
    capv = sum(replicas[p.name] * caps.get(p.name, p.capacity) for p in pools)
    cost = sum(replicas[p.name] * p.price_per_replica_hour for p in pools)
    kwv = sum(replicas[p.name] * p.kilowatts_per_replica for p in pools)
    gpus = sum(replicas[p.name] * p.gpus_per_replica for p in pools)
    return capv, cost, kwv, gpus


def _compose(pools: Sequence[PoolProfile], cur: Mapping[str, int], targets: Mapping[str, int], sol: Solution,
             demand: float, headroom: float, objectives: Objectives, caps: Mapping[str, float],
             notes: Mapping[str, str], now: float | None, demand_note: str,
             cap_states: Mapping[str, CapacityState] | None = None) -> Plan:
    required = sol.required_tokens_per_second
    capv, cost, kwv, gpus = _totals(pools, targets, caps)
    served = min(demand, capv)
    per_mtok = _per_mtok(cost, served) if served > 0 else None
    within_cost = None
    if objectives.max_dollars_per_million_tokens is not None and per_mtok is not None:
        within_cost = per_mtok <= objectives.max_dollars_per_million_tokens + 1e-12
    eps = 1e-7 * max(1.0, required)
    demand_met = capv >= demand - eps
    headroom_met = capv >= required - eps
    limited = not sol.covers_required or not sol.within_limits

    # ranking by $/Mtok at (learned) capacity
    def eff(p: PoolProfile) -> float:
        return _per_mtok(p.price_per_replica_hour, caps[p.name]) or INF

    ranked = sorted(pools, key=lambda p: (eff(p), p.name))
    rank = {p.name: i for i, p in enumerate(ranked)}
    opt = sol.replicas
    need_text = f"demand {_tok(demand)} tok/s forecast x{1 + headroom:g} headroom needs {_tok(required)} tok/s"

    lines: list[PoolPlan] = []
    for p in pools:
        c, t, o = cur[p.name], targets[p.name], opt[p.name]
        cap = caps[p.name]
        head = f"{p.name}: {c} -> {t}" if t != c else f"{p.name}: stays at {c}"
        price_txt = f"{_mtok(eff(p))}/Mtok at capacity" if eff(p) < INF else "no capacity"
        if o > p.min_replicas or (o > 0 and _needed(p, opt, caps, required)):
            if rank[p.name] == 0:
                role = f"{p.name} is cheapest per token ({price_txt}): {o} x {_tok(cap)} = {_tok(o * cap)} tok/s"
            else:
                cheaper = [q for q in ranked[: rank[p.name]]]
                why = "; ".join(_pool_state(q, opt, caps, pools, objectives) for q in cheaper)
                role = (f"{p.name} ({price_txt}, #{rank[p.name] + 1} by cost per token) adds "
                        f"{o} x {_tok(cap)} = {_tok(o * cap)} tok/s beyond cheaper pools ({why})")
        elif o > 0:
            role = f"{p.name} held at minReplicas {p.min_replicas} ({price_txt})"
        elif p.max_replicas == 0:
            role = f"{p.name} has maxReplicas 0"
        elif required <= 0:
            role = f"{p.name} covers 0 ({price_txt}): no demand"
        elif not sol.covers_required and sol.limited_by:
            role = f"{p.name} covers 0 ({price_txt}): no room within {_limits_text(objectives)}"
        else:
            role = f"{p.name} covers 0 ({price_txt}; cheaper pools cover the need)"
        others = [q for q in pools if q.name != p.name]
        other_txt = ", ".join(f"{q.name} covers {_tok(opt[q.name] * caps[q.name])}"
                              + (f" ({opt[q.name]} x {_tok(caps[q.name])})" if opt[q.name] else "")
                              for q in others)
        text = f"{head}: {need_text}; {role}"
        if other_txt:
            text += f"; {other_txt}"
        if cap_states is not None and p.capacity > 0 and abs(cap / p.capacity - 1) > 0.05:
            text += f"; learned capacity {_tok(cap)} tok/s/replica vs profile {_tok(p.capacity)}"
        if notes.get(p.name):
            text += f"; {notes[p.name]} (optimum {o})"
        if limited and t != c:
            text += "; serving the most that fits"
        lines.append(PoolPlan(name=p.name, gpu_type=p.gpu_type, current=c, replicas=t, optimal=o,
                              capacity_per_replica=cap, profile_capacity_per_replica=p.capacity,
                              price_per_replica_hour=p.price_per_replica_hour, reason=text,
                              capacity_reason=cap_states[p.name].reason if cap_states and p.name in cap_states else ""))

    mix = ", ".join(f"{p.name}={targets[p.name]}" for p in pools)
    summary = (f"demand {_tok(demand)} tok/s{demand_note} x{1 + headroom:g} headroom = {_tok(required)} tok/s; "
               f"plan {mix}: {_tok(capv)} tok/s for {_usd(cost)}/h")
    if per_mtok is not None:
        summary += f" ({_mtok(per_mtok)}/Mtok at {_tok(served)} tok/s)"
    if kwv > 0:
        summary += f", {kwv / 1000:.3g} MW"
    if not sol.within_limits:
        summary += (f"; minReplicas alone ({_usd(sol.dollars_per_hour)}/h, {sol.kilowatts / 1000:.3g} MW) exceed "
                    f"{_limits_text(objectives)}: keeping the minimums")
    elif not sol.covers_required:
        what = _limited_text(sol.limited_by, objectives)
        summary += (f"; cannot meet {_tok(required)} tok/s within {what}: serving the most that fits "
                    f"({_tok(sol.capacity_tokens_per_second)} tok/s"
                    + ("" if demand_met else f", {_tok(max(0.0, demand - capv))} tok/s of demand unserved") + ")")
    if within_cost is False:
        summary += (f"; expected {_mtok(per_mtok or 0.0)}/Mtok is over the "
                    f"{_mtok(objectives.max_dollars_per_million_tokens or 0.0)}/Mtok objective")
    return Plan(time=now, replicas=dict(targets), pools=tuple(lines), demand_tokens_per_second=demand,
                required_tokens_per_second=required, capacity_tokens_per_second=capv, dollars_per_hour=cost,
                dollars_per_million_tokens=per_mtok, megawatts=kwv / 1000.0, gpus=gpus, demand_met=demand_met,
                headroom_met=headroom_met, limited=limited, limited_by=sol.limited_by, holding=False,
                within_cost_objective=within_cost, summary=summary)


def _needed(p: PoolProfile, opt: Mapping[str, int], caps: Mapping[str, float], required: float) -> bool:
    """Whether the pool's capacity at its minimum is part of covering the requirement."""
    others = sum(opt[n] * caps[n] for n in opt if n != p.name)
    return others < required


def _pool_state(q: PoolProfile, opt: Mapping[str, int], caps: Mapping[str, float], pools: Sequence[PoolProfile],
                objectives: Objectives) -> str:
    """Why a cheaper pool ``q`` does not take more of the load."""
    n, cap = opt[q.name], caps[q.name]
    if n >= q.max_replicas:
        return f"{q.name} at maxReplicas {q.max_replicas} = {_tok(n * cap)} tok/s"
    _, cost, kwv, _ = _totals(pools, opt, caps)
    if objectives.max_dollars_per_hour is not None and cost + q.price_per_replica_hour > objectives.max_dollars_per_hour + 1e-9:
        why = f"one more does not fit the {_usd(objectives.max_dollars_per_hour)}/h budget"
    elif objectives.max_megawatts is not None and (kwv + q.kilowatts_per_replica) / 1000 > objectives.max_megawatts + 1e-12:
        why = f"one more does not fit the {objectives.max_megawatts:g} MW power cap"
    else:
        why = f"one more {q.name} replica would cost more than covering the rest here"
    return f"{q.name} {n} x {_tok(cap)} = {_tok(n * cap)} tok/s, {why}"


def _limits_text(objectives: Objectives) -> str:
    parts = []
    if objectives.max_dollars_per_hour is not None:
        parts.append(f"the {_usd(objectives.max_dollars_per_hour)}/h budget")
    if objectives.max_megawatts is not None:
        parts.append(f"the {objectives.max_megawatts:g} MW power cap")
    return " and ".join(parts) or "maxReplicas"


def _limited_text(limited_by: Iterable[str], objectives: Objectives) -> str:
    parts = []
    for what in limited_by:
        if what == "budget" and objectives.max_dollars_per_hour is not None:
            parts.append(f"the {_usd(objectives.max_dollars_per_hour)}/h budget")
        elif what == "power" and objectives.max_megawatts is not None:
            parts.append(f"the {objectives.max_megawatts:g} MW power cap")
        elif what == "maxReplicas":
            parts.append("maxReplicas")
    return " and ".join(parts) or "the limits"


def _per_mtok(dollars_per_hour: float, tokens_per_second: float) -> float | None:
    if tokens_per_second <= 0:
        return None
    return dollars_per_hour / (tokens_per_second * 3600.0) * 1e6


def _tok(x: float) -> str:
    return f"{x:,.0f}"


def _usd(x: float) -> str:
    return f"${x:,.2f}"


def _mtok(x: float) -> str:
    return f"${x:.4f}" if x < 0.01 else f"${x:,.2f}"
