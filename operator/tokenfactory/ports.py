"""The operator's I/O boundaries as small Protocols; the reconcile pipeline sees nothing else.

Each Protocol has a real adapter and an in-memory fake, in the module named after the adapter:

======================  ==============================  ==================================
Protocol                real adapter                    fake (tests)
======================  ==============================  ==================================
:class:`KubeClient`     ``kube.LightkubeClient``        ``kube.FakeKube``
:class:`MetricsSource`  ``metrics_source.PrometheusSource``  ``metrics_source.FakeMetricsSource``
:class:`MetricsSources` ``metrics_source.SourcesByUrl`` (one source per Prometheus URL, preset fakes allowed)
:class:`MetricsExporter` ``exporter.PrometheusExporter`` ``exporter.FakeExporter``
:class:`ChildCache`     ``informer.ChildInformers``     ``kube.FakeKube`` (reads its own objects)
:class:`MetricsSources` ``metrics_batch.BatchedSources`` (one PromQL query per metric for all factories)
:class:`LeaderGate`     ``leader.LeaseElector``         ``leader.AlwaysLeader``
======================  ==============================  ==================================

Everything crosses these boundaries as plain dicts (Kubernetes objects) or frozen dataclasses
(metrics), so the pipeline never sees a client library's types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # types only: the adapters import this module
    from tokenfactory.exporter import FactoryFigures
    from tokenfactory.metrics_source import FactoryMetrics


class KubeClient(Protocol):
    """What the operator does with the Kubernetes API (lightkube in production)."""

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with the operator's field manager (conflicts forced); returns the live object."""
        ...

    async def list(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Objects of ``kind`` (Deployment, Service, Pod) in ``namespace`` matching all ``labels``."""
        ...

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create (POST) the object; raises :class:`AlreadyExists` when an object of that name exists,
        so an object the operator did not make is never taken over."""
        ...

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The live object, or None when there is none (one GET, used only when a create collided)."""
        ...

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete (foreground-agnostic); a missing object is not an error."""
        ...

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the TokenFactory's status subresource (None values remove fields)."""
        ...

    async def emit_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on the TokenFactory (``involved``: its metadata + apiVersion/kind)."""
        ...


class AlreadyExists(Exception):
    """``KubeClient.create`` found an object of that name already there."""


class ChildCache(Protocol):
    """The operator's children (Deployments, Services, Pods labelled ``managed-by: tokenfactory``) as a
    watch keeps them: reads cost no API request. ``kube.FakeKube`` serves its own objects."""

    async def list(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Cached objects of ``kind`` in ``namespace`` matching all ``labels``."""
        ...

    def cached(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The cached object, or None when the cache has none of that kind and name (or does not hold ``kind``)."""
        ...


class LeaderGate(Protocol):
    """Whether this replica may act (leader election on a coordination.k8s.io Lease)."""

    @property
    def is_leader(self) -> bool: ...


@runtime_checkable
class MetricsSource(Protocol):
    """Where one factory's live vLLM figures come from (Prometheus in production)."""

    async def pool_metrics(
        self, namespace: str, factory: str, window_seconds: float, now: float | None = None
    ) -> FactoryMetrics:
        """Per-pool figures of one factory; raises ``metrics_source.MetricsUnavailable``."""
        ...


class MetricsSources(Protocol):
    """One :class:`MetricsSource` per Prometheus URL (each factory may name its own)."""

    def source(self, url: str) -> MetricsSource: ...

    async def aclose(self) -> None:
        """Close every client made so far."""
        ...


@runtime_checkable
class MetricsExporter(Protocol):
    """The operator's own series ($/Mtok, $/hour, tokens/s, ...), one snapshot per factory."""

    def publish(self, namespace: str, factory: str, model: str, figures: FactoryFigures) -> None: ...

    def forget(self, namespace: str, factory: str) -> None: ...

    def forget_pool(self, namespace: str, factory: str, pool: str) -> None: ...

    def record_scaling_decision(self, namespace: str, factory: str, pool: str, direction: str, count: int = 1) -> None: ...
