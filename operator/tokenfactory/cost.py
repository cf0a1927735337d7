"""Pure cost arithmetic: $/hour, $/Mtok, tok/s per GPU, tok/s per MW, power, utilisation.

Everything here is a pure function of its arguments (no I/O, no clock) and every figure can be
explained step by step (:func:`explain`). The one formula behind the headline::

    $/Mtok = pool $/hour / (delivered tokens/s x 3600) x 1e6
    pool $/hour = GPUs held by the pool's scheduled pods x price per GPU-hour

Idle GPUs that are held count: the cost is "all-in", spread over the tokens actually delivered.
With no delivered tokens the cost per token is *absent* (``None``), never 0 or infinity.

``token_accounting`` chooses what a "token" is in the headline:

* ``"output"``: generation tokens only (the usual basis of published $/Mtok figures);
* ``"total"``: prompt + generation tokens.

Both bases are always computed (``cost_per_million_generation_tokens`` and
``cost_per_million_total_tokens``); the headline ``cost_per_million_tokens`` is the chosen one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

SECONDS_PER_HOUR = 3600.0
HOURS_PER_YEAR = 8760.0
MILLION = 1e6

TokenAccounting = Literal["output", "total"]
TOKEN_ACCOUNTINGS: tuple[str, ...] = ("output", "total")


class CostInputError(ValueError):
    """A figure given to the cost functions is out of range (negative, NaN, infinite)."""


def _check(name: str, value: float, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CostInputError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(v) or math.isinf(v):
        raise CostInputError(f"{name} must be a finite number, got {value!r}")
    if positive and v <= 0:
        raise CostInputError(f"{name} must be > 0, got {value!r}")
    if v < 0:
        raise CostInputError(f"{name} must be >= 0, got {value!r}")
    return v


# --------------------------------------------------------------------------------------------
# Scalar formulas
# --------------------------------------------------------------------------------------------


def on_prem_price_per_gpu_hour(
    capex_per_gpu: float,
    amortization_years: float,
    kilowatts_per_gpu: float,
    pue: float,
    dollars_per_kwh: float,
) -> float:
    """On-prem price of one GPU-hour: capex / (years x 8760) + kW x PUE x $/kWh.

    ``capex_per_gpu`` is the purchase cost attributed to one GPU (its share of the server,
    network, ...), ``kilowatts_per_gpu`` its all-in IT power and ``pue`` the facility's power
    usage effectiveness (>= 1 in practice; it multiplies the IT power).
    """
    capex = _check("capex_per_gpu", capex_per_gpu)
    years = _check("amortization_years", amortization_years, positive=True)
    kw = _check("kilowatts_per_gpu", kilowatts_per_gpu)
    pue_v = _check("pue", pue, positive=True)
    kwh = _check("dollars_per_kwh", dollars_per_kwh)
    return capex / (years * HOURS_PER_YEAR) + kw * pue_v * kwh


def dollars_per_hour(gpus: float, price_per_gpu_hour: float) -> float:
    """Pool $/hour: every GPU held by the pool's scheduled pods, busy or idle, at its price."""
    return _check("gpus", gpus) * _check("price_per_gpu_hour", price_per_gpu_hour)


def cost_per_million_tokens(dollars_per_hour_: float, tokens_per_second: float) -> float | None:
    """$/Mtok = $/hour / (tokens/s x 3600) x 1e6; ``None`` when no tokens are delivered."""
    d = _check("dollars_per_hour", dollars_per_hour_)
    tps = _check("tokens_per_second", tokens_per_second)
    if tps <= 0:
        return None
    return d / (tps * SECONDS_PER_HOUR) * MILLION


def tokens_per_second_per_megawatt(tokens_per_second: float, gpus: float, kilowatts_per_gpu: float) -> float | None:
    """tok/s per MW of all-in power: tok/s / (GPUs x kW / 1000); ``None`` without power."""
    tps = _check("tokens_per_second", tokens_per_second)
    megawatts = _check("gpus", gpus) * _check("kilowatts_per_gpu", kilowatts_per_gpu) / 1000.0
    if megawatts <= 0:
        return None
    return tps / megawatts


# --------------------------------------------------------------------------------------------
# Pool and factory figures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolInput:
    """What the cost model needs to know about one pool at one instant.

    ``gpus`` are the GPUs held by the pool's *scheduled* pods (ready or not: a starting pod's
    GPUs are already paid for). Token rates are measured (delivered), not nominal.
    ``tokens_per_second_per_gpu_capacity`` is the profile's saturation throughput per GPU (for
    utilisation); leave it ``None`` when unknown.
    """

    name: str
    gpu_type: str
    gpus: float
    price_per_gpu_hour: float
    kilowatts_per_gpu: float
    prompt_tokens_per_second: float = 0.0
    generation_tokens_per_second: float = 0.0
    tokens_per_second_per_gpu_capacity: float | None = None


@dataclass(frozen=True)
class CostFigures:
    """Computed figures for one pool, or for a whole factory (``name == ""``).

    Rates are tokens/s. ``headline_tokens_per_second`` is the denominator chosen by
    ``token_accounting``; the per-GPU, per-MW and headline $/Mtok figures use it. Capacity is
    generation tokens/s at saturation (the sheet's tok/s per GPU x GPUs), so ``utilisation`` is
    always generation tok/s / capacity, whatever the accounting.
    ``None`` means "not defined here" (no tokens, no GPUs, no capacity known).
    """

    name: str
    gpu_type: str
    token_accounting: str
    gpus: float
    price_per_gpu_hour: float | None  # None on a factory mixing prices with zero GPUs
    dollars_per_hour: float
    power_kilowatts: float
    prompt_tokens_per_second: float
    generation_tokens_per_second: float
    total_tokens_per_second: float
    headline_tokens_per_second: float
    cost_per_million_tokens: float | None
    cost_per_million_generation_tokens: float | None
    cost_per_million_total_tokens: float | None
    tokens_per_second_per_gpu: float | None
    tokens_per_second_per_megawatt: float | None
    capacity_tokens_per_second: float | None
    utilisation: float | None


def _headline(accounting: str, prompt: float, generation: float) -> float:
    if accounting == "output":
        return generation
    if accounting == "total":
        return prompt + generation
    raise CostInputError(f"token_accounting must be one of {TOKEN_ACCOUNTINGS}, got {accounting!r}")


def _figures(
    *,
    name: str,
    gpu_type: str,
    accounting: str,
    gpus: float,
    price_per_gpu_hour: float | None,
    dph: float,
    power_kw: float,
    prompt: float,
    generation: float,
    capacity: float | None,
) -> CostFigures:
    headline = _headline(accounting, prompt, generation)
    total = prompt + generation
    per_gpu = headline / gpus if gpus > 0 else None
    per_mw = headline / (power_kw / 1000.0) if power_kw > 0 else None
    util = generation / capacity if capacity is not None and capacity > 0 else None
    return CostFigures(
        name=name,
        gpu_type=gpu_type,
        token_accounting=accounting,
        gpus=gpus,
        price_per_gpu_hour=price_per_gpu_hour,
        dollars_per_hour=dph,
        power_kilowatts=power_kw,
        prompt_tokens_per_second=prompt,
        generation_tokens_per_second=generation,
        total_tokens_per_second=total,
        headline_tokens_per_second=headline,
        cost_per_million_tokens=cost_per_million_tokens(dph, headline),
        cost_per_million_generation_tokens=cost_per_million_tokens(dph, generation),
        cost_per_million_total_tokens=cost_per_million_tokens(dph, total),
        tokens_per_second_per_gpu=per_gpu,
        tokens_per_second_per_megawatt=per_mw,
        capacity_tokens_per_second=capacity,
        utilisation=util,
    )


def pool_cost(pool: PoolInput, token_accounting: str = "output") -> CostFigures:
    """All cost figures for one pool."""
    gpus = _check(f"{pool.name}: gpus", pool.gpus)
    price = _check(f"{pool.name}: price_per_gpu_hour", pool.price_per_gpu_hour)
    kw = _check(f"{pool.name}: kilowatts_per_gpu", pool.kilowatts_per_gpu)
    prompt = _check(f"{pool.name}: prompt_tokens_per_second", pool.prompt_tokens_per_second)
    gen = _check(f"{pool.name}: generation_tokens_per_second", pool.generation_tokens_per_second)
    capacity = None
    if pool.tokens_per_second_per_gpu_capacity is not None:
        capacity = gpus * _check(f"{pool.name}: tokens_per_second_per_gpu_capacity", pool.tokens_per_second_per_gpu_capacity)
    return _figures(
        name=pool.name,
        gpu_type=pool.gpu_type,
        accounting=token_accounting,
        gpus=gpus,
        price_per_gpu_hour=price,
        dph=gpus * price,
        power_kw=gpus * kw,
        prompt=prompt,
        generation=gen,
        capacity=capacity,
    )


@dataclass(frozen=True)
class FactoryCost:
    """Per-pool figures plus the factory aggregate (sums of $/hour, GPUs, power, tokens/s)."""

    pools: tuple[CostFigures, ...]
    total: CostFigures

    def pool(self, name: str) -> CostFigures | None:
        return next((p for p in self.pools if p.name == name), None)


def aggregate(pools: Iterable[CostFigures], token_accounting: str = "output") -> CostFigures:
    """Factory totals: sum $/hour, GPUs, power and token rates, then recompute the ratios.

    Capacity (and so utilisation) is only defined when every pool's capacity is known.
    The factory's price per GPU-hour is the GPU-weighted mean (None with zero GPUs).
    """
    pools = list(pools)
    gpus = sum(p.gpus for p in pools)
    dph = sum(p.dollars_per_hour for p in pools)
    power = sum(p.power_kilowatts for p in pools)
    prompt = sum(p.prompt_tokens_per_second for p in pools)
    gen = sum(p.generation_tokens_per_second for p in pools)
    caps = [p.capacity_tokens_per_second for p in pools]
    capacity = sum(c for c in caps if c is not None) if pools and all(c is not None for c in caps) else None
    types = sorted({p.gpu_type for p in pools})
    return _figures(
        name="",
        gpu_type=types[0] if len(types) == 1 else "",
        accounting=token_accounting,
        gpus=gpus,
        price_per_gpu_hour=dph / gpus if gpus > 0 else None,
        dph=dph,
        power_kw=power,
        prompt=prompt,
        generation=gen,
        capacity=capacity,
    )


def factory_cost(pools: Iterable[PoolInput], token_accounting: str = "output") -> FactoryCost:
    """Figures for every pool and for the factory as a whole."""
    _headline(token_accounting, 0.0, 0.0)  # validate early, even with no pools
    figures = tuple(pool_cost(p, token_accounting) for p in pools)
    return FactoryCost(pools=figures, total=aggregate(figures, token_accounting))


# --------------------------------------------------------------------------------------------
# Explanation
# --------------------------------------------------------------------------------------------


def _num(x: float) -> str:
    """Human formatting: thousands separators for big numbers, 4 significant digits otherwise."""
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}" if float(x).is_integer() or abs(x) >= 1e5 else f"{x:,.1f}"
    return f"{x:.4g}"


def on_prem_breakdown(
    capex_per_gpu: float,
    amortization_years: float,
    kilowatts_per_gpu: float,
    pue: float,
    dollars_per_kwh: float,
) -> dict[str, float]:
    """The parts of :func:`on_prem_price_per_gpu_hour` (pure): capex $/h, energy $/h and their sum."""
    price = on_prem_price_per_gpu_hour(capex_per_gpu, amortization_years, kilowatts_per_gpu, pue, dollars_per_kwh)
    capex_hour = float(capex_per_gpu) / (float(amortization_years) * HOURS_PER_YEAR)
    return {
        "capexPerGpu": float(capex_per_gpu),
        "amortizationYears": float(amortization_years),
        "kilowattsPerGpu": float(kilowatts_per_gpu),
        "pue": float(pue),
        "dollarsPerKwh": float(dollars_per_kwh),
        "capexDollarsPerGpuHour": capex_hour,
        "energyDollarsPerGpuHour": float(kilowatts_per_gpu) * float(pue) * float(dollars_per_kwh),
        "pricePerGpuHour": price,
    }


def explain_on_prem(
    capex_per_gpu: float,
    amortization_years: float,
    kilowatts_per_gpu: float,
    pue: float,
    dollars_per_kwh: float,
) -> list[str]:
    """Step-by-step arithmetic of the on-prem price per GPU-hour (lines of text, no I/O)."""
    b = on_prem_breakdown(capex_per_gpu, amortization_years, kilowatts_per_gpu, pue, dollars_per_kwh)
    hours = b["amortizationYears"] * HOURS_PER_YEAR
    return [
        f"capex per GPU-hour           = ${_num(b['capexPerGpu'])} / ({_num(b['amortizationYears'])} years x 8760 h)"
        f" = ${_num(b['capexPerGpu'])} / {_num(hours)} h = ${_num(b['capexDollarsPerGpuHour'])}",
        f"energy per GPU-hour          = {_num(b['kilowattsPerGpu'])} kW x PUE {_num(b['pue'])} x ${_num(b['dollarsPerKwh'])}/kWh"
        f" = ${_num(b['energyDollarsPerGpuHour'])}",
        f"on-prem price per GPU-hour   = ${_num(b['capexDollarsPerGpuHour'])} + ${_num(b['energyDollarsPerGpuHour'])}"
        f" = ${_num(b['pricePerGpuHour'])}",
    ]


def explain(
    price_per_gpu_hour: float,
    tokens_per_second_per_gpu: float,
    kilowatts_per_gpu: float | None = None,
    *,
    published_cost_per_million_tokens: float | None = None,
    label: str | None = None,
) -> list[str]:
    """Step-by-step arithmetic of $/Mtok for one GPU (lines of text, no I/O).

    The formula's own value is always the answer. When a published figure is given it is shown
    next to it, with the difference and the tokens/s per GPU the published figure implies.
    """
    price = _check("price_per_gpu_hour", price_per_gpu_hour)
    tps = _check("tokens_per_second_per_gpu", tokens_per_second_per_gpu)
    lines: list[str] = []
    if label:
        lines.append(f"{label}:")
    lines.append(f"price per GPU-hour           = ${_num(price)}")
    lines.append(f"tokens/s per GPU             = {_num(tps)}")
    tokens_per_hour = tps * SECONDS_PER_HOUR
    lines.append(f"tokens per GPU-hour          = {_num(tps)} x 3600 = {_num(tokens_per_hour)}")
    cpm = cost_per_million_tokens(price, tps)
    if cpm is None:
        lines.append("cost per million tokens      = absent (no tokens delivered: $/Mtok is undefined, not 0)")
    else:
        lines.append(
            f"cost per million tokens      = ${_num(price)} / ({_num(tps)} x 3600) x 1e6 = ${_num(cpm)}/Mtok"
        )
    if kilowatts_per_gpu is not None:
        kw = _check("kilowatts_per_gpu", kilowatts_per_gpu)
        lines.append(f"power per GPU (all-in)       = {_num(kw)} kW")
        per_mw = tokens_per_second_per_megawatt(tps, 1, kw)
        if per_mw is not None:
            lines.append(f"tokens/s per MW              = {_num(tps)} / ({_num(kw)} / 1000) = {_num(per_mw)}")
        if tps > 0:
            kwh_per_mtok = kw / tokens_per_hour * MILLION
            lines.append(
                f"energy per million tokens    = {_num(kw)} kW / {_num(tokens_per_hour)} tok/h x 1e6 = {_num(kwh_per_mtok)} kWh"
            )
    if published_cost_per_million_tokens is not None:
        pub = float(published_cost_per_million_tokens)
        lines.append(f"published figure             = ${pub:.2f}/Mtok (reference only)")
        if cpm is not None and pub > 0:
            diff = (cpm - pub) / pub * 100.0
            implied = price / (pub / MILLION) / SECONDS_PER_HOUR
            lines.append(
                f"formula vs published         = {diff:+.1f}%; ${pub:.2f}/Mtok at ${_num(price)}/GPU-hour "
                f"implies {_num(implied)} tok/s per GPU"
            )
        lines.append(f"used                         = the formula's value, ${_num(cpm) if cpm is not None else 'absent'}/Mtok")
    return lines
