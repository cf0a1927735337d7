"""The example factory as the operator resolves it, and the one place the benchmark maps a spec +
metrics to planner inputs (:func:`planner_inputs`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tokenfactory import api, planner, routing
from tokenfactory.metrics_source import FactoryMetrics, MetricsUnavailable
from tokenfactory.pipeline.inputs import planner_config as operator_planner_config
from tokenfactory.pipeline.inputs import planner_inputs as operator_planner_inputs

ROOT = Path(__file__).resolve().parents[3]  # the checkout: operator/tokenfactory/bench/scenario.py
# The standard scenario: the factory as it should be deployed (GB300 + H200 behind a capacity-weighted HTTPRoute,
# routing.mode HTTPRoute; one Service over both pools would split requests evenly and drown H200).
EXAMPLE = ROOT / "deploy/examples/deepseek-r1-httproute.yaml"
NAMESPACE = "bench"


@dataclass
class Setup:
    factory: str
    spec: api.TokenFactorySpec
    resolved: list  # api.ResolvedPool
    profiles: tuple[planner.PoolProfile, ...]
    objectives: planner.Objectives
    interval: float  # control interval, s
    window: float  # metrics window, s
    headroom: float | None  # spec.scaling.headroom: an optional floor under SLO planning (None: none)
    stabilization: float
    accounting: str
    dt: float  # simulator step, s
    routing: str = "Service"  # spec.routing.mode: how requests reach the pods (as rendered)

    @property
    def by_name(self) -> dict[str, planner.PoolProfile]:
        return {p.name: p for p in self.profiles}

    def price(self, pool: str) -> float:
        return self.by_name[pool].price_per_replica_hour

    def capacity(self, mix: dict[str, int]) -> float:
        return sum(self.by_name[n].capacity * v for n, v in mix.items())

    def dollars_per_hour(self, mix: dict[str, int]) -> float:
        return sum(self.by_name[n].price_per_replica_hour * v for n, v in mix.items())

    def minimums(self) -> dict[str, int]:
        return {p.name: p.min_replicas for p in self.profiles}

    def planner_config(self) -> planner.PlannerConfig:
        """Exactly what the operator passes (no tuning)."""
        return operator_planner_config(self.spec)


def load_setup(path: Path = EXAMPLE, startup_seconds: float | None = None, dt: float = 10.0,
               headroom: float | None = None) -> Setup:
    """Parse the example with tokenfactory.api; ``startup_seconds`` overrides every pool's
    (as ``spec.pools[].startupSeconds`` would), None keeps the sheet's; ``headroom`` overrides
    ``spec.scaling.headroom`` (what the operator passes to the planner), None keeps the example's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--example: no TokenFactory YAML at {path} (the default is the checkout's "
                                f"deploy/examples/deepseek-r1-httproute.yaml; pass --example FILE)")
    doc = yaml.safe_load(path.read_text())
    if headroom is not None:
        doc["spec"]["scaling"]["headroom"] = headroom
    if startup_seconds is not None:
        for p in doc["spec"]["pools"]:
            p["startupSeconds"] = startup_seconds
    obj = api.parse_object(doc)
    spec = obj.spec
    resolved = spec.resolve_pools()
    interval = api.parse_duration(spec.scaling.interval)
    if interval % dt:
        raise ValueError(f"control interval {interval}s must be a multiple of the simulator step {dt}s")
    return Setup(
        factory=doc["metadata"]["name"],
        spec=spec, resolved=resolved,
        profiles=tuple(planner.PoolProfile.from_resolved(rp) for rp in resolved),
        objectives=planner.Objectives.from_spec(spec.objectives),
        interval=interval, window=api.parse_duration(spec.metrics.window),
        headroom=spec.scaling.headroom, stabilization=api.parse_duration(spec.scaling.scale_down_stabilization),
        accounting=spec.metrics.token_accounting, dt=dt,
        routing=str(getattr(getattr(spec, "routing", None), "mode", None) or "Service"),
    )


# ============================================================================================
# The spec + metrics -> planner inputs mapping (issue 11 item 1 / issue 16 item 8): the operator's own
# function (tokenfactory.pipeline.inputs.planner_inputs), called here and nowhere else in the benchmark.
# ============================================================================================


def planner_inputs(setup: Setup, current: dict[str, int], ready: dict[str, int], fm: FactoryMetrics | None,
                   problem: MetricsUnavailable | None, config: planner.PlannerConfig | None = None
                   ) -> planner.PlannerInputs:
    """What the operator passes to ``planner.decide`` for this spec, these replicas and these metrics
    (``config`` overrides the spec's PlannerConfig for what-ifs)."""
    return operator_planner_inputs(setup.spec, fm, current=current, ready=ready, pools=setup.resolved,
                                   metrics_problem=problem.reason if problem else None, config=config)


# ============================================================================================
# HTTPRoute weights as the operator sets them (tokenfactory.routing.weights): each pool's ready replicas x
# capacity per replica (here the profile's; the operator uses the planner's learned figure once it has one).
# ============================================================================================


def route_weights(setup: Setup, ready: dict[str, int]) -> dict[str, int]:
    return routing.weights([routing.PoolCapacity(p.name, ready.get(p.name, 0), p.capacity) for p in setup.profiles])
