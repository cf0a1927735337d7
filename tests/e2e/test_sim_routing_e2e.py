"""The simulator in cluster mode routes as the cluster does: operator + simulator + real Prometheus on the real
control plane, a factory with routing.mode HTTPRoute. The simulator reads spec.routing.mode and the live HTTPRoute
the operator wrote, so the pools' delivered tokens (the vLLM counters Prometheus scrapes) split as the route's
backend weights say (GB300 ~97%), not evenly per pod as one Service would; switching the factory to Service moves
the simulator to the even split."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from harness import Stack, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "deepseek-r1-httproute.yaml"
NAME = "deepseek-r1"
WINDOW = 30  # seconds: the simulator's truth window and the PromQL rate window
DEMAND = 12_000  # output tok/s: 24 req/s of 500 tokens; under both pools' capacity when split by the weights


@pytest.fixture
def stack(cluster, kubectl, prometheus, namespace, tmp_path):
    for crd in ("httproutes.gateway.networking.k8s.io",):
        assert kubectl.run("get", "crd", crd).returncode == 0, f"cluster up did not install {crd}"
    # no --routing: the simulator follows the cluster
    s = Stack(cluster, kubectl, prometheus, namespace, tmp_path, trace=f"constant:{DEMAND}",
              sim_args=["--window", str(WINDOW), "--tick", "0.5"], factory=NAME)
    yield s
    s.close()


def factory_doc(mode: str = "HTTPRoute") -> dict:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["scaling"]["mode"] = "Off"  # one replica per pool throughout
    doc["spec"]["metrics"]["window"] = f"{WINDOW}s"
    if mode != "HTTPRoute":
        doc["spec"]["routing"] = {"mode": mode}
    return doc


def route_weights(kubectl, ns) -> dict[str, int] | None:
    res = kubectl.run("get", "httproute", NAME, "-n", ns, "-o", "json")
    if res.returncode != 0:
        return None
    route = json.loads(res.stdout)
    return {b["name"].removeprefix(f"{NAME}-"): b.get("weight", 1) for b in route["spec"]["rules"][0]["backendRefs"]}


def delivered(prometheus, ns) -> dict[str, float]:
    """Generation tokens/s per pool over the last window, from the scraped vLLM counters."""
    q = f'sum by (pool) (rate(vllm:generation_tokens_total{{namespace="{ns}",factory="{NAME}"}}[{WINDOW}s]))'
    return {s["metric"]["pool"]: float(s["value"][1]) for s in prometheus.query(q)}


def sim_factory(stack: Stack) -> dict:
    return next(f for f in stack.sim.truth()["factories"] if f["namespace"] == stack.namespace and f["factory"] == NAME)


def test_simulator_follows_the_httproute_weights_then_the_service(stack, kubectl, namespace, prometheus):
    kubectl.apply(factory_doc(), namespace)
    # 1 gb300 replica (4 GPUs x 6,000 tok/s) and 1 h200 replica (8 x 90): 971 : 29 from the profiles; the planner's
    # learned capacities may move them later, so every check below reads the live route again.
    wait_for(lambda: (w := route_weights(kubectl, namespace)) and w.get("gb300", 0) > 900 and w, 120,
             "the operator's HTTPRoute with gb300 weighted > 900")
    wait_for(lambda: sim_factory(stack)["routing"] == "HTTPRoute"
             and sim_factory(stack)["route_weights"] == route_weights(kubectl, namespace), 60,
             "the simulator routing by the live HTTPRoute's weights")
    time.sleep(WINDOW + 4)  # a full window of weighted traffic, scraped

    def follows_route():
        before = route_weights(kubectl, namespace)
        got = delivered(prometheus, namespace)
        after = route_weights(kubectl, namespace)
        if not before or before != after or set(got) != {"gb300", "h200"} or sum(got.values()) <= 0:
            return False
        want = before["gb300"] / (before["gb300"] + before["h200"])
        share = got["gb300"] / sum(got.values())
        # at steady state everything demanded is delivered (both pools under capacity at these weights)
        steady = abs(sum(got.values()) / DEMAND - 1) < 0.1
        return (share, want, got) if steady and abs(share - want) < 0.015 else False

    share, want, got = wait_for(follows_route, 120, "delivered tokens per pool split as the route's weights, "
                                "all of the demand delivered", interval=2)
    # unlike the even split, where the H200 replica (720 tok/s) gets half of 12,000 tok/s and GB300 carries at most
    # ~89% of what is delivered
    assert share > 0.95 and want > 0.95
    assert got["h200"] < 720, got

    # the factory switches to one Service: the simulator goes to the even split per pod; the H200 replica is
    # swamped (queue grows) and GB300's share of delivered tokens falls to ~6,000 / 6,720
    kubectl.apply(factory_doc("Service"), namespace)
    wait_for(lambda: sim_factory(stack)["routing"] == "Service", 60, "the simulator routing as one Service")
    wait_for(lambda: route_weights(kubectl, namespace) is None, 60, "the operator deleting its HTTPRoute")
    time.sleep(WINDOW + 4)

    def even_split():
        got = delivered(prometheus, namespace)
        if set(got) != {"gb300", "h200"} or sum(got.values()) <= 0:
            return False
        share = got["gb300"] / sum(got.values())
        return (share, got) if share < 0.92 and abs(got["gb300"] / (DEMAND / 2) - 1) < 0.1 else False

    share_even, got_even = wait_for(even_split, 90, "GB300's share of delivered tokens down to the even split's "
                                    "(half the demand)", interval=2)
    print(f"sim routing e2e: HTTPRoute weights share {want:.3f}, delivered share {share:.3f} {got}; "
          f"Service: delivered share {share_even:.3f} {got_even}")
    h200 = next(p for p in stack.sim.truth()["pools"] if p["namespace"] == namespace and p["pool"] == "h200")
    assert h200["requests_waiting"] > 50, h200  # half of 24 req/s at an engine that finishes ~1.4 req/s
