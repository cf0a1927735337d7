"""The built-in GPU sheet (``data/gpus.yaml``): default price, throughput and power per GPU type."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class GpuSheetEntry:
    gpu_type: str
    display_name: str
    product: str
    price_per_gpu_hour: float
    tokens_per_second_per_gpu: float
    tokens_per_second_per_megawatt: float
    kilowatts_per_gpu: float
    published_cost_per_million_tokens: float | None
    gpus_per_node: int
    startup_seconds: float
    # (load fraction, ITL p95 s, TTFT p95 s) of one replica of latency_gpus GPUs (see data/gpus.yaml)
    latency_points: tuple[tuple[float, float, float], ...] = ()
    latency_gpus: int | None = None


@cache
def load_sheet() -> dict[str, GpuSheetEntry]:
    """Return the built-in sheet keyed by lower-case gpuType."""
    raw = yaml.safe_load(resources.files("tokenfactory").joinpath("data/gpus.yaml").read_text())
    sheet: dict[str, GpuSheetEntry] = {}
    for name, v in raw["gpus"].items():
        sheet[name] = GpuSheetEntry(
            gpu_type=name,
            display_name=v["displayName"],
            product=v["product"],
            price_per_gpu_hour=float(v["pricePerGpuHour"]),
            tokens_per_second_per_gpu=float(v["tokensPerSecondPerGpu"]),
            tokens_per_second_per_megawatt=float(v["tokensPerSecondPerMegawatt"]),
            kilowatts_per_gpu=float(v["kilowattsPerGpu"]),
            published_cost_per_million_tokens=v.get("publishedCostPerMillionTokens"),
            gpus_per_node=int(v["gpusPerNode"]),
            startup_seconds=float(v["startupSeconds"]),
            latency_points=tuple((float(a), float(b), float(c)) for a, b, c in v.get("latencyPoints", ())),
            latency_gpus=int(v["latencyGpus"]) if "latencyGpus" in v else None,
        )
    return sheet


def lookup(gpu_type: str) -> GpuSheetEntry | None:
    """The sheet entry for ``gpu_type`` (case-insensitive), or None for a type the sheet lacks."""
    return load_sheet().get(gpu_type.lower())


def known_types() -> list[str]:
    return sorted(load_sheet())
