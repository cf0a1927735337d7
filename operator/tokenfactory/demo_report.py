"""The demo's numbers and pictures: samples -> summary.json and a PNG (matplotlib, Agg).

Pure functions over the samples the demo collects (plain dicts, one every couple of seconds):

    {"t": seconds since the demand trace started, "demand": tok/s asked for (simulator truth),
     "factory": {"tokensPerSecond", "dollarsPerHour", "costPerMillionTokens", "ttftP95Seconds",
                 "itlP95Seconds"},
     "pools": {name: {"gpuType", "readyReplicas", "desiredReplicas", "tokensPerSecond",
                      "capacity", "dollarsPerHour", "costPerMillionTokens", ...}},
     "decision": lastDecision or None}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenfactory import cost, gpusheet


def seed_cost_per_mtok(gpu_type: str) -> float:
    """$/Mtok of one GPU of the built-in sheet at full load (``cost.cost_per_million_tokens``)."""
    s = gpusheet.lookup(gpu_type)
    if s is None:
        raise KeyError(f"{gpu_type!r} is not in the GPU sheet (known: {', '.join(gpusheet.known_types())})")
    per_mtok = cost.cost_per_million_tokens(s.price_per_gpu_hour, s.tokens_per_second_per_gpu)
    assert per_mtok is not None  # the sheet's throughput is > 0
    return per_mtok


def per_mtok(dollars: float, tokens: float) -> float | None:
    """$/Mtok of ``dollars`` spent over ``tokens`` delivered in the same span (None without tokens): the
    same formula as the live figure, since $ over a span / tokens over it = ($/hour) / (tokens/hour)."""
    return cost.cost_per_million_tokens(dollars, tokens / cost.SECONDS_PER_HOUR)


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def decisions(samples: Sequence[dict]) -> list[dict]:
    """Distinct lastDecision objects, in the order they were first seen, with the demo time ``t``."""
    seen: set[str] = set()
    out = []
    for s in samples:
        d = s.get("decision")
        if not d or not d.get("time") or d["time"] in seen:
            continue
        seen.add(d["time"])
        out.append({**d, "t": s["t"]})
    return out


def comparison(pools: dict[str, dict]) -> str | None:
    """'GB300 is 35x cheaper per token than H200 right now' from live pool figures, or None."""
    by_type: dict[str, float] = {}
    for p in pools.values():
        c = _num(p.get("costPerMillionTokens"))
        if c and c > 0:
            gt = str(p.get("gpuType") or "").lower()
            by_type[gt] = min(c, by_type.get(gt, math.inf))
    if "h200" not in by_type or "gb300" not in by_type:
        return None
    h, g = by_type["h200"], by_type["gb300"]
    if g <= h:
        return f"GB300 is {h / g:,.0f}x cheaper per token than H200 right now (${g:.3f} vs ${h:.2f} per Mtok)"
    return f"H200 is {g / h:,.1f}x cheaper per token than GB300 right now (${h:.3f} vs ${g:.3f} per Mtok)"


def seed_comparison() -> str:
    """H200 vs GB300 at full load, from the built-in GPU sheet."""
    hs, gs = gpusheet.lookup("h200"), gpusheet.lookup("gb300")
    assert hs is not None and gs is not None
    h, g = seed_cost_per_mtok("h200"), seed_cost_per_mtok("gb300")
    published = ""
    if hs.published_cost_per_million_tokens and gs.published_cost_per_million_tokens:
        published = f"; published ${hs.published_cost_per_million_tokens:.2f} vs ${gs.published_cost_per_million_tokens:.2f}"
    return (f"seed figures at full load: H200 ${hs.price_per_gpu_hour:.2f}/GPU-h at {hs.tokens_per_second_per_gpu:,.0f} "
            f"tok/s/GPU -> ${h:.2f}/Mtok; GB300 ${gs.price_per_gpu_hour:.2f}/GPU-h at {gs.tokens_per_second_per_gpu:,.0f} "
            f"tok/s/GPU -> ${g:.3f}/Mtok ({h / g:.0f}x{published})")


def summarize(samples: Sequence[dict], objectives: dict[str, Any], duration: float,
              interrupted: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Total $, delivered tokens and $/Mtok (integrated over the samples), SLO attainment, decisions."""
    total_dollars = 0.0
    total_tokens = 0.0
    demand_tokens = 0.0
    pools: dict[str, dict[str, Any]] = {}
    slo_ok = slo_n = 0
    ttft_obj = _num(objectives.get("ttftP95Seconds"))
    itl_obj = _num(objectives.get("itlP95Seconds"))
    for prev, cur in zip(samples, samples[1:]):
        dt = max(0.0, cur["t"] - prev["t"])
        f = prev.get("factory") or {}
        total_dollars += (_num(f.get("dollarsPerHour")) or 0.0) * dt / 3600
        total_tokens += (_num(f.get("tokensPerSecond")) or 0.0) * dt
        demand_tokens += (_num(prev.get("demand")) or 0.0) * dt
        for name, p in (prev.get("pools") or {}).items():
            acc = pools.setdefault(name, {"gpuType": p.get("gpuType"), "dollars": 0.0, "tokens": 0.0,
                                          "maxReadyReplicas": 0, "maxDesiredReplicas": 0})
            acc["dollars"] += (_num(p.get("dollarsPerHour")) or 0.0) * dt / 3600
            acc["tokens"] += (_num(p.get("tokensPerSecond")) or 0.0) * dt
    for s in samples:
        for name, p in (s.get("pools") or {}).items():
            acc = pools.setdefault(name, {"gpuType": p.get("gpuType"), "dollars": 0.0, "tokens": 0.0,
                                          "maxReadyReplicas": 0, "maxDesiredReplicas": 0})
            acc["maxReadyReplicas"] = max(acc["maxReadyReplicas"], int(p.get("readyReplicas") or 0))
            acc["maxDesiredReplicas"] = max(acc["maxDesiredReplicas"], int(p.get("desiredReplicas") or 0))
        f = s.get("factory") or {}
        ttft, itl = _num(f.get("ttftP95Seconds")), _num(f.get("itlP95Seconds"))
        if ttft is None or itl is None or not _num(f.get("tokensPerSecond")):
            continue
        slo_n += 1
        if (ttft_obj is None or ttft <= ttft_obj) and (itl_obj is None or itl <= itl_obj):
            slo_ok += 1
    for acc in pools.values():
        acc["dollars"] = round(acc["dollars"], 6)
        acc["tokens"] = round(acc["tokens"])
        pool_cost = per_mtok(acc["dollars"], acc["tokens"])
        acc["costPerMillionTokens"] = round(pool_cost, 6) if pool_cost is not None else None
    decs = decisions(samples)
    last = samples[-1] if samples else {}
    out: dict[str, Any] = {
        "durationSeconds": round(samples[-1]["t"] - samples[0]["t"], 1) if len(samples) > 1 else 0.0,
        "requestedDurationSeconds": duration,
        "interrupted": interrupted,
        "samples": len(samples),
        "totalDollars": round(total_dollars, 6),
        "deliveredTokens": round(total_tokens),
        "demandedTokens": round(demand_tokens),
        "costPerMillionTokens": round(fleet_cost, 6) if (fleet_cost := per_mtok(total_dollars, total_tokens)) is not None else None,
        "averageDollarsPerHour": (round(total_dollars * 3600 / (samples[-1]["t"] - samples[0]["t"]), 4)
                                  if len(samples) > 1 and samples[-1]["t"] > samples[0]["t"] else None),
        "peakDemandTokensPerSecond": max((_num(s.get("demand")) or 0.0 for s in samples), default=0.0),
        "sloAttainment": round(slo_ok / slo_n, 4) if slo_n else None,
        "sloSamples": slo_n,
        "objectives": {"ttftP95Seconds": ttft_obj, "itlP95Seconds": itl_obj},
        "decisions": len(decs),
        "decisionLog": [{"t": round(d["t"], 1), "time": d.get("time"), "reason": d.get("reason"),
                         "changes": d.get("changes", [])} for d in decs],
        "pools": pools,
        "lastComparison": comparison(last.get("pools") or {}),
        "seedComparison": seed_comparison(),
    }
    if extra:
        out.update(extra)
    return out


def plot(samples: Sequence[dict], path: Path, title: str = "tokenfactory demo") -> Path:
    """Three panels over demo time: demand vs capacity per pool (stacked) and delivered tokens/s;
    $/Mtok per pool and factory (log scale); $/hour per pool (stacked). Decisions as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    names: list[str] = []
    for s in samples:
        for n in (s.get("pools") or {}):
            if n not in names:
                names.append(n)
    colours = {"gb300": "#76b900", "h200": "#1f77b4"}
    fallback = iter(["#ff7f0e", "#9467bd", "#8c564b", "#e377c2"])
    col = {n: colours.get(n) or next(fallback, "#7f7f7f") for n in names}

    def series(pool: str, key: str) -> list[float]:
        return [(_num(((s.get("pools") or {}).get(pool) or {}).get(key)) or 0.0) for s in samples]

    def series_nan(pool: str | None, key: str) -> list[float]:
        out = []
        for s in samples:
            src = (s.get("factory") or {}) if pool is None else ((s.get("pools") or {}).get(pool) or {})
            v = _num(src.get(key))
            out.append(v if v and v > 0 else math.nan)
        return out

    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True,
                             gridspec_kw={"height_ratios": [1.5, 1, 1]})
    ax0, ax1, ax2 = axes
    if t:
        caps = [series(n, "capacity") for n in names]
        ax0.stackplot(t, *caps, labels=[f"{n} capacity" for n in names], colors=[col[n] for n in names],
                      alpha=0.35)
        ax0.plot(t, [_num(s.get("demand")) or 0.0 for s in samples], color="black", lw=2, label="demand")
        ax0.plot(t, [_num((s.get("factory") or {}).get("tokensPerSecond")) or math.nan for s in samples],
                 color="#d62728", lw=1.2, ls="--", label="delivered (operator status, metrics.window)")
        ax0.axhline(48000, color="#76b900", lw=0.8, ls=":")
        ax0.text(t[-1], 48000, "GB300 limit: 2 replicas ", va="bottom", ha="right", fontsize=8, color="#4a7a00")
        for n in names:
            ax1.plot(t, series_nan(n, "costPerMillionTokens"), color=col[n], lw=1.5, label=f"{n} $/Mtok")
        ax1.plot(t, series_nan(None, "costPerMillionTokens"), color="black", lw=2, label="factory $/Mtok")
        ax1.set_yscale("log")
        dph = [series(n, "dollarsPerHour") for n in names]
        ax2.stackplot(t, *dph, labels=[f"{n} $/h" for n in names], colors=[col[n] for n in names], alpha=0.6)
    ax0.set_ylabel("tokens/s")
    ax0.set_title(title)
    ax0.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v / 1000:.0f}k"))
    ax1.set_ylabel("$ per million tokens")
    ax2.set_ylabel("$ per hour")
    ax2.set_xlabel("demo time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, ncol=2)
    span = (t[-1] - t[0]) if len(t) > 1 else 1.0
    last_label = -math.inf
    decs = decisions(samples)
    for i, d in enumerate(decs):
        for ax in axes:
            ax.axvline(d["t"], color="grey", lw=0.7, ls="--", alpha=0.7)
        # label a decision unless the previous label is too close; a burst shows its last step
        nxt = decs[i + 1]["t"] if i + 1 < len(decs) else math.inf
        if d["t"] - last_label < 0.04 * span or (nxt - d["t"] < 0.02 * span and i + 1 < len(decs)):
            continue
        last_label = d["t"]
        label = ", ".join(f"{c.get('pool')} {c.get('from')}->{c.get('to')}" for c in d.get("changes", []))
        ax0.annotate(label, (d["t"], 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                     va="bottom", ha="right", color="dimgrey")
    if decs:
        ax2.text(0.99, 0.95, f"{len(decs)} scaling decisions (dashed lines)", transform=ax2.transAxes,
                 ha="right", va="top", fontsize=8, color="dimgrey")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
