"""pipeline.inputs.planner_inputs: the one mapping from a spec + metrics to the planner's inputs."""

from __future__ import annotations

import pytest

from tokenfactory import api, planner
from tokenfactory.metrics_source import FactoryMetrics, PoolMetrics
from tokenfactory.pipeline import planner_config, planner_inputs


@pytest.fixture
def spec(two_pool_example):
    doc = two_pool_example["spec"]
    doc["scaling"].update(interval="2m", scaleDownStabilization="10m", headroom=0.3)
    doc["metrics"]["tokenAccounting"] = "total"
    doc["objectives"].update(maxDollarsPerHour=500.0, maxMegawatts=2.0)
    return api.parse_spec(doc)


def metrics():
    return FactoryMetrics(namespace="llm", factory="tf", window_seconds=120, sampled_at=1000.0, pools={
        "gb300": PoolMetrics(pool="gb300", generation_tokens_per_second=20_000.0, prompt_tokens_per_second=10_000.0,
                             requests_waiting=30.0, requests_per_second=40.0, ttft_p95_seconds=0.5),
    })


def test_spec_and_metrics_map_to_planner_inputs(spec):
    got = planner_inputs(spec, metrics(), current={"gb300": 2, "h200": 1}, ready={"gb300": 2, "h200": 0})
    by_name = {p.name: p for p in got.pools}
    gb = next(rp for rp in spec.resolve_pools() if rp.name == "gb300")
    assert by_name["gb300"].capacity == gb.tokens_per_second_per_gpu * gb.gpus_per_replica
    assert by_name["gb300"].price_per_replica_hour == gb.price_per_gpu_hour * gb.gpus_per_replica
    assert got.current == {"gb300": 2, "h200": 1} and got.headroom == 0.3
    assert got.objectives.max_dollars_per_hour == 500.0 and got.objectives.max_megawatts == 2.0
    assert got.config.scale_down_stabilization_seconds == 600 and got.config.max_metrics_age_seconds == 360
    obs = got.observations
    assert obs is not None and obs.observed_at == 1000.0
    assert obs.pools["gb300"].tokens_per_second == 30_000.0  # total accounting: prompt + generation
    assert obs.pools["gb300"].ready_replicas == 2
    assert obs.tokens_per_request == pytest.approx(30_000 / 40)
    assert got.metrics_unavailable_reason == "no metrics"


def test_no_metrics_names_the_reason_and_config_can_be_overridden(spec):
    cfg = planner.PlannerConfig(scale_down_stabilization_seconds=1.0)
    got = planner_inputs(spec, None, current={}, ready={}, metrics_problem="PrometheusUnreachable", config=cfg)
    assert got.observations is None and got.config is cfg
    assert got.metrics_unavailable_reason == "metrics unavailable (PrometheusUnreachable)"


def test_default_config_is_at_least_three_minutes_of_metrics(two_pool_example):
    cfg = planner_config(api.parse_spec(two_pool_example["spec"]))
    assert cfg.max_metrics_age_seconds == 180.0
