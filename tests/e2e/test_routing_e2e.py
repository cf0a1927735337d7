"""spec.routing against the real control plane, with the Gateway API and Inference Extension CRDs installed by
`cluster up` from their Go modules (so the apiserver validates every HTTPRoute and InferencePool the operator
writes): the route's parentRefs and weights, weights following a scale-up, hand edits undone, mode switches that
clean up only what the factory owns, and a cluster without the Gateway API CRDs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from harness import CRD, Operator, wait_for
from tokenfactory.localcluster import binaries

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "deepseek-r1-httproute.yaml"
NAME = "deepseek-r1"
HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"


@pytest.fixture(scope="module")
def crd(kubectl):
    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for", "condition=Established", "crd/tokenfactories.tokenfactory.dev", "--timeout=60s")
    for name in (HTTPROUTE_CRD, "inferencepools.inference.networking.k8s.io"):
        assert kubectl.run("get", "crd", name).returncode == 0, f"cluster up did not install {name}"
    return CRD


@pytest.fixture
def operator_proc(cluster, kubectl, crd, namespace, tmp_path):
    op = Operator(cluster.kubeconfig, tmp_path, namespaces=[namespace])
    yield op
    kubectl.run("delete", "tokenfactories", "--all", "-n", namespace, "--timeout=30s")
    op.stop()


def factory_doc(**routing_spec) -> dict:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["scaling"]["mode"] = "Off"  # replicas move only by spec edits here; no metrics needed
    if routing_spec:
        doc["spec"]["routing"] = routing_spec
    return doc


def tf(kubectl, ns) -> dict:
    return kubectl.json("get", "tokenfactory", NAME, "-n", ns)


def condition(obj, type_) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def route_weights(kubectl, ns) -> dict[str, int] | None:
    res = kubectl.run("get", "httproute", NAME, "-n", ns, "-o", "json")
    if res.returncode != 0:
        return None
    route = json.loads(res.stdout)
    return {b["name"]: b.get("weight") for b in route["spec"]["rules"][0]["backendRefs"]}


def names(kubectl, kind, ns) -> list[str]:
    return sorted(o["metadata"]["name"] for o in kubectl.json("get", kind, "-n", ns)["items"])


def gateway(ns: str) -> dict:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "inference-gateway", "namespace": ns},
            "spec": {"gatewayClassName": "example", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}}


def test_httproute_weights_follow_ready_capacity_and_hand_edits_are_undone(kubectl, namespace, operator_proc):
    kubectl.apply(gateway(namespace), namespace)
    kubectl.apply(factory_doc(), namespace)
    # 1 gb300 replica (4 GPUs x 6,000 tok/s) and 1 h200 replica (8 x 90): 24,000 : 720 -> 971 : 29
    want = {f"{NAME}-gb300": 971, f"{NAME}-h200": 29}
    wait_for(lambda: route_weights(kubectl, namespace) == want, 120, f"HTTPRoute weights {want}")
    route = kubectl.json("get", "httproute", NAME, "-n", namespace)
    obj = tf(kubectl, namespace)
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "inference-gateway", "sectionName": "http"}]
    (ref,) = route["metadata"]["ownerReferences"]
    assert ref["uid"] == obj["metadata"]["uid"] and ref["controller"] is True
    # one Service per pool and no shared Service
    assert names(kubectl, "services", namespace) == [f"{NAME}-gb300", f"{NAME}-h200"]
    svc = kubectl.json("get", "service", f"{NAME}-h200", "-n", namespace)
    assert svc["spec"]["selector"]["tokenfactory.dev/pool"] == "h200"

    # status and kubectl get -o wide show the weights
    obj = wait_for(lambda: (o := tf(kubectl, namespace)).get("status", {}).get("routing", {}).get("weights") and o,
                   60, "status.routing.weights")
    assert obj["status"]["routing"]["weights"] == "gb300=971,h200=29"
    assert {p["name"]: p["routeWeight"] for p in obj["status"]["pools"]} == {"gb300": 971, "h200": 29}
    assert (condition(obj, "Routed")["status"], condition(obj, "Routed")["reason"]) == ("True", "WeightsApplied")
    header, row = kubectl("get", "tf", "-n", namespace, "-o", "wide").splitlines()[:2]

    def column(title: str) -> str:  # kubectl leaves empty cells blank: cut the row at the header's offsets
        start = header.index(title)
        nxt = [header.index(t, start + 1) for t in header[start:].split()[1:2]]
        return row[start:nxt[0] if nxt else None].strip()

    assert column("ROUTING") == "HTTPRoute" and column("WEIGHTS") == "gb300=971,h200=29"

    # scale h200 up to 3 replicas: 24,000 : 2,160 -> 917 : 83 once the new replicas are ready
    doc = factory_doc()
    doc["spec"]["pools"][1]["minReplicas"] = 3
    kubectl.apply(doc, namespace)
    want = {f"{NAME}-gb300": 917, f"{NAME}-h200": 83}
    wait_for(lambda: route_weights(kubectl, namespace) == want, 120, f"HTTPRoute weights after scale-up {want}")
    assert kubectl.json("get", "deployment", f"{NAME}-h200", "-n", namespace)["status"]["readyReplicas"] == 3

    # a hand edit of the weights is undone
    kubectl("patch", "httproute", NAME, "-n", namespace, "--type=json",
            "-p", json.dumps([{"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 1},
                              {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 999}]))
    wait_for(lambda: route_weights(kubectl, namespace) == want, 60, "hand-edited weights restored")
    # a deleted pool Service and a deleted route come back
    kubectl("delete", "service", f"{NAME}-gb300", "-n", namespace)
    kubectl("delete", "httproute", NAME, "-n", namespace)
    wait_for(lambda: route_weights(kubectl, namespace) == want, 60, "deleted HTTPRoute recreated")
    wait_for(lambda: f"{NAME}-gb300" in names(kubectl, "services", namespace), 60, "deleted pool Service recreated")


def test_mode_switches_delete_only_what_the_factory_owns(kubectl, namespace, operator_proc):
    kubectl.apply(factory_doc(), namespace)
    wait_for(lambda: route_weights(kubectl, namespace) == {f"{NAME}-gb300": 971, f"{NAME}-h200": 29}, 120, "HTTPRoute")
    # someone else's route and Service with the factory's labels but no owner reference: never touched
    labels = {"tokenfactory.dev/factory": NAME, "app.kubernetes.io/managed-by": "tokenfactory"}
    foreign_route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                     "metadata": {"name": "hand-made", "namespace": namespace, "labels": labels},
                     "spec": {"parentRefs": [{"name": "inference-gateway"}],
                              "rules": [{"backendRefs": [{"name": f"{NAME}-h200", "port": 8000}]}]}}
    foreign_svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hand-made", "namespace": namespace, "labels": labels},
                   "spec": {"selector": {"tokenfactory.dev/factory": NAME}, "ports": [{"port": 8000}]}}
    kubectl.apply([foreign_route, foreign_svc], namespace)

    # HTTPRoute -> InferencePool: the route and the pool Services go; an InferencePool the apiserver validated comes
    kubectl.apply(factory_doc(mode="InferencePool", endpointPicker={"name": "vllm-epp"}), namespace)

    def switched_to_pool():
        return (names(kubectl, "httproutes", namespace) == ["hand-made"]
                and names(kubectl, "services", namespace) == ["hand-made"]
                and names(kubectl, "inferencepools", namespace) == [NAME])

    wait_for(switched_to_pool, 90, "InferencePool only (plus the hand-made objects)")
    pool = kubectl.json("get", "inferencepool", NAME, "-n", namespace)
    assert pool["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm", "tokenfactory.dev/factory": NAME}
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["endpointPickerRef"]["name"] == "vllm-epp"
    assert pool["spec"]["endpointPickerRef"]["port"] == {"number": 9002}
    obj = wait_for(lambda: (o := tf(kubectl, namespace)) and condition(o, "Routed").get("reason") == "InferencePoolApplied" and o,
                   60, "Routed=InferencePoolApplied")
    assert obj["status"]["routing"]["weights"] == "endpoint-picker"
    assert all("routeWeight" not in p for p in obj["status"]["pools"])

    # InferencePool -> Service: the InferencePool goes, the shared Service comes; one Service over unequal pools warns
    kubectl.apply(factory_doc(mode="Service"), namespace)

    def switched_to_service():
        return (names(kubectl, "inferencepools", namespace) == []
                and names(kubectl, "services", namespace) == sorted(["hand-made", NAME])
                and names(kubectl, "httproutes", namespace) == ["hand-made"])

    wait_for(switched_to_service, 90, "shared Service only (plus the hand-made objects)")
    obj = wait_for(lambda: (o := tf(kubectl, namespace)) and condition(o, "Routed").get("reason") == "UnevenCapacity" and o,
                   60, "Routed reason UnevenCapacity")
    assert "HTTPRoute" in condition(obj, "Routed")["message"]
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=TokenFactory")["items"]
    reasons = {(e["type"], e["reason"]) for e in events}
    assert ("Warning", "UnevenCapacity") in reasons and ("Normal", "Deleted") in reasons
    deleted = {e["message"] for e in events if e["reason"] == "Deleted"}
    assert f"Deleted InferencePool/{NAME}: not used by routing mode Service" in deleted
    assert not any("hand-made" in m for m in deleted)


def test_missing_gateway_api_crds_are_reported_and_nothing_else_breaks(kubectl, namespace, crd, cluster, tmp_path):
    (crd_file,) = [f for f in binaries.crd_files() if f.name == "gateway.networking.k8s.io_httproutes.yaml"]
    kubectl("delete", "crd", HTTPROUTE_CRD, "--timeout=60s")
    wait_for(lambda: kubectl.run("get", "crd", HTTPROUTE_CRD).returncode != 0, 60, "HTTPRoute CRD gone")
    op = Operator(cluster.kubeconfig, tmp_path, namespaces=[namespace])
    try:
        doc = factory_doc()
        doc["spec"]["scaling"]["interval"] = "5s"  # the pass after the CRD returns comes soon
        kubectl.apply(doc, namespace)

        def reported():
            o = tf(kubectl, namespace)
            return o if condition(o, "Routed").get("reason") == "GatewayAPIMissing" and condition(o, "Ready").get("status") == "True" else None

        obj = wait_for(reported, 120, "Routed=False GatewayAPIMissing with Ready=True")
        routed = condition(obj, "Routed")
        assert routed["status"] == "False" and HTTPROUTE_CRD in routed["message"]
        assert condition(obj, "Degraded")["status"] == "False"
        assert obj["status"]["replicas"] == "2/2"
        events = kubectl.json("get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=TokenFactory")["items"]
        warnings = [e for e in events if e["type"] == "Warning" and e["reason"] == "GatewayAPIMissing"]
        assert len(warnings) == 1 and HTTPROUTE_CRD in warnings[0]["message"]
        assert op.alive()
    finally:
        kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", "tokenfactory-cluster", "-f", str(crd_file))
        wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True" for c in
                             (kubectl.json("get", "crd", HTTPROUTE_CRD).get("status") or {}).get("conditions") or []),
                 60, "HTTPRoute CRD Established again")
    try:
        # with the CRD back, the route appears without touching the factory
        wait_for(lambda: route_weights(kubectl, namespace) == {f"{NAME}-gb300": 971, f"{NAME}-h200": 29}, 120,
                 "HTTPRoute after the CRD is back")
        wait_for(lambda: condition(tf(kubectl, namespace), "Routed").get("status") == "True", 60, "Routed=True")
    finally:
        kubectl.run("delete", "tokenfactories", "--all", "-n", namespace, "--timeout=30s")
        op.stop()


def test_routing_fields_are_validated_by_the_apiserver(kubectl, namespace, crd):
    out = kubectl("explain", "tokenfactory.spec.routing")
    assert "HTTPRoute" in out and "InferencePool" in out and "gateway" in out
    for routing_spec, expected in [({"mode": "HTTPRoute"}, "routing.mode HTTPRoute needs routing.gateway"),
                                   ({"mode": "InferencePool"}, "routing.mode InferencePool needs routing.endpointPicker"),
                                   ({"mode": "Ingress"}, "spec.routing.mode"),
                                   ({"mode": "HTTPRoute", "gateway": {"name": "gw; rm -rf /"}}, "spec.routing.gateway.name")]:
        doc = copy.deepcopy(factory_doc())
        doc["metadata"]["name"] = "bad"
        doc["spec"]["routing"] = routing_spec
        res = kubectl.run("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
        assert res.returncode != 0 and expected in res.stderr, res.stderr
