"""A :class:`~tokenfactory.metrics_source.MetricsSource` reading a simulated fleet directly.

For fast-forward benchmarks (no Prometheus in the loop): the figures are the fleet's ground truth
over its own window (``Fleet.window_seconds``; the requested window is recorded, not re-applied).
"""

from __future__ import annotations

from tokenfactory.metrics_source import NO_SERIES, FactoryMetrics, MetricsUnavailable, PoolMetrics
from tokenfactory.sim.fleet import Fleet


class FleetMetricsSource:
    def __init__(self, fleet: Fleet):
        self.fleet = fleet

    def read(self, namespace: str, factory: str, window_seconds: float) -> FactoryMetrics:
        truth = self.fleet.truth()
        pools = {}
        for p in truth["pools"]:
            if p["namespace"] != namespace or p["factory"] != factory or p["replicas_serving"] == 0:
                continue
            engines = [e for e in truth["engines"] if e["namespace"] == namespace and e["factory"] == factory
                       and e["pool"] == p["pool"] and e["state"] == "serving"]
            pools[p["pool"]] = PoolMetrics(
                pool=p["pool"],
                prompt_tokens_per_second=p["prompt_tokens_per_second"],
                generation_tokens_per_second=p["generation_tokens_per_second"],
                ttft_p95_seconds=p["ttft_p95_seconds"],
                itl_p95_seconds=p["itl_p95_seconds"],
                requests_waiting=p["requests_waiting"],
                requests_running=p["requests_running"],
                kv_cache_usage=sum(e["kv_cache_usage"] for e in engines) / len(engines) if engines else None,
                engines_reporting=len(engines),
                sampled_at=truth["now"],
            )
        if not pools:
            raise MetricsUnavailable(NO_SERIES, f"no serving engine for {namespace}/{factory}")
        return FactoryMetrics(namespace=namespace, factory=factory, window_seconds=window_seconds,
                              sampled_at=truth["now"], pools=pools)

    async def pool_metrics(
        self, namespace: str, factory: str, window_seconds: float, now: float | None = None
    ) -> FactoryMetrics:
        return self.read(namespace, factory, window_seconds)
