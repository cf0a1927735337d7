"""The one mapping from a TokenFactory spec plus live metrics to the planner's inputs.

The operator (``pipeline.plan``) and the autoscaling benchmark (``bench/``) both call
:func:`planner_inputs`, so the benchmark scores exactly what the operator would decide.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tokenfactory import api, planner
from tokenfactory.metrics_source import FactoryMetrics
from tokenfactory.planner.forecast import ForecastConfig, ForecastErrors


def planner_config(spec: api.TokenFactorySpec) -> planner.PlannerConfig:
    """The planner's pacing from ``spec.scaling``: scale-down stabilization, and metrics older than
    3 intervals (at least 180 s) count as missing; the forecast error band knows the window the rates
    are counted over (``spec.metrics.window``: its Poisson noise is the latency-safe loads' part, not
    the forecast's)."""
    return planner.PlannerConfig(
        scale_down_stabilization_seconds=api.parse_duration(spec.scaling.scale_down_stabilization),
        max_metrics_age_seconds=max(180.0, 3 * api.parse_duration(spec.scaling.interval)),
        forecast=ForecastErrors(ForecastConfig(rate_window_seconds=api.parse_duration(spec.metrics.window))),
    )


def planner_routing(spec: api.TokenFactorySpec) -> str:
    """How requests reach the pods as rendered, for the planner: ``even`` for one Service over every pool
    (kube-proxy: the same share per ready pod), ``weighted`` for a route weighted by the plan's capacity
    per replica or a load-aware endpoint picker. A spec without ``routing`` renders no weighted route and
    is planned as ``weighted``. Not passed to the planner yet: under one Service a GB300 + H200 mix is
    planned at the H200's per-replica load for every replica (the truth of an even split), which changes
    what the Service-mode e2e tests expect; see docs/planner.md."""
    routing = getattr(spec, "routing", None)
    if routing is None:
        return "weighted"
    return "even" if getattr(routing, "mode", "Service") == "Service" else "weighted"


def planner_inputs(
    spec: api.TokenFactorySpec,
    metrics: FactoryMetrics | None,
    *,
    current: Mapping[str, int],
    ready: Mapping[str, int],
    pools: Sequence[api.ResolvedPool] | None = None,
    metrics_problem: str | None = None,
    config: planner.PlannerConfig | None = None,
) -> planner.PlannerInputs:
    """What ``planner.decide`` gets for one interval of one factory.

    - ``spec``: the parsed spec (pools, objectives incl. ``sloAttainment``, ``scaling.headroom`` (an optional
      floor), ``metrics.tokenAccounting``).
    - ``metrics``: the factory's figures over ``spec.metrics.window``, or None when they could not be
      read (the planner then holds; ``metrics_problem``, a short reason such as ``PrometheusUnreachable``,
      says why in the plan's text).
    - ``current``: replicas each pool runs now (what the Deployments ask for); ``ready``: ready replicas
      per pool (the planner's capacity learning divides delivered tokens by them).
    - ``pools``: the spec's pools already resolved (``spec.resolve_pools()``), to avoid resolving twice.
    - ``config``: overrides :func:`planner_config` (benchmarks tune it; the operator never does).

    Waiting requests become backlog tokens at the measured tokens per completed request (None when
    nothing completed in the window: the planner then uses its default).
    """
    resolved = spec.resolve_pools() if pools is None else pools
    accounting = spec.metrics.token_accounting
    observations = None
    if metrics is not None:
        observations = planner.Observations.from_factory_metrics(
            metrics, dict(ready), accounting, tokens_per_request=metrics.tokens_per_request(accounting))
    return planner.PlannerInputs(
        pools=tuple(planner.PoolProfile.from_resolved(rp) for rp in resolved),
        current=dict(current),
        observations=observations,
        objectives=planner.Objectives.from_spec(spec.objectives),
        headroom=spec.scaling.headroom,
        slo_attainment=spec.objectives.slo_attainment,
        config=config if config is not None else planner_config(spec),
        metrics_unavailable_reason=f"metrics unavailable ({metrics_problem})" if metrics_problem else "no metrics",
    )
