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
    """The engine's analytic operating point with ``concurrency`` sequences always in it, as the
    simulator's engine computes it: decode steps of ``base + per_seq x B``; prefills take
    ``per_prefill_token`` per prompt token off the decode time (so a share ``per_tok x prompt x
    requests/s`` of each second); TTFT (no queue) = prompt x (per_tok + step / chunk) + step; ITL =
    step / (1 - prefill share); a request lives TTFT + (output - 1) x ITL and, by Little's law,
    X = B x output / lifetime. The calibration compares this curve with measured points, the anchor
    to the sheet uses it; the simulator itself runs the steps."""
    g = profile.reference_gpus if gpus is None else gpus
    base, per_seq, per_tok = profile.scaled(g, capacity_factor)
    b = max(1e-9, float(concurrency))
    out = max(1.0, output_tokens)
    t_dec = base + per_seq * b
    chunk = max(1.0, profile.max_num_batched_tokens - b)
    ttft = prompt_tokens * (per_tok + t_dec / chunk) + t_dec
    # X (ttft + (out - 1) t_dec / (1 - c X)) = B out, c = per_tok x prompt / out: the smaller root of
    # c ttft X^2 - (ttft + (out - 1) t_dec + B out c) X + B out = 0 (below the prefill limit 1 / c)
    c = per_tok * prompt_tokens / out
    lin = ttft + (out - 1) * t_dec + b * out * c
    if c * ttft > 0:
        x = (lin - math.sqrt(max(0.0, lin * lin - 4.0 * c * ttft * b * out))) / (2.0 * c * ttft)
    else:
        x = b * out / lin
    itl = t_dec / max(1e-9, 1.0 - c * x)
    return SteadyState(b, x, x / g, itl, ttft, x / out)


def anchored(profile: Profile, tokens_per_second_per_gpu: float | None = None) -> Profile:
    """``profile`` with its step costs scaled so that :func:`steady_state` at ``max_num_seqs``
    (default request mix, reference GPUs) makes ``tokens_per_second_per_gpu`` (default: its own)."""
    target = profile.tokens_per_second_per_gpu if tokens_per_second_per_gpu is None else tokens_per_second_per_gpu
    got = steady_state(profile, profile.max_num_seqs).output_tokens_per_second_per_gpu
    k = got / target
    return replace(profile, tokens_per_second_per_gpu=target, step_base_seconds=profile.step_base_seconds * k,
                   step_per_seq_seconds=profile.step_per_seq_seconds * k,
                   step_per_prefill_token_seconds=profile.step_per_prefill_token_seconds * k)


# Step-time shapes per GPU type (data). The three step costs are fitted to the stored aiconfigurator
# points (FIT below; tests/unit/test_sim_calibration.py refits them from data/calibration.json and
# checks these numbers); max_num_seqs is the operating point: the concurrency at which the fitted
# curve makes the sheet's tokens/s per GPU; kv_cache_tokens_per_gpu: the engine's KV budget / GPUs
# (aiconfigurator's memory per GPU at 0.95 GPU memory utilisation, ~35 KB per token of FP8 MLA KV).
SHAPES: dict[str, dict] = {
    "h200": dict(reference_gpus=8, max_num_seqs=18, max_num_batched_tokens=8192, kv_cache_tokens_per_gpu=137_000.0,
                 step_base_seconds=0.015382404079837556, step_per_seq_seconds=0.00019735781736279976,
                 step_per_prefill_token_seconds=0.00015508536273652185),
    "gb300": dict(reference_gpus=4, max_num_seqs=1024, max_num_batched_tokens=16384,
                  kv_cache_tokens_per_gpu=4_000_000.0, step_base_seconds=0.016907301315864227,
                  step_per_seq_seconds=1.0000000000000007e-09, step_per_prefill_token_seconds=2.3494805099389597e-05),
}
# How SHAPES were fitted: setup in data/calibration.json, concurrency range of the points used.
FIT: dict[str, dict] = {
    "h200": dict(setup="h200", min_concurrency=1, max_concurrency=48, ttft_weight=0.5),
    "gb300": dict(setup="gb300", min_concurrency=4, max_concurrency=2048, ttft_weight=0.5),
}
DEFAULT_SHAPE = SHAPES["h200"]
DEFAULT_TOKENS_PER_SECOND_PER_GPU = 100.0


def calibrated_profile(gpu_type: str, anchor: bool = True) -> Profile:
    """The profile of ``gpu_type``: calibrated step costs; with ``anchor`` (the default, what the
    simulator runs) scaled so that the engine at ``max_num_seqs`` makes the sheet's tokens/s per GPU.
    Types missing from the sheet get the H200 shape at 100 tok/s per GPU (conservative)."""
    key = gpu_type.lower()
    entry = gpusheet.lookup(key)
    tps = entry.tokens_per_second_per_gpu if entry else DEFAULT_TOKENS_PER_SECOND_PER_GPU
    prof = Profile(gpu_type=key, tokens_per_second_per_gpu=tps, **SHAPES.get(key, DEFAULT_SHAPE))
    return anchored(prof) if anchor else prof


def profile_for(gpu_type: str) -> Profile:
    """The profile the simulator runs for ``gpu_type`` (:func:`calibrated_profile`, anchored)."""
    return calibrated_profile(gpu_type, anchor=True)


def default_startup_seconds(gpu_type: str) -> float:
    entry = gpusheet.lookup(gpu_type)
    return entry.startup_seconds if entry else 300.0


# -- calibration on measured points (docs/calibration.md) ---------------------------------------

CALIBRATION_FILE = "data/calibration.json"


def calibration_points(gpu_type: str) -> dict:
    """The stored aiconfigurator points of ``gpu_type`` (``data/calibration.json``)."""
    import json
    from importlib import resources

    data = json.loads(resources.files("tokenfactory.sim").joinpath(CALIBRATION_FILE).read_text())
    return data["gpus"][gpu_type]


def fit_step_costs(points: list[dict], prompt_tokens: float, output_tokens: float,
                   min_concurrency: float = 1, max_concurrency: float | None = None,
                   ttft_weight: float = 0.5, reference_gpus: int = 8,
                   max_num_batched_tokens: int = 8192) -> tuple[float, float, float]:
    """(step base, per sequence, per prefill token) seconds that make :func:`steady_state` fit the
    measured points (``min_concurrency`` .. ``max_concurrency``) best: least squares on the relative
    errors of tokens/s, ITL (the points' TPOT) and, weighted by ``ttft_weight``, TTFT.
    Levenberg-Marquardt on the logarithms of the costs (so they stay > 0), from a linear first guess;
    deterministic."""
    import numpy as np

    pts = [p for p in points if "error" not in p and p["concurrency"] >= min_concurrency
           and (max_concurrency is None or p["concurrency"] <= max_concurrency)]
    if len(pts) < 2:
        raise ValueError("need at least 2 points to fit")
    # first guess: ITL ~ base + (per_seq + per_tok x prompt / output) x B, TTFT ~ base + per_tok x prompt
    a = np.array([[1.0, p["concurrency"], prompt_tokens / output_tokens * p["concurrency"]] for p in pts]
                 + [[1.0, 0.0, prompt_tokens] for p in pts])
    y = np.array([p["tpot_seconds"] for p in pts] + [p["ttft_seconds"] for p in pts])
    guess, *_ = np.linalg.lstsq(a / y[:, None], np.ones_like(y), rcond=None)
    q = np.log(np.maximum(np.abs(guess), 1e-7))

    def residuals(qv: np.ndarray) -> np.ndarray:
        c = np.exp(qv)
        prof = Profile("fit", 1.0, reference_gpus=reference_gpus, max_num_batched_tokens=max_num_batched_tokens,
                       step_base_seconds=c[0], step_per_seq_seconds=c[1], step_per_prefill_token_seconds=c[2])
        r = []
        for p in pts:
            ss = steady_state(prof, p["concurrency"], prompt_tokens, output_tokens)
            r += [ss.output_tokens_per_second_per_gpu / p["tokens_per_second_per_gpu"] - 1,
                  ss.itl_seconds / p["tpot_seconds"] - 1,
                  ttft_weight * (ss.ttft_seconds / p["ttft_seconds"] - 1)]
        return np.array(r)

    lam = 1e-2
    r = residuals(q)
    cost = float(r @ r)
    for _ in range(200):
        jac = np.empty((len(r), 3))
        for i in range(3):
            dq = np.zeros(3)
            dq[i] = 1e-6
            jac[:, i] = (residuals(q + dq) - r) / 1e-6
        jtj = jac.T @ jac
        step = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-12), -jac.T @ r)
        q_new = np.clip(q + step, np.log(1e-9), np.log(10.0))
        r_new = residuals(q_new)
        c_new = float(r_new @ r_new)
        if c_new < cost:
            q, r, lam = q_new, r_new, lam / 3
            if cost - c_new < 1e-12:
                cost = c_new
                break
            cost = c_new
        else:
            lam *= 5
            if lam > 1e8:
                break
    c = np.exp(q)
    return float(c[0]), float(c[1]), float(c[2])


def refit(gpu_type: str) -> tuple[float, float, float]:
    """Fit ``gpu_type``'s step costs again from the stored points, as ``FIT`` says (what SHAPES hold)."""
    fit, shape = FIT[gpu_type], SHAPES[gpu_type]
    pts = calibration_points(fit["setup"])
    return fit_step_costs(pts["points"], pts["isl"], pts["osl"], fit["min_concurrency"], fit["max_concurrency"],
                          fit["ttft_weight"], shape["reference_gpus"], shape["max_num_batched_tokens"])


def simulate_point(profile: Profile, concurrency: int, prompt_tokens: float = DEFAULT_PROMPT_TOKENS,
                   output_tokens: float = DEFAULT_OUTPUT_TOKENS, seconds: float = 300.0) -> dict:
    """Run one engine of ``profile`` saturated at ``concurrency`` sequences (its queue never empties)
    and measure what it makes over the last 2/3 of the run: output tokens/s per GPU, TPOT per request
    and mean ITL per token; TTFT is the analytic one with no queue (saturated, every request queues)."""
    from dataclasses import replace as _replace

    from tokenfactory.sim.fleet import EngineSpec, Fleet
    from tokenfactory.sim.traces import Constant

    prof = _replace(profile, max_num_seqs=int(concurrency), max_waiting_requests_per_engine=max(100, int(concurrency)))
    x = steady_state(prof, concurrency, prompt_tokens, output_tokens).output_tokens_per_second
    f = Fleet(Constant(2.0 * x, prompt_tokens, output_tokens), profiles={prof.gpu_type: prof}, seed=0)
    eng = f.add_engine(EngineSpec(name="e", pool=prof.gpu_type, gpu_type=prof.gpu_type, gpus=prof.reference_gpus,
                                  startup_seconds=0), 0.0)
    warm = seconds / 3
    f.run(warm, 10.0)
    g0 = eng.generation_tokens
    h0 = {k: (getattr(eng, k).count, getattr(eng, k).sum) for k in ("itl_hist", "ttft_hist", "e2e_hist")}
    f.run(seconds, 10.0)
    d = {k: (getattr(eng, k).count - c, getattr(eng, k).sum - s) for k, (c, s) in h0.items()}

    def mean(k):
        return d[k][1] / d[k][0] if d[k][0] > 0 else None

    e2e, ttft = mean("e2e_hist"), mean("ttft_hist")
    return {"concurrency": int(concurrency), "running": eng.running,
            "tokens_per_second_per_gpu": (eng.generation_tokens - g0) / (seconds - warm) / prof.reference_gpus,
            # per request: (mean e2e - mean TTFT) / (output - 1); noisy (not the same requests)
            "tpot_seconds": (e2e - ttft) / max(1.0, output_tokens - 1) if e2e and ttft else None,
            # per generated token, as vLLM's inter-token-latency histogram
            "itl_seconds": mean("itl_hist"),
            "ttft_seconds": steady_state(prof, concurrency, prompt_tokens, output_tokens).ttft_seconds}


def calibration_table(gpu_type: str) -> list[dict]:
    """The simulator (calibrated profile, not anchored) against every stored point of ``gpu_type``."""
    fit = FIT[gpu_type]
    pts = calibration_points(fit["setup"])
    prof = calibrated_profile(gpu_type, anchor=False)
    rows = []
    for p in pts["points"]:
        if "error" in p:
            continue
        sim = simulate_point(prof, p["concurrency"], pts["isl"], pts["osl"])
        rows.append({
            "concurrency": p["concurrency"],
            "in_fit": fit["min_concurrency"] <= p["concurrency"] <= fit["max_concurrency"],
            "measured": {k: p[k] for k in ("tokens_per_second_per_gpu", "tpot_seconds", "ttft_seconds")},
            "sim": {"tokens_per_second_per_gpu": sim["tokens_per_second_per_gpu"], "tpot_seconds": sim["tpot_seconds"],
                    "itl_seconds": sim["itl_seconds"], "ttft_seconds": sim["ttft_seconds"]},
            "error": {
                "tokens_per_second_per_gpu": sim["tokens_per_second_per_gpu"] / p["tokens_per_second_per_gpu"] - 1,
                "itl": sim["itl_seconds"] / p["tpot_seconds"] - 1,
                "ttft": sim["ttft_seconds"] / p["ttft_seconds"] - 1,
            },
        })
    return rows
