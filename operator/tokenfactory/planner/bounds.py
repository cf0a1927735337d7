"""LP (fractional) bounds of the replica-mix search: how much capacity the free pools can still add,
and at least what it costs. Pure arithmetic over a :class:`SearchProblem`; the budget and the
power knapsack are the same :func:`fractional_fill` over a different resource."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

INF = math.inf


@dataclass
class SearchProblem:
    """The pools in search order (index j = depth), with suffix sums of their minimums.

    c: capacity, pr: $/hour, kw: kW, g: GPUs per replica; lo/hi: min/max replicas; cur: current
    counts; R: required tokens/s; B: budget $/hour; P: power cap kW (INF = none).
    """

    names: list[str]
    c: list[float]
    pr: list[float]
    kw: list[float]
    g: list[int]
    lo: list[int]
    hi: list[int]
    cur: list[int]
    R: float
    B: float
    P: float

    def __post_init__(self) -> None:
        k = self.k = len(self.c)
        c, pr, kw, lo, hi = self.c, self.pr, self.kw, self.lo, self.hi
        self.eps_cap = 1e-7 * max(1.0, self.R, max(c, default=0.0))
        self.eps_cost = 1e-9 * max(1.0, sum(pr[i] * hi[i] for i in range(k)))
        self.eps_kw = 1e-9 * max(1.0, sum(kw[i] * hi[i] for i in range(k)))
        self.s_cap = [0.0] * (k + 1)
        self.s_cost = [0.0] * (k + 1)
        self.s_kw = [0.0] * (k + 1)
        self.s_gpus = [0] * (k + 1)
        self.s_chg = [0] * (k + 1)
        for j in range(k - 1, -1, -1):
            self.s_cap[j] = self.s_cap[j + 1] + lo[j] * c[j]
            self.s_cost[j] = self.s_cost[j + 1] + lo[j] * pr[j]
            self.s_kw[j] = self.s_kw[j + 1] + lo[j] * kw[j]
            self.s_gpus[j] = self.s_gpus[j + 1] + lo[j] * self.g[j]
            self.s_chg[j] = self.s_chg[j + 1] + max(0, lo[j] - self.cur[j], self.cur[j] - hi[j])
        # per suffix: free pools ordered by $ and by kW per token/s (for the LP bounds)
        self.cost_order = [sorted(range(j, k), key=lambda t: pr[t] / c[t] if c[t] > 0 else INF) for j in range(k + 1)]
        self.power_order = [sorted(range(j, k), key=lambda t: kw[t] / c[t] if c[t] > 0 else INF)
                            for j in range(k + 1)]
        self.rooms = [(hi[t] - lo[t]) * c[t] for t in range(k)]
        self.cache: dict[tuple[str, int], list[float]] = {}  # dual breakpoints per suffix
        # per suffix: the free pools' total room, summed in cost order (what the budget fill returns
        # when the budget does not bind)
        self.s_room = []
        for j in range(k + 1):
            total = 0.0
            for t in self.cost_order[j]:
                if self.rooms[t] > 0:
                    total += self.rooms[t]
            self.s_room.append(total)

    def room(self, t: int) -> float:
        return self.rooms[t]

    def free(self, j: int) -> list[int]:
        return [t for t in range(j, self.k) if self.hi[t] > self.lo[t] and self.c[t] > 0]


def fractional_fill(p: SearchProblem, order: Sequence[int], weight: Sequence[float], left: float) -> float:
    """Fractional knapsack: the most capacity the pools in ``order`` add above their minimums with
    ``left`` of one resource (``weight[t]`` per replica: $/hour for the budget, kW for power)."""
    total = 0.0
    rooms, c = p.rooms, p.c
    for t in order:
        room = rooms[t]
        if room <= 0:
            continue
        if left == INF or weight[t] <= 0:
            total += room
            continue
        if left <= 0:
            continue
        take = min(room, left / weight[t] * c[t])
        total += take
        left -= take / c[t] * weight[t]
    return total


def extra_ub(p: SearchProblem, j: int, budget_left: float, power_left: float) -> tuple[float, float, float]:
    """Upper bounds on the capacity the free pools j.. can add above their minimums:
    (maxReplicas only, fractional knapsack under the budget, under the power left)."""
    room_total = p.s_room[j]
    ub_b = room_total if budget_left == INF else fractional_fill(p, p.cost_order[j], p.pr, budget_left)
    if power_left == INF:
        return room_total, ub_b, INF
    return room_total, ub_b, fractional_fill(p, p.power_order[j], p.kw, power_left)


def cover_cost(p: SearchProblem, j: int, need: float) -> float:
    """LP lower bound on the $/hour the free pools j.. need to add ``need`` tokens/s above minimums."""
    total = 0.0
    rooms = p.rooms
    for t in p.cost_order[j]:
        if need <= 0:
            return total
        room = rooms[t]
        if room <= 0:
            continue
        take = min(room, need)
        total += take / p.c[t] * p.pr[t]
        need -= take
    return total if need <= p.eps_cap else INF


def _budget_breakpoints(p: SearchProblem, free: list[int]) -> set[float]:
    c, pr, kw = p.c, p.pr, p.kw
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
    return mus


def _extreme(values: Sequence[float], f: Callable[[float], float], sign: float) -> float:
    """min (sign 1) or max (sign -1) of a convex (concave) ``f`` over sorted ``values`` by bisection
    on its slope: O(log n) evaluations. Any point is a valid dual bound, so a float wobble that
    stops the bisection one breakpoint early only loosens the bound, never breaks exactness."""
    lo_i, hi_i = 0, len(values) - 1
    cache: dict[int, float] = {}

    def at(i: int) -> float:
        if i not in cache:
            cache[i] = sign * f(values[i])
        return cache[i]

    while lo_i < hi_i:
        mid = (lo_i + hi_i) // 2
        if at(mid) <= at(mid + 1):
            hi_i = mid
        else:
            lo_i = mid + 1
    return sign * at(lo_i)


def joint_extra_ub(p: SearchProblem, j: int, budget_left: float, power_left: float) -> float:
    """LP bound on extra capacity under budget and power together (Lagrangian dual on power:
    min over mu >= 0 of mu x power_left + fractional knapsack of values c - mu x kW under the
    budget; convex piecewise linear in mu, so its minimum is at one of the breakpoints)."""
    c, pr, kw, lo, hi = p.c, p.pr, p.kw, p.lo, p.hi
    free = p.free(j)

    def dual(mu: float) -> float:
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
        return val

    key = ("budget", j)
    if key not in p.cache:
        p.cache[key] = sorted(_budget_breakpoints(p, free))
    return _extreme(p.cache[key], dual, 1.0)


def _power_cover_fits(p: SearchProblem, free: list[int], need: float, power_left: float) -> bool:
    """Whether the most power-efficient cover of ``need`` stays within the power left."""
    rest, used = need, 0.0
    for t in sorted(free, key=lambda t: p.kw[t] / p.c[t]):
        take = min((p.hi[t] - p.lo[t]) * p.c[t], rest)
        used += take / p.c[t] * p.kw[t]
        rest -= take
        if rest <= 0:
            break
    return not (rest > p.eps_cap or used > power_left + p.eps_kw)


def joint_cover_cost(p: SearchProblem, j: int, need: float, power_left: float) -> float:
    """LP bound on the $/hour to add ``need`` tokens/s within the power left (Lagrangian dual on
    power: max over mu >= 0 of -mu x power_left + fractional cover at prices p + mu x kW)."""
    c, pr, kw, lo, hi = p.c, p.pr, p.kw, p.lo, p.hi
    free = p.free(j)
    # power-efficient cover first: if even that breaks the cap, nothing does
    if not _power_cover_fits(p, free, need, power_left):
        return INF
    key = ("cover", j)
    if key not in p.cache:
        mus = {0.0}
        for a_i, a in enumerate(free):
            for b in free[a_i + 1:]:
                den = kw[a] / c[a] - kw[b] / c[b]
                if den != 0:
                    mu = (pr[b] / c[b] - pr[a] / c[a]) / den
                    if mu > 0:
                        mus.add(mu)
        p.cache[key] = sorted(mus)
    mus_sorted = p.cache[key]
    def dual(mu: float) -> float:
        val = -mu * power_left
        rest = need
        for t in sorted(free, key=lambda t: (pr[t] + mu * kw[t]) / c[t]):
            take = min((hi[t] - lo[t]) * c[t], rest)
            val += take / c[t] * (pr[t] + mu * kw[t])
            rest -= take
            if rest <= 0:
                break
        return val

    return max(0.0, _extreme(mus_sorted, dual, -1.0))
