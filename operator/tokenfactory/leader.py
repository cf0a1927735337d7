"""Leader election on a coordination.k8s.io/v1 Lease, so that of several operator replicas exactly one acts.

The algorithm is client-go's (``k8s.io/client-go/tools/leaderelection``):

* every ``retry_period`` seconds each replica reads the Lease. A replica takes it when it is free (no
  holder) or expired: its holder has not renewed it (``renewTime`` and holder unchanged, as *this*
  replica observed them) for ``lease_duration`` seconds. Observing locally avoids trusting clocks across
  machines. Writes are updates with the read ``resourceVersion``, so two candidates cannot both win: the
  apiserver accepts one and answers 409 Conflict to the other;
* the leader renews every ``retry_period``; if it could not renew for ``renew_deadline`` (< duration) it
  stops acting at once, before any other replica may consider the Lease expired;
* on a clean shutdown the leader releases the Lease (empty holder), so the next replica takes over
  within one ``retry_period`` instead of waiting for expiry.

kopf's own "peering" is not leader election: operators of the same priority all pause when they see
each other (``kopf/_core/engines/peering.py``: "Pausing all operators, including self"), so two identical
replicas would both stand still.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tokenfactory.leader")

DEFAULT_LEASE_NAME = "tokenfactory-operator"


def default_identity() -> str:
    """Pod name (HOSTNAME in a pod) plus a random suffix: a restarted pod is a new candidate."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:6]}"


class AlwaysLeader:
    """``ports.LeaderGate`` for a single replica (``--leader-elect=false``) and tests."""

    is_leader = True

    def __init__(self) -> None:
        self.became_leader = asyncio.Event()
        self.became_leader.set()


class LeaseElector:
    """``ports.LeaderGate`` backed by a Lease (lightkube.AsyncClient)."""

    def __init__(self, client: Any, namespace: str, name: str = DEFAULT_LEASE_NAME, identity: str | None = None,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 on_started_leading: Callable[[], None] | None = None,
                 on_stopped_leading: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if not (retry_period < renew_deadline < lease_duration):
            raise ValueError("need retry_period < renew_deadline < lease_duration "
                             f"(got {retry_period}, {renew_deadline}, {lease_duration})")
        self._client = client
        self.namespace, self.name = namespace, name
        self.identity = identity or default_identity()
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.on_started_leading = on_started_leading or (lambda: None)
        self.on_stopped_leading = on_stopped_leading or (lambda: None)
        self._clock = clock
        self._leader = False
        self._last_renew = 0.0
        self._observed: tuple[Any, Any] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._failing = False
        self.became_leader = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        """True only while the Lease was renewed within ``renew_deadline``."""
        return self._leader and self._clock() - self._last_renew < self.renew_deadline

    # Lease I/O ---------------------------------------------------------------------------------------
    def _lease_obj(self, spec: dict[str, Any], rv: str | None = None) -> Any:
        from lightkube.models.coordination_v1 import LeaseSpec
        from lightkube.models.meta_v1 import ObjectMeta
        from lightkube.resources.coordination_v1 import Lease

        return Lease(metadata=ObjectMeta(name=self.name, namespace=self.namespace, resourceVersion=rv),
                     spec=LeaseSpec(**spec))

    async def _get(self) -> Any | None:
        from lightkube import ApiError
        from lightkube.resources.coordination_v1 import Lease

        try:
            return await self._client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise

    async def try_acquire_or_renew(self) -> bool:
        """One round: True when this replica holds the Lease afterwards."""
        from lightkube import ApiError

        now_wall = dt.datetime.now(dt.UTC)
        now = self._clock()
        mine = {"holderIdentity": self.identity, "leaseDurationSeconds": int(round(self.lease_duration)),
                "renewTime": now_wall}
        lease = await self._get()
        try:
            if lease is None:
                await self._client.create(self._lease_obj({**mine, "acquireTime": now_wall, "leaseTransitions": 0}),
                                          namespace=self.namespace)
                return True
            spec = lease.spec
            holder = spec.holderIdentity if spec else None
            record = (holder, spec.renewTime if spec else None)
            if record != self._observed:
                self._observed, self._observed_at = record, now
            if holder and holder != self.identity and now - self._observed_at < self.lease_duration:
                return False  # held by another replica, renewed recently (as seen from here)
            transitions = (spec.leaseTransitions or 0) if spec else 0
            if holder == self.identity:
                acquire = spec.acquireTime
            else:
                acquire, transitions = now_wall, transitions + 1
            await self._client.replace(self._lease_obj(
                {**mine, "acquireTime": acquire or now_wall, "leaseTransitions": transitions},
                rv=lease.metadata.resourceVersion), namespace=self.namespace)
            return True
        except ApiError as err:
            if err.status.code in (409, 422):  # another replica wrote first
                return False
            raise

    async def release(self) -> None:
        """Give the Lease up (clean shutdown), so another replica takes over within one retry period."""
        if not self._leader:
            return
        self._set_leader(False)
        try:
            lease = await self._get()
            if lease is not None and lease.spec and lease.spec.holderIdentity == self.identity:
                await self._client.replace(self._lease_obj(
                    {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": dt.datetime.now(dt.UTC),
                     "acquireTime": None, "leaseTransitions": lease.spec.leaseTransitions},
                    rv=lease.metadata.resourceVersion), namespace=self.namespace)
                log.info("released Lease %s/%s", self.namespace, self.name)
        except Exception as err:  # noqa: BLE001 - best effort: the Lease expires anyway
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, err)

    # the loop ----------------------------------------------------------------------------------------
    def _set_leader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        if leader:
            log.info("became leader (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
            self.became_leader.set()
            self.on_started_leading()
        else:
            log.warning("stopped leading (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
            self.became_leader.clear()
            self.on_stopped_leading()

    async def step(self) -> None:
        try:
            ok = await self.try_acquire_or_renew()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - the apiserver may be away; the deadline decides
            ok = False
            if not self._failing:
                log.warning("cannot reach the Lease %s/%s (%s: %s); retrying every %.0fs",
                            self.namespace, self.name, type(err).__name__, str(err)[:200], self.retry_period)
                self._failing = True
        else:
            if self._failing:
                log.info("Lease %s/%s reachable again", self.namespace, self.name)
                self._failing = False
        if ok:
            self._last_renew = self._clock()
            self._set_leader(True)
        elif self._leader and self._clock() - self._last_renew >= self.renew_deadline:
            self._set_leader(False)

    async def run(self) -> None:
        log.info("campaigning for Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while True:
            await self.step()
            await asyncio.sleep(self.retry_period)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="leader-election")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.release()
