"""``tokenfactory sim``: a vLLM fleet simulator serving /metrics, /truth and /healthz."""

from __future__ import annotations

import argparse
import sys

from tokenfactory.clitools import EXIT_STATUS_HELP
from tokenfactory.sim.traces import __doc__ as TRACE_DOC

ENGINES_FILE_DOC = """\
--engines FILE (YAML), offline mode:
  namespace: default        # defaults for every entry
  factory: demo
  engines:
    - pool: h200            # one entry per pool; replicas engines named <factory>-<pool>-<i>
      gpu_type: h200
      gpus: 8               # GPUs per replica (engine)
      replicas: 2
      capacity_factor: 1.0  # real capacity / sheet capacity
      startup_seconds: 300  # optional, default: the GPU sheet's (or --startup-seconds)
--engine POOL:GPU_TYPE:GPUS[:REPLICAS[:CAPACITY_FACTOR]] adds one entry from the command line.
"""


class UsageError(Exception):
    pass


def register(subparsers) -> None:
    trace_help = TRACE_DOC.split("Trace syntax (``--trace``)::", 1)[-1]
    p = subparsers.add_parser(
        "sim",
        help="run the vLLM fleet simulator (/metrics with vLLM names, /truth, /healthz)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Simulate vLLM engines serving a demand trace and expose vLLM's Prometheus metrics.\n"
            "Cluster mode (--kubeconfig or KUBECONFIG, no --engines/--engine): one engine per Ready pod "
            "labelled tokenfactory.dev/factory.\nOffline mode: engines from --engines/--engine."
        ),
        epilog="Trace syntax (--trace):" + trace_help + "\n" + ENGINES_FILE_DOC + "\n" + EXIT_STATUS_HELP,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve /metrics, /truth and /healthz on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to serve on (default 8000; 0 picks a free one)")
    p.add_argument("--trace", default="constant:5000",
                   help="demand trace: a KIND:ARGS spec or a trace file (rate CSV, Azure CSV, Mooncake JSONL), see below "
                        "(default constant:5000)")
    p.add_argument("--rate-scale", type=float, default=1.0,
                   help="replay X times the requests per second, same request sizes (default 1)")
    p.add_argument("--routing", default="Service", choices=["Service", "HTTPRoute", "InferencePool"],
                   help="how requests are split over ready pods: Service (kube-proxy, even), HTTPRoute (--weight "
                        "per pool, then even), InferencePool (least loaded) (default Service)")
    p.add_argument("--weight", action="append", default=[], metavar="POOL=N",
                   help="HTTPRoute weight of a pool (repeatable; integer >= 0; default 1 per pool)")
    p.add_argument("--prompt-tokens", type=float, default=1000.0, help="prompt tokens per request (default 1000)")
    p.add_argument("--output-tokens", type=float, default=500.0, help="output tokens per request (default 500)")
    p.add_argument("--model", default="deepseek-ai/DeepSeek-R1", help="model_name label")
    p.add_argument("--time-scale", type=float, default=1.0, help="play the trace and start-up delays N x faster")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the simulation (arrivals, routing) and of the bursty trace (default 0)")
    p.add_argument("--startup-seconds", type=float, default=None,
                   help="delay from Ready to serving (default: 0 in cluster mode, the GPU sheet's offline)")
    p.add_argument("--kubeconfig", default=None, help="cluster mode: kubeconfig path (default $KUBECONFIG)")
    p.add_argument("--namespace", default=None, help="cluster mode: only this namespace")
    p.add_argument("--factory", default=None, help="cluster mode: only this factory")
    p.add_argument("--engines", default=None, metavar="FILE", help="offline mode: engines YAML (see below)")
    p.add_argument("--engine", action="append", default=[], metavar="SPEC", help="offline engine entry (repeatable)")
    p.add_argument("--capacity-factor", action="append", default=[], metavar="POOL=F",
                   help="real capacity / sheet capacity for a pool (repeatable; cluster and offline)")
    p.add_argument("--tick", type=float, default=1.0, help="simulation step, seconds (default 1)")
    p.add_argument("--window", type=float, default=60.0, help="window of /truth rates and p95 (default 60 s)")
    p.add_argument("--duration", type=float, default=None, help="exit after this many seconds (default: run forever)")
    p.add_argument("--lazy-counters", action="store_true",
                   help="expose an engine's token counters and histograms only once it has processed a token "
                        "(gauges always), as a vLLM whose labelled series appear on first use")
    p.set_defaults(func=run)


def _positive(name: str, v: float | None, allow_zero: bool = False) -> None:
    if v is None:
        return
    if v != v or (v < 0 if allow_zero else v <= 0):
        raise UsageError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v}")


def _factors(items: list[str]) -> dict[str, float]:
    out = {}
    for it in items:
        pool, sep, val = it.partition("=")
        try:
            f = float(val)
        except ValueError:
            f = -1.0
        if not sep or not pool or f < 0:
            raise UsageError(f"--capacity-factor {it!r}: want POOL=FACTOR with FACTOR >= 0")
        out[pool] = f
    return out


def _weights(items: list[str]) -> dict[str, int] | None:
    if not items:
        return None
    out = {}
    for it in items:
        pool, sep, val = it.partition("=")
        try:
            w = int(val)
        except ValueError:
            w = -1
        if not sep or not pool or w < 0:
            raise UsageError(f"--weight {it!r}: want POOL=N with N an integer >= 0")
        out[pool] = w
    return out


def offline_specs(args, factors: dict[str, float], startup_scale: float):
    import yaml

    from tokenfactory.sim.fleet import EngineSpec
    from tokenfactory.sim.profiles import default_startup_seconds

    entries: list[dict] = []
    defaults: dict = {}
    if args.engines:
        try:
            with open(args.engines) as f:
                doc = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"--engines {args.engines}: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("engines", []), list):
            raise UsageError(f"--engines {args.engines}: want a mapping with an 'engines' list")
        defaults = {k: v for k, v in doc.items() if k != "engines"}
        entries.extend(doc.get("engines") or [])
    for spec in args.engine:
        parts = spec.split(":")
        if not 3 <= len(parts) <= 5:
            raise UsageError(f"--engine {spec!r}: want POOL:GPU_TYPE:GPUS[:REPLICAS[:CAPACITY_FACTOR]]")
        entry = {"pool": parts[0], "gpu_type": parts[1], "gpus": parts[2]}
        if len(parts) > 3:
            entry["replicas"] = parts[3]
        if len(parts) > 4:
            entry["capacity_factor"] = parts[4]
        entries.append(entry)
    if not entries:
        entries = [{"pool": "h200", "gpu_type": "h200", "gpus": 8, "replicas": 1}]
    specs = []
    for i, raw in enumerate(entries):
        if not isinstance(raw, dict):
            raise UsageError(f"engine entry {i}: want a mapping")
        merged = {**defaults, **raw}
        try:
            ns = str(merged.get("namespace", "default"))
            fac = str(merged.get("factory", "sim"))
            pool = str(merged.get("pool", "default"))
            gpu_type = str(merged.get("gpu_type", "h200")).lower()
            gpus = int(merged.get("gpus", 8))
            replicas = int(merged.get("replicas", 1))
            factor = float(merged.get("capacity_factor", factors.get(pool, 1.0)))
            startup = merged.get("startup_seconds", args.startup_seconds)
            startup = float(startup) if startup is not None else default_startup_seconds(gpu_type)
        except (TypeError, ValueError) as err:
            raise UsageError(f"engine entry {i} ({raw}): {err}") from None
        if gpus <= 0 or replicas < 0 or factor < 0 or startup < 0:
            raise UsageError(f"engine entry {i} ({raw}): gpus > 0, replicas >= 0, capacity_factor >= 0 needed")
        for r in range(replicas):
            name = f"{fac}-{pool}-{r}"
            specs.append(
                EngineSpec(name=name, pod=name, namespace=ns, factory=fac, pool=pool, gpu_type=gpu_type, gpus=gpus,
                           capacity_factor=factor, startup_seconds=startup / startup_scale)
            )
    return specs


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as e:
        print(f"tokenfactory sim: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import os
    import time

    from tokenfactory.sim.fleet import Fleet
    from tokenfactory.sim.server import RealtimeRunner, SimServer
    from tokenfactory.sim.traces import TimeScaled, TraceSyntaxError, parse_trace

    _positive("--time-scale", args.time_scale)
    _positive("--tick", args.tick)
    _positive("--window", args.window)
    _positive("--prompt-tokens", args.prompt_tokens, allow_zero=True)
    _positive("--output-tokens", args.output_tokens)
    _positive("--startup-seconds", args.startup_seconds, allow_zero=True)
    _positive("--duration", args.duration)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    _positive("--rate-scale", args.rate_scale)
    factors = _factors(args.capacity_factor)
    weights = _weights(args.weight)
    if weights is not None and args.routing != "HTTPRoute":
        raise UsageError("--weight needs --routing HTTPRoute")
    try:
        trace = parse_trace(args.trace, seed=args.seed, prompt_tokens=args.prompt_tokens, output_tokens=args.output_tokens,
                            rate_scale=args.rate_scale, repeat=True)
    except (TraceSyntaxError, OSError) as e:
        raise UsageError(f"--trace: {e}") from None
    if args.time_scale != 1.0:
        trace = TimeScaled(trace, args.time_scale)

    offline = bool(args.engines or args.engine) or not (args.kubeconfig or os.environ.get("KUBECONFIG"))
    start = time.time()
    fleet = Fleet(trace, start_time=start, window_seconds=args.window, model=args.model, seed=args.seed,
                  tick=args.tick, routing=args.routing, weights=weights)
    runner = RealtimeRunner(fleet, tick=args.tick)
    poller = None
    if offline:
        runner.set_engines(offline_specs(args, factors, args.time_scale))
    else:
        from tokenfactory.sim.cluster import PodPoller

        startup = (args.startup_seconds or 0.0) / args.time_scale
        poller = PodPoller(
            runner.set_engines,
            kubeconfig=args.kubeconfig,
            namespace=args.namespace,
            factory=args.factory,
            startup_seconds=startup,
            capacity_factors=factors,
        )
    try:
        server = SimServer(runner, args.host, args.port, lazy_counters=args.lazy_counters)
    except OSError as e:
        raise UsageError(f"--port {args.port}: cannot listen on {args.host}: {e}") from None
    server.start()
    runner.start()
    if poller is not None:
        poller.start()
    mode = "offline" if offline else f"cluster (namespace={args.namespace or '*'}, factory={args.factory or '*'})"
    print(f"tokenfactory sim: {mode}, serving http://{args.host}:{server.port}/metrics /truth /healthz", flush=True)
    try:
        if args.duration:
            time.sleep(args.duration)
        else:
            while True:
                time.sleep(3600)
    finally:
        if poller is not None:
            poller.stop()
        runner.stop()
        server.stop()
    return 0
