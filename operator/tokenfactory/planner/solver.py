"""The exact optimiser: cheapest integer replica mix covering a required token rate.

The optimisation::

    minimise    sum_i price_i * n_i                                ($/hour)
    subject to  sum_i capacity_i * n_i >= required                 (tokens/s)
                min_i <= n_i <= max_i                              (integers)
                sum_i price_i * n_i <= budget                      ($/hour)
                sum_i kW_i * n_i / 1000 <= power cap               (MW)

When no mix covers the requirement inside budget and power (or maxReplicas), the objective becomes:
serve the most capacity that fits, then cheapest ("serving the most that fits"). Ties break
deterministically: fewer replica changes from the current counts, then fewer GPUs, then the first
mix found in a fixed search order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from tokenfactory.planner.bounds import (
    SearchProblem,
    cover_cost,
    extra_ub,
    joint_cover_cost,
    joint_extra_ub,
)
from tokenfactory.planner.types import INF, PoolProfile, Solution

Key = tuple[float, float, int, int]  # (shortfall, $/hour, changes, GPUs): smaller is better


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
    ``max_nodes`` is a safety valve: past it the search stops and returns the best mix found
    with ``exact=False`` (never reached in the tests; adversarial near-tied pools need ~10^4 nodes).
    ``stop`` (the caller's time budget) is asked at the first node and every 128 after; when it answers
    True the search ends and returns the best mix found so far with ``exact=False, stopped=True`` (the
    greedy dive always gives one). The solver reads no clock itself: the caller's ``stop`` does.
    Complexity: worst case O(prod_{i<k}(max_i - min_i + 1) * k) for k pools (exponential in k, as
    the problem is NP-hard in general: it contains knapsack), O(k) per node; in practice the LP
    bounds keep it to tens or hundreds of nodes: 2 pools x (24, 18) or 5 pools x 50 take
    milliseconds (see tests/unit/test_planner.py).
    """
    caps = dict(capacities or {})
    R = max(0.0, float(required))
    B = INF if max_dollars_per_hour is None else float(max_dollars_per_hour)
    P = INF if max_megawatts is None else float(max_megawatts) * 1000.0  # kW
    ordered = _search_order(pools, caps, R, P)
    cur_map = dict(current or {})
    prob = SearchProblem(
        names=[p.name for p in ordered], c=[_cap(p, caps) for p in ordered],
        pr=[p.price_per_replica_hour for p in ordered], kw=[p.kilowatts_per_replica for p in ordered],
        g=[p.gpus_per_replica for p in ordered], lo=[p.min_replicas for p in ordered],
        hi=[p.max_replicas for p in ordered], cur=[int(cur_map.get(p.name, 0)) for p in ordered],
        R=R, B=B, P=P)
    return _Search(prob, max_nodes, stop).run([p.name for p in pools])


def _cap(p: PoolProfile, caps: Mapping[str, float]) -> float:
    return max(0.0, float(caps.get(p.name, p.capacity)))


def _search_order(pools: Sequence[PoolProfile], caps: Mapping[str, float], R: float, P: float) -> list[PoolProfile]:
    """Cheapest per token/s first; when the cheapest fractional cover breaks the power cap, power
    decides: the most power-efficient pools first (good incumbents early). Any order is exact."""
    k = len(pools)

    def dollars_per_cap(i: int) -> float:
        ci = _cap(pools[i], caps)
        return pools[i].price_per_replica_hour / ci if ci > 0 else INF

    def kw_per_cap(i: int) -> float:
        ci = _cap(pools[i], caps)
        return pools[i].kilowatts_per_replica / ci if ci > 0 else INF

    order = sorted(range(k), key=lambda i: (dollars_per_cap(i), pools[i].price_per_replica_hour, pools[i].name))
    if P < INF:
        need = R - sum(p.min_replicas * _cap(p, caps) for p in pools)
        lp_kw = sum(p.min_replicas * p.kilowatts_per_replica for p in pools)
        for i in order:
            room = (pools[i].max_replicas - pools[i].min_replicas) * _cap(pools[i], caps)
            take = min(max(0.0, need), room)
            if take > 0:
                lp_kw += take * kw_per_cap(i)
                need -= take
        if lp_kw > P:
            order = sorted(range(k), key=lambda i: (kw_per_cap(i), dollars_per_cap(i), pools[i].name))
    return [pools[i] for i in order]


class _Search:
    """Depth-first branch and bound over one :class:`SearchProblem` (state: incumbent, nodes, memo)."""

    def __init__(self, prob: SearchProblem, max_nodes: int, stop: Callable[[], bool] | None = None):
        self.p = prob
        self.max_nodes = max_nodes
        self.stop = stop
        self.stopped = False
        self.best_key: Key | None = None
        self.best_ns: list[int] | None = None
        self.nodes = 0
        self.memo: dict[tuple[int, float, float, float], list[tuple[int, int]]] = {}

    def run(self, names_in_input_order: list[str]) -> Solution:
        p = self.p
        if p.k == 0:
            return self.make([], names_in_input_order, True)
        k = p.k
        if sum(p.lo[i] * p.pr[i] for i in range(k)) > p.B + p.eps_cost \
                or sum(p.lo[i] * p.kw[i] for i in range(k)) > p.P + p.eps_kw:
            return self.make(p.lo, names_in_input_order, False)
        self.dive()
        self.dfs(0, [], 0.0, 0.0, 0.0, 0, 0)
        assert self.best_ns is not None  # the minimums fit, so at least one leaf is feasible
        return self.make(self.best_ns, names_in_input_order, True)

    # ------------------------------------------------------------------ the answer

    def make(self, ns: Sequence[int], names: list[str], within: bool) -> Solution:
        p = self.p
        capv = sum(n * ci for n, ci in zip(ns, p.c))
        cost = sum(n * pi for n, pi in zip(ns, p.pr))
        kwv = sum(n * ki for n, ki in zip(ns, p.kw))
        covers = capv >= p.R - p.eps_cap
        by_name = dict(zip(p.names, ns))
        return Solution(
            replicas={name: int(by_name[name]) for name in names},
            required_tokens_per_second=p.R,
            capacity_tokens_per_second=capv,
            dollars_per_hour=cost,
            kilowatts=kwv,
            gpus=sum(n * gi for n, gi in zip(ns, p.g)),
            changes=sum(abs(n - ci) for n, ci in zip(ns, p.cur)),
            exact=self.nodes <= self.max_nodes and not self.stopped,
            covers_required=covers,
            within_limits=within,
            limited_by=self.limits(ns, cost, kwv, covers, within),
            nodes=self.nodes,
            stopped=self.stopped,
        )

    def limits(self, ns: Sequence[int], cost: float, kwv: float, covers: bool, within: bool) -> tuple[str, ...]:
        """What stops more capacity: minReplicas (with budget/power) or maxReplicas/budget/power."""
        p = self.p
        limited: list[str] = []
        if covers and within:
            return ()
        if not within:
            if cost > p.B + p.eps_cost:
                limited.append("budget")
            if kwv > p.P + p.eps_kw:
                limited.append("power")
            limited.append("minReplicas")
            return tuple(limited)
        usable = [i for i in range(p.k) if p.c[i] > 0]
        if any(ns[i] >= p.hi[i] for i in usable) or not any(p.c):
            limited.append("maxReplicas")
        if any(ns[i] < p.hi[i] and cost + p.pr[i] > p.B + p.eps_cost for i in usable):
            limited.append("budget")
        if any(ns[i] < p.hi[i] and kwv + p.kw[i] > p.P + p.eps_kw for i in usable):
            limited.append("power")
        return tuple(limited)

    # ------------------------------------------------------------------ ordering and bounds

    def better(self, a: Key, b: Key) -> bool:
        eps_cap, eps_cost = self.p.eps_cap, self.p.eps_cost
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

    def bound(self, j: int, capv: float, cost: float, kwv: float, chg: int, gpus: int) -> Key | None:
        """Lower bound on the key of any completion of a node (None: the minimums break a limit)."""
        p, best = self.p, self.best_key
        mc = cost + p.s_cost[j]
        mk = kwv + p.s_kw[j]
        if mc > p.B + p.eps_cost or mk > p.P + p.eps_kw:
            return None
        base = capv + p.s_cap[j]
        room_total, ub_b, ub_p = extra_ub(p, j, p.B - mc, p.P - mk)
        short_lb = max(0.0, p.R - base - min(room_total, ub_b, ub_p))
        cost_lb = mc
        need = 0.0
        if best is not None:
            need = p.R - best[0] - p.eps_cap - base
            if need > 0:
                cost_lb += cover_cost(p, j, need)
        tail = (chg + p.s_chg[j], gpus + p.s_gpus[j])
        key = (short_lb, cost_lb) + tail
        if best is not None and not self.better(key, best):
            return key  # the cheap bounds already prune
        # second stage, only for survivors: both limits at once
        if p.B < INF and p.P < INF and max(ub_b, ub_p) < room_total:
            short_lb = max(short_lb, p.R - base - joint_extra_ub(p, j, p.B - mc, p.P - mk))
            key = (short_lb, cost_lb) + tail
            if best is not None and not self.better(key, best):
                return key
        if p.P < INF and need > 0 and best is not None and short_lb >= best[0] - p.eps_cap:
            cost_lb = max(cost_lb, mc + joint_cover_cost(p, j, need, p.P - mk))
        return (short_lb, cost_lb) + tail

    # ------------------------------------------------------------------ the search

    def leaf(self, ns: list[int], capv: float, cost: float, kwv: float, chg: int, gpus: int) -> None:
        """The last pool in closed form: the smallest count reaching the best shortfall, or the one
        nearest the current count."""
        p = self.p
        j = p.k - 1
        hi_fit = p.hi[j]
        if p.pr[j] > 0 and p.B < INF:
            hi_fit = min(hi_fit, math.floor((p.B - cost + p.eps_cost) / p.pr[j]))
        if p.kw[j] > 0 and p.P < INF:
            hi_fit = min(hi_fit, math.floor((p.P - kwv + p.eps_kw) / p.kw[j]))
        if hi_fit < p.lo[j]:
            return
        need = p.R - capv
        if p.c[j] > 0 and need > p.eps_cap:
            n_cov = math.ceil(need / p.c[j] - 1e-9)
            n_star = max(p.lo[j], n_cov) if n_cov <= hi_fit else hi_fit
        else:
            n_star = p.lo[j]
        for n in sorted({n_star, min(max(p.cur[j], n_star), hi_fit)}):
            cap_n = capv + n * p.c[j]
            key = (max(0.0, p.R - cap_n), cost + n * p.pr[j], chg + abs(n - p.cur[j]), gpus + n * p.g[j])
            if self.best_key is None or self.better(key, self.best_key):
                self.best_key = key
                self.best_ns = ns + [n]

    def preferred(self, j: int, capv: float) -> int:
        """The count of pool j that alone covers what the pools after it at minimum leave."""
        p = self.p
        need_here = p.R - capv - p.s_cap[j + 1]
        n = math.ceil(need_here / p.c[j] - 1e-9) if p.c[j] > 0 and need_here > 0 else p.lo[j]
        return min(p.hi[j], max(p.lo[j], n))

    def seen(self, j: int, capv: float, cost: float, kwv: float, chg: int, gpus: int) -> bool:
        """Symmetry pruning: an equal partial state was already visited with no more changes/GPUs."""
        if j == 0:
            return False
        seen = self.memo.setdefault((j, round(capv, 6), round(cost, 9), round(kwv, 9)), [])
        if any(a <= chg and b <= gpus for a, b in seen):
            return True
        seen.append((chg, gpus))
        return False

    def children(self, j: int, capv: float, cost: float, kwv: float, chg: int, gpus: int) -> list[tuple[Key, int]]:
        """Counts of pool j worth exploring, most promising first, with their bounds."""
        p = self.p
        n_pref = self.preferred(j, capv)
        candidates = list(range(n_pref, p.lo[j] - 1, -1)) + list(range(n_pref + 1, p.hi[j] + 1))
        out: list[tuple[Key, int]] = []
        for n in candidates:
            ascending = n > n_pref
            lb = self.bound(j + 1, capv + n * p.c[j], cost + n * p.pr[j], kwv + n * p.kw[j],
                            chg + abs(n - p.cur[j]), gpus + n * p.g[j])
            if lb is None:
                if ascending:
                    break  # budget/power only get tighter as n grows
                continue
            best = self.best_key
            if best is not None and not self.better(lb, best):
                if ascending and p.pr[j] > 0 and lb[0] <= p.eps_cap and best[0] <= p.eps_cap \
                        and lb[1] > best[1] + p.eps_cost:
                    break  # past the cover point the cost bound only grows with n
                continue
            out.append((lb, n))
        out.sort(key=lambda x: (x[0][0] + 0.0, x[0][1], x[0][2], x[0][3], x[1]))
        return out

    def dfs(self, j: int, ns: list[int], capv: float, cost: float, kwv: float, chg: int, gpus: int) -> None:
        p = self.p
        self.nodes += 1
        if self.nodes > self.max_nodes or self.stopped:
            return
        if self.stop is not None and self.nodes % 128 == 1 and self.stop():
            self.stopped = True
            return
        if j == p.k - 1:
            self.leaf(ns, capv, cost, kwv, chg, gpus)
            return
        if self.seen(j, capv, cost, kwv, chg, gpus):
            return
        for lb, n in self.children(j, capv, cost, kwv, chg, gpus):
            if self.best_key is not None and not self.better(lb, self.best_key):
                continue
            self.dfs(j + 1, ns + [n], capv + n * p.c[j], cost + n * p.pr[j], kwv + n * p.kw[j],
                     chg + abs(n - p.cur[j]), gpus + n * p.g[j])

    def dive(self) -> None:
        """A greedy first incumbent: each pool takes what it alone would need, as far as limits allow."""
        p = self.p
        ns: list[int] = []
        capv = cost = kwv = 0.0
        chg = gpus = 0
        for j in range(p.k - 1):
            n = self.preferred(j, capv)
            while n > p.lo[j] and (cost + n * p.pr[j] + p.s_cost[j + 1] > p.B + p.eps_cost
                                   or kwv + n * p.kw[j] + p.s_kw[j + 1] > p.P + p.eps_kw):
                n -= 1
            ns.append(n)
            capv += n * p.c[j]
            cost += n * p.pr[j]
            kwv += n * p.kw[j]
            chg += abs(n - p.cur[j])
            gpus += n * p.g[j]
        self.leaf(ns, capv, cost, kwv, chg, gpus)
