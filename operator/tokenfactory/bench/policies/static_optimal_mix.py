"""static_optimal_mix: one fixed mix for the whole trace (Melange-style, offline)."""

from __future__ import annotations

from tokenfactory import planner
from tokenfactory.bench.policies.base import Policy
from tokenfactory.bench.run import Run
from tokenfactory.bench.traces import peak as trace_peak


class StaticOptimalMix(Policy):
    """planner.solve once for the trace's peak (Melange-style offline mix), no headroom."""

    name = "static_optimal_mix"

    def initial(self, run: Run) -> dict[str, int]:
        s = run.setup
        peak = trace_peak(run.trace, run.duration, s.dt)
        sol = planner.solve(s.profiles, peak, max_dollars_per_hour=s.objectives.max_dollars_per_hour,
                            max_megawatts=s.objectives.max_megawatts)
        self.note = (f"solve({peak:,.0f} tok/s) -> {sol.replicas}"
                     + ("" if sol.covers_required else f" (cannot cover: limited by {', '.join(sol.limited_by)})"))
        return dict(sol.replicas)

