"""Cluster mode: one simulated engine per Ready pod labelled ``tokenfactory.dev/factory``.

:func:`specs_from_pods` is pure (pods as plain dicts, the Kubernetes JSON shape);
:class:`PodPoller` lists pods with lightkube's sync client every ``interval`` seconds (in a thread)
and hands the specs to a callback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from tokenfactory.sim.fleet import EngineSpec

FACTORY_LABEL = "tokenfactory.dev/factory"
POOL_LABEL = "tokenfactory.dev/pool"
GPU_TYPE_LABEL = "tokenfactory.dev/gpu-type"
GPU_RESOURCE = "nvidia.com/gpu"

log = logging.getLogger(__name__)


def _ts(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _gpus(pod: Mapping) -> int:
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        v = (res.get("limits") or {}).get(GPU_RESOURCE) or (res.get("requests") or {}).get(GPU_RESOURCE)
        if v is not None:
            try:
                total += int(str(v))
            except ValueError:
                pass
    return total


def ready_since(pod: Mapping) -> float | None:
    """When the pod became Ready (epoch seconds), or None if it is not Ready."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") != "True":
                return None
            return _ts(cond.get("lastTransitionTime")) or 0.0
    return None


def specs_from_pods(
    pods: Iterable[Mapping],
    *,
    factory: str | None = None,
    startup_seconds: float = 0.0,
    capacity_factors: Mapping[str, float] | None = None,
    default_gpus: int = 1,
) -> list[EngineSpec]:
    """One :class:`EngineSpec` per Ready, not-terminating pod of a factory.

    ``capacity_factors`` maps a pool name (or ``namespace/factory/pool``) to its factor.
    Engines start at the pod's Ready time; the simulator adds ``startup_seconds`` to it.
    """
    factors = dict(capacity_factors or {})
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        fac = labels.get(FACTORY_LABEL)
        if not fac or (factory and fac != factory) or meta.get("deletionTimestamp"):
            continue
        ready = ready_since(pod)
        if ready is None:
            continue
        ns = meta.get("namespace") or "default"
        pool = labels.get(POOL_LABEL, "default")
        factor = factors.get(f"{ns}/{fac}/{pool}", factors.get(pool, 1.0))
        out.append(
            EngineSpec(
                name=f"{ns}/{meta.get('name')}",
                pod=str(meta.get("name")),
                namespace=ns,
                factory=fac,
                pool=pool,
                gpu_type=labels.get(GPU_TYPE_LABEL, "h200").lower(),
                gpus=_gpus(pod) or default_gpus,
                capacity_factor=factor,
                startup_seconds=startup_seconds,
                ready_at=ready,
            )
        )
    return out


class PodPoller:
    """Polls pods via lightkube and calls ``on_specs(specs)`` with the result every ``interval``."""

    def __init__(
        self,
        on_specs: Callable[[list[EngineSpec]], None],
        *,
        kubeconfig: str | None = None,
        namespace: str | None = None,
        factory: str | None = None,
        startup_seconds: float = 0.0,
        capacity_factors: Mapping[str, float] | None = None,
        interval: float = 1.0,
        client=None,
    ):
        self.on_specs = on_specs
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.factory = factory
        self.startup_seconds = startup_seconds
        self.capacity_factors = dict(capacity_factors or {})
        self.interval = interval
        self._client = client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.polls = 0

    def client(self):
        if self._client is None:
            from lightkube import Client
            from lightkube.config.kubeconfig import KubeConfig

            config = KubeConfig.from_file(self.kubeconfig) if self.kubeconfig else KubeConfig.from_env()
            self._client = Client(config=config, field_manager="tokenfactory-sim")
        return self._client

    def poll_once(self) -> list[EngineSpec]:
        from lightkube import operators
        from lightkube.resources.core_v1 import Pod

        selector = {FACTORY_LABEL: operators.equal(self.factory) if self.factory else operators.exists()}
        pods = [p.to_dict() for p in self.client().list(Pod, namespace=self.namespace or "*", labels=selector)]
        specs = specs_from_pods(
            pods, factory=self.factory, startup_seconds=self.startup_seconds, capacity_factors=self.capacity_factors
        )
        self.on_specs(specs)
        self.polls += 1
        return specs

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as e:  # keep polling through API hiccups
                self.errors += 1
                log.warning("listing pods failed: %s", e)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sim-pods", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
