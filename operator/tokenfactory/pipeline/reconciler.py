"""One reconcile pass of one TokenFactory: collect -> assess -> plan -> actuate -> status.

Level-triggered and idempotent: every pass re-derives everything from the object and the cluster (plus
the little per-factory memory in :class:`~tokenfactory.pipeline.model.FactoryMemory`), server-side
applies the rendered children, deletes the Deployments of pools that are gone and writes a status that
tells the truth. A pass that is asked to ``measure`` (once per ``spec.scaling.interval``) also reads
metrics, prices and plans; the others keep the last figures and replicas.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from tokenfactory import api, routing
from tokenfactory.pipeline import actuate, assess, collect, model, plan, status
from tokenfactory.pipeline.model import Event, FactoryMemory
from tokenfactory.ports import ChildCache, KubeClient, MetricsExporter, MetricsSources

log = logging.getLogger("tokenfactory.pipeline")


class Reconciler:
    """Runs passes with the given adapters. Without ``sources`` and ``exporter`` nothing is measured
    (children and replica status only)."""

    def __init__(self, kube: KubeClient, *, sources: MetricsSources | None = None, exporter: MetricsExporter | None = None,
                 default_prometheus_url: str | None = None, cache: ChildCache | None = None,
                 allowed_prometheus_urls: frozenset[str] = frozenset(), admission: Any | None = None):
        self.kube = kube
        self.cache = cache  # the watch cache of the children; None: read them with KubeClient (the fake)
        self.admission = admission  # pipeline.admission.AdmissionReader (``state()``), or None: no re-check
        self.allowed_urls = frozenset(allowed_prometheus_urls)  # per-factory URLs the admin allows (issue 15)
        self.sources = sources
        self.exporter = exporter
        self.default_url = default_prometheus_url

    @property
    def measuring(self) -> bool:
        return self.sources is not None or self.exporter is not None

    async def reconcile(self, obj: Mapping[str, Any], memory: FactoryMemory, now: dt.datetime,
                        measure: bool = False) -> list[Event]:
        """One pass. Returns the Events it emitted. Never raises for a bad spec (that is a status, not a crash).
        ``memory.last_measure`` is set when the pass read metrics."""
        c = await collect.collect(self.kube, self.sources, self.default_url, obj, memory, now, measure and self.measuring,
                                    cache=self.cache, allowed_urls=self.allowed_urls,
                                    admission=await self.admission.state_for(_namespace(obj)) if self.admission else None)
        if c.spec is None:
            st, event = status.invalid(c)
            await status.write(self.kube, memory, c.ref, st, [event])
            return [event]

        events: list[Event] = []
        outcome = plan.hold(c, memory.planner_state)
        a = None
        ready_by_pool = c.ready()
        for pool, n in ready_by_pool.items():
            if n > 0:
                memory.pool_ready_since.setdefault(pool, now)
            else:
                memory.pool_ready_since.pop(pool, None)
        if c.reading.read:
            hold_down = self._after_gap(c, memory, now)
            ready_now = sum(c.ready().values()) > 0
            if not ready_now:
                memory.serving_since = None
            elif memory.serving_since is None:
                memory.serving_since = now
            try:
                a = assess.assess(c, memory.last_good, memory.metrics_warned, memory.serving_since)
                outcome = await plan.plan_in_worker(c, memory.planner_state, hold_scale_down=hold_down)  # off the loop
            except Exception:  # noqa: BLE001 - a measuring bug must not stop reconciling the children
                log.exception("%s/%s: measuring failed; keeping replicas and the last figures", c.ref.namespace, c.ref.name)
                a, outcome = None, plan.hold(c, memory.planner_state)
            else:
                events += a.events + outcome.events

        act = await actuate.actuate(self.kube, c.ref, c.spec, outcome.replicas, c.children,
                                    outcome.capacities or routing.learned_capacities(outcome.state, c.pools),
                                    cache=self.cache, applied=memory.applied)
        events += act.events
        events += status.creation_events(act)

        if a is not None:
            memory.measurement = status.measurement(c, a, outcome)
            if c.reading.metrics is not None:
                memory.last_good = memory.measurement
            memory.metrics_warned = a.metrics_warned
            memory.planner_state = outcome.state
            if outcome.decision is not None:
                memory.last_decision = outcome.decision
            memory.last_measure = now
            if self.exporter is not None:
                memory.known_pools = status.export(self.exporter, c, a, outcome, memory.known_pools)
        memory.desired = dict(outcome.replicas)
        extra = (status.pending(c),) if self.measuring and memory.measurement is None else ()
        st = status.build(c, act, outcome.replicas, memory.measurement, memory.last_decision, extra)
        await status.write(self.kube, memory, c.ref, st, events)
        return events

    @staticmethod
    def _after_gap(c: model.Collected, memory: FactoryMemory, now: dt.datetime) -> str | None:
        """Issue 15: after a metrics gap the first rates cover the gap (too low), so no scale-down until a
        full metrics window of fresh data exists. Returns why scale-downs wait, or None."""
        assert c.spec is not None
        if c.reading.metrics is None:
            if memory.last_good is not None:
                memory.metrics_gap = True
            return None
        if memory.metrics_gap:
            memory.metrics_gap, memory.fresh_since = False, now
        if memory.fresh_since is None:
            return None
        window = api.parse_duration(c.spec.metrics.window)
        if (now - memory.fresh_since).total_seconds() >= window:
            memory.fresh_since = None
            return None
        return (f"scale-down waits: metrics came back at {model.rfc3339(memory.fresh_since)} after a gap, and the "
                f"{c.spec.metrics.window} window is not yet all fresh data")

    def forget(self, namespace: str, name: str) -> None:
        """The factory is gone (or no longer ours): drop its exported series."""
        if self.exporter is not None:
            self.exporter.forget(namespace, name)

    async def aclose(self) -> None:
        """Close the Kubernetes and Prometheus clients."""
        if self.sources is not None:
            await self.sources.aclose()
        close = getattr(self.kube, "close", None)
        if close is not None:
            await close()


def _namespace(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")
