"""No traffic is not "no metrics", on the real control plane + real Prometheus + the simulator.

The simulator runs with ``--lazy-counters``: engines expose vLLM's gauges (``vllm:num_requests_running``
...) but no token counters until they serve a token, as a freshly started, idle vLLM. The operator
must read that as demand 0 (MetricsAvailable=True, tokenfactory_metrics_up 1) and may plan down to
minReplicas. With no engine reporting at all (the simulator not scraped) it must hold (NoSeries).
"""

from __future__ import annotations

import time

import pytest

from harness import Stack, example_doc, wait_for

SCALING = {"mode": "Auto", "interval": "2s", "scaleDownStabilization": "10s", "headroom": 0.2}


def spec(h200_min: int) -> dict:
    doc = example_doc(scaling=SCALING, metrics={"window": "10s"})
    for pool in doc["spec"]["pools"]:
        pool["startupSeconds"] = 0
        if pool["name"] == "h200":
            pool["minReplicas"] = h200_min
    return doc


@pytest.fixture
def stack(cluster, kubectl, prometheus, namespace, tmp_path):
    s = Stack(cluster, kubectl, prometheus, namespace, tmp_path, trace="constant:0",
              sim_args=["--lazy-counters", "--window", "10", "--tick", "0.5"])
    yield s
    s.close()


def metrics_up(stack: Stack) -> float | None:
    for line in stack.operator.exposition().splitlines():
        if line.startswith("tokenfactory_metrics_up{") and f'namespace="{stack.namespace}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_idle_fleet_is_demand_zero_and_scales_to_min(stack, kubectl, prometheus, namespace):
    kubectl.apply(spec(h200_min=2), namespace)
    sel = f'{{namespace="{namespace}",factory="deepseek-r1"}}'
    # the engines report their gauges, and Prometheus holds no token counter of this factory
    wait_for(lambda: len(prometheus.query(f"vllm:num_requests_running{sel}")) == 3, 60, "3 engines reporting gauges")
    assert prometheus.query(f"vllm:generation_tokens_total{sel}") == []
    assert prometheus.query(f"vllm:prompt_tokens_total{sel}") == []

    wait_for(lambda: stack.condition("MetricsAvailable").get("status") == "True", 60, "MetricsAvailable=True")
    status = stack.tf()["status"]
    assert status["tokensPerSecond"] == 0 and status.get("costPerMillionTokens") is None
    assert stack.condition("MetricsAvailable")["reason"] == "MetricsRead"
    wait_for(lambda: metrics_up(stack) == 1.0, 30, "tokenfactory_metrics_up 1")

    # minReplicas lowered: with demand 0 the planner takes h200 down to its new minimum
    assert stack.replicas("h200") == 2
    kubectl.apply(spec(h200_min=1), namespace)
    wait_for(lambda: stack.replicas("h200") == 1, 90, "h200 scaled down to minReplicas 1 at zero demand")
    assert stack.replicas("gb300") == 1
    decision = stack.tf()["status"]["lastDecision"]
    assert decision["applied"] and decision["demandTokensPerSecond"] == 0
    assert stack.condition("MetricsAvailable")["status"] == "True"


def test_no_engine_reports_holds(stack, kubectl, prometheus, namespace):
    # only the operator is scraped: no vLLM series of this factory at all
    prometheus.set_targets([("tokenfactory-operator", f"127.0.0.1:{stack.operator.metrics_port}", False)])
    kubectl.apply(spec(h200_min=2), namespace)
    wait_for(lambda: stack.condition("MetricsAvailable").get("reason") == "NoSeries", 60, "MetricsAvailable=False NoSeries")
    assert stack.condition("MetricsAvailable")["status"] == "False"
    wait_for(lambda: metrics_up(stack) == 0.0, 30, "tokenfactory_metrics_up 0")
    kubectl.apply(spec(h200_min=1), namespace)
    # hold: past the stabilization window (10 s) and several intervals (2 s), replicas are unchanged
    time.sleep(20)
    assert stack.replicas("h200") == 2
    assert stack.condition("MetricsAvailable")["reason"] == "NoSeries"
    assert any(e["reason"] == "MetricsUnavailable" for e in stack.events())
