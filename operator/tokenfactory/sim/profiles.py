"""Throughput and latency profiles per GPU type (data), calibrated to the GPU sheet.

Capacity of one engine (one vLLM replica) = tokens/s per GPU at saturation (the sheet's figure,
DeepSeek-R1) x GPUs per replica x ``capacity_factor`` (1.0 = exactly the sheet; tests set other
values so that the real capacity differs from what the operator assumes).

Latency grows with load ``u`` = served / capacity (0..1):

* ITL  = base_itl x (1 + itl_load_factor x u^2)           (bigger decode batches are slower)
* TTFT = base_ttft x prompt_tokens/1000 x (1 + u) + queue wait,
  queue wait = backlog (output tokens waiting) / capacity (output tokens/s)

Per-request spread: latencies are log-normal around those medians (sigmas below).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenfactory import gpusheet


@dataclass(frozen=True)
class Profile:
    gpu_type: str
    tokens_per_second_per_gpu: float  # generation tokens/s per GPU at saturation
    base_itl_seconds: float  # median inter-token latency at zero load
    base_ttft_seconds: float  # median prefill time for a 1,000-token prompt at zero load
    itl_load_factor: float = 1.0  # ITL at saturation = base x (1 + factor)
    itl_sigma: float = 0.15  # log-normal spread of per-request latencies
    ttft_sigma: float = 0.30
    e2e_sigma: float = 0.15
    max_waiting_requests_per_engine: int = 1000  # bounded queue; beyond it requests are dropped


# Base latencies per GPU type (data). Throughput comes from the sheet.
LATENCY = {
    "h200": dict(base_itl_seconds=0.030, base_ttft_seconds=0.40),
    "gb300": dict(base_itl_seconds=0.015, base_ttft_seconds=0.20),
}
DEFAULT_LATENCY = dict(base_itl_seconds=0.030, base_ttft_seconds=0.40)
DEFAULT_TOKENS_PER_SECOND_PER_GPU = 100.0


def profile_for(gpu_type: str) -> Profile:
    """The profile of ``gpu_type``; types missing from the sheet get conservative defaults."""
    key = gpu_type.lower()
    entry = gpusheet.lookup(key)
    tps = entry.tokens_per_second_per_gpu if entry else DEFAULT_TOKENS_PER_SECOND_PER_GPU
    return Profile(gpu_type=key, tokens_per_second_per_gpu=tps, **LATENCY.get(key, DEFAULT_LATENCY))


def default_startup_seconds(gpu_type: str) -> float:
    entry = gpusheet.lookup(gpu_type)
    return entry.startup_seconds if entry else 300.0
