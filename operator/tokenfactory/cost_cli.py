"""``tokenfactory cost``: explain $/Mtok for one GPU type, step by step (cloud or on-prem price)."""

from __future__ import annotations

import argparse
import math
import sys

from tokenfactory.clitools import EXIT_INVALID, EXIT_USAGE, CommandError, add_output_flag, command, epilog, to_json


def _number(flag: str, positive: bool = False, minimum: float | None = None):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if math.isnan(v) or math.isinf(v):
            raise argparse.ArgumentTypeError(f"{flag} must be a finite number, got {text!r}")
        if minimum is not None and v < minimum:
            raise argparse.ArgumentTypeError(f"{flag} must be >= {minimum:g}, got {text!r}")
        if positive and v <= 0:
            raise argparse.ArgumentTypeError(f"{flag} must be > 0, got {text!r}")
        if v < 0:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 0, got {text!r}")
        return v

    return parse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cost",
        help="explain cost per million tokens for one GPU (cloud price or on-prem capex + power)",
        description=(
            "Explain $/Mtok = price per GPU-hour / (tokens/s per GPU x 3600) x 1e6, step by step. "
            "The price is either a cloud price (--price-per-gpu-hour) or, on-prem, the TokenFactory CRD's formula "
            "capex / (years x 8760 h) + kW x PUE x $/kWh (--capex-per-gpu, --amortization-years, --dollars-per-kwh, "
            "--pue). With --gpu-type, figures not given on the command line come from the built-in GPU sheet, "
            "and the sheet's published $/Mtok is shown next to the formula's value."
        ),
        epilog=epilog(
            "examples:\n"
            "  tokenfactory cost --gpu-type h200\n"
            "  tokenfactory cost --gpu-type h200 --capex-per-gpu 35000 --amortization-years 4 "
            "--dollars-per-kwh 0.08 --pue 1.3\n"
            "  tokenfactory cost --price-per-gpu-hour 2 --tokens-per-second-per-gpu 1000 -o json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--price-per-gpu-hour", type=_number("--price-per-gpu-hour"), metavar="DOLLARS",
                   help="cloud price per GPU-hour, all-in (spec.pools[].pricePerGpuHour)")
    p.add_argument("--tokens-per-second-per-gpu", type=_number("--tokens-per-second-per-gpu"), metavar="TPS",
                   help="delivered tokens/s per GPU (spec.pools[].tokensPerSecondPerGpu)")
    p.add_argument("--kilowatts-per-gpu", type=_number("--kilowatts-per-gpu"), metavar="KW",
                   help="power per GPU in kW (spec.pools[].kilowattsPerGpu), for tok/s per MW and on-prem energy")
    p.add_argument("--gpu-type", metavar="TYPE", help="fill missing figures from the GPU sheet (e.g. h200, gb300)")
    onprem = p.add_argument_group("on-prem price (instead of --price-per-gpu-hour; as spec.pools[] accepts)")
    onprem.add_argument("--capex-per-gpu", type=_number("--capex-per-gpu", positive=True), metavar="DOLLARS",
                        help="purchase cost per GPU, its share of server and network included (capexPerGpu)")
    onprem.add_argument("--amortization-years", type=_number("--amortization-years", positive=True), metavar="YEARS",
                        help="years over which the capex is written off (amortizationYears)")
    onprem.add_argument("--dollars-per-kwh", type=_number("--dollars-per-kwh"), metavar="DOLLARS",
                        help="electricity price per kWh (dollarsPerKwh)")
    onprem.add_argument("--pue", type=_number("--pue", minimum=1.0), default=None, metavar="PUE",
                        help="power usage effectiveness applied to --kilowatts-per-gpu (pue; default 1.0)")
    add_output_flag(p, ["text", "json"], "text")
    p.set_defaults(func=run)


@command("cost")
def run(args: argparse.Namespace) -> int:
    from tokenfactory import cost, gpusheet

    price = args.price_per_gpu_hour
    tps = args.tokens_per_second_per_gpu
    kw = args.kilowatts_per_gpu
    published = None
    label = None
    onprem_flags = {"--capex-per-gpu": args.capex_per_gpu, "--amortization-years": args.amortization_years,
                    "--dollars-per-kwh": args.dollars_per_kwh}
    onprem = any(v is not None for v in onprem_flags.values())
    if onprem and price is not None:
        raise CommandError("give either --price-per-gpu-hour (cloud) or --capex-per-gpu, --amortization-years and "
                           "--dollars-per-kwh (on-prem), not both", EXIT_USAGE)
    if onprem and not all(v is not None for v in onprem_flags.values()):
        missing = [f for f, v in onprem_flags.items() if v is None]
        raise CommandError(f"on-prem pricing needs --capex-per-gpu, --amortization-years and --dollars-per-kwh "
                           f"together; missing {', '.join(missing)}", EXIT_USAGE)
    if args.pue is not None and not onprem:
        raise CommandError("--pue applies to on-prem pricing only (with --capex-per-gpu ...)", EXIT_USAGE)
    sheet_price = False
    if args.gpu_type:
        entry = gpusheet.lookup(args.gpu_type)
        if entry is None:
            raise CommandError(f"--gpu-type {args.gpu_type!r} is not in the GPU sheet "
                               f"(known: {', '.join(gpusheet.known_types())})", EXIT_INVALID)
        label = entry.display_name
        if price is None and not onprem:
            price, sheet_price = entry.price_per_gpu_hour, True
        if tps is None:
            tps = entry.tokens_per_second_per_gpu
        if kw is None:
            kw = entry.kilowatts_per_gpu
        # The published figure only describes the sheet's own inputs.
        if sheet_price and tps == entry.tokens_per_second_per_gpu:
            published = entry.published_cost_per_million_tokens
    if onprem and kw is None:
        raise CommandError("on-prem pricing needs --kilowatts-per-gpu (or --gpu-type to take it from the sheet)",
                           EXIT_USAGE)
    onprem_lines: list[str] = []
    breakdown = None
    if onprem:
        pue = 1.0 if args.pue is None else args.pue
        breakdown = cost.on_prem_breakdown(args.capex_per_gpu, args.amortization_years, kw, pue, args.dollars_per_kwh)
        price = breakdown["pricePerGpuHour"]
        onprem_lines = cost.explain_on_prem(args.capex_per_gpu, args.amortization_years, kw, pue, args.dollars_per_kwh)
    missing = [f for f, v in (("--price-per-gpu-hour (or the on-prem flags)", price),
                              ("--tokens-per-second-per-gpu", tps)) if v is None]
    if missing:
        raise CommandError(f"{' and '.join(missing)} required (or give --gpu-type)", EXIT_USAGE)
    try:
        lines = cost.explain(price, tps, kw, published_cost_per_million_tokens=published, label=label)
    except cost.CostInputError as e:  # pragma: no cover - argparse validates first
        raise CommandError(str(e)) from None
    if args.output == "json":
        cpm = cost.cost_per_million_tokens(price, tps)
        data = {
            "gpuType": args.gpu_type.lower() if args.gpu_type else None,
            "pricing": "onPrem" if onprem else "cloud",
            "pricePerGpuHour": price,
            "priceSource": "onPrem" if onprem else ("sheet" if sheet_price else "flag"),
            "onPrem": breakdown,
            "tokensPerSecondPerGpu": tps,
            "tokensPerGpuHour": tps * cost.SECONDS_PER_HOUR,
            "costPerMillionTokens": cpm,
            "kilowattsPerGpu": kw,
            "tokensPerSecondPerMegawatt": cost.tokens_per_second_per_megawatt(tps, 1, kw) if kw is not None else None,
            "publishedCostPerMillionTokens": published,
            "steps": onprem_lines + lines,
        }
        sys.stdout.write(to_json(data))
        return 0
    if onprem_lines:
        if label:
            lines = lines[1:]
            onprem_lines = [f"{label} (on-prem):"] + onprem_lines
        lines = onprem_lines + lines
    print("\n".join(lines))
    return 0
