"""``tokenfactory cost``: explain $/Mtok for one GPU type, step by step."""

from __future__ import annotations

import argparse
import math
import sys


def _number(flag: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if math.isnan(v) or math.isinf(v):
            raise argparse.ArgumentTypeError(f"{flag} must be a finite number, got {text!r}")
        if v < 0:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 0, got {text!r}")
        return v

    return parse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cost",
        help="explain cost per million tokens for one GPU",
        description=(
            "Explain $/Mtok = price per GPU-hour / (tokens/s per GPU x 3600) x 1e6, step by step. "
            "With --gpu-type, figures not given on the command line come from the built-in GPU sheet, "
            "and the sheet's published $/Mtok is shown next to the formula's value."
        ),
    )
    p.add_argument("--price-per-gpu-hour", type=_number("--price-per-gpu-hour"), metavar="DOLLARS")
    p.add_argument("--tokens-per-second-per-gpu", type=_number("--tokens-per-second-per-gpu"), metavar="TPS")
    p.add_argument("--kilowatts-per-gpu", type=_number("--kilowatts-per-gpu"), metavar="KW")
    p.add_argument("--gpu-type", metavar="TYPE", help="fill missing figures from the GPU sheet (e.g. h200, gb300)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tokenfactory import cost, gpusheet

    price = args.price_per_gpu_hour
    tps = args.tokens_per_second_per_gpu
    kw = args.kilowatts_per_gpu
    published = None
    label = None
    if args.gpu_type:
        entry = gpusheet.lookup(args.gpu_type)
        if entry is None:
            print(
                f"tokenfactory cost: error: --gpu-type {args.gpu_type!r} is not in the GPU sheet "
                f"(known: {', '.join(gpusheet.known_types())})",
                file=sys.stderr,
            )
            return 2
        label = entry.display_name
        if price is None:
            price = entry.price_per_gpu_hour
        if tps is None:
            tps = entry.tokens_per_second_per_gpu
        if kw is None:
            kw = entry.kilowatts_per_gpu
        # The published figure only describes the sheet's own inputs.
        if price == entry.price_per_gpu_hour and tps == entry.tokens_per_second_per_gpu:
            published = entry.published_cost_per_million_tokens
    missing = [f for f, v in (("--price-per-gpu-hour", price), ("--tokens-per-second-per-gpu", tps)) if v is None]
    if missing:
        print(f"tokenfactory cost: error: {' and '.join(missing)} required (or give --gpu-type)", file=sys.stderr)
        return 2
    try:
        lines = cost.explain(price, tps, kw, published_cost_per_million_tokens=published, label=label)
    except cost.CostInputError as e:  # pragma: no cover - argparse validates first
        print(f"tokenfactory cost: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
