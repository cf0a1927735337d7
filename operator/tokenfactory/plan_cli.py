"""``tokenfactory plan FILE --demand 40k,60k``: offline what-if with the operator's planner."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tokenfactory.clitools import add_output_flag, command, epilog, to_json


def _demand(text: str) -> list[float]:
    from tokenfactory.whatif import parse_demand

    try:
        return parse_demand(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--demand: {err}") from None


def _headroom(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--headroom must be a number, got {text!r}") from None
    if not 0 <= v <= 4:
        raise argparse.ArgumentTypeError(f"--headroom must be between 0 and 4 (as spec.scaling.headroom), got {text!r}")
    return v


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan",
        help="offline what-if: the cheapest replica mix for given demand levels",
        description=(
            "For each demand level, the cheapest replica mix of the factory's pools that carries demand x "
            "(1 + spec.scaling.headroom) within minReplicas/maxReplicas, objectives.maxDollarsPerHour and "
            "objectives.maxMegawatts: $/hour, $/Mtok at the served load, tokens/s per GPU and per MW, which "
            "constraints bind (relaxing one alone changes the mix), and the next-best mix (the cheapest one with "
            "fewer replicas in some pool) with its $/hour difference. It runs the operator's planner on the "
            "pools' profile capacities (spec or GPU sheet); the running operator refines them from what each "
            "pool delivers. Needs no cluster."
        ),
        epilog=epilog("example: tokenfactory plan deploy/examples/deepseek-r1-h200-gb300.yaml --demand 40k,60k,100k"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="TokenFactory YAML file ('-' for stdin); the first document is planned")
    p.add_argument("--demand", required=True, type=_demand, metavar="TPS[,TPS...]",
                   help="demand levels in delivered tokens/s (metrics.tokenAccounting), e.g. 40k,60k,1.5M")
    p.add_argument("--headroom", type=_headroom, default=None, metavar="FRACTION",
                   help="spare capacity to plan for (default: the file's spec.scaling.headroom; unset = 0)")
    add_output_flag(p, ["text", "json"], "text")
    p.set_defaults(func=cmd_plan)


def _tok(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _usd(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"${x:,.{digits}f}"


def _mix(replicas: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in replicas.items())


def _text(header: dict[str, Any], levels: list[dict[str, Any]]) -> str:
    lim = []
    if header["maxDollarsPerHour"] is not None:
        lim.append(f"budget ${header['maxDollarsPerHour']:g}/h")
    if header["maxMegawatts"] is not None:
        lim.append(f"power cap {header['maxMegawatts']:g} MW")
    pools = "; ".join(f"{p['name']} {p['minReplicas']}..{p['maxReplicas']} x {_tok(p['capacityPerReplica'])} tok/s "
                      f"at {_usd(p['dollarsPerReplicaHour'])}/h" for p in header["pools"])
    lines = [f"TokenFactory {header['factory']} ({header['model']}): pools {pools}",
             f"headroom {header['headroom']:g}, {', '.join(lim) if lim else 'no budget or power cap'}; "
             f"capacities are the profile's (spec or GPU sheet)"]
    for lv in levels:
        lines.append("")
        lines.append(f"demand {_tok(lv['demandTokensPerSecond'])} tok/s (x{1 + lv['headroom']:g} = "
                     f"{_tok(lv['requiredTokensPerSecond'])} tok/s to cover)")
        cover = "covers demand x headroom" if lv["coversHeadroom"] else (
            "covers demand, not the headroom" if lv["coversDemand"] else "does NOT cover demand")
        lines.append(f"  mix         {_mix(lv['replicas'])}: {_tok(lv['capacityTokensPerSecond'])} tok/s, {cover}")
        lines.append(f"  $/hour      {_usd(lv['dollarsPerHour'])}    $/Mtok {_usd(lv['costPerMillionTokens'], 4)} "
                     f"at {_tok(lv['servedTokensPerSecond'])} tok/s")
        lines.append(f"  per GPU     {_tok(lv['tokensPerSecondPerGpu'])} tok/s ({lv['gpus']} GPUs)    per MW "
                     f"{_tok(lv['tokensPerSecondPerMegawatt'])} tok/s ({lv['megawatts']:.3g} MW)")
        lines.append(f"  binds       {', '.join(lv['binding']) or 'nothing (no demand)'}")
        nb = lv["nextBest"]
        if nb is None:
            lines.append("  next best   none (every pool is at its minReplicas)")
        else:
            what = "covers demand x headroom" if nb["coversHeadroom"] else (
                "covers demand, not the headroom" if nb["coversDemand"] else "does NOT cover demand")
            lines.append(f"  next best   {_mix(nb['replicas'])}: {_tok(nb['capacityTokensPerSecond'])} tok/s, "
                         f"{_usd(nb['dollarsPerHour'])}/h ({'+' if nb['deltaDollarsPerHour'] >= 0 else '-'}"
                         f"{_usd(abs(nb['deltaDollarsPerHour']))}/h), {what}")
    return "\n".join(lines) + "\n"


@command("plan")
def cmd_plan(args: argparse.Namespace) -> int:
    from tokenfactory import planner
    from tokenfactory.commands import _validate_docs
    from tokenfactory.whatif import what_if

    tf = _validate_docs(args.file)[0]
    spec = tf.spec
    profiles = tuple(planner.PoolProfile.from_resolved(rp) for rp in spec.resolve_pools())
    objectives = planner.Objectives.from_spec(spec.objectives)
    headroom = (spec.scaling.headroom or 0.0) if args.headroom is None else args.headroom
    header = {
        "factory": tf.name,
        "model": spec.model.name,
        "headroom": headroom,
        "tokenAccounting": spec.metrics.token_accounting,
        "maxDollarsPerHour": objectives.max_dollars_per_hour,
        "maxMegawatts": objectives.max_megawatts,
        "maxCostPerMillionTokens": objectives.max_dollars_per_million_tokens,
        "pools": [{"name": p.name, "gpuType": p.gpu_type, "minReplicas": p.min_replicas, "maxReplicas": p.max_replicas,
                   "gpusPerReplica": p.gpus_per_replica, "capacityPerReplica": p.capacity,
                   "dollarsPerReplicaHour": p.price_per_replica_hour, "kilowattsPerReplica": p.kilowatts_per_replica}
                  for p in profiles],
    }
    levels = [what_if(profiles, d, objectives=objectives, headroom=headroom) for d in args.demand]
    if args.output == "json":
        sys.stdout.write(to_json({**header, "levels": levels}))
    else:
        sys.stdout.write(_text(header, levels))
    return 0
