"""The status the pipeline builds (through api.TokenFactoryStatus) is what the real apiserver stores.

A status with every figure filled in (metrics read, a scaling decision made) is built by the reconcile
pipeline, written through the real Kubernetes adapter (lightkube, merge-patch on the status subresource)
and read back with kubectl: the apiserver validates it against the CRD schema and prunes every field the
schema lacks, so reading back exactly what was written proves the schema and the writer agree.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import yaml

from harness import CRD, EXAMPLE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_status_schema import full_status  # noqa: E402

NAME = "deepseek-r1"


@pytest.fixture
def factory(kubectl, namespace):
    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for", "condition=Established", "crd/tokenfactories.tokenfactory.dev", "--timeout=60s")
    kubectl.apply(yaml.safe_load(EXAMPLE.read_text()), namespace)  # no operator runs: only this test writes status
    yield NAME
    kubectl.run("delete", "tokenfactories", "--all", "-n", namespace, "--timeout=30s")


async def write_status(kubeconfig: str, namespace: str, status: dict) -> None:
    from lightkube import AsyncClient, KubeConfig

    from tokenfactory.kube import LightkubeClient

    client = AsyncClient(config=KubeConfig.from_file(kubeconfig))
    kube = LightkubeClient(client=client)
    try:
        await kube.patch_status(namespace, NAME, status)
    finally:
        await kube.close()


def test_pipeline_status_round_trips_through_the_apiserver(cluster, kubectl, namespace, factory, two_pool_example):
    status = asyncio.run(full_status(two_pool_example))
    assert status["lastDecision"]["changes"] and status["pools"][0]["costPerMillionTokens"] is not None
    asyncio.run(write_status(str(cluster.kubeconfig), namespace, status))
    stored = kubectl.json("get", "tokenfactory", NAME, "-n", namespace)["status"]
    assert stored == status
    # the check can fail: a field the schema does not know is pruned by the apiserver
    asyncio.run(write_status(str(cluster.kubeconfig), namespace, {"poolFigures": {"gb300": {"x": 1}}}))
    assert "poolFigures" not in kubectl.json("get", "tokenfactory", NAME, "-n", namespace)["status"]
