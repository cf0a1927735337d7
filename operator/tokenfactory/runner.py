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


class _QuietWakeHandlers(logging.Filter):
    """The watch handlers only wake a factory's loop; their per-event 'succeeded' lines are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (record.levelno <= logging.INFO and msg.startswith("Handler '_") and msg.endswith("succeeded."))


def build_memo(*, prometheus_url: str | None, prometheus_timeout: float, metrics_port: int,
               metrics_address: str) -> Any:
    """Wire the real adapters (lightkube, Prometheus over httpx, the prometheus-client exporter serving
    ``/metrics`` on ``metrics_port``) into the operator-level kopf memo."""
    from tokenfactory import handlers
    from tokenfactory.exporter import PrometheusExporter
    from tokenfactory.kube import LightkubeClient
    from tokenfactory.metrics_source import SourcesByUrl
    from tokenfactory.pipeline import Reconciler

    exporter = PrometheusExporter()
    if metrics_port:
        exporter.start(metrics_port, metrics_address)
    reconciler = Reconciler(LightkubeClient(), sources=SourcesByUrl(timeout=prometheus_timeout), exporter=exporter,
                            default_prometheus_url=prometheus_url)
    return handlers.operator_memo(reconciler, on_shutdown=exporter.stop)


def run_operator(*, namespaces: list[str], metrics_port: int, metrics_address: str, health_port: int,
                 prometheus_url: str | None, prometheus_timeout: float, log_format: str, verbose: bool) -> int:
    import kopf

    from tokenfactory import handlers  # noqa: F401 - registers the kopf handlers

    _configure_logging(log_format, verbose)
    log = logging.getLogger("tokenfactory")
    scope = f"namespaces {', '.join(namespaces)}" if namespaces else "all namespaces"
    log.info("starting TokenFactory operator (%s, metrics :%s, health :%s, prometheus %s)",
             scope, metrics_port or "off", health_port or "off", prometheus_url or "from each spec")
    memo = build_memo(prometheus_url=prometheus_url, prometheus_timeout=prometheus_timeout,
                      metrics_port=metrics_port, metrics_address=metrics_address)
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
