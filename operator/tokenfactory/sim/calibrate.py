"""Extract the simulator's calibration points from NVIDIA aiconfigurator (development tool).

    pip install 'tokenfactory[calibration]'          # aiconfigurator==0.12.0 (runs offline)
    python -m tokenfactory.sim.calibrate --out operator/tokenfactory/sim/data/calibration.json

For each GPU type: aiconfigurator's ``cli_estimate`` (aggregated serving, vLLM backend, its SILICON
database of measured kernels) for DeepSeek-R1 (FP8 checkpoint, the example's model) at the
example's engine shape (H200: 8 GPUs, GB300: 4 GPUs; attention TP, MoE EP over the same GPUs), the
default request mix (1,000 prompt / 500 output tokens) and a range of concurrencies. The points
(concurrency -> tokens/s per GPU, TTFT, TPOT) are written with their provenance; tests and the
simulator read that file, never aiconfigurator. docs/calibration.md explains the fit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

MODEL = "deepseek-ai/DeepSeek-R1"
SETUPS = {
    "h200": dict(system="h200_sxm", tp=8, concurrencies=[1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256]),
    "gb300": dict(system="gb300", tp=4, concurrencies=[1, 4, 16, 32, 64, 128, 256, 384, 512, 768, 1024]),
}
ISL, OSL = 1000, 500


def extract(gpu: str, backend: str = "vllm") -> dict:
    import aiconfigurator
    from aiconfigurator.cli.api import cli_estimate

    s = SETUPS[gpu]
    points = []
    for b in s["concurrencies"]:
        try:
            r = cli_estimate(MODEL, s["system"], mode="agg", backend_name=backend, isl=ISL, osl=OSL, batch_size=b,
                             tp_size=s["tp"], moe_tp_size=1, moe_ep_size=s["tp"])
        except Exception as e:  # an infeasible point (memory): record why
            points.append({"concurrency": b, "error": f"{type(e).__name__}: {e}"[:300]})
            continue
        d = r.get()
        points.append({
            "concurrency": b,
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
        "gpu_type": gpu, "system": s["system"], "model": MODEL, "backend": backend,
        "backend_version": points and next((p for p in points if "error" not in p), {}) and d.get("version"),
        "mode": "agg", "database_mode": "SILICON", "gpus_per_engine": s["tp"], "isl": ISL, "osl": OSL,
        "source": f"aiconfigurator {aiconfigurator.__version__ if hasattr(aiconfigurator, '__version__') else '0.12.0'} "
                  "cli_estimate (PyPI aiconfigurator==0.12.0, Apache-2.0)",
        "points": points,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--backend", default="vllm")
    args = p.parse_args(argv)
    t0 = time.time()
    out = {"extracted_with": "python -m tokenfactory.sim.calibrate", "gpus": {g: extract(g, args.backend) for g in SETUPS}}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
