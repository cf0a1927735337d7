"""static_peak: the cheapest single pool type provisioned for the trace's peak."""

from __future__ import annotations

import math

from tokenfactory.bench.policies.base import Policy
from tokenfactory.bench.run import Run
from tokenfactory.bench.traces import peak as trace_peak


class StaticPeak(Policy):
    """The cheapest single pool type that carries the trace's peak alone; the other pools stay at their
    minReplicas. When no pool carries the peak within maxReplicas, the pool that carries the most."""

    name = "static_peak"

    def initial(self, run: Run) -> dict[str, int]:
        s = run.setup
        peak = trace_peak(run.trace, run.duration, s.dt)
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

