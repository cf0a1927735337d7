"""Command line: ``python -m tokenfactory.bench`` / ``tokenfactory-bench`` / ``bench/autoscale.py``."""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

from tokenfactory.bench.driver import run_trace
from tokenfactory.bench.report import plot, table
from tokenfactory.bench.scenario import EXAMPLE, load_setup
from tokenfactory.bench.scoring import targets
from tokenfactory.bench.traces import TRACES, builtin_traces, peak, user_trace

DESCRIPTION = """Benchmark of autoscaling policies on the fast-forwarded fleet simulator.

Usage::

    tokenfactory-bench --quick --json out.json --plot plots/
    tokenfactory-bench --trace my.csv --traces none      # only a user trace

(also python -m tokenfactory.bench, or bench/autoscale.py in a checkout). See docs/benchmarks.md."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tokenfactory-bench", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4-hour traces (compressed), for CI: < 1 min")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--plot", metavar="DIR", help="write one PNG per trace")
    ap.add_argument("--trace", action="append", default=[], metavar="CSV",
                    help="a user trace (columns seconds,tokens_per_second); repeatable; added to the set")
    ap.add_argument("--traces", default="all",
                    help="built-in traces to run: all, none, or a comma list of "
                         + ",".join(t[0] for t in TRACES))
    ap.add_argument("--example", default=str(EXAMPLE), help="TokenFactory YAML (default: the DeepSeek-R1 example)")
    ap.add_argument("--startup-seconds", type=float, default=None,
                    help="override every pool's start-up delay (default: the GPU sheet's, 300 s)")
    ap.add_argument("--headroom", type=float, default=None,
                    help="override spec.scaling.headroom (what tokenfactory plans above demand; default: the example's 0.2)")
    ap.add_argument("--dt", type=float, default=10.0, help="simulator step, seconds (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bursty trace")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    setup = load_setup(Path(args.example), args.startup_seconds, args.dt, args.headroom)
    if args.traces == "all":
        chosen = builtin_traces(args.quick, args.seed)
    elif args.traces == "none":
        chosen = []
    else:
        want = [x.strip() for x in args.traces.split(",") if x.strip()]
        known = {t[0] for t in TRACES}
        bad = [w for w in want if w not in known]
        if bad:
            ap.error(f"unknown trace(s) {bad}; known: {sorted(known)}")
        chosen = [t for t in builtin_traces(args.quick, args.seed) if t[0] in want]
    chosen += [user_trace(p) for p in args.trace]
    if not chosen:
        ap.error("no trace to run")

    report: dict = {"metadata": {
        "example": str(args.example), "factory": setup.factory, "quick": args.quick,
        "control_interval_seconds": setup.interval, "metrics_window_seconds": setup.window,
        "simulator_step_seconds": setup.dt, "headroom": setup.headroom,
        "scale_down_stabilization_seconds": setup.stabilization,
        "objectives": {"ttft_p95_seconds": setup.objectives.ttft_p95_seconds,
                       "itl_p95_seconds": setup.objectives.itl_p95_seconds},
        "pools": {rp.name: {"gpu_type": rp.gpu_type, "replica_tokens_per_second": rp.tokens_per_second_per_replica,
                            "replica_dollars_per_hour": rp.price_per_replica_hour,
                            "min_replicas": rp.min_replicas, "max_replicas": rp.max_replicas,
                            "startup_seconds": rp.startup_seconds} for rp in setup.resolved},
        "tokenfactory_metrics": "FleetMetricsSource (simulator figures over the metrics window)",
        "traces": {}, "wall_seconds": {},
    }, "traces": {}}
    for tname, trace, duration, desc in chosen:
        t0 = time.perf_counter()
        results, timelines = run_trace(setup, trace, duration)
        wall = time.perf_counter() - t0
        report["traces"][tname] = results
        report["metadata"]["traces"][tname] = {"spec": desc, "duration_seconds": duration,
                                               "peak_tokens_per_second": peak(trace, duration, setup.dt)}
        report["metadata"]["wall_seconds"][tname] = wall
        print(f"# {tname}: {desc}, {duration / 3600:.1f} h simulated in {wall:.1f} s", file=sys.stderr)
        if args.plot:
            os.makedirs(args.plot, exist_ok=True)
            plot(Path(args.plot) / f"{tname}.png", tname, timelines, results, setup)
    report["targets"] = targets(report)
    report["metadata"]["wall_seconds"]["total"] = time.perf_counter() - t_start
    report["metadata"]["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(table(report))
    for tname, tg in report["targets"].items():
        print(f"{tname:<9} tokenfactory/oracle cost {tg['cost_vs_oracle']:.3f} "
              f"({'<=' if tg['within_1_05_of_oracle'] else '>'} 1.05), SLO>=99% {'yes' if tg['slo_at_least_99'] else 'NO'} "
              f"(target {'met' if tg['cost_and_slo_target_met'] else 'missed'}), "
              f"{100 * tg['saving_vs_best_hpa']:+.1f}% cheaper than best hpa "
              f"({'meets' if tg['at_least_25pct_cheaper_than_hpa'] else 'misses'} 25%; that hpa is "
              f"{tg['hpa_variant']}, SLO {100 * tg['hpa_slo_attainment']:.1f}%), "
              f"{100 * tg.get('saving_vs_hpa_both', math.nan):+.1f}% vs hpa_both")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, sort_keys=False)
    return 0

