"""oracle: perfect foresight of the demand rate (not of the per-request noise)."""

from __future__ import annotations

import math

from tokenfactory.bench.capacity import MixOption, cheapest_carrying, mix_options
from tokenfactory.bench.policies.base import Policy
from tokenfactory.bench.run import Run
from tokenfactory.bench.traces import interval_demands


class Oracle(Policy):
    """For every control interval the cheapest mix (within min/max, budget and power) that carries the
    highest demand rate of that interval within the objectives under the same engine model and the
    same routing (:mod:`tokenfactory.bench.capacity`: per-replica SLO capacities measured on the
    simulator); each pool runs the largest count needed in its next start-up delay, so pods are
    launched one start-up delay before they are needed and kept while needed again within one.
    Pods are removed the moment nothing needs them."""

    name = "oracle"

    def __init__(self, caps: dict[str, float], routing: str):
        self.caps = dict(caps)
        self.routing = routing
        self.plan: list[dict[str, int]] = []

    def _schedule(self, run: Run) -> None:
        s = run.setup
        demands = interval_demands(run.trace, run.duration, s.interval, s.dt)
        options = mix_options(s, self.caps, self.routing)
        cache: dict[float, MixOption] = {}
        for d in demands:
            if d not in cache:
                cache[d] = cheapest_carrying(options, d)
        need = [cache[d].mix for d in demands]
        short = sum(1 for d in demands if cache[d].carries < d - 1e-9)
        n = len(need)
        ahead = {p.name: int(math.ceil(p.startup_seconds / s.interval)) for p in s.profiles}
        self.plan = [{p: max(need[j][p] for j in range(k, min(n, k + ahead[p] + 1))) for p in need[k]}
                     for k in range(n)]
        caps = ", ".join(f"{p} {c:,.0f}" for p, c in self.caps.items())
        self.note = (f"per-replica SLO capacity (tok/s) {caps}; routing {self.routing}"
                     + (f"; no mix carries the demand in {short} of {n} intervals" if short else ""))

    def initial(self, run: Run) -> dict[str, int]:
        self._schedule(run)
        return dict(self.plan[0])

    def decide(self, run: Run) -> dict[str, int] | None:
        k = int(round(run.now / run.setup.interval))
        return dict(self.plan[k]) if k < len(self.plan) else None
