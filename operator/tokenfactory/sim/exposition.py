"""Prometheus text exposition of a :class:`~tokenfactory.sim.fleet.Fleet` with vLLM's names.

Series per *serving* engine (a starting vLLM has no HTTP server yet), labels ``model_name``,
``engine`` ("0") as vLLM V1 sets them, plus ``namespace, pod, factory, pool, gpu_type`` which a
real scrape adds by relabelling (docs/metrics.md); scrape the simulator with ``honor_labels: true``.
"""

from __future__ import annotations

import math

from prometheus_client import generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from tokenfactory.sim.fleet import Fleet

LABELS = ["model_name", "engine", "namespace", "pod", "factory", "pool", "gpu_type"]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _hist_buckets(cum: list[tuple[float, int]]) -> list[tuple[str, float]]:
    return [("+Inf" if math.isinf(le) else floatToGoString(le), float(c)) for le, c in cum]


class FleetCollector:
    """``lazy_counters``: an engine that has not processed a token yet exposes its gauges only (no token
    counters, request counter or histograms), as a vLLM whose labelled series appear on first use."""

    def __init__(self, fleet: Fleet, lazy_counters: bool = False):
        self.fleet = fleet
        self.lazy_counters = lazy_counters

    def describe(self):
        return []

    def collect(self):
        fleet = self.fleet
        now = fleet.now
        prompt = CounterMetricFamily("vllm:prompt_tokens", "Number of prefill tokens processed.", labels=LABELS)
        gen = CounterMetricFamily("vllm:generation_tokens", "Number of generation tokens processed.", labels=LABELS)
        success = CounterMetricFamily(
            "vllm:request_success", "Count of successfully processed requests.", labels=LABELS + ["finished_reason"]
        )
        preempt = CounterMetricFamily("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
                                      labels=LABELS)
        running = GaugeMetricFamily("vllm:num_requests_running", "Number of requests in model execution batches.", labels=LABELS)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels=LABELS)
        kv = GaugeMetricFamily("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels=LABELS)
        ttft = HistogramMetricFamily(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", labels=LABELS
        )
        itl = HistogramMetricFamily(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", labels=LABELS
        )
        e2e = HistogramMetricFamily(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", labels=LABELS
        )
        for e in sorted(fleet.engines.values(), key=lambda x: x.spec.name):
            if not e.serving(now):
                continue
            s = e.spec
            lv = [fleet.model, "0", s.namespace, s.pod or s.name, s.factory, s.pool, s.gpu_type.lower()]
            running.add_metric(lv, float(round(e.running)))
            waiting.add_metric(lv, float(round(e.waiting)))
            kv.add_metric(lv, e.kv)
            if self.lazy_counters and e.prompt_tokens <= 0 and e.generation_tokens <= 0:
                continue
            prompt.add_metric(lv, math.floor(e.prompt_tokens))
            gen.add_metric(lv, math.floor(e.generation_tokens))
            ttft_cum = e.ttft_hist.cumulative()
            success.add_metric(lv + ["stop"], float(math.floor(e.success)))
            preempt.add_metric(lv, float(math.floor(e.preemptions)))
            ttft.add_metric(lv, _hist_buckets(ttft_cum), e.ttft_hist.sum)
            itl.add_metric(lv, _hist_buckets(e.itl_hist.cumulative()), e.itl_hist.sum)
            e2e.add_metric(lv, _hist_buckets(e.e2e_hist.cumulative()), e.e2e_hist.sum)
        yield from (prompt, gen, success, preempt, running, waiting, kv, ttft, itl, e2e)


def render(fleet: Fleet, lazy_counters: bool = False) -> bytes:
    """The ``/metrics`` body for the fleet's current state."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FleetCollector(fleet, lazy_counters))
    return generate_latest(reg)
