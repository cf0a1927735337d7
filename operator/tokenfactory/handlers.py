"""Thin kopf glue: kopf watches the TokenFactories; everything else runs in tasks started here.

- kopf's watch of TokenFactories hands every object (and its deletion) to the
  :class:`~tokenfactory.controller.Controller`, a work queue with bounded concurrency and per-factory
  backoff that runs the reconcile pipeline.
- The children (Deployments, Services, Pods) are watched once for all factories by
  :class:`~tokenfactory.informer.ChildInformers`; a change to a factory's child queues that factory.
- Every ``spec.scaling.interval`` a factory is queued to measure (metrics, cost, planning), reading
  the batch of metrics all factories share (``metrics_batch.py``).
- Only the replica holding the Lease acts (``leader.py``); the others keep their caches warm.

kopf adds no finalizer and writes nothing to the TokenFactories: with only ``on.event`` handlers it has
nothing to block deletion for (children go with their owner references), so two replicas never write
the same object. A finalizer left by an older version (one daemon per factory) is removed by kopf on
the object's next event ("no handlers requiring it").

State lives in kopf's operator-level memo (:func:`operator_memo`). On shutdown, :func:`_cleanup`
releases the Lease, stops the watches and closes the Kubernetes and Prometheus clients.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import kopf

from tokenfactory import api
from tokenfactory.pipeline import Reconciler

log = logging.getLogger("tokenfactory.handlers")

FINALIZER = "tokenfactory.dev/finalizer"


class RetryForever:
    """kopf's request backoffs, never exhausted: an apiserver restart must not escalate into a dead watch."""

    def __iter__(self) -> Iterator[float]:
        return itertools.chain((0.5, 1.0), itertools.repeat(2.0))


def operator_memo(reconciler: Reconciler, on_shutdown: Any | None = None, *, controller: Any | None = None,
                  informers: Any | None = None, elector: Any | None = None) -> kopf.Memo:
    """The operator-level memo for ``kopf.run(memo=...)``: the reconciler, the work queue (controller),
    the children's watch cache, the leader elector, and what to stop on shutdown."""
    return kopf.Memo(reconciler=reconciler, on_shutdown=on_shutdown, controller=controller, informers=informers,
                     elector=elector)


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tokenfactory.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="tokenfactory.dev")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.reconnect_backoff = 0.5
    settings.networking.request_timeout = 30
    settings.networking.error_backoffs = RetryForever()
    if memo.get("informers") is not None:
        memo.informers.start()
    if memo.get("elector") is not None:
        memo.elector.start()
    if memo.get("controller") is not None:
        memo.controller.start()


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Operator shutdown: stop acting, release the Lease, stop the watches, close the clients."""
    if memo.get("controller") is not None:
        await memo.controller.stop()
    if memo.get("elector") is not None:
        await memo.elector.stop()
    if memo.get("informers") is not None:
        await memo.informers.stop()
    await memo.reconciler.aclose()
    if memo.get("on_shutdown") is not None:
        memo.on_shutdown()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def _factory_changed(memo: Any, event: Any, body: Any, namespace: str | None, name: str, **_: Any) -> None:
    controller = memo.get("controller")
    if controller is None:
        return
    if event.get("type") == "DELETED":
        controller.remove((namespace or "default", name))
    else:
        controller.upsert(body)


# Routing objects of CRD kinds (spec.routing; Services are in the children's watch cache): a hand edit or a
# deletion queues the factory, which applies them again. A kind whose CRD is not installed is simply not
# watched (kopf serves it once the CRD appears).
@kopf.on.event("gateway.networking.k8s.io", "v1", "httproutes", labels={"app.kubernetes.io/managed-by": "tokenfactory"})
@kopf.on.event("inference.networking.k8s.io", "v1", "inferencepools", labels={"app.kubernetes.io/managed-by": "tokenfactory"})
async def _routing_changed(memo: Any, namespace: str | None, labels: Any, **_: Any) -> None:
    owner = (labels or {}).get("tokenfactory.dev/factory")
    controller = memo.get("controller")
    if owner and controller is not None:
        controller.child_changed(namespace or "default", owner)
