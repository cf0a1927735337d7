"""Stage 1, collect: parse the spec and resolve its pools once, list the children once, read the
metrics once (when due), and settle where each pool's replica count stands.

The only I/O of the stage goes through ``ports.ChildCache`` (two lookups in the watch cache, no API
request; ``KubeClient.list`` when no cache is given) and ``ports.MetricsSource`` (one reading, served from
the batch all factories share). Metrics are read only once the factory has been applied: a new factory's first pass
creates its Deployments first, so it is never measured before anything could serve.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from tokenfactory import api, render
from tokenfactory.metrics_source import MetricsUnavailable
from tokenfactory.pipeline.model import Collected, FactoryMemory, FactoryRef, MetricsReading, PoolObservation
from tokenfactory.ports import ChildCache, KubeClient, MetricsSources


def factory_ref(obj: Mapping[str, Any]) -> FactoryRef:
    meta = obj["metadata"]
    return FactoryRef(
        name=meta["name"], namespace=meta.get("namespace") or "default", uid=meta.get("uid", ""),
        generation=meta.get("generation"),
        involved={"apiVersion": obj.get("apiVersion", api.API_VERSION), "kind": obj.get("kind", api.KIND), "metadata": meta},
        old_status=dict(obj.get("status") or {}),
    )


async def observe(kube: KubeClient | ChildCache, namespace: str, name: str) -> dict[str, PoolObservation]:
    """The factory's Deployments and pods, grouped by pool label."""
    selector = {render.LABEL_FACTORY: name, "app.kubernetes.io/managed-by": render.MANAGED_BY}
    deployments = await kube.list("Deployment", namespace, selector)
    pods = await kube.list("Pod", namespace, selector)
    found: dict[str, tuple[Mapping[str, Any] | None, list[Mapping[str, Any]]]] = {}
    for d in deployments:
        pool = (d["metadata"].get("labels") or {}).get(render.LABEL_POOL)
        if pool:
            found[pool] = (d, found.get(pool, (None, []))[1])
    for p in pods:
        pool = (p["metadata"].get("labels") or {}).get(render.LABEL_POOL)
        if pool:
            found.setdefault(pool, (None, []))[1].append(p)
    return {pool: PoolObservation(pool, dep, tuple(pods_)) for pool, (dep, pods_) in found.items()}


def current_replicas(spec: api.TokenFactorySpec, memory: FactoryMemory, status: Mapping[str, Any] | None,
                     observed: Mapping[str, PoolObservation]) -> dict[str, int]:
    """Where each pool's replica count stands: the operator's own memory, else the last status, else the live
    Deployment, else minReplicas; always clamped to the pool's (possibly new) bounds."""
    known: dict[str, int] = {}
    status_pools = {p.get("name"): p for p in (status or {}).get("pools") or []}
    for pool in spec.pools:
        live = observed[pool.name].spec_replicas if pool.name in observed else None
        if pool.name in memory.desired:
            known[pool.name] = memory.desired[pool.name]
        elif pool.name in status_pools and status_pools[pool.name].get("desiredReplicas") is not None:
            known[pool.name] = int(status_pools[pool.name]["desiredReplicas"])
        elif live is not None:
            known[pool.name] = live
    return render.clamp_replicas(spec, known)


async def read_metrics(sources: MetricsSources | None, default_url: str | None, spec: api.TokenFactorySpec,
                       namespace: str, name: str, now: dt.datetime) -> MetricsReading:
    url = spec.metrics.prometheus_url or default_url
    if url is None or sources is None:
        return MetricsReading(read=True, url=url, problem=MetricsUnavailable(
            "NoPrometheusURL", "set spec.metrics.prometheusUrl or run the operator with --prometheus-url"))
    try:
        source = sources.source(url)
        window = api.parse_duration(spec.metrics.window)
        if hasattr(source, "batched_metrics"):  # one batch for every factory, fresh within one interval
            fm = await source.batched_metrics(namespace, name, window, now.timestamp(),
                                              max_age=api.parse_duration(spec.scaling.interval))
        else:
            fm = await source.pool_metrics(namespace, name, window, now.timestamp())
    except MetricsUnavailable as err:
        return MetricsReading(read=True, url=url, problem=err)
    return MetricsReading(read=True, url=url, metrics=fm)


def parse(data: Any) -> tuple[api.TokenFactorySpec | None, tuple[api.ResolvedPool, ...], tuple[str, ...]]:
    """The spec and its pools resolved (once per pass), or every problem with its field path."""
    try:
        spec = api.parse_spec(data, resolve=False)
    except api.SpecError as err:
        return None, (), tuple(err.problems)
    pools, problems = [], []
    for i, pool in enumerate(spec.pools):
        try:
            pools.append(api.resolve_pool(pool, i))
        except api.PoolResolutionError as err:
            problems.append(str(err))
    if problems:
        return None, (), tuple(problems)
    return spec, tuple(pools), ()


async def collect(kube: KubeClient, sources: MetricsSources | None, default_url: str | None,
                  obj: Mapping[str, Any], memory: FactoryMemory, now: dt.datetime, measure: bool,
                  cache: ChildCache | None = None) -> Collected:
    """Everything one pass needs to know, read once. A spec that cannot be served is not an error here:
    ``problems`` says why, and nothing else is read."""
    ref = factory_ref(obj)
    spec, pools, problems = parse(obj.get("spec"))
    if spec is None:
        return Collected(ref=ref, now=now, spec=None, problems=problems, pools=(), children={}, current={},
                         reading=MetricsReading(read=False))
    children = await observe(cache if cache is not None else kube, ref.namespace, ref.name)
    applied = any(c.deployment is not None for c in children.values())
    if measure and applied:
        reading = await read_metrics(sources, default_url, spec, ref.namespace, ref.name, now)
    else:
        reading = MetricsReading(read=False)
    return Collected(ref=ref, now=now, spec=spec, problems=(), pools=pools, children=children,
                     current=current_replicas(spec, memory, ref.old_status, children), reading=reading)
