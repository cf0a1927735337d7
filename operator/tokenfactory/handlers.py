"""Thin kopf glue: one daemon per TokenFactory runs the reconcile pipeline; watch events only wake it.

- A TokenFactory change, or a change to one of its Deployments or pods (a child deleted or edited by
  hand, a pod becoming Ready), wakes that factory's daemon, which reconciles at once.
- Every ``spec.scaling.interval`` the daemon also measures (metrics, cost, planning) and reconciles.
- Errors in one pass are logged and retried with backoff; a bad spec is a status, not a crash.

State lives in kopf's memo: ``tokenfactory run`` passes an operator-level memo holding the
:class:`~tokenfactory.pipeline.Reconciler` and the wake-up registry (:func:`operator_memo`); kopf
gives each TokenFactory a shallow copy of it, where the daemon keeps that factory's
:class:`~tokenfactory.pipeline.FactoryMemory` (``memo.factory``) for as long as the object exists.
On shutdown, :func:`_cleanup` closes the Kubernetes and Prometheus clients.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from tokenfactory import api, render
from tokenfactory.pipeline import FactoryMemory, Reconciler

log = logging.getLogger("tokenfactory.handlers")

FINALIZER = "tokenfactory.dev/finalizer"
MANAGED = {"app.kubernetes.io/managed-by": render.MANAGED_BY}
DEBOUNCE_SECONDS = 0.3
MAX_BACKOFF_SECONDS = 60.0


def operator_memo(reconciler: Reconciler, on_shutdown: Any | None = None) -> kopf.Memo:
    """The operator-level memo for ``kopf.run(memo=...)``: the reconciler, one wake-up Event per
    factory (shared by every object's copy of the memo), and what to stop on shutdown."""
    return kopf.Memo(reconciler=reconciler, wakes={}, on_shutdown=on_shutdown)


def _wake(memo: kopf.Memo, namespace: str, name: str) -> None:
    event = memo.wakes.get((namespace, name))
    if event is not None:
        event.set()


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tokenfactory.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="tokenfactory.dev")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Operator shutdown: close the Kubernetes and Prometheus clients, stop the /metrics server."""
    await memo.reconciler.aclose()
    if memo.get("on_shutdown") is not None:
        memo.on_shutdown()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def _factory_changed(memo: Any, namespace: str | None, name: str, **_: Any) -> None:
    _wake(memo, namespace or "default", name)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def _deployment_changed(memo: Any, namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    owner = labels.get(render.LABEL_FACTORY)
    if owner:
        _wake(memo, namespace or "default", owner)


@kopf.on.event("", "v1", "pods", labels=MANAGED)
async def _pod_changed(memo: Any, namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    owner = labels.get(render.LABEL_FACTORY)
    if owner:
        _wake(memo, namespace or "default", owner)


# Routing objects (spec.routing): a hand edit or a deletion wakes the factory, which applies them again. A kind
# whose CRD is not installed is simply not watched (kopf serves it once the CRD appears).
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("gateway.networking.k8s.io", "v1", "httproutes", labels=MANAGED)
@kopf.on.event("inference.networking.k8s.io", "v1", "inferencepools", labels=MANAGED)
async def _routing_changed(memo: Any, namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    owner = labels.get(render.LABEL_FACTORY)
    if owner:
        _wake(memo, namespace or "default", owner)


def _interval_seconds(body: Any) -> float:
    try:
        return api.parse_duration(body.get("spec", {}).get("scaling", {}).get("interval", "30s"))
    except (ValueError, AttributeError):
        return 30.0


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, cancellation_timeout=10.0)
async def factory_loop(body: kopf.Body, memo: Any, namespace: str | None, name: str, stopped: kopf.DaemonStopped,
                       **_: Any) -> None:
    """The reconcile loop of one factory, for as long as it exists and the operator runs."""
    namespace = namespace or "default"
    reconciler: Reconciler = memo.reconciler
    key = (namespace, name)
    wake = memo.wakes.setdefault(key, asyncio.Event())
    if memo.get("factory") is None:
        memo.factory = FactoryMemory()
    memory: FactoryMemory = memo.factory
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
                await reconciler.reconcile(snapshot, memory, now, measure=due)
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
        memo.wakes.pop(key, None)
        if stopped.reason is None or kopf.DaemonStoppingReason.RESOURCE_DELETED in stopped.reason:
            memo.factory = None
        reconciler.forget(namespace, name)
        log.info("factory %s/%s: loop stopped", namespace, name)
