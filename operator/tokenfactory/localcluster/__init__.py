"""A real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok) built from Go modules, simulated GPU node pools, and a real Prometheus.

Python API::

    from tokenfactory.localcluster import LocalCluster, PrometheusServer
    info = LocalCluster().up(progress=print)     # ClusterInfo(kubeconfig, server, ...)
    info.kubectl("get", "nodes")                 # cached kubectl with this cluster's KUBECONFIG
    LocalCluster().down()

See docs/local-cluster.md. Heavy pieces (cryptography, httpx) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import ClusterError, ClusterInfo, LocalCluster, default_state_dir, kubectl
    from .prometheus import PrometheusServer, ScrapeTarget

__all__ = [
    "ClusterError",
    "ClusterInfo",
    "LocalCluster",
    "PrometheusServer",
    "ScrapeTarget",
    "default_state_dir",
    "kubectl",
    "wait_until",
]

_LAZY = {
    "ClusterError": "cluster",
    "ClusterInfo": "cluster",
    "LocalCluster": "cluster",
    "default_state_dir": "cluster",
    "kubectl": "cluster",
    "PrometheusServer": "prometheus",
    "ScrapeTarget": "prometheus",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)


def wait_until(check, timeout: float = 30, interval: float = 0.25, what: str = "condition"):
    """Poll ``check()`` until it returns something truthy (returned); TimeoutError after
    ``timeout`` seconds, naming ``what`` and the last value or exception."""
    import time

    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)
