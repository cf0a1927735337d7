"""The work queue that drives the reconcile pipeline for every TokenFactory (replaces one daemon per factory).

* A factory is queued when its object changes (kopf's watch of TokenFactories), when one of its children
  changes (the shared watch cache, ``informer.py``), and when its next measurement is due
  (``spec.scaling.interval``). A factory is queued at most once and never reconciled by two workers at
  the same time; a change that arrives while it is being reconciled queues it once more afterwards.
* ``concurrency`` workers take factories from the queue (bounded concurrency, whatever the number of
  factories).
* A pass that raises is retried with per-factory exponential backoff (1 s doubling to 60 s); the first
  failure of a streak is logged with its traceback, later ones in one line.
* Only the leader acts (``ports.LeaderGate``). A replica that becomes leader starts every factory afresh
  (memory is dropped: replicas are taken from the status the previous leader wrote, never from what this
  replica remembered before), and one that stops leading forgets its exported series.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from tokenfactory import api
from tokenfactory.pipeline import FactoryMemory, Reconciler
from tokenfactory.ports import LeaderGate

log = logging.getLogger("tokenfactory.controller")

Key = tuple[str, str]  # (namespace, name)
MIN_BACKOFF, MAX_BACKOFF = 1.0, 60.0
DEFAULT_CONCURRENCY = 8
CHILD_DEBOUNCE_SECONDS = 0.5


def interval_seconds(body: Mapping[str, Any]) -> float:
    try:
        return max(1.0, api.parse_duration(((body.get("spec") or {}).get("scaling") or {}).get("interval", "30s")))
    except (ValueError, AttributeError, TypeError):
        return 30.0


def transient(err: BaseException) -> bool:
    """A failure of the connection to the apiserver (refused, reset, timed out) or an answer that says
    "later" (429, 5xx): expected during an apiserver restart, not a bug."""
    status = getattr(getattr(err, "status", None), "code", None)
    if isinstance(status, int) and (status == 429 or status >= 500):
        return True
    for e in (err, err.__cause__, err.__context__):
        if e is None:
            continue
        if isinstance(e, (OSError, TimeoutError)) or type(e).__module__.split(".")[0] in (
                "httpx", "httpx2", "httpcore", "httpcore2", "anyio"):
            return True
    return False


class Controller:
    def __init__(self, reconciler: Reconciler, leader: LeaderGate, *, concurrency: int = DEFAULT_CONCURRENCY,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 ready: Callable[[], bool] | None = None):
        self.reconciler = reconciler
        self.leader = leader
        self.concurrency = concurrency
        self._clock, self._wall = clock, wall
        self.ready = ready  # True once the children's cache has synced (None: at once)
        self.bodies: dict[Key, dict[str, Any]] = {}
        self.memories: dict[Key, FactoryMemory] = {}
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: list[tuple[float, int, Key]] = []
        self._next: dict[Key, float] = {}
        self._seq = itertools.count()
        self._timer_wake = asyncio.Event()
        self._failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.passes = 0
        self._was_leader = False
        self._api_down = False

    # inputs ------------------------------------------------------------------------------------------
    def upsert(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta.get("namespace") or "default", meta["name"])
        if meta.get("deletionTimestamp"):
            self.remove(key)
            return
        self.bodies[key] = copy.deepcopy(dict(body))
        self.enqueue(key)

    def remove(self, key: Key) -> None:
        if self.bodies.pop(key, None) is not None or key in self.memories:
            self.memories.pop(key, None)
            self._failures.pop(key, None)
            self.reconciler.forget(*key)

    def child_changed(self, namespace: str, factory: str) -> None:
        """A child changed: reconcile soon. Changes come in bursts (a Deployment created, then its status
        updated several times), so they are coalesced over ``CHILD_DEBOUNCE_SECONDS`` into one pass."""
        key = (namespace, factory)
        if key not in self.bodies or key in self._queued:
            return
        when = self._next.get(key)
        if when is None or when - self._clock() > CHILD_DEBOUNCE_SECONDS:
            self.enqueue_after(key, CHILD_DEBOUNCE_SECONDS)

    def enqueue(self, key: Key) -> None:
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def enqueue_after(self, key: Key, delay: float) -> None:
        """Queue ``key`` in ``delay`` seconds; replaces the factory's earlier timer (each pass sets the next)."""
        when = self._clock() + max(0.0, delay)
        self._next[key] = when
        heapq.heappush(self._timers, (when, next(self._seq), key))
        self._timer_wake.set()

    def leadership_changed(self, leading: bool) -> None:
        """Called by the elector: a new leader starts from the cluster's state; a former one stops exporting."""
        for key in list(self.memories):
            self.reconciler.forget(*key)
        self.memories.clear()
        self._failures.clear()
        if leading:
            for key in self.bodies:
                self.enqueue(key)

    # the loops ---------------------------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        while True:
            self._timer_wake.clear()
            now = self._clock()
            while self._timers and self._timers[0][0] <= now:
                when, _, key = heapq.heappop(self._timers)
                if self._next.get(key) == when:
                    del self._next[key]
                    if key in self.bodies:
                        self.enqueue(key)
            delay = self._timers[0][0] - now if self._timers else 3600.0
            try:
                await asyncio.wait_for(self._timer_wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            try:
                await self.process(key)
            finally:
                self._running.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)

    async def process(self, key: Key) -> None:
        """One pass of one factory (when this replica leads), then its next pass scheduled."""
        body = self.bodies.get(key)
        if body is None or not self.leader.is_leader:
            return
        if self.ready is not None and not self.ready():
            self.enqueue_after(key, 0.5)
            return
        memory = self.memories.setdefault(key, FactoryMemory())
        interval = interval_seconds(body)
        now = self._wall()
        due = memory.last_measure is None or (now - memory.last_measure).total_seconds() >= interval
        self.passes += 1
        try:
            await self.reconciler.reconcile(copy.deepcopy(body), memory, now, measure=due)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - retried with backoff; the queue never dies
            n = self._failures[key] = self._failures.get(key, 0) + 1
            backoff = min(MAX_BACKOFF, MIN_BACKOFF * 2 ** (n - 1))
            if transient(err):  # the API is away (restart, network): one line per outage, not per factory
                if not self._api_down:
                    self._api_down = True
                    log.warning("Kubernetes API unavailable (%s: %s); passes are retried with backoff until it answers",
                                type(err).__name__, str(err)[:200])
                log.debug("factory %s/%s: reconcile failed (%s); retrying in %.0fs", *key, err, backoff)
            elif n == 1:
                log.exception("factory %s/%s: reconcile failed; retrying in %.0fs", *key, backoff)
            else:
                log.warning("factory %s/%s: reconcile failed again (%d in a row: %s); retrying in %.0fs",
                            *key, n, err, backoff)
            self.enqueue_after(key, backoff)
            return
        self._failures.pop(key, None)
        if self._api_down:
            self._api_down = False
            log.info("Kubernetes API answers again; reconciling")
        if memory.last_measure is None:
            self.enqueue_after(key, interval)
        else:
            elapsed = (self._wall() - memory.last_measure).total_seconds()
            self.enqueue_after(key, max(0.5, interval - elapsed))

    async def _leadership_loop(self) -> None:
        """Polls the gate (it may lose the Lease without a callback when the apiserver is away)."""
        while True:
            leading = self.leader.is_leader
            if leading != self._was_leader:
                self._was_leader = leading
                self.leadership_changed(leading)
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._timer_loop(), name="controller timers"))
        self._tasks.append(asyncio.create_task(self._leadership_loop(), name="controller leadership"))
        self._tasks += [asyncio.create_task(self._worker(), name=f"controller worker {i}") for i in range(self.concurrency)]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def drain(self, timeout: float = 5.0) -> None:
        """Tests: wait until nothing is queued or running."""
        deadline = self._clock() + timeout
        while (self._queued or self._running) and self._clock() < deadline:
            await asyncio.sleep(0.01)
