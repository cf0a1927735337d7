"""The operator against the real local control plane: CRD, reconcile, validation, updates, GC, crash recovery."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from harness import CRD, EXAMPLE, Operator, wait_for

NAME = "deepseek-r1"


@pytest.fixture(scope="session")
def crd(kubectl):
    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for", "condition=Established", "crd/tokenfactories.tokenfactory.dev", "--timeout=60s")
    return CRD


@pytest.fixture
def operator_proc(cluster, kubectl, crd, namespace, tmp_path):
    op = Operator(cluster.kubeconfig, tmp_path, namespaces=[namespace])
    yield op
    # delete the factories while the operator still runs, so its finalizer is released
    kubectl.run("delete", "tokenfactories", "--all", "-n", namespace, "--timeout=30s")
    op.stop()


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def tf(kubectl, ns, name=NAME) -> dict:
    return kubectl.json("get", "tokenfactory", name, "-n", ns)


def condition(obj, type_):
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def deployments(kubectl, ns) -> dict[str, dict]:
    items = kubectl.json("get", "deployments", "-n", ns, "-l", f"tokenfactory.dev/factory={NAME}")["items"]
    return {d["metadata"]["name"]: d for d in items}


def ready_factory(kubectl, ns):
    obj = tf(kubectl, ns)
    ok = (condition(obj, "Ready").get("status") == "True"
          and obj["status"].get("observedGeneration") == obj["metadata"]["generation"])
    return obj if ok else None


def test_crd_installs_and_explains(kubectl, crd):
    out = kubectl("explain", "tokenfactory.spec.pools")
    assert "GPU node pools that serve the model" in out
    assert "gpusPerReplica" in out and "pricePerGpuHour" in out
    out = kubectl("explain", "tokenfactory.spec.pools.pricePerGpuHour")
    assert "dollars per GPU-hour" in out


def test_example_reconciles_onto_its_pools(kubectl, namespace, operator_proc):
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    obj = wait_for(lambda: ready_factory(kubectl, namespace), 90, "TokenFactory Ready=True")
    deps = deployments(kubectl, namespace)
    assert sorted(deps) == [f"{NAME}-gb300", f"{NAME}-h200"]
    for d in deps.values():
        (ref,) = d["metadata"]["ownerReferences"]
        assert ref["kind"] == "TokenFactory" and ref["uid"] == obj["metadata"]["uid"] and ref["controller"] is True
    svc = kubectl.json("get", "service", NAME, "-n", namespace)
    assert svc["spec"]["ports"][0]["name"] == "http"

    pods = kubectl.json("get", "pods", "-n", namespace, "-l", f"tokenfactory.dev/factory={NAME}")["items"]
    assert len(pods) == 2
    nodes = {n["metadata"]["name"]: n for n in kubectl.json("get", "nodes")["items"]}
    for pod in pods:
        pool = pod["metadata"]["labels"]["tokenfactory.dev/pool"]
        node = nodes[pod["spec"]["nodeName"]]
        assert node["metadata"]["labels"]["tokenfactory.dev/node-pool"] == pool, "pod placed off its pool"
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
    assert obj["status"]["replicas"] == "2/2" and obj["status"]["gpus"] == 12

    table = kubectl("get", "tf", "-n", namespace)
    header = table.splitlines()[0].split()
    assert header[:7] == ["NAME", "MODEL", "REPLICAS", "TOK/S", "$/MTOK", "$/H", "READY"]
    row = table.splitlines()[1].split()
    assert row[:3] == [NAME, "deepseek-ai/DeepSeek-R1", "2/2"] and "True" in row

    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=TokenFactory")["items"]
    assert {e["reason"] for e in events} >= {"Created"}


BAD_SPECS = [
    ("no pools", lambda s: s.update(pools=[]), "spec.pools"),
    ("pools missing", lambda s: s.pop("pools"), "spec.pools: Required value"),
    ("min > max", lambda s: s["pools"][0].update(minReplicas=5, maxReplicas=2), "minReplicas must be less than or equal to maxReplicas"),
    ("negative price", lambda s: s["pools"][0].update(pricePerGpuHour=-1.0), "spec.pools[0].pricePerGpuHour"),
    ("zero price", lambda s: s["pools"][1].update(pricePerGpuHour=0), "spec.pools[1].pricePerGpuHour"),
    ("duplicate pool names", lambda s: s["pools"][1].update(name="gb300"), "Duplicate value"),
    ("bad mode enum", lambda s: s["scaling"].update(mode="Sometimes"), 'supported values: "Auto", "Recommend", "Off"'),
    ("bad token accounting", lambda s: s["metrics"].update(tokenAccounting="input"), "spec.metrics.tokenAccounting"),
    ("replicas as text", lambda s: s["pools"][0].update(maxReplicas="many"), "spec.pools[0].maxReplicas: Invalid value"),
    ("gpus over bound", lambda s: s["pools"][0].update(gpusPerReplica=0), "spec.pools[0].gpusPerReplica"),
    ("bad duration", lambda s: s["scaling"].update(interval="every minute"), "spec.scaling.interval"),
    ("model name missing", lambda s: s["model"].pop("name"), "spec.model.name: Required value"),
    ("price and capex", lambda s: s["pools"][0].update(capexPerGpu=30000, amortizationYears=4, dollarsPerKwh=0.1),
     "set either pricePerGpuHour (cloud) or capexPerGpu"),
    ("bad pool name", lambda s: s["pools"][0].update(name="GB300_pool"), "spec.pools[0].name"),
]


def test_invalid_specs_are_rejected_by_the_apiserver(kubectl, namespace, crd):
    seen = set()
    for label, mutate, expected in BAD_SPECS:
        doc = example()
        doc["metadata"]["name"] = "bad"
        mutate(doc["spec"])
        res = kubectl.run("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
        assert res.returncode != 0, f"{label}: accepted"
        assert expected in res.stderr, f"{label}: {res.stderr}"
        assert "is invalid" in res.stderr or "Invalid value" in res.stderr, f"{label}: {res.stderr}"
        seen.add(res.stderr)
    assert len(seen) == len(BAD_SPECS)  # distinct, readable messages
    assert kubectl.json("get", "tokenfactories", "-n", namespace)["items"] == []
    assert kubectl.json("get", "deployments", "-n", namespace)["items"] == []


def test_update_remove_restore_and_garbage_collect(kubectl, namespace, operator_proc):
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    wait_for(lambda: ready_factory(kubectl, namespace), 90, "Ready")

    # a spec change rolls the Deployments
    doc = example()
    doc["spec"]["model"]["maxModelLen"] = 16384
    doc["spec"]["engine"]["extraArgs"] = ["--enable-expert-parallel"]
    kubectl.apply(doc, namespace)

    def rolled():
        deps = deployments(kubectl, namespace)
        args = [d["spec"]["template"]["spec"]["containers"][0]["args"] for d in deps.values()]
        return len(args) == 2 and all(a[a.index("--max-model-len") + 1] == "16384" and a[-1] == "--enable-expert-parallel"
                                      for a in args)

    wait_for(rolled, 60, "new vLLM args on both Deployments")
    wait_for(lambda: ready_factory(kubectl, namespace), 90, "Ready after the roll")

    # removing a pool deletes its Deployment
    doc["spec"]["pools"] = [p for p in doc["spec"]["pools"] if p["name"] == "gb300"]
    kubectl.apply(doc, namespace)
    wait_for(lambda: sorted(deployments(kubectl, namespace)) == [f"{NAME}-gb300"], 60, "h200 Deployment deleted")
    obj = wait_for(lambda: ready_factory(kubectl, namespace), 60, "Ready with one pool")
    assert [p["name"] for p in obj["status"]["pools"]] == ["gb300"]

    # a child deleted by hand comes back; a hand edit of a field the operator owns is undone
    kubectl("delete", "deployment", f"{NAME}-gb300", "-n", namespace, "--wait=false")
    wait_for(lambda: (deployments(kubectl, namespace).get(f"{NAME}-gb300", {}).get("metadata", {}).get("deletionTimestamp") is None
                      and f"{NAME}-gb300" in deployments(kubectl, namespace)), 60, "deleted Deployment recreated")
    kubectl("patch", "deployment", f"{NAME}-gb300", "-n", namespace, "--type", "json", "-p",
            json.dumps([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "attacker/vllm:latest"}]))
    wait_for(lambda: deployments(kubectl, namespace)[f"{NAME}-gb300"]["spec"]["template"]["spec"]["containers"][0]["image"]
             == "vllm/vllm-openai:v0.11.0", 60, "hand-edited image restored")

    # deleting the TokenFactory garbage-collects everything it owns
    kubectl("delete", "tokenfactory", NAME, "-n", namespace, "--timeout=60s")
    wait_for(lambda: not deployments(kubectl, namespace), 90, "Deployments garbage-collected")
    wait_for(lambda: kubectl.run("get", "service", NAME, "-n", namespace).returncode != 0, 60, "Service garbage-collected")
    wait_for(lambda: not kubectl.json("get", "pods", "-n", namespace)["items"], 90, "pods gone")


def test_bad_spec_in_cluster_sets_degraded_without_crash(kubectl, namespace, operator_proc):
    doc = example()
    doc["spec"]["pools"][1].update(gpuType="mi355x")
    del doc["spec"]["pools"][1]["pricePerGpuHour"]
    kubectl.apply(doc, namespace)
    obj = wait_for(lambda: (o := tf(kubectl, namespace)) and condition(o, "Degraded").get("status") == "True" and o, 60,
                   "Degraded=True")
    assert condition(obj, "Degraded")["reason"] == "InvalidSpec"
    assert "spec.pools[1].pricePerGpuHour" in condition(obj, "Degraded")["message"]
    assert deployments(kubectl, namespace) == {}
    assert operator_proc.alive()
    fixed = copy.deepcopy(doc)
    fixed["spec"]["pools"][1].update(gpuType="h200")
    kubectl.apply(fixed, namespace)
    wait_for(lambda: ready_factory(kubectl, namespace), 90, "Ready once fixed")


def test_killed_operator_converges_without_duplicates(cluster, kubectl, namespace, crd, tmp_path):
    op = Operator(cluster.kubeconfig, tmp_path, namespaces=[namespace])
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    wait_for(lambda: deployments(kubectl, namespace), 60, "the first child")  # mid-reconcile: children appearing
    op.kill()
    doc = example()
    doc["spec"]["pools"][1]["minReplicas"] = 2  # the spec moves on while nobody is watching
    kubectl.apply(doc, namespace)
    op2 = Operator(cluster.kubeconfig, tmp_path, namespaces=[namespace])
    try:
        obj = wait_for(lambda: (o := ready_factory(kubectl, namespace)) and o["status"]["replicas"] == "3/3" and o, 90,
                       "converged after restart")
        assert obj["status"]["observedGeneration"] == 2
        assert sorted(deployments(kubectl, namespace)) == [f"{NAME}-gb300", f"{NAME}-h200"]
        rs = kubectl.json("get", "replicasets", "-n", namespace)["items"]
        assert len(rs) == 2, [r["metadata"]["name"] for r in rs]  # no duplicate rollouts
        pods = kubectl.json("get", "pods", "-n", namespace)["items"]
        assert len(pods) == 3
    finally:
        kubectl.run("delete", "tokenfactories", "--all", "-n", namespace, "--timeout=30s")
        op2.stop()
