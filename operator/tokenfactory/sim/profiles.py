"""Engine profiles per GPU type (data): vLLM's step-time model, calibrated, anchored to the GPU sheet.

One engine (one vLLM replica, ``reference_gpus`` GPUs) runs *steps*. A step carries one decode token
for each running sequence plus up to ``max_num_batched_tokens - running`` prompt tokens (chunked
prefill) and takes::

    step_seconds = step_base + step_per_seq x running + step_per_prefill_token x prefill_tokens

so the inter-token latency (ITL) of every running sequence grows with the batch, a prefill makes the
decodes that share its steps slower, and TTFT = queue wait + prefill. At most ``max_num_seqs``
sequences run at once; their KV cache (prompt + generated tokens) must fit in
``kv_cache_tokens_per_gpu x GPUs`` tokens, else the newest sequence is preempted and recomputed later.

Calibration (docs/calibration.md): the *shape* of the step-time model (base, per-sequence and
per-prefill-token costs) is fitted to NVIDIA aiconfigurator 0.12.0's measured data for DeepSeek on
``h200_sxm`` and ``gb300`` (stored in ``data/sim_calibration.json``); the *level* is anchored to the
GPU sheet: :func:`steady_state` at ``max_num_seqs`` concurrency with the default request mix
(1,000 prompt / 500 output tokens) gives exactly the sheet's tokens/s per GPU x GPUs.

An engine with ``g`` GPUs and ``capacity_factor`` ``f`` runs the reference engine's steps
``g x f / reference_gpus`` times faster (all three step costs are divided by that), so its throughput is
proportional to ``g x f``; its KV budget is ``kv_cache_tokens_per_gpu x g``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from tokenfactory import gpusheet

DEFAULT_PROMPT_TOKENS = 1000.0
DEFAULT_OUTPUT_TOKENS = 500.0


@dataclass(frozen=True)
class Profile:
    gpu_type: str
    tokens_per_second_per_gpu: float  # the sheet's figure: output tok/s per GPU at the operating point
    reference_gpus: int = 8  # GPUs per engine the step costs below are for
    max_num_seqs: int = 64  # concurrency limit per engine (vLLM --max-num-seqs): the operating point
    max_num_batched_tokens: int = 8192  # tokens per step (vLLM --max-num-batched-tokens)
    kv_cache_tokens_per_gpu: float = 60_000.0  # KV-cache budget, tokens per GPU
    step_base_seconds: float = 0.015  # per step
    step_per_seq_seconds: float = 0.0005  # per running sequence per step
    step_per_prefill_token_seconds: float = 0.00005  # per prompt token prefilled in the step
    max_waiting_requests_per_engine: int = 1000  # bounded queue; beyond it requests are dropped
    # Spread of the compatibility latency groups (PoolStats.latency, one group per fine histogram bin)
    ttft_sigma: float = 0.02
    itl_sigma: float = 0.02
    e2e_sigma: float = 0.02

    def scaled(self, gpus: int, capacity_factor: float = 1.0) -> tuple[float, float, float]:
        """(step base, per sequence, per prefill token) seconds of an engine with ``gpus`` GPUs."""
        speed = max(1e-9, gpus * capacity_factor / self.reference_gpus)
        return (self.step_base_seconds / speed, self.step_per_seq_seconds / speed,
                self.step_per_prefill_token_seconds / speed)


@dataclass(frozen=True)
class SteadyState:
    concurrency: float
    output_tokens_per_second: float  # per engine
    output_tokens_per_second_per_gpu: float
    itl_seconds: float  # mean inter-token latency
    ttft_seconds: float  # prefill time of one request with no queue (its chunks share steps with decodes)
    requests_per_second: float


def steady_state(
    profile: Profile,
    concurrency: float,
    prompt_tokens: float = DEFAULT_PROMPT_TOKENS,
    output_tokens: float = DEFAULT_OUTPUT_TOKENS,
    gpus: int | None = None,
    capacity_factor: float = 1.0,
) -> SteadyState:
    """The engine's analytic operating point with ``concurrency`` sequences always running.

    Per second the engine spends ``steps x (base + per_seq x B)`` on decode steps and
    ``per_prefill_token x prompt`` per request on prefill, and makes ``B`` tokens per step, so
    ``X = 1 / ((base + per_seq x B) / B + per_prefill_token x prompt / output)``; ITL = B / X
    (each sequence gets one token per step). This is the curve the calibration compares with
    measured points and the anchor to the sheet uses; the simulator itself runs the steps.
    """
    g = profile.reference_gpus if gpus is None else gpus
    base, per_seq, per_tok = profile.scaled(g, capacity_factor)
    b = max(1e-9, float(concurrency))
    x = 1.0 / ((base + per_seq * b) / b + per_tok * prompt_tokens / max(1.0, output_tokens))
    chunk = max(1.0, profile.max_num_batched_tokens - b)
    step_full = base + per_seq * b + per_tok * chunk
    ttft = math.ceil(prompt_tokens / chunk) * step_full if prompt_tokens > chunk else base + per_seq * b + per_tok * prompt_tokens
    return SteadyState(b, x, x / g, b / x, ttft, x / max(1.0, output_tokens))


def anchored(profile: Profile, tokens_per_second_per_gpu: float | None = None) -> Profile:
    """``profile`` with its step costs scaled so that :func:`steady_state` at ``max_num_seqs``
    (default request mix, reference GPUs) makes ``tokens_per_second_per_gpu`` (default: its own)."""
    target = profile.tokens_per_second_per_gpu if tokens_per_second_per_gpu is None else tokens_per_second_per_gpu
    got = steady_state(profile, profile.max_num_seqs).output_tokens_per_second_per_gpu
    k = got / target
    return replace(profile, tokens_per_second_per_gpu=target, step_base_seconds=profile.step_base_seconds * k,
                   step_per_seq_seconds=profile.step_per_seq_seconds * k,
                   step_per_prefill_token_seconds=profile.step_per_prefill_token_seconds * k)


# Step-time shapes per GPU type (data; see docs/calibration.md for where they come from).
SHAPES: dict[str, dict] = {
    "h200": dict(reference_gpus=8, max_num_seqs=48, max_num_batched_tokens=8192, kv_cache_tokens_per_gpu=60_000.0,
                 step_base_seconds=0.018, step_per_seq_seconds=0.0008, step_per_prefill_token_seconds=0.0001),
    "gb300": dict(reference_gpus=4, max_num_seqs=512, max_num_batched_tokens=16384, kv_cache_tokens_per_gpu=400_000.0,
                  step_base_seconds=0.010, step_per_seq_seconds=0.00002, step_per_prefill_token_seconds=0.000001),
}
DEFAULT_SHAPE = SHAPES["h200"]
DEFAULT_TOKENS_PER_SECOND_PER_GPU = 100.0


def profile_for(gpu_type: str) -> Profile:
    """The profile of ``gpu_type``: calibrated shape, anchored to the sheet's tokens/s per GPU; types
    missing from the sheet get the H200 shape at 100 tok/s per GPU (conservative)."""
    key = gpu_type.lower()
    entry = gpusheet.lookup(key)
    tps = entry.tokens_per_second_per_gpu if entry else DEFAULT_TOKENS_PER_SECOND_PER_GPU
    return anchored(Profile(gpu_type=key, tokens_per_second_per_gpu=tps, **SHAPES.get(key, DEFAULT_SHAPE)))


def default_startup_seconds(gpu_type: str) -> float:
    entry = gpusheet.lookup(gpu_type)
    return entry.startup_seconds if entry else 300.0
