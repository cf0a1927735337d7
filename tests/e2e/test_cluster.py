"""The local control plane itself: node pools, real scheduling, kwok pod lifecycle, RBAC, garbage
collection, and the Prometheus harness."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tokenfactory.localcluster import wait_until
from tokenfactory.localcluster.cluster import Kubectl, LocalCluster
from tokenfactory.localcluster.procs import free_port

pytestmark = pytest.mark.e2e

GPU = "nvidia.com/gpu"
POOL = "tokenfactory.dev/node-pool"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def gpu_pod(name: str, pool: str | None, gpus: int) -> dict:
    spec: dict = {
        "containers": [{
            "name": "vllm",
            "image": "vllm/vllm-openai:latest",
            "resources": {"requests": {"cpu": "4", "memory": "32Gi", GPU: str(gpus)},
                          "limits": {GPU: str(gpus)}},
        }],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                         "effect": "NoSchedule"}],
    }
    if pool:
        spec["nodeSelector"] = {POOL: pool}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def token_kubeconfig(cluster, token: str, path):
    """A kubeconfig authenticating with a bearer token only (no client certificate)."""
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": cluster.server,
                                               "certificate-authority": str(cluster.ca_file)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def condition(obj: dict, kind: str) -> dict:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == kind), {})


def test_up_again_is_a_no_op(cluster):
    said: list[str] = []
    t0 = time.monotonic()
    info = LocalCluster(cluster.state_dir).up(progress=said.append)
    assert time.monotonic() - t0 < 5
    assert any("already running" in m for m in said), said
    assert info.server == cluster.server


def test_apiserver_is_tls_with_client_certificates(cluster):
    # No client certificate: anonymous auth is off, so the apiserver refuses us.
    ca = ssl.create_default_context(cafile=str(cluster.ca_file))
    r = httpx.get(f"{cluster.server}/api/v1/namespaces", verify=ca)
    assert r.status_code == 401
    # Plain HTTP is refused (Go's TLS server answers 400 to it).
    r = httpx.get(cluster.server.replace("https://", "http://") + "/readyz", timeout=3)
    assert r.status_code == 400 and "HTTPS" in r.text


def test_node_pools(kubectl):
    nodes = kubectl.json("get", "nodes")["items"]
    by_pool: dict[str, list[dict]] = {}
    for n in nodes:
        by_pool.setdefault(n["metadata"]["labels"].get(POOL), []).append(n)
    assert {p: len(ns) for p, ns in by_pool.items()} == {"h200": 24, "gb300": 18, "cpu": 3}
    expect = {"h200": ("NVIDIA-H200", "8"), "gb300": ("NVIDIA-GB300", "4")}
    for pool, (product, gpus) in expect.items():
        for n in by_pool[pool]:
            assert n["metadata"]["labels"]["nvidia.com/gpu.product"] == product
            assert n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
            assert n["status"]["capacity"][GPU] == gpus
            assert n["status"]["allocatable"][GPU] == gpus
            assert GPU_TAINT in n["spec"]["taints"]
    for n in by_pool["cpu"]:
        assert GPU not in n["status"]["capacity"]
        assert not n["spec"].get("taints")
    for n in nodes:
        assert condition(n, "Ready").get("status") == "True", n["metadata"]["name"]
        assert int(n["status"]["allocatable"]["pods"]) >= 110


def test_gpu_pod_is_scheduled_on_gb300_and_becomes_ready(kubectl, namespace):
    kubectl.apply(gpu_pod("four-gpus", "gb300", 4), namespace=namespace)

    def ready():
        pod = kubectl.json("get", "pod", "four-gpus", "-n", namespace)
        return pod if condition(pod, "Ready").get("status") == "True" else None

    pod = wait_until(ready, timeout=30, what="pod four-gpus Ready")
    assert pod["spec"]["nodeName"].startswith("gb300-")
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["podIP"].startswith("10.244.")
    node = kubectl.json("get", "node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-GB300"


def test_pod_without_toleration_does_not_land_on_gpu_nodes(kubectl, namespace):
    pod = gpu_pod("no-toleration", None, 0)
    del pod["spec"]["tolerations"]
    del pod["spec"]["containers"][0]["resources"]
    kubectl.apply(pod, namespace=namespace)
    node = wait_until(
        lambda: kubectl.json("get", "pod", "no-toleration", "-n", namespace)["spec"].get("nodeName"),
        timeout=30, what="pod scheduled")
    assert node.startswith("cpu-")


def test_pod_asking_more_gpus_than_a_node_has_stays_pending(kubectl, namespace):
    kubectl.apply(gpu_pod("sixteen-gpus", "gb300", 16), namespace=namespace)

    def unschedulable():
        pod = kubectl.json("get", "pod", "sixteen-gpus", "-n", namespace)
        c = condition(pod, "PodScheduled")
        return pod if c.get("status") == "False" and c.get("reason") == "Unschedulable" else None

    pod = wait_until(unschedulable, timeout=30, what="PodScheduled=False/Unschedulable")
    assert "Insufficient nvidia.com/gpu" in condition(pod, "PodScheduled")["message"]
    events = wait_until(
        lambda: [e for e in kubectl.json("get", "events", "-n", namespace)["items"]
                 if e["reason"] == "FailedScheduling"
                 and e["involvedObject"]["name"] == "sixteen-gpus"],
        timeout=30, what="FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in events[0]["message"]
    time.sleep(2)
    pod = kubectl.json("get", "pod", "sixteen-gpus", "-n", namespace)
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")


def test_rbac_is_enforced(cluster, kubectl, namespace, tmp_path):
    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    who = f"system:serviceaccount:{namespace}:nobody"
    res = kubectl.run("auth", "can-i", "get", "secrets", "-n", namespace, "--as", who)
    assert res.returncode != 0 and res.stdout.strip() == "no"
    # The admin (O=system:masters) may.
    assert kubectl("auth", "can-i", "get", "secrets", "-n", namespace).strip() == "yes"
    # A real token of that ServiceAccount (TokenRequest, signed with the cluster's SA key)
    # authenticates, and is then refused by RBAC.
    token = kubectl("create", "token", "nobody", "-n", namespace).strip()
    as_sa = Kubectl(token_kubeconfig(cluster, token, tmp_path / "sa.kubeconfig"))
    res = as_sa.run("get", "secrets", "-n", namespace)
    assert res.returncode != 0
    assert "forbidden" in res.stderr.lower() and who in res.stderr
    # Granting a Role makes the same request succeed.
    kubectl("create", "role", "read-secrets", "--verb=get,list", "--resource=secrets",
            "-n", namespace)
    kubectl("create", "rolebinding", "nobody-reads", "--role=read-secrets",
            f"--serviceaccount={namespace}:nobody", "-n", namespace)
    wait_until(lambda: as_sa.run("get", "secrets", "-n", namespace).returncode == 0,
               timeout=15, what="RBAC grant to take effect")


def test_deployment_pods_are_garbage_collected(kubectl, namespace):
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx",
                                         "resources": {"requests": {"cpu": "1"}}}],
                         "nodeSelector": {POOL: "cpu"}},
            },
        },
    }
    kubectl.apply(deployment, namespace=namespace)
    wait_until(
        lambda: kubectl.json("get", "deployment", "web", "-n", namespace)["status"]
        .get("readyReplicas") == 3,
        timeout=60, what="3 ready replicas")
    assert len(kubectl.json("get", "replicasets", "-n", namespace, "-l", "app=web")["items"]) == 1
    kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false")
    wait_until(
        lambda: not kubectl.json("get", "pods,replicasets", "-n", namespace, "-l", "app=web")["items"],
        timeout=60, what="the garbage collector to delete the ReplicaSet and its pods")


def test_prometheus_scrapes_stops_and_restarts(prometheus):
    registry = CollectorRegistry()
    gauge = Gauge("tf_e2e_probe", "probe for the harness test", ["job"], registry=registry)
    gauge.labels(job="from-target").set(42)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus.set_targets([("probe", f"127.0.0.1:{port}", True)])
        prometheus.wait_targets_up(["probe"], timeout=30)
        # honor_labels keeps the target's own `job` label.
        result = wait_until(lambda: prometheus.query('tf_e2e_probe{job="from-target"}'),
                            timeout=20, what="probe sample")
        assert float(result[0]["value"][1]) == 42
        url = prometheus.url

        prometheus.stop()
        assert not prometheus.is_running()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/-/ready", timeout=2)

        gauge.labels(job="from-target").set(7)
        prometheus.start()
        assert prometheus.url == url
        wait_until(lambda: float(prometheus.query('tf_e2e_probe{job="from-target"}')[0]["value"][1])
                   == 7, timeout=30, what="fresh sample after restart")
    finally:
        server.shutdown()
        prometheus.set_targets([])
        prometheus.start()


def test_cli_status_reports_every_component(cluster):
    import json
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "tokenfactory.cli", "cluster", "status", "-o", "json",
         "--state-dir", str(cluster.state_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    st = json.loads(res.stdout)
    old = subprocess.run([sys.executable, "-m", "tokenfactory.cli", "cluster", "status", "--json",
                          "--state-dir", str(cluster.state_dir)], capture_output=True, text=True, timeout=60)
    assert old.returncode == 0 and json.loads(old.stdout)["server"] == st["server"]  # the older spelling still works
    assert st["apiserver_ready"] and st["server"] == cluster.server
    names = {c["name"] for c in st["components"] if c["running"]}
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} <= names


def test_serviceaccount_token_controller_fills_token_secrets(kubectl, namespace):
    # The controller-manager signs legacy token Secrets with --service-account-private-key-file
    # and adds the cluster CA (--root-ca-file).
    kubectl("create", "serviceaccount", "robot", "-n", namespace)
    kubectl.apply({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "robot-token", "annotations": {"kubernetes.io/service-account.name": "robot"}},
    }, namespace=namespace)
    data = wait_until(
        lambda: kubectl.json("get", "secret", "robot-token", "-n", namespace).get("data", {}).get("token")
        and kubectl.json("get", "secret", "robot-token", "-n", namespace)["data"],
        timeout=30, what="token controller to fill robot-token")
    assert {"token", "ca.crt", "namespace"} <= set(data)
    # Every namespace gets the root CA published by the controller-manager.
    cm = wait_until(lambda: kubectl.json("get", "configmap", "kube-root-ca.crt", "-n", namespace),
                    timeout=30, what="kube-root-ca.crt")
    assert "BEGIN CERTIFICATE" in cm["data"]["ca.crt"]
