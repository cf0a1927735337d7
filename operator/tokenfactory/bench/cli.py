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

from tokenfactory.bench.driver import (HPA_SINGLE_POOL_TARGETS, HPA_TARGETS, KEDA_TARGETS, hpa_variants,
                                       measure_capacities, request_trace_scale, run_all)
from tokenfactory.bench.report import plot, table, targets_text
from tokenfactory.bench.run import routing_modes
from tokenfactory.bench.scenario import EXAMPLE, load_setup
from tokenfactory.bench.scoring import SLO_TARGET, targets
from tokenfactory.bench.traces import (AZURE, PEAK_LOAD, TRACES, build, builtin_cases, load_scale, peak, scaled,
                                       user_case)

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
    ap.add_argument("--trace", action="append", default=[], metavar="FILE",
                    help="a trace file, format by content: rate CSV (seconds,tokens_per_second or "
                         "seconds,requests_per_second,prompt_tokens,output_tokens), Azure LLM inference CSV "
                         "(TIMESTAMP,ContextTokens,GeneratedTokens) or Mooncake JSONL (timestamp ms, input_length, "
                         "output_length); repeatable; added to the set")
    ap.add_argument("--rate-scale", type=float, default=None, metavar="X",
                    help="replay X times the requests per second of every trace file (same size distribution); "
                         "default: 1 for --trace files; the standard azure_code trace follows the load rule "
                         "(--peak-load) unless this is given")
    ap.add_argument("--peak-load", type=float, default=PEAK_LOAD, metavar="F",
                    help="the load rule for the standard traces: a rate trace is rate-scaled so that its highest "
                         "rate asks F x the factory's maximum SLO capacity (the most any mix within min/maxReplicas "
                         "carries within the objectives under the routing, by the engine model measured on the "
                         "simulator); the request trace (azure_code) is played at F x the largest rate scale at which "
                         f"that mix meets the SLO target on the trace itself (simulated); default {PEAK_LOAD:g}")
    ap.add_argument("--traces", default="all",
                    help="standard traces to run: all, none, or a comma list of "
                         + ",".join([t[0] for t in TRACES] + [AZURE[0]]))
    ap.add_argument("--example", default=str(EXAMPLE),
                    help="TokenFactory YAML (default: deploy/examples/deepseek-r1-httproute.yaml, GB300 + H200 "
                         "behind a capacity-weighted HTTPRoute)")
    ap.add_argument("--startup-seconds", type=float, default=None,
                    help="override every pool's start-up delay (default: the GPU sheet's, 300 s)")
    ap.add_argument("--headroom", type=float, default=None,
                    help="override spec.scaling.headroom (a floor above demand under SLO planning; default: the example's, none)")
    ap.add_argument("--dt", type=float, default=10.0,
                    help="simulator step, seconds (default 10; the engines tick every second inside a step)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bursty trace")
    ap.add_argument("--routing", default=None,
                    help="routing every policy runs under (default: the example's spec.routing.mode, else Service: "
                         "one Service, requests split evenly over ready pods); tokenfactory also runs under every "
                         "other mode the simulator offers")
    ap.add_argument("--workers", type=int, default=None,
                    help="processes running independent simulations (default: the CPUs; 1 = in this process)")
    args = ap.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        ap.error("--workers must be >= 1")
    if args.rate_scale is not None and not (args.rate_scale > 0 and math.isfinite(args.rate_scale)):
        ap.error(f"--rate-scale must be a number > 0, got {args.rate_scale}")
    if not (args.peak_load > 0 and math.isfinite(args.peak_load)):
        ap.error(f"--peak-load must be a number > 0, got {args.peak_load}")

    t_start = time.perf_counter()
    try:
        setup = load_setup(Path(args.example), args.startup_seconds, args.dt, args.headroom)
    except (OSError, ValueError) as err:
        ap.error(str(err))
    modes = routing_modes()
    if args.routing is not None and modes and args.routing not in modes:
        ap.error(f"--routing {args.routing!r}: the simulator models {', '.join(modes)}")
    routing = args.routing or setup.routing
    known = [t[0] for t in TRACES] + [AZURE[0]]
    want = known if args.traces == "all" else [] if args.traces == "none" else [
        x.strip() for x in args.traces.split(",") if x.strip()]
    bad = [w for w in want if w not in known]
    if bad:
        ap.error(f"--traces: unknown trace(s) {bad}; known: {', '.join(known)}, or all / none")
    # The standard traces, unscaled; their engine model (per-pool curves) measured first; then the load rule
    # (a rate trace: peak = --peak-load x the factory's maximum SLO capacity under the routing; the request trace:
    # --peak-load x the largest scale the biggest mix serves within the SLO target, simulated).
    std = [c for c in builtin_cases(args.quick, args.seed) if c.name in want]
    capacities = measure_capacities(setup, std, args.workers) if std else {}
    chosen, rules = [], {}
    for case in std:
        if case.is_file and args.rate_scale is not None:
            chosen.append(scaled(case, args.rate_scale))
            rules[case.name] = {"rate_scale_why": "--rate-scale"}
            continue
        if case.is_file:  # a request-level trace: what the factory serves of it, simulated on the trace itself
            scale, rule = request_trace_scale(setup, case, capacities[case.name], routing, args.peak_load)
        else:
            scale, rule = load_scale(setup, case, capacities[case.name], routing, args.peak_load)
        chosen.append(scaled(case, scale))
        rules[case.name] = rule
        print(f"# {case.name}: rate scale {scale:g}: {rule['rate_scale_why']}", file=sys.stderr)
    try:
        chosen += [user_case(p, args.rate_scale or 1.0) for p in args.trace]
    except (OSError, ValueError) as err:
        ap.error(f"--trace: {err}")
    if not chosen:
        ap.error("no trace to run")

    report: dict = {"metadata": {
        "example": str(args.example), "factory": setup.factory, "quick": args.quick,
        "control_interval_seconds": setup.interval, "metrics_window_seconds": setup.window,
        "simulator_step_seconds": setup.dt, "headroom": setup.headroom,
        "scale_down_stabilization_seconds": setup.stabilization,
        "routing": routing, "routing_modes_modelled": list(modes),
        "objectives": {"ttft_p95_seconds": setup.objectives.ttft_p95_seconds,
                       "itl_p95_seconds": setup.objectives.itl_p95_seconds},
        "slo_target": SLO_TARGET,
        "load_rule": (f"every standard rate trace is rate-scaled (shape kept) so that its highest rate asks "
                      f"{args.peak_load:g} x the factory's maximum SLO capacity: the most output tok/s any mix within "
                      f"min/maxReplicas, budget and power carries within the objectives under the routing ({routing}), "
                      f"by the engine model (per-pool latency curves measured on the simulator with the trace's "
                      f"request sizes, Poisson arrivals); the standard request trace (azure_code) is played at "
                      f"{args.peak_load:g} x the largest rate scale at which that mix meets the SLO target on the trace "
                      f"itself, simulated (a real trace is burstier than Poisson arrivals)"
                      + ("; --rate-scale overrides it for the trace files" if args.rate_scale is not None else "")),
        "peak_load": args.peak_load,
        "pools": {rp.name: {"gpu_type": rp.gpu_type, "replica_tokens_per_second": rp.tokens_per_second_per_replica,
                            "replica_dollars_per_hour": rp.price_per_replica_hour,
                            "min_replicas": rp.min_replicas, "max_replicas": rp.max_replicas,
                            "startup_seconds": rp.startup_seconds} for rp in setup.resolved},
        "tuning_grids": {"hpa_target_utilisation": list(HPA_TARGETS),
                         "hpa_single_pool_target_utilisation": list(HPA_SINGLE_POOL_TARGETS),
                         "keda_waiting_requests_per_replica": list(KEDA_TARGETS),
                         "hpa_variants": {n: list(p) for n, p in hpa_variants(setup)}},
        "tokenfactory_metrics": "FleetMetricsSource (simulator figures over the metrics window)",
        "traces": {}, "slo_capacity_tokens_per_second": {}, "sustained_tokens_per_second": {},
        "wall_seconds": {},
    }, "traces": {}}
    done = [0]

    def progress(job) -> None:
        done[0] += 1
        if done[0] % 10 == 0:
            print(f"# {done[0]} runs done, {time.perf_counter() - t_start:.0f} s", file=sys.stderr)

    outcome = run_all(setup, chosen, routing=routing, workers=args.workers, plot=bool(args.plot), progress=progress,
                      capacities=capacities)
    for case in chosen:
        trace = build(case)
        results = outcome.results[case.name]
        report["traces"][case.name] = results
        report["metadata"]["traces"][case.name] = {
            "spec": case.desc, "duration_seconds": case.duration, "rate_scale": case.rate_scale,
            **rules.get(case.name, {}),
            "peak_tokens_per_second": peak(trace, case.duration, setup.dt)}
        report["metadata"]["slo_capacity_tokens_per_second"][case.name] = outcome.capacities.get(case.name)
        model = outcome.models.get(case.name)
        report["metadata"]["sustained_tokens_per_second"][case.name] = model.sustained() if model else None
        if args.plot:
            os.makedirs(args.plot, exist_ok=True)
            plot(Path(args.plot) / f"{case.name}.png", case.name, outcome.timelines.get(case.name, {}), results, setup)
    report["targets"] = targets(report)
    report["metadata"]["wall_seconds"]["total"] = time.perf_counter() - t_start
    report["metadata"]["workers"] = args.workers or os.cpu_count()
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report["metadata"]["max_rss_mib"] = {"main": rss_self, "largest_worker": rss_children}
    print(table(report))
    print(targets_text(report["targets"]))
    print(f"# {len(chosen)} traces in {report['metadata']['wall_seconds']['total']:.1f} s wall, "
          f"max RSS {rss_self:.0f} MiB (main), {rss_children:.0f} MiB (largest worker)", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, sort_keys=False)
    return 0
