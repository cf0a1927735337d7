"""What every policy is: ``initial(run)`` -> the mix serving at t=0, ``decide(run)`` -> the mix to run now."""

from __future__ import annotations

from tokenfactory import planner
from tokenfactory.bench.run import Run
from tokenfactory.bench.scenario import Setup


class Policy:
    """``initial(run)`` -> the mix already serving at t=0; ``decide(run)`` -> the mix to run now
    (or None: leave it), called every control interval."""

    name = "policy"
    note = ""

    def initial(self, run: Run) -> dict[str, int]:
        raise NotImplementedError

    def decide(self, run: Run) -> dict[str, int] | None:
        return None



def warm_mix(setup: Setup, demand: float) -> dict[str, int]:
    """The mix a running operator would have settled on for ``demand`` (start state of the dynamic
    policies: every one begins warm, from the same mix)."""
    return dict(planner.plan_for_demand(setup.profiles, demand, objectives=setup.objectives,
                                        headroom=setup.headroom or 0.0).replicas)

