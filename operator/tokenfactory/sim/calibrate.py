"""Extract the simulator's calibration points from NVIDIA aiconfigurator (development tool).

    pip install 'tokenfactory[calibration]'          # aiconfigurator==0.12.0 (runs offline)
    python -m tokenfactory.sim.calibrate --out operator/tokenfactory/sim/data/calibration.json

For each setup in ``SETUPS``: aiconfigurator's ``cli_estimate`` (aggregated serving, its SILICON
database of measured kernels) at the example's engine size (H200: 8 GPUs, GB300: 4 GPUs), the
default request mix (1,000 prompt / 500 output tokens) and a range of concurrencies. H200: vLLM,
DeepSeek-R1 FP8, TP8 + EP8. GB300: TensorRT-LLM, DeepSeek-V3.1 NVFP4 (R1's architecture; the
closest FP4 checkpoint it has), attention DP4 + EP4 -- the configuration closest to the sheet's
6,000 tok/s per GPU (vLLM FP8 TP4 on GB300 peaks near 900, kept for comparison). The points
(concurrency -> tokens/s per GPU, TTFT, TPOT) are written with their provenance; tests and the
simulator read that file, never aiconfigurator. docs/calibration.md explains the fit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TypedDict


class Setup(TypedDict):
    """One aiconfigurator engine setup: parallelism sizes and the per-rank batch sizes to sweep."""

    system: str
    backend: str
    model: str
    tp: int
    dp: int
    ep: int
    batch_sizes: list[int]


MODEL = "deepseek-ai/DeepSeek-R1"
# name -> engine setup. "h200" and "gb300" are what the simulator is fitted to (docs/calibration.md);
# the others are kept for comparison. batch sizes are per attention-DP rank (concurrency = x dp).
SETUPS: dict[str, Setup] = {
    "h200": Setup(system="h200_sxm", backend="vllm", model=MODEL, tp=8, dp=1, ep=8,
                  batch_sizes=[1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256]),
    "gb300": Setup(system="gb300", backend="trtllm", model="nvidia/DeepSeek-V3.1-NVFP4", tp=1, dp=4, ep=4,
                   batch_sizes=[1, 4, 16, 32, 64, 128, 256, 512, 1024]),
    "gb300-vllm-fp8-tp4": Setup(system="gb300", backend="vllm", model=MODEL, tp=4, dp=1, ep=4,
                                batch_sizes=[1, 4, 16, 32, 64, 128, 256, 384, 512, 768, 1024]),
}
ISL, OSL = 1000, 500


def extract(name: str) -> dict:
    from aiconfigurator.cli.api import cli_estimate

    s = SETUPS[name]
    points = []
    d: dict = {}
    for b in s["batch_sizes"]:
        try:
            r = cli_estimate(s["model"], s["system"], mode="agg", backend_name=s["backend"], isl=ISL, osl=OSL,
                             batch_size=b, tp_size=s["tp"], attention_dp_size=s["dp"], moe_tp_size=1,
                             moe_ep_size=s["ep"])
        except Exception as e:  # an infeasible point (memory): record why
            points.append({"concurrency": b * s["dp"], "error": f"{type(e).__name__}: {e}"[:300]})
            continue
        d = r.get()
        points.append({
            "concurrency": b * s["dp"],
            "batch_size_per_rank": b,
            "tokens_per_second_per_gpu": d["tokens/s/gpu"],
            "tokens_per_second": d["tokens/s"],
            "ttft_seconds": d["ttft"] / 1000.0,
            "tpot_seconds": d["tpot"] / 1000.0,
            "request_latency_seconds": d["request_latency"] / 1000.0,
            "memory_gib_per_gpu": d.get("memory"),
            "parallel": d.get("parallel"),
            "quant": {k: d.get(k) for k in ("gemm", "kvcache", "fmha", "moe")},
        })
    return {
        "system": s["system"], "model": s["model"], "backend": s["backend"], "backend_version": d.get("version"),
        "mode": "agg", "database_mode": "SILICON", "gpus_per_engine": s["tp"] * s["dp"],
        "parallel": {"attention_tp": s["tp"], "attention_dp": s["dp"], "moe_ep": s["ep"]}, "isl": ISL, "osl": OSL,
        "source": "aiconfigurator 0.12.0 (PyPI, Apache-2.0), aiconfigurator.cli.api.cli_estimate, SILICON database",
        "points": points,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--only", action="append", default=None, help="setup names (default: all)")
    args = p.parse_args(argv)
    t0 = time.time()
    names = args.only or list(SETUPS)
    out = {"extracted_with": "python -m tokenfactory.sim.calibrate", "gpus": {g: extract(g) for g in names}}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
