"""tokenfactory: the real planner, fed as the operator feeds it."""

from __future__ import annotations

from tokenfactory import planner
from tokenfactory.bench.policies.base import Policy, warm_mix
from tokenfactory.bench.run import Run
from tokenfactory.bench.scenario import NAMESPACE, planner_inputs
from tokenfactory.metrics_source import MetricsUnavailable


class TokenFactory(Policy):
    """The real planner: ``planner.decide`` fed each interval as the operator feeds it (scenario.planner_inputs calls
    the operator's own tokenfactory.pipeline.inputs.planner_inputs): metrics from
    ``FleetMetricsSource`` (the simulator's own figures over the factory's 2 m metrics window, i.e.
    what the Prometheus queries return), ready replicas = serving engines, current = the replicas
    the Deployments ask for, PlannerConfig and headroom from the spec; Auto mode applies the plan."""

    name = "tokenfactory"

    def __init__(self, config: planner.PlannerConfig | None = None):
        self.config = config
        self.state: planner.PlannerState | None = None
        self.holds = 0

    def initial(self, run: Run) -> dict[str, int]:
        return warm_mix(run.setup, run.trace(0.0).output_tokens_per_second)

    def decide(self, run: Run) -> dict[str, int] | None:
        s = run.setup
        try:
            fm = run.source.read(NAMESPACE, s.factory, s.window)
            problem = None
        except MetricsUnavailable as err:
            fm, problem = None, err
        if fm is not None:  # what rate(vllm:request_success_total[window]) gives the operator
            fm = run.with_request_rates(fm)
        inputs = planner_inputs(s, run.replicas(), run.ready(), fm, problem, self.config)
        plan, self.state = planner.decide(self.state, inputs, run.now)
        if plan.holding:
            self.holds += 1
        if plan.changes and not plan.holding:
            return dict(plan.replicas)
        return None

