"""Thin kopf glue: one daemon per TokenFactory runs the reconcile loop; watch events only wake it.

- A TokenFactory change, or a change to one of its Deployments or pods (a child deleted or edited by
  hand, a pod becoming Ready), wakes that factory's daemon, which reconciles at once.
- Every ``spec.scaling.interval`` the daemon also measures (metrics, cost, planning) and reconciles.
- Errors in one pass are logged and retried with backoff; a bad spec is a status, not a crash.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from tokenfactory import api, render
from tokenfactory.controller import FactoryMemory, Reconciler

log = logging.getLogger("tokenfactory.handlers")

FINALIZER = "tokenfactory.dev/finalizer"
MANAGED = {"app.kubernetes.io/managed-by": render.MANAGED_BY}
DEBOUNCE_SECONDS = 0.3
MAX_BACKOFF_SECONDS = 60.0


@dataclass
class Runtime:
    """Process-wide state, built by ``tokenfactory run`` before kopf starts."""

    reconciler: Reconciler
    on_forget: Any | None = None  # callable(namespace, name) when a factory goes away (exporter clean-up)
    wakes: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    memories: dict[tuple[str, str], FactoryMemory] = field(default_factory=dict)

    def wake(self, namespace: str, name: str) -> None:
        event = self.wakes.get((namespace, name))
        if event is not None:
            event.set()


RUNTIME: Runtime | None = None


def configure(runtime: Runtime) -> None:
    global RUNTIME
    RUNTIME = runtime


def _runtime() -> Runtime:
    if RUNTIME is None:
        raise RuntimeError("tokenfactory.handlers.configure() was not called")
    return RUNTIME


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tokenfactory.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="tokenfactory.dev")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def _factory_changed(namespace: str, name: str, **_: Any) -> None:
    _runtime().wake(namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def _deployment_changed(namespace: str, labels: dict[str, str], **_: Any) -> None:
    owner = labels.get(render.LABEL_FACTORY)
    if owner:
        _runtime().wake(namespace, owner)


@kopf.on.event("", "v1", "pods", labels=MANAGED)
async def _pod_changed(namespace: str, labels: dict[str, str], **_: Any) -> None:
    owner = labels.get(render.LABEL_FACTORY)
    if owner:
        _runtime().wake(namespace, owner)


# Routing objects (spec.routing): a hand edit or a deletion wakes the factory, which applies them again. A kind
# whose CRD is not installed is simply not watched (kopf serves it once the CRD appears).
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("gateway.networking.k8s.io", "v1", "httproutes", labels=MANAGED)
@kopf.on.event("inference.networking.k8s.io", "v1", "inferencepools", labels=MANAGED)
async def _routing_changed(namespace: str, labels: dict[str, str], **_: Any) -> None:
    owner = labels.get(render.LABEL_FACTORY)
    if owner:
        _runtime().wake(namespace, owner)


def _interval_seconds(body: Any) -> float:
    try:
        return api.parse_duration(body.get("spec", {}).get("scaling", {}).get("interval", "30s"))
    except (ValueError, AttributeError):
        return 30.0


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, cancellation_timeout=10.0)
async def factory_loop(body: kopf.Body, namespace: str, name: str, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """The reconcile loop of one factory, for as long as it exists and the operator runs."""
    rt = _runtime()
    key = (namespace, name)
    wake = rt.wakes.setdefault(key, asyncio.Event())
    memory = rt.memories.setdefault(key, FactoryMemory())
    backoff = 1.0
    log.info("factory %s/%s: loop started", namespace, name)
    try:
        while not stopped:
            wake.clear()
            now = dt.datetime.now(dt.UTC)
            interval = _interval_seconds(body)
            due = memory.last_measure is None or (now - memory.last_measure).total_seconds() >= interval
            snapshot = copy.deepcopy(dict(body))
            try:
                await rt.reconciler.reconcile(snapshot, memory, now, measure=due)
                if due:
                    memory.last_measure = now
                backoff = 1.0
                timeout = interval if memory.last_measure is None else max(
                    0.5, interval - (dt.datetime.now(dt.UTC) - memory.last_measure).total_seconds())
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the loop alive; the next pass retries
                log.exception("factory %s/%s: reconcile failed; retrying in %.0fs", namespace, name, backoff)
                timeout, backoff = backoff, min(MAX_BACKOFF_SECONDS, backoff * 2)
            try:
                await asyncio.wait_for(wake.wait(), timeout=timeout)
                await asyncio.sleep(DEBOUNCE_SECONDS)  # let a burst of watch events settle
            except TimeoutError:
                pass
    finally:
        rt.wakes.pop(key, None)
        if stopped.reason is None or kopf.DaemonStoppingReason.RESOURCE_DELETED in stopped.reason:
            rt.memories.pop(key, None)
        if rt.on_forget is not None:
            rt.on_forget(namespace, name)
        log.info("factory %s/%s: loop stopped", namespace, name)
