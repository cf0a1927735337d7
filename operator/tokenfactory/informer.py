"""One shared watch cache of the operator's children (``ports.ChildCache``): Deployments, Services and Pods
labelled ``app.kubernetes.io/managed-by: tokenfactory``, kept by one LIST + WATCH per kind and namespace
scope (not per factory), indexed by namespace and factory.

Each watch is restarted at once when it ends and, after an error (apiserver restart, 410 Gone), re-listed
with a short backoff (0.2 s doubling to 2 s): a watch is back within seconds of the apiserver. A re-list
replaces the kind's objects, so a deletion missed while the watch was down is not remembered as present.
An outage is logged once when it starts and once when it ends, never once per attempt.

Every change (added, modified, deleted, or found different by a re-list) calls ``on_change(namespace,
factory)``, which wakes that factory's reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tokenfactory import render

log = logging.getLogger("tokenfactory.informer")

KINDS = ("Deployment", "Service", "Pod")
MANAGED_SELECTOR = {"app.kubernetes.io/managed-by": render.MANAGED_BY}
BACKOFF_START, BACKOFF_MAX = 0.2, 2.0

Key = tuple[str, str]  # (namespace, name)


class Store:
    """The cached objects of one kind, by (namespace, name) and by (namespace, factory label). Pure."""

    def __init__(self, kind: str):
        self.kind = kind
        self.objects: dict[Key, dict[str, Any]] = {}
        self.by_factory: dict[Key, set[str]] = {}

    @staticmethod
    def _factory(obj: Mapping[str, Any]) -> str | None:
        return ((obj.get("metadata") or {}).get("labels") or {}).get(render.LABEL_FACTORY)

    def _index(self, key: Key, obj: Mapping[str, Any] | None, add: bool) -> None:
        factory = self._factory(obj) if obj is not None else None
        if factory is None:
            return
        names = self.by_factory.setdefault((key[0], factory), set())
        if add:
            names.add(key[1])
        else:
            names.discard(key[1])
            if not names:
                self.by_factory.pop((key[0], factory), None)

    def upsert(self, obj: dict[str, Any]) -> str | None:
        meta = obj["metadata"]
        key = (meta.get("namespace") or "default", meta["name"])
        old = self.objects.get(key)
        if old is not None:
            self._index(key, old, add=False)
        self.objects[key] = obj
        self._index(key, obj, add=True)
        return self._factory(obj) or (self._factory(old) if old else None)

    def remove(self, namespace: str, name: str) -> str | None:
        old = self.objects.pop((namespace, name), None)
        if old is None:
            return None
        self._index((namespace, name), old, add=False)
        return self._factory(old)

    def replace(self, namespace: str | None, objs: Iterable[dict[str, Any]]) -> set[Key]:
        """A fresh list of ``namespace`` (None: every namespace): returns the (namespace, factory) whose
        objects changed (added, removed or with another resourceVersion)."""
        changed: set[Key] = set()
        fresh: dict[Key, dict[str, Any]] = {}
        for o in objs:
            m = o["metadata"]
            fresh[(m.get("namespace") or "default", m["name"])] = o
        for key in [k for k in self.objects if namespace is None or k[0] == namespace]:
            if key not in fresh:
                f = self.remove(*key)
                if f:
                    changed.add((key[0], f))
        for key, o in fresh.items():
            old = self.objects.get(key)
            if old is None or old["metadata"].get("resourceVersion") != o["metadata"].get("resourceVersion"):
                f = self.upsert(o)
                if f:
                    changed.add((key[0], f))
        return changed

    def list(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        factory = labels.get(render.LABEL_FACTORY)
        if factory is not None:
            names = sorted(self.by_factory.get((namespace, factory), ()))
            candidates = [self.objects[(namespace, n)] for n in names]
        else:
            candidates = [o for (ns, _), o in sorted(self.objects.items()) if ns == namespace]
        return [o for o in candidates if all(((o["metadata"].get("labels") or {}).get(k) == v) for k, v in labels.items())]


class ChildInformers:
    """The real ``ports.ChildCache``: one list+watch per kind and namespace (or one cluster-wide)."""

    def __init__(self, client: Any, namespaces: list[str] | None = None,
                 on_change: Callable[[str, str], None] | None = None, kinds: tuple[str, ...] = KINDS):
        from lightkube.resources.apps_v1 import Deployment
        from lightkube.resources.core_v1 import Pod, Service

        self._client = client  # lightkube.AsyncClient
        self._resources = {"Deployment": Deployment, "Service": Service, "Pod": Pod}
        self.kinds = kinds
        self.namespaces = list(namespaces or [])
        self.on_change = on_change or (lambda ns, name: None)
        self.stores = {k: Store(k) for k in kinds}
        self._synced: dict[tuple[str, str | None], asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.down_since: float | None = None  # monotonic time the current outage started
        self.outages = 0
        self.relists = 0

    # ChildCache ------------------------------------------------------------------------------------
    async def list(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return self.stores[kind].list(namespace, labels)

    def cached(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        store = self.stores.get(kind)
        return store.objects.get((namespace, name)) if store is not None else None

    # lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        scopes: list[str | None] = list(self.namespaces) or [None]
        for kind in self.kinds:
            for ns in scopes:
                self._synced[(kind, ns)] = asyncio.Event()
                self._tasks.append(asyncio.create_task(self._run(kind, ns), name=f"informer {kind} {ns or '*'}"))

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._synced.values())), timeout)

    @property
    def synced(self) -> bool:
        return bool(self._synced) and all(e.is_set() for e in self._synced.values())

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        close = getattr(self._client, "close", None)
        if close is not None:
            await close()

    # the watch loop ----------------------------------------------------------------------------------
    def _notify(self, changed: Iterable[Key]) -> None:
        for ns, factory in changed:
            self.on_change(ns, factory)

    def _failed(self, kind: str, ns: str | None, err: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.outages += 1
            log.warning("watch of %ss in %s lost (%s: %s); re-listing every %.0fs or less until the API answers",
                        kind, ns or "all namespaces", type(err).__name__, str(err)[:200], BACKOFF_MAX)

    def _recovered(self) -> None:
        if self.down_since is not None:
            log.info("watches restored after %.1fs", time.monotonic() - self.down_since)
            self.down_since = None

    async def _run(self, kind: str, ns: str | None) -> None:
        from lightkube import ApiError

        store, res = self.stores[kind], self._resources[kind]
        scope = ns if ns is not None else "*"
        backoff = BACKOFF_START
        while True:
            try:
                listing = self._client.list(res, namespace=scope, labels=MANAGED_SELECTOR)
                objs = [o.to_dict() async for o in listing]
                version = listing.resourceVersion
                self.relists += 1
                self._notify(store.replace(ns, objs))
                self._synced[(kind, ns)].set()
                self._recovered()
                backoff = BACKOFF_START
                async for typ, obj in self._client.watch(res, namespace=scope, labels=MANAGED_SELECTOR,
                                                         resource_version=version, server_timeout=290):
                    d = obj.to_dict()
                    if typ == "DELETED":
                        factory = store.remove(d["metadata"].get("namespace") or "default", d["metadata"]["name"])
                    else:
                        factory = store.upsert(d)
                    if factory:
                        self.on_change(d["metadata"].get("namespace") or "default", factory)
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if err.status.code == 410:  # too old a resourceVersion: re-list at once
                    continue
                self._failed(kind, ns, err)
            except Exception as err:  # noqa: BLE001 - connection refused/reset, timeouts: retry
                self._failed(kind, ns, err)
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)
