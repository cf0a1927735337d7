"""oracle: perfect foresight of the demand."""

from __future__ import annotations

import math

from tokenfactory import planner
from tokenfactory.bench.policies.base import Policy
from tokenfactory.bench.run import Run


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

