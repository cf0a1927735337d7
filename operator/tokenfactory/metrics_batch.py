"""Metrics for every factory in one batch (``ports.MetricsSources``): one PromQL query per metric for all
factories of a Prometheus, grouped ``by (namespace, factory, pool)``, fanned out to each factory.

Per Prometheus URL and metrics window there is one snapshot. A factory's measuring pass takes the
snapshot when it is younger than the factory's ``scaling.interval``, else it refreshes it (one refresh at
a time: factories that are due together share it). So the queries per minute do not grow with the number
of factories or pools: 10 queries per refresh (9 figures, 1 naming the series left out), at most one
refresh per interval.

The issue-15 edge cases hold here as in ``PrometheusSource.pool_metrics``: every rate, quantile and gauge
leaves out a NaN, infinite or negative sample per series before summing (``metrics_source.FINITE``), a
tenth query names those series per factory (pod and series, in ``FactoryMetrics.dropped``); pools are
assembled by the same ``metrics_source.assemble`` (a pool busy without a generation-token series is not
reporting tokens).

A failed refresh (Prometheus down, timeout, bad answer) is kept for the same time, so every factory sees
the same ``MetricsUnavailable`` and Prometheus is not hammered; it is logged once when the outage starts
and once when it ends. A factory missing from a good snapshot is ``NoSeries`` (``metrics_source.assemble``).

A source that is not a ``PrometheusSource`` (a fake in tests) is asked per factory, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


from tokenfactory.metrics_source import (
    _PROMETHEUS_ERROR_TYPES, BAD_RESPONSE, FINITE, PROMETHEUS_ERROR, TIMEOUT, FactoryMetrics, MetricsUnavailable,
    PrometheusSource, SourcesByUrl, assemble, dropped_items, escape_label_value, nonfinite_series, range_literal,
)

log = logging.getLogger("tokenfactory.metrics")

GROUP = "namespace, factory, pool"
Series = tuple[str, str, str]  # (namespace, factory, pool)


def _selector(namespaces: tuple[str, ...]) -> str:
    if not namespaces:
        return '{factory!=""}'
    alt = "|".join(escape_label_value(n) for n in namespaces)  # namespace names are DNS labels: no regex metacharacters
    return f'{{factory!="",namespace=~"{alt}"}}'


def batch_queries(window_seconds: float, namespaces: tuple[str, ...] = ()) -> dict[str, str]:
    """The same figures as ``metrics_source.promql_queries``, for every factory at once (pure)."""
    sel, w = _selector(namespaces), range_literal(window_seconds)

    def rate(m: str) -> str:
        return f"sum by ({GROUP}) (rate({m}{sel}{w}){FINITE})"

    def quantile(h: str) -> str:
        return f"histogram_quantile(0.95, sum by ({GROUP}, le) (rate({h}_bucket{sel}{w}){FINITE}))"

    def gauge(m: str, agg: str = "sum") -> str:
        if agg == "count":  # an engine that reports counts, whatever its value
            return f"{agg} by ({GROUP}) ({m}{sel})"
        return f"{agg} by ({GROUP}) ({m}{sel}{FINITE})"

    return {
        "generation_tokens_per_second": rate("vllm:generation_tokens_total"),
        "prompt_tokens_per_second": rate("vllm:prompt_tokens_total"),
        "requests_per_second": rate("vllm:request_success_total"),
        "ttft_p95_seconds": quantile("vllm:time_to_first_token_seconds"),
        "itl_p95_seconds": quantile("vllm:inter_token_latency_seconds"),
        "requests_waiting": gauge("vllm:num_requests_waiting"),
        "requests_running": gauge("vllm:num_requests_running"),
        "kv_cache_usage": gauge("vllm:kv_cache_usage_perc", "avg"),
        "engines_reporting": gauge("vllm:num_requests_running", "count"),
    }


def batch_nonfinite_query(namespaces: tuple[str, ...] = ()) -> str:
    """``metrics_source.nonfinite_query`` for every factory at once: the series whose current value the
    figures leave out, with their namespace, factory, pool and pod labels (pure)."""
    return nonfinite_series(_selector(namespaces))


def parse_dropped_grouped(payload: object) -> dict[tuple[str, str], tuple[str, ...]]:
    """The answer of :func:`batch_nonfinite_query` per (namespace, factory): "pod P (pool Q): SERIES = VALUE"."""
    out: dict[tuple[str, str], set[str]] = {}
    for metric, line in dropped_items(payload):
        ns, factory = metric.get("namespace"), metric.get("factory")
        if isinstance(ns, str) and isinstance(factory, str) and ns and factory:
            out.setdefault((ns, factory), set()).add(line)
    return {k: tuple(sorted(v)) for k, v in out.items()}


def parse_grouped(payload: object, query: str = "") -> list[tuple[Series, float, float]]:
    """Validate an instant-vector answer grouped by namespace/factory/pool (pure); odd answers raise
    ``MetricsUnavailable`` (BadResponse / PrometheusError), as ``metrics_source.parse_vector`` does, with a
    classified message: nothing of the answer's text is copied (a per-factory URL may be user input)."""
    if not isinstance(payload, dict):
        raise MetricsUnavailable(BAD_RESPONSE, f"answer is not a JSON object ({query})")
    if payload.get("status") == "error":
        error_type = payload.get("errorType")
        kind = error_type if isinstance(error_type, str) and error_type in _PROMETHEUS_ERROR_TYPES else "error"
        raise MetricsUnavailable(PROMETHEUS_ERROR, f"Prometheus answered status error ({kind}) ({query})")
    data = payload.get("data")
    if payload.get("status") != "success" or not isinstance(data, dict) or data.get("resultType") != "vector" \
            or not isinstance(data.get("result"), list):
        raise MetricsUnavailable(BAD_RESPONSE, f"not a successful instant vector ({query})")
    out: list[tuple[Series, float, float]] = []
    for item in data["result"]:
        metric = item.get("metric") if isinstance(item, dict) else None
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
            raise MetricsUnavailable(BAD_RESPONSE, f"malformed sample ({query})")
        labels = tuple(metric.get(k, "") for k in ("namespace", "factory", "pool"))
        ts, raw = value
        if not all(isinstance(x, str) for x in labels) or isinstance(ts, bool) or not isinstance(ts, (int, float)) \
                or not isinstance(raw, str):
            raise MetricsUnavailable(BAD_RESPONSE, f"malformed sample ({query})")
        try:
            v = float(raw)
        except ValueError:
            raise MetricsUnavailable(BAD_RESPONSE, f"sample value is not a number ({query})") from None
        out.append((labels, float(ts), v))
    return out


@dataclass
class Snapshot:
    taken: float  # monotonic
    by_factory: dict[tuple[str, str], dict[str, list[tuple[str, float, float]]]] = field(default_factory=dict)
    error: MetricsUnavailable | None = None
    dropped: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # per factory: series left out


def fan_out(answers: Mapping[str, list[tuple[Series, float, float]]]) -> dict[tuple[str, str], dict[str, list[tuple[str, float, float]]]]:
    """Per (namespace, factory): per metric, ``[(pool, ts, value)]`` (pure)."""
    out: dict[tuple[str, str], dict[str, list[tuple[str, float, float]]]] = {}
    for name, vector in answers.items():
        for (ns, factory, pool), ts, v in vector:
            if ns and factory:
                out.setdefault((ns, factory), {}).setdefault(name, []).append((pool, ts, v))
    return out


class BatchedSource:
    """One Prometheus: snapshots per metrics window, refreshed at most once per requesting interval."""

    def __init__(self, inner: PrometheusSource, namespaces: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.monotonic):
        self.inner = inner
        self.url = inner.url
        self.namespaces = namespaces
        self._clock = clock
        self._snapshots: dict[float, Snapshot] = {}
        self._locks: dict[float, asyncio.Lock] = {}
        self.refreshes = 0
        self.down_since: float | None = None

    async def _query(self, promql: str, now: float | None) -> list[tuple[Series, float, float]]:
        return parse_grouped(await self.inner.query_payload(promql, now), promql)

    async def _dropped(self, now: float | None) -> dict[tuple[str, str], tuple[str, ...]]:
        """Which series the figures leave out, per factory (names only; a failure here loses no figure)."""
        try:
            payload = await self.inner.query_payload(batch_nonfinite_query(self.namespaces), now)
        except MetricsUnavailable:
            return {}
        return parse_dropped_grouped(payload) if isinstance(payload, dict) and payload.get("status") == "success" else {}

    async def refresh(self, window_seconds: float, now: float | None = None) -> Snapshot:
        queries = batch_queries(window_seconds, self.namespaces)
        names = list(queries)
        self.refreshes += 1
        try:
            results, dropped = await asyncio.wait_for(
                asyncio.gather(asyncio.gather(*(self._query(queries[n], now) for n in names)), self._dropped(now)),
                timeout=self.inner.timeout * 2)
            snap = Snapshot(taken=self._clock(), by_factory=fan_out(dict(zip(names, results))),
                            dropped=dropped)
        except TimeoutError:
            snap = Snapshot(taken=self._clock(), error=MetricsUnavailable(
                TIMEOUT, f"queries to {self.url} took longer than {self.inner.timeout * 2}s"))
        except MetricsUnavailable as err:
            snap = Snapshot(taken=self._clock(), error=err)
        if snap.error is not None and self.down_since is None:
            self.down_since = snap.taken
            log.warning("Prometheus %s unavailable (%s); every factory holds its replicas until it answers",
                        self.url, snap.error)
        elif snap.error is None and self.down_since is not None:
            log.info("Prometheus %s answers again after %.0fs", self.url, snap.taken - self.down_since)
            self.down_since = None
        self._snapshots[window_seconds] = snap
        return snap

    async def snapshot(self, window_seconds: float, now: float | None, max_age: float) -> Snapshot:
        snap = self._snapshots.get(window_seconds)
        if snap is not None and self._clock() - snap.taken < max_age:
            return snap
        lock = self._locks.setdefault(window_seconds, asyncio.Lock())
        async with lock:  # factories due together share one refresh
            snap = self._snapshots.get(window_seconds)
            if snap is not None and self._clock() - snap.taken < max_age:
                return snap
            return await self.refresh(window_seconds, now)

    async def batched_metrics(self, namespace: str, factory: str, window_seconds: float, now: float | None = None,
                              *, max_age: float = 0.0) -> FactoryMetrics:
        """One factory's figures from a snapshot at most ``max_age`` seconds old."""
        snap = await self.snapshot(window_seconds, now, max_age)
        if snap.error is not None:
            raise snap.error
        return assemble(namespace, factory, window_seconds, snap.by_factory.get((namespace, factory), {}),
                        snap.dropped.get((namespace, factory), ()))

    async def pool_metrics(self, namespace: str, factory: str, window_seconds: float, now: float | None = None) -> FactoryMetrics:
        return await self.batched_metrics(namespace, factory, window_seconds, now, max_age=0.0)

    async def aclose(self) -> None:
        await self.inner.aclose()


class BatchedSources:
    """``ports.MetricsSources``: a :class:`BatchedSource` per Prometheus URL over ``SourcesByUrl``'s clients."""

    def __init__(self, sources: SourcesByUrl, namespaces: list[str] | None = None):
        self._sources = sources
        self._namespaces = tuple(namespaces or ())
        self._batched: dict[str, Any] = {}

    def source(self, url: str) -> Any:
        if url not in self._batched:
            inner = self._sources.source(url)
            self._batched[url] = BatchedSource(inner, self._namespaces) if isinstance(inner, PrometheusSource) else inner
        return self._batched[url]

    def refreshes(self) -> int:
        return sum(getattr(s, "refreshes", 0) for s in self._batched.values())

    async def aclose(self) -> None:
        await self._sources.aclose()


__all__ = ["BatchedSource", "BatchedSources", "batch_nonfinite_query", "batch_queries", "fan_out", "parse_dropped_grouped",
           "parse_grouped"]
