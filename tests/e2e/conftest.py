"""Fixtures for end-to-end tests against a real local control plane and a real Prometheus.

Fixtures (see docs/local-cluster.md):

* ``cluster`` (session) -> ``ClusterInfo``: the local cluster of ``$TOKENFACTORY_CLUSTER_DIR``
  (default ``~/.cache/tokenfactory/cluster``), started once per run (binaries built first if
  missing, which fails loudly) and stopped at the end, unless it was already running (started by
  `tokenfactory cluster up` or by a concurrent test session) or ``TOKENFACTORY_E2E_KEEP=1``.
* ``kubectl`` (session) -> ``Kubectl`` bound to the cluster's admin kubeconfig.
* ``namespace`` (function) -> ``str``: a fresh namespace (its default ServiceAccount exists),
  deleted after the test.
* ``prometheus`` (session) -> ``PrometheusServer``: a running Prometheus with no targets and a 2s
  scrape interval; use ``set_targets([(job, "host:port", honor_labels), ...])`` (Prometheus
  applies target changes ~5 s later). A test may ``stop()`` it; the next test that uses it gets it
  started again (same URL).

Every test under tests/e2e is marked ``e2e``. ``TOKENFACTORY_E2E=0`` skips them (with that reason);
nothing else skips them.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenfactory.localcluster import wait_until
from tokenfactory.localcluster.cluster import ClusterInfo, Kubectl, LocalCluster, default_state_dir
from tokenfactory.localcluster.prometheus import PrometheusServer
from tokenfactory.localcluster.sharing import shared_cluster

E2E_DIR = Path(__file__).parent


def _e2e_disabled() -> bool:
    return os.environ.get("TOKENFACTORY_E2E", "").strip().lower() in {"0", "false", "no", "off"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselection looks at the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="e2e tests disabled by TOKENFACTORY_E2E=0")
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            if _e2e_disabled():
                item.add_marker(skip)


def _progress(msg: str) -> None:
    # Outside pytest's capture, so that a cold build's progress is visible while it runs.
    print(f"[cluster] {msg}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterInfo]:
    lc = LocalCluster(default_state_dir())
    keep = os.environ.get("TOKENFACTORY_E2E_KEEP") == "1"
    with shared_cluster(lc, progress=_progress, keep=keep) as info:
        yield info


@pytest.fixture(scope="session")
def kubectl(cluster: ClusterInfo) -> Kubectl:
    return Kubectl(cluster.kubeconfig)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kubectl: Kubectl) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"e2e-{base}-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    # Pods are refused until the namespace's default ServiceAccount exists.
    wait_until(lambda: kubectl.run("get", "serviceaccount", "default", "-n", name).returncode == 0,
               timeout=30, what=f"default ServiceAccount in {name}")
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    prom = PrometheusServer(tmp_path_factory.mktemp("prometheus"), targets=[], scrape_interval="2s")
    prom.start()
    yield prom
    prom.stop()


@pytest.fixture(autouse=True)
def _prometheus_running_again(request: pytest.FixtureRequest) -> None:
    """A test that stopped the shared Prometheus and failed before starting it again must not
    break the next one: each test that uses ``prometheus`` gets it running."""
    if "prometheus" in request.fixturenames:
        prom = request.getfixturevalue("prometheus")
        if not prom.is_running():
            prom.start()
