"""deploy/examples/ against the real apiserver (schema + CEL), and the on-prem example reconciled onto the
local cluster's GPU nodes, selected by GPU feature discovery's nvidia.com/gpu.product label."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import CRD, ROOT, Operator, wait_for

EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))
ONPREM = ROOT / "deploy" / "examples" / "onprem-h200-gb300.yaml"


@pytest.fixture(scope="module")
def crd(kubectl):
    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for", "condition=Established", "crd/tokenfactories.tokenfactory.dev", "--timeout=60s")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: Path(p).name)
def test_apiserver_accepts_example(kubectl, crd, namespace, path):
    out = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path))
    assert "created (server dry run)" in out


def test_on_prem_example_runs_per_pool_images_on_matching_nodes(cluster, kubectl, crd, namespace, tmp_path):
    op = Operator(cluster.kubeconfig, tmp_path, namespaces=[namespace])
    try:
        kubectl("apply", "-n", namespace, "-f", str(ONPREM))
        sel = "tokenfactory.dev/factory=deepseek-r1-onprem"

        def running_pods():
            pods = kubectl.json("get", "pods", "-n", namespace, "-l", sel)["items"]
            ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                            for c in p.get("status", {}).get("conditions", []))]
            return ready if len(ready) == 2 else None

        pods = wait_for(running_pods, 90, "both pools' pods Ready")
        nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in kubectl.json("get", "nodes")["items"]}
        by_pool = {p["metadata"]["labels"]["tokenfactory.dev/pool"]: p for p in pods}
        gb, h = by_pool["gb300"], by_pool["h200"]
        assert nodes[gb["spec"]["nodeName"]]["nvidia.com/gpu.product"] == "NVIDIA-GB300"
        assert nodes[gb["spec"]["nodeName"]]["kubernetes.io/arch"] == "arm64"
        assert nodes[h["spec"]["nodeName"]]["nvidia.com/gpu.product"] == "NVIDIA-H200"
        assert nodes[h["spec"]["nodeName"]]["kubernetes.io/arch"] == "amd64"
        assert gb["spec"]["containers"][0]["image"].endswith("-arm64")
        assert h["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.11.0"
        wait_for(lambda: kubectl.json("get", "tokenfactory", "deepseek-r1-onprem", "-n", namespace)
                 .get("status", {}).get("pools"), 60, "pool status")
        tf = kubectl.json("get", "tokenfactory", "deepseek-r1-onprem", "-n", namespace)
        prices = {p["name"]: p["pricePerGpuHour"] for p in tf["status"]["pools"]}
        assert prices["h200"] == pytest.approx(35000 / (4 * 8760) + 1.0 * 1.3 * 0.09, rel=1e-5)
    finally:
        kubectl.run("delete", "tokenfactories", "--all", "-n", namespace, "--timeout=30s")
        op.stop()
