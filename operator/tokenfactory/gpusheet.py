"""The built-in GPU sheet (``data/gpus.yaml``): default price, throughput and power per GPU type."""

from __future__ import annotations

from collections.abc import Iterable
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
def _raw() -> dict:
    return yaml.safe_load(resources.files("tokenfactory").joinpath("data/gpus.yaml").read_text())


def profile_model() -> str:
    """The model the sheet's throughput figures were measured with (DeepSeek-R1)."""
    return str(_raw()["profileModel"])


@cache
def load_sheet() -> dict[str, GpuSheetEntry]:
    """Return the built-in sheet keyed by lower-case gpuType."""
    raw = _raw()
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


def _model_key(name: str) -> str:
    """Compare model names by their last path part, case-insensitively: deepseek-ai/DeepSeek-R1,
    DeepSeek-R1 and /models/deepseek-r1 are the same model; DeepSeek-R1-0528 is another."""
    return name.rstrip("/").rsplit("/", 1)[-1].lower()


def throughput_note(model: str, pools: Iterable[object], sheet_model: str | None = None) -> str | None:
    """Pure: a note when pools take their throughput from the sheet but the factory serves another model.

    ``pools`` are ``api.ResolvedPool`` (duck-typed: ``name``, ``sources``); a pool whose
    ``sources["tokensPerSecondPerGpu"]`` is ``"sheet"`` uses the sheet's figure. ``None`` when the
    model is the sheet's or every pool sets its own tokensPerSecondPerGpu.
    """
    sheet_model = sheet_model if sheet_model is not None else profile_model()
    if _model_key(model) == _model_key(sheet_model):
        return None
    names = [str(getattr(p, "name")) for p in pools
             if dict(getattr(p, "sources", {})).get("tokensPerSecondPerGpu") == "sheet"]
    if not names:
        return None
    return (f"throughput of pool{'s' if len(names) > 1 else ''} {', '.join(names)} is the GPU sheet's figure for "
            f"{sheet_model}, not measured for {model}: $/Mtok at capacity and the planner's first plans use it "
            f"until the operator has learned each pool's real capacity; set pools[].tokensPerSecondPerGpu "
            f"when you know it")
