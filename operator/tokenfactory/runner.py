"""Start the operator process: build the adapters, hand them to the kopf handlers, run kopf."""

from __future__ import annotations

import asyncio
import logging
from typing import Any


def _configure_logging(log_format: str, verbose: bool) -> None:
    import kopf

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL)
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(_QuietWakeHandlers())
    quiet = _OnePerOutage()
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)


class _QuietWakeHandlers(logging.Filter):
    """The watch handlers only queue a factory; their per-event 'succeeded' lines are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (record.levelno <= logging.INFO and msg.startswith("Handler '_") and msg.endswith("succeeded."))


class _OnePerOutage(logging.Filter):
    """kopf logs every failed request attempt ("Request attempt #3 failed; will retry: ..."); while the
    apiserver is away that is a line every 2 s per watch. Let the first through and drop the rest until
    none has come for ``quiet_seconds`` (the outage is over): one line per outage."""

    def __init__(self, quiet_seconds: float = 30.0):
        super().__init__()
        self.quiet_seconds = quiet_seconds
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not (msg.startswith("Request attempt") and "failed" in msg):
            return True
        last, self._last = self._last, record.created
        if last is not None and record.created - last < self.quiet_seconds:
            return False
        record.msg, record.args = f"Kubernetes API unreachable, kopf retries quietly until it answers: {msg}", ()
        return True


def lease_namespace(explicit: str | None, namespaces: list[str]) -> str:
    """Where the Lease lives: --lease-namespace, else the pod's namespace ($POD_NAMESPACE), else the first
    watched namespace, else "default"."""
    import os

    return explicit or os.environ.get("POD_NAMESPACE") or (namespaces[0] if namespaces else "default")


def build_memo(*, prometheus_url: str | None, prometheus_timeout: float, metrics_port: int,
               metrics_address: str, namespaces: list[str] | None = None, leader_elect: bool = True,
               lease: dict[str, Any] | None = None, concurrency: int = 8) -> Any:
    """Wire the real adapters (lightkube, the children's watch cache, Prometheus over httpx in batches,
    the Lease, the prometheus-client exporter serving ``/metrics`` on ``metrics_port``) into the
    operator-level kopf memo."""
    from lightkube import AsyncClient

    from tokenfactory import handlers
    from tokenfactory.controller import Controller
    from tokenfactory.exporter import PrometheusExporter
    from tokenfactory.informer import ChildInformers
    from tokenfactory.kube import FIELD_MANAGER, LightkubeClient
    from tokenfactory.leader import AlwaysLeader, LeaseElector
    from tokenfactory.metrics_batch import BatchedSources
    from tokenfactory.metrics_source import SourcesByUrl
    from tokenfactory.pipeline import Reconciler

    namespaces = list(namespaces or [])
    exporter = PrometheusExporter()
    if metrics_port:
        exporter.start(metrics_port, metrics_address)
    client = AsyncClient(field_manager=FIELD_MANAGER)
    informers = ChildInformers(AsyncClient(field_manager=FIELD_MANAGER), namespaces)  # watches: own connection pool
    reconciler = Reconciler(LightkubeClient(client), sources=BatchedSources(SourcesByUrl(timeout=prometheus_timeout), namespaces),
                            exporter=exporter, default_prometheus_url=prometheus_url, cache=informers)
    lease = dict(lease or {})
    elector: Any = (LeaseElector(client, lease_namespace(lease.pop("namespace", None), namespaces), **lease)
                    if leader_elect else AlwaysLeader())
    controller = Controller(reconciler, elector, concurrency=concurrency, ready=lambda: informers.synced)
    informers.on_change = controller.child_changed

    return handlers.operator_memo(reconciler, on_shutdown=exporter.stop, controller=controller, informers=informers,
                                  elector=elector if leader_elect else None)


def run_operator(*, namespaces: list[str], metrics_port: int, metrics_address: str, health_port: int,
                 prometheus_url: str | None, prometheus_timeout: float, log_format: str, verbose: bool,
                 leader_elect: bool = True, lease: dict[str, Any] | None = None, concurrency: int = 8) -> int:
    import kopf

    from tokenfactory import handlers  # noqa: F401 - registers the kopf handlers

    _configure_logging(log_format, verbose)
    log = logging.getLogger("tokenfactory")
    scope = f"namespaces {', '.join(namespaces)}" if namespaces else "all namespaces"
    log.info("starting TokenFactory operator (%s, metrics :%s, health :%s, prometheus %s)",
             scope, metrics_port or "off", health_port or "off", prometheus_url or "from each spec")
    memo = build_memo(prometheus_url=prometheus_url, prometheus_timeout=prometheus_timeout,
                      metrics_port=metrics_port, metrics_address=metrics_address, namespaces=namespaces,
                      leader_elect=leader_elect, lease=lease, concurrency=concurrency)
    liveness = f"http://0.0.0.0:{health_port}/healthz" if health_port else None
    try:
        kopf.run(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            memo=memo,
        )
    except asyncio.CancelledError:
        return 0
    return 0
