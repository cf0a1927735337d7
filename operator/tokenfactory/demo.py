"""``tokenfactory demo``: the whole system on this machine, live, in one command.

It starts (or reuses) the local control plane with its simulated H200 and GB300 node pools, a real
Prometheus, the vLLM fleet simulator (``tokenfactory sim``, cluster mode) and the operator
(``tokenfactory run``); applies the CRD and ``deploy/examples/deepseek-r1-h200-gb300.yaml`` into the
``demo`` namespace with its time settings compressed like the demand (start-up delays, control
interval, scale-down stabilization and metrics window divided by the compression, never below what the
live system can do; shown on screen); plays a compressed day of demand with a spike above what GB300
can carry; shows a live table of what each pool delivers and costs; and at the end writes
``summary.json`` and ``demo.png`` into the output folder. Everything it started is stopped on exit,
Ctrl-C or SIGTERM (the cluster only if the demo started it and ``--keep-cluster`` is not given).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenfactory.clitools import EXIT_STATUS_HELP

NAMESPACE = "demo"
FACTORY = "deepseek-r1"
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "deploy" / "examples" / "deepseek-r1-h200-gb300.yaml"

DAY_SECONDS = 86400.0
SIM_TICK_SECONDS = 0.5


# What the live system can do at the fastest: the operator's loop sleeps at least 0.5 s and a pass takes
# a few hundred ms; Prometheus scrapes once a second here and rate() needs 4 scrapes in its window; the
# CRD accepts scaling.interval >= 1s and metrics.window >= 5s; a pod (kwok + the simulator's load delay)
# cannot be Ready in less than a second. The compression sets each setting to its full-speed value / the
# compression factor, but never below these.
SCRAPE_SECONDS = 1.0
FLOORS = {"interval": 1.0, "scaleDownStabilization": 1.0, "window": 5.0, "startupSeconds": 1.0}


def _duration_text(seconds: float) -> str:
    """A Go-style duration the CRD accepts: 1s, 2.08s, 350ms."""
    if seconds < 1.0:
        return f"{max(1, round(seconds * 1000))}ms"
    return f"{seconds:.2f}".rstrip("0").rstrip(".") + "s"


@dataclass(frozen=True)
class Compression:
    """The demo's time compression: one demo second stands for ``factor`` seconds of the day, and the
    example's time settings are divided by ``factor`` (never below :data:`FLOORS`) so that start-up
    delays, the control interval, the scale-down stabilization and the metrics window keep their
    proportions to the demand's changes, as in the full-speed benchmark on the same trace."""

    factor: float
    full: dict[str, float]  # the example's settings at full speed, seconds (startup: per pool)
    scaled: dict[str, float]  # what the demo sets
    floored: tuple[str, ...]  # settings held at their floor (the demo is slower than the day there)

    def spec_patch(self, pools: list[str]) -> dict[str, Any]:
        return {
            "scaling": {"interval": _duration_text(self.scaled["interval"]),
                        "scaleDownStabilization": _duration_text(self.scaled["scaleDownStabilization"])},
            "metrics": {"window": _duration_text(self.scaled["window"])},
            "pools": {p: {"startupSeconds": round(self.scaled[f"startupSeconds.{p}"], 3)} for p in pools},
        }

    @property
    def startup_seconds(self) -> float:
        """The simulator's load delay: the longest pool start-up, scaled."""
        return max(v for k, v in self.scaled.items() if k.startswith("startupSeconds."))

    def describe(self) -> str:
        parts = []
        for key, label in (("interval", "scaling.interval"), ("scaleDownStabilization", "scaleDownStabilization"),
                           ("window", "metrics.window")):
            parts.append(f"{label} {_duration_text(self.full[key])} -> {_duration_text(self.scaled[key])}"
                         + (" (floor)" if key in self.floored else ""))
        for key in sorted(k for k in self.full if k.startswith("startupSeconds.")):
            parts.append(f"{key.split('.', 1)[1]} start-up {self.full[key]:g}s -> {_duration_text(self.scaled[key])}"
                         + (" (floor)" if key in self.floored else ""))
        text = f"time compressed {self.factor:,.0f}x (1 demo second = {self.factor / 60:,.1f} min of the day): " + ", ".join(parts)
        if self.floored:
            text += ("; settings at their floor are slower than the compressed day (the live operator, Prometheus "
                     "and pods cannot go faster), so the demo is harsher there than the full-speed benchmark")
        return text


def compression_for(spec: dict[str, Any], factor: float) -> Compression:
    """The scaled time settings for the example ``spec`` (a manifest's spec, plain dict) at ``factor``."""
    from tokenfactory import api

    if not (factor >= 1.0 and math.isfinite(factor)):
        raise DemoError(f"--compression must be a finite number >= 1, got {factor}")
    parsed = api.parse_spec(spec)
    full = {"interval": api.parse_duration(parsed.scaling.interval),
            "scaleDownStabilization": api.parse_duration(parsed.scaling.scale_down_stabilization),
            "window": api.parse_duration(parsed.metrics.window)}
    for rp in parsed.resolve_pools():
        full[f"startupSeconds.{rp.name}"] = float(rp.startup_seconds)
    scaled: dict[str, float] = {}
    floored: list[str] = []
    for key, value in full.items():
        floor = FLOORS[key.split(".", 1)[0]]
        v = value / factor
        if v < floor:
            v, floored = floor, floored + [key]
        scaled[key] = v
    return Compression(factor, full, scaled, tuple(floored))


class DemoError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the live demo: local cluster, Prometheus, simulator, operator, a compressed day of demand",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog=EXIT_STATUS_HELP,
    )
    p.add_argument("--duration", type=float, default=600.0,
                   help="seconds of demand to play (default 600: one compressed day)")
    p.add_argument("--compression", type=float, default=None, metavar="X",
                   help="one demo second stands for X seconds of the day: the example's start-up delays, "
                        "scaling.interval, scaleDownStabilization and metrics.window are divided by X (never below "
                        "what the live system can do; the demo says which). Default 86400 / --duration: the default "
                        "trace is one day in --duration seconds; a --trace should be compressed by the same factor")
    p.add_argument("--trace", default=None,
                   help="demand trace in the simulator's syntax (see `tokenfactory sim --help`); "
                        "default: a compressed diurnal day with a spike to 60,000 tok/s, written to DIR/trace.csv")
    p.add_argument("--output-dir", default="out/demo", metavar="DIR",
                   help="folder for summary.json, demo.png and logs (default out/demo)")
    p.add_argument("--headless", action="store_true", help="no live table: plain progress lines (CI, scripts)")
    p.add_argument("--keep-cluster", action="store_true",
                   help="leave the local cluster running at the end even if the demo started it")
    p.add_argument("--namespace", default=NAMESPACE, help=f"namespace to run the factory in (default {NAMESPACE})")
    p.add_argument("--sample-interval", type=float, default=2.0, help="seconds between samples (default 2)")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------------------- trace


def default_trace_rows(duration: float) -> list[tuple[float, float]]:
    """A day squeezed into ``duration`` seconds: night ~10k tok/s, afternoon ~42k, and a spike to
    60k (above the 48k two GB300 replicas carry) just after the peak."""
    rows = []
    n = 48
    spike_up, spike_top, spike_end, spike_down = 0.52, 0.57, 0.70, 0.75
    for i in range(n + 1):
        f = i / n
        rate = 26000 - 16000 * math.cos(2 * math.pi * f)
        if spike_up <= f <= spike_down:
            if f < spike_top:
                s = (f - spike_up) / (spike_top - spike_up)
            elif f <= spike_end:
                s = 1.0
            else:
                s = (spike_down - f) / (spike_down - spike_end)
            rate = rate + (60000 - rate) * s
        rows.append((f, rate))
    for f in (spike_up, spike_top, spike_end, spike_down):  # exact corners of the spike
        base = 26000 - 16000 * math.cos(2 * math.pi * f)
        rows.append((f, 60000.0 if spike_top <= f <= spike_end else base))
    rows.sort()
    return [(round(f * duration, 2), round(r)) for f, r in rows]


def write_default_trace(path: Path, duration: float) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["seconds,tokens_per_second"] + [f"{t},{r}" for t, r in default_trace_rows(duration)]
    path.write_text("\n".join(lines) + "\n")
    return f"csv:{path}"


# ------------------------------------------------------------------------------------ processes


def _free_port() -> int:
    from tokenfactory.localcluster import procs

    return procs.free_port()


class Child:
    """A ``tokenfactory`` sub-command as a child process in its own session, output to a log."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str]):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen([sys.executable, "-m", "tokenfactory.cli", *args], stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_http(self, url: str, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise DemoError(f"{self.name} exited with {self.popen.returncode}; end of {self.log_path}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"{self.name} not answering {url} after {timeout:.0f}s; end of log:\n{self.tail()}")
            time.sleep(0.3)

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        # anything left in its process group (it leads its own session)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()


# ----------------------------------------------------------------------------------- reporting


class Reporter:
    """Progress lines (headless) or rich output; the live table lives in ``live``."""

    def __init__(self, headless: bool):
        self.headless = headless
        self.t0 = time.monotonic()
        self.console: Any = None  # rich.console.Console when interactive
        if not headless:
            from rich.console import Console

            self.console = Console()

    def say(self, msg: str) -> None:
        stamp = f"[demo {time.monotonic() - self.t0:6.1f}s]"
        if self.console is not None:
            from rich.text import Text

            with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                self.console.print(Text.assemble((stamp, "dim"), " ", msg), highlight=False)
        else:
            with contextlib.suppress(OSError):
                print(f"{stamp} {msg}", flush=True)

    @contextlib.contextmanager
    def step(self, what: str):
        """A long step: a spinner in the terminal, start/done lines headless."""
        t = time.monotonic()
        if self.console is not None:
            with self.console.status(what + " ..."):
                yield
        else:
            self.say(what + " ...")
            yield
        self.say(f"{what}: done in {time.monotonic() - t:.1f}s")


def _fmt(x: Any, spec: str, none: str = "-") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return none
    if not math.isfinite(v):
        return none
    return format(v, spec)


def _short(x: Any, dollars: bool = False) -> str:
    """Compact numbers for the live table: 950, 24.0k, 2.80M; dollars with cents or 3 decimals."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(v):
        return "-"
    if dollars:
        return f"{v:,.3f}" if abs(v) < 1 else f"{v:,.2f}"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f}k"
    return f"{v:,.0f}"


def _pool_row(name: str, gpu: str, p: dict, capacity: Any) -> list[str]:
    return [
        name, gpu, f"{p.get('readyReplicas', 0)}/{p.get('desiredReplicas', 0)}",
        _short(p.get("tokensPerSecond")), _short(capacity),
        _short(p.get("tokensPerSecondPerGpu")), _short(p.get("tokensPerSecondPerMegawatt")),
        _short(p.get("dollarsPerHour"), True), _short(p.get("costPerMillionTokens"), True),
        _fmt(p.get("ttftP95Seconds"), ".2f"), _fmt(p.get("itlP95Seconds"), ".3f"),
    ]


def render_live(sample: dict, elapsed: float, duration: float, decisions: list[dict], notes: list[str],
                width: int = 120, height: int = 50):
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from tokenfactory.demo_report import comparison, seed_cost_per_mtok

    f = sample.get("factory") or {}
    pools = sample.get("pools") or {}
    table = Table(title=f"TokenFactory {FACTORY}: live per pool (status.pools[])", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1) if width >= 100 else (0, 0), pad_edge=False)
    for col in ("pool", "GPU", "ready/\nwant", "tok/s", "capa-\ncity", "tok/s\n/GPU", "tok/s\n/MW", "$/hour",
                "$/Mtok", "TTFT\np95 s", "ITL\np95 s"):
        table.add_column(col, justify="left" if col in ("pool", "GPU") else "right", no_wrap=True)
    for name, p in pools.items():
        table.add_row(*_pool_row(name, str(p.get("gpuType") or "").upper(), p, p.get("capacity")))
    total = {
        **f,
        "readyReplicas": sum(int(p.get("readyReplicas") or 0) for p in pools.values()),
        "desiredReplicas": sum(int(p.get("desiredReplicas") or 0) for p in pools.values()),
    }
    cap = sum(float(p.get("capacity") or 0) for p in pools.values())
    table.add_row(*_pool_row("factory", "all", total, cap), style="bold")
    head = Text()
    head.append(f"t = {elapsed:4.0f}s / {duration:.0f}s   ", style="bold")
    head.append(f"demand {_short(sample.get('demand'))} tok/s   ", style="bold")
    conds = sample.get("conditions") or {}
    for k in ("MetricsAvailable", "BudgetExceeded", "Degraded"):
        if k in conds:
            bad = (conds[k] == "True") != (k == "MetricsAvailable")
            head.append(f"{k}={conds[k]}  ", style="red" if bad else "green")
    cmp_line = Text(comparison(pools) or "GB300 vs H200: waiting for tokens on both pools", style="bold green")
    seeds = Text(f"seed figures: H200 ${seed_cost_per_mtok('h200'):.2f}/Mtok, GB300 ${seed_cost_per_mtok('gb300'):.3f}/Mtok "
                 "at full load (35x; published $4.20 vs $0.12)", style="dim")
    d = sample.get("decision") or {}
    dec = Text()
    tall = height >= 40
    if d:
        changes = ", ".join(f"{c.get('pool')} {c.get('from')}->{c.get('to')}" for c in d.get("changes", []))
        when = str(d.get("time", "?")).replace("T", " ").replace("Z", "")
        dec.append(f"last scaling decision ({len(decisions)} so far, {when}): {changes}\n", style="bold yellow")
        reason = str(d.get("reason", ""))
        limit = max(40, 3 * width - 10) if not tall else 10_000
        dec.append(reason if len(reason) <= limit else reason[: limit - 1] + "…")
        if tall:
            for c in d.get("changes", []):
                pool, why = str(c.get("pool")), str(c.get("reason", ""))
                dec.append("\n" + (why if why.startswith(pool) else f"{pool}: {why}"), style="dim")
    else:
        dec.append("no scaling decision yet", style="dim")
    parts: list[Any] = [head, cmp_line, seeds, table, dec]
    if tall:
        parts.append(Text("\n".join(notes), style="dim"))
    else:
        parts.append(Text(notes[-1], style="dim"))
    return Group(*parts)


def headless_line(sample: dict, elapsed: float) -> str:
    f = sample.get("factory") or {}
    parts = [f"t={elapsed:4.0f}s demand {_fmt(sample.get('demand'), ',.0f')} tok/s"]
    for name, p in (sample.get("pools") or {}).items():
        parts.append(f"{name} {p.get('readyReplicas', 0)}/{p.get('desiredReplicas', 0)} "
                     f"{_fmt(p.get('tokensPerSecond'), ',.0f')} tok/s ${_fmt(p.get('costPerMillionTokens'), ',.3f')}/Mtok")
    parts.append(f"factory ${_fmt(f.get('dollarsPerHour'), ',.2f')}/h ${_fmt(f.get('costPerMillionTokens'), ',.3f')}/Mtok")
    return " | ".join(parts)


# ------------------------------------------------------------------------------------------ run


def example_manifest() -> dict[str, Any]:
    import yaml

    if not EXAMPLE.exists():
        raise DemoError(f"{EXAMPLE} not found (the demo runs from a checkout of the repository)")
    return yaml.safe_load(EXAMPLE.read_text())


def demo_manifest(namespace: str, compression: Compression) -> dict[str, Any]:
    """The example in ``namespace`` with its time settings compressed (see :class:`Compression`)."""
    doc = copy.deepcopy(example_manifest())
    doc["metadata"]["namespace"] = namespace
    patch = compression.spec_patch([p["name"] for p in doc["spec"]["pools"]])
    doc["spec"].setdefault("scaling", {}).update(patch["scaling"])
    doc["spec"].setdefault("metrics", {}).update(patch["metrics"])
    for pool in doc["spec"]["pools"]:
        pool.update(patch["pools"][pool["name"]])
    return doc


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    if args.duration <= 0:
        print("tokenfactory demo: error: --duration must be > 0", file=sys.stderr)
        return 2
    if getattr(args, "compression", None) is not None and not (math.isfinite(args.compression) and args.compression >= 1):
        print(f"tokenfactory demo: error: --compression must be a number >= 1, got {args.compression}", file=sys.stderr)
        return 2
    # Ctrl-C raises KeyboardInterrupt even when the demo was started with SIGINT ignored (a
    # background job of a script); SIGTERM and SIGHUP (terminal closed) do the same clean-up.
    old = {sig: signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else _raise_interrupt)
           for sig in _STOP_SIGNALS}
    try:
        return Demo(args).run()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.factor = args.compression if getattr(args, "compression", None) else DAY_SECONDS / args.duration
        self.out = Path(args.output_dir).absolute()
        self.logs = self.out / "logs"
        self.r = Reporter(args.headless)
        self.namespace = args.namespace
        self.children: list[Child] = []
        self.prom: Any = None  # localcluster.prometheus.PrometheusServer once started
        self.lc: Any = None  # localcluster.cluster.LocalCluster
        self.started_cluster = False
        self.users_file: Path | None = None
        self.kubectl: Any = None  # localcluster.cluster.Kubectl
        self.samples: list[dict] = []
        self.manifest: dict[str, Any] = {}
        self.applied = False

    # -- orchestration ---------------------------------------------------------------------------
    def run(self) -> int:
        interrupted = False
        failed: BaseException | None = None
        t_start = time.monotonic()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.logs.mkdir(parents=True, exist_ok=True)
            self._setup()
            self._loop()
        except KeyboardInterrupt:
            interrupted = True
            self.r.say("interrupted: tearing everything down")
        except Exception as err:  # noqa: BLE001 - reported, then torn down
            failed = err
            self.r.say(f"error: {err}")
        # From here on nothing interrupts: the clean-up and the report must finish (each step has
        # its own time limit), also when the terminal goes away (SIGHUP).
        quiet = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _STOP_SIGNALS}
        try:
            self._teardown()
            code = 130 if interrupted else (1 if failed else 0)
            if self.samples:
                try:
                    self._report(interrupted, time.monotonic() - t_start)
                except Exception as err:  # noqa: BLE001 - the processes are gone; say what failed
                    self.r.say(f"error writing the summary and the plot: {err!r}")
                    code = code or 1
            elif failed is None and not interrupted:
                self.r.say("no samples were taken")
                code = 1
            self.r.say(f"total wall time {time.monotonic() - t_start:.0f}s; exit code {code}")
        finally:
            for sig, handler in quiet.items():
                signal.signal(sig, handler)
        return code

    def _setup(self) -> None:
        from tokenfactory.localcluster import procs
        from tokenfactory.localcluster.cluster import Kubectl, LocalCluster, default_state_dir
        from tokenfactory.localcluster.prometheus import PrometheusServer
        from tokenfactory.localcluster.sharing import _users_dir

        say = self.r.say
        self.compression = compression_for(example_manifest()["spec"], self.factor)
        self.manifest = demo_manifest(self.namespace, self.compression)
        say(self.compression.describe())
        say(f"output folder: {self.out} (logs in {self.logs})")

        # 1. the cluster: reuse a running one, else start it (builds the binaries when missing)
        lc = LocalCluster(default_state_dir())
        self.lc = lc
        users = _users_dir(lc)
        users.mkdir(parents=True, exist_ok=True)
        with procs.file_lock(users / ".lock"):
            # A cluster whose state is there belongs to someone (`tokenfactory cluster up`, a test
            # session), even when some of its processes are down and `up` restarts them: left running.
            was_running = lc.is_running() or lc.layout.state.exists()
            self.users_file = users / str(os.getpid())
            self.users_file.write_text("")
        if was_running:
            say(f"reusing the local cluster in {lc.state_dir} (it stays running afterwards)")
        self.started_cluster = not was_running  # set first: a half-started cluster is stopped too
        with self.r.step(f"local control plane in {lc.state_dir} (building binaries first if missing)"):
            info = lc.up(progress=lambda m: say(f"  cluster: {m}"), timeout=300)
        env = {**os.environ, "KUBECONFIG": str(info.kubeconfig)}
        self.env = env
        self.kubectl = k = Kubectl(info.kubeconfig)

        # 2. Prometheus (real), no targets yet
        with self.r.step("starting Prometheus"):
            self.prom = PrometheusServer(self.out / "prometheus", targets=[], scrape_interval=_duration_text(SCRAPE_SECONDS))
            self.prom.start()
        say(f"Prometheus at {self.prom.url} (scrape every {_duration_text(SCRAPE_SECONDS)})")

        # 3. the CRD and the namespace
        from tokenfactory.crd import crd_yaml

        with self.r.step("applying the TokenFactory CRD"):
            k.apply(crd_yaml())
            k("wait", "--for", "condition=Established", "crd/tokenfactories.tokenfactory.dev", "--timeout=60s")
        if k.run("get", "namespace", self.namespace).returncode != 0:
            k("create", "namespace", self.namespace)
        with self.r.step(f"namespace {self.namespace} and its default ServiceAccount"):
            self._wait(lambda: k.run("get", "serviceaccount", "default", "-n", self.namespace).returncode == 0, 60,
                       "the default ServiceAccount")
        self._delete_factory(quiet=True)  # a factory left over from an earlier, killed demo

        # 4. the operator
        with self.r.step("starting the operator (tokenfactory run)"):
            mport, hport = _free_port(), _free_port()
            op = Child("operator", ["run", "--namespace", self.namespace, "--prometheus-url", self.prom.url,
                                    "--prometheus-timeout", "2", "--metrics-port", str(mport),
                                    "--metrics-address", "127.0.0.1", "--health-port", str(hport)], self.logs, env)
            self.children.append(op)
            op.wait_http(f"http://127.0.0.1:{hport}/healthz", 90)
        self.operator_metrics = f"127.0.0.1:{mport}"

        # 5. the factory
        s = self.manifest["spec"]
        say(f"applying {EXAMPLE.relative_to(REPO_ROOT)} into namespace {self.namespace}, with demo settings: "
            f"scaling.interval {s['scaling']['interval']}, scaleDownStabilization {s['scaling']['scaleDownStabilization']}, "
            f"metrics.window {s['metrics']['window']}, pools[].startupSeconds "
            + ", ".join(f"{p['name']} {p['startupSeconds']:g}" for p in s["pools"]))
        k.apply(self.manifest)
        self.applied = True
        with self.r.step("waiting for the first pod of each pool to be Ready"):
            self._wait(self._pools_ready, 120, "one Ready replica per pool")

        # 6. the simulator and the trace; its clock is the demo's clock
        if self.args.trace:
            trace = self.args.trace
            say(f"demand trace: {trace}")
        else:
            trace = write_default_trace(self.out / "trace.csv", self.args.duration)
            say(f"demand trace: a compressed day in {self.args.duration:.0f}s (1 s = "
                f"{86400 / self.args.duration / 60:.1f} min), ~10k tok/s at night, ~42k in the afternoon, "
                f"a spike to 60k (above the 48k two GB300 replicas carry) -> {self.out / 'trace.csv'}")
        with self.r.step("starting the fleet simulator (tokenfactory sim, cluster mode)"):
            sport = _free_port()
            sim = Child("sim", ["sim", "--host", "127.0.0.1", "--port", str(sport), "--kubeconfig", str(info.kubeconfig),
                                "--namespace", self.namespace, "--factory", FACTORY, "--trace", trace,
                                "--window", f"{self.compression.scaled['window']:g}", "--tick", str(SIM_TICK_SECONDS),
                                "--startup-seconds", f"{self.compression.startup_seconds:g}"],
                        self.logs, env)
            self.children.append(sim)
            sim.wait_http(f"http://127.0.0.1:{sport}/healthz", 60)
        self.sim_url = f"http://127.0.0.1:{sport}"
        self.sim_started = time.monotonic()
        with self.r.step("pointing Prometheus at the simulator (honor_labels) and the operator"):
            from tokenfactory.alerts import OPERATOR_LABELS
            from tokenfactory.localcluster.prometheus import ScrapeTarget

            # the operator's target carries the labels the chart's ServiceMonitor sets (the alerts select it by them)
            self.prom.set_targets([("vllm", f"127.0.0.1:{sport}", True),
                                   ScrapeTarget("tokenfactory-operator", self.operator_metrics,
                                                labels=tuple(sorted(OPERATOR_LABELS.items())))])
            self.prom.wait_targets_up(["vllm", "tokenfactory-operator"], timeout=60)
        (self.out / "pids.json").write_text(json.dumps(
            {"demo": os.getpid(), "prometheus": self.prom.pid, **{c.name: c.pid for c in self.children}}, indent=2))

    def _loop(self) -> None:
        duration = self.args.duration
        notes = [f"demo settings: {self.compression.describe()}",
                 f"logs: {self.logs}   Prometheus: {self.prom.url}   Ctrl-C stops and cleans up"]
        from tokenfactory.demo_report import decisions

        live = None
        if not self.args.headless:
            from rich.live import Live

            live = Live(console=self.r.console, refresh_per_second=2, transient=False)
            live.start()
        last_print = -math.inf
        seen_decisions: set[str] = set()
        try:
            while True:
                elapsed = time.monotonic() - self.sim_started
                sample = self._sample(elapsed)
                for c in self.children:
                    if not c.alive():
                        raise DemoError(f"{c.name} exited with {c.popen.returncode}; end of {c.log_path}:\n{c.tail()}")
                if sample is not None:
                    self.samples.append(sample)
                    d = sample.get("decision")
                    if live is not None:
                        live.update(render_live(sample, elapsed, duration, decisions(self.samples), notes,
                                                width=self.r.console.width, height=self.r.console.height))
                    else:
                        if d and d.get("time") and d["time"] not in seen_decisions:
                            seen_decisions.add(d["time"])
                            changes = ", ".join(f"{c.get('pool')} {c.get('from')}->{c.get('to')}" for c in d.get("changes", []))
                            self.r.say(f"decision: {changes}: {d.get('reason', '')}")
                        if elapsed - last_print >= (5 if duration <= 120 else 10):
                            last_print = elapsed
                            self.r.say(headless_line(sample, elapsed))
                if elapsed >= duration:
                    break
                time.sleep(max(0.0, self.args.sample_interval - (time.monotonic() - self.sim_started - elapsed)))
        finally:
            if live is not None:
                live.stop()

    def _sample(self, elapsed: float) -> dict | None:
        import httpx

        from tokenfactory.localcluster.cluster import ClusterError

        try:
            tf = self.kubectl.json("get", "tokenfactory", FACTORY, "-n", self.namespace, timeout=10)
        except (ClusterError, subprocess.TimeoutExpired, ValueError):
            return None
        try:
            truth = httpx.get(f"{self.sim_url}/truth", timeout=3).json()
        except (httpx.HTTPError, ValueError):
            truth = {}
        st = tf.get("status") or {}
        caps = {p["pool"]: p.get("capacity_tokens_per_second") for p in truth.get("pools", [])
                if p.get("namespace") == self.namespace and p.get("factory") == FACTORY}
        demand = next((f.get("demand_output_tokens_per_second") for f in truth.get("factories", [])
                       if f.get("namespace") == self.namespace and f.get("factory") == FACTORY), None)
        pools = {}
        for p in st.get("pools") or []:
            pools[p["name"]] = {**p, "capacity": caps.get(p["name"], 0.0)}
        keys = ("tokensPerSecond", "dollarsPerHour", "costPerMillionTokens", "tokensPerSecondPerGpu",
                "tokensPerSecondPerMegawatt", "ttftP95Seconds", "itlP95Seconds", "gpus", "powerKilowatts")
        return {
            "t": round(elapsed, 2),
            "demand": demand,
            "factory": {k: st.get(k) for k in keys},
            "pools": pools,
            "decision": st.get("lastDecision"),
            "conditions": {c.get("type"): c.get("status") for c in st.get("conditions") or []},
        }

    # -- helpers ---------------------------------------------------------------------------------
    def _wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        from tokenfactory.localcluster import wait_until

        try:
            return wait_until(check, timeout=timeout, interval=0.5, what=what)
        except TimeoutError as err:
            raise DemoError(str(err)) from None

    def _pools_ready(self) -> bool:
        for c in self.children:
            if not c.alive():
                raise DemoError(f"{c.name} exited; end of its log:\n{c.tail()}")
        deps = self.kubectl.json("get", "deployments", "-n", self.namespace, "-l",
                                 f"tokenfactory.dev/factory={FACTORY}")["items"]
        ready = {d["metadata"]["name"]: int((d.get("status") or {}).get("readyReplicas") or 0) for d in deps}
        want = {f"{FACTORY}-{p['name']}" for p in self.manifest["spec"]["pools"]}
        done = want <= set(ready) and all(ready[n] >= 1 for n in want)
        now = time.monotonic()
        if not done and now - getattr(self, "_pods_said", now - 8) >= 10:
            self._pods_said = now
            pods = self.kubectl.json("get", "pods", "-n", self.namespace, "-l",
                                     f"tokenfactory.dev/factory={FACTORY}")["items"]
            phases = ", ".join(f"{p['metadata']['name']} {(p.get('status') or {}).get('phase', '?')}" for p in pods)
            self.r.say(f"  pods: {phases or 'none yet'}; Deployments ready: "
                       + ", ".join(f"{n}={ready.get(n, 0)}" for n in sorted(want)))
        return done

    def _delete_factory(self, quiet: bool = False) -> None:
        k = self.kubectl
        if k is None:
            return
        res = k.run("delete", "tokenfactory", FACTORY, "-n", self.namespace, "--ignore-not-found", "--wait=false")
        if res.returncode != 0:
            return
        gone = lambda: k.run("get", "tokenfactory", FACTORY, "-n", self.namespace).returncode != 0  # noqa: E731
        if not gone() and not any(c.name == "operator" and c.alive() for c in self.children):
            # nobody runs the finalizer: an earlier demo's operator is gone
            k.run("patch", "tokenfactory", FACTORY, "-n", self.namespace, "--type=merge",
                  "-p", '{"metadata":{"finalizers":null}}')
        with contextlib.suppress(DemoError):
            self._wait(gone, 30, "the TokenFactory to be deleted")
        # Deployments are owned by the factory; the garbage collector removes them. Be explicit.
        k.run("delete", "deployments,services", "-n", self.namespace, "-l", f"tokenfactory.dev/factory={FACTORY}",
              "--ignore-not-found", "--wait=false")
        if not quiet:
            self.r.say(f"deleted TokenFactory {FACTORY} and its Deployments in {self.namespace}")

    def _teardown(self) -> None:
        say = self.r.say
        say("tearing down what the demo started")
        if self.applied:
            with contextlib.suppress(Exception):
                self._delete_factory()
        for c in reversed(self.children):
            c.stop()
            say(f"stopped {c.name} (log: {c.log_path})")
        if self.prom is not None:
            with contextlib.suppress(Exception):
                self.prom.stop()
                shutil.rmtree(self.prom.storage_dir, ignore_errors=True)
                say("stopped Prometheus")
        if self.lc is not None and self.users_file is not None:
            from tokenfactory.localcluster import procs
            from tokenfactory.localcluster.sharing import _live_users, _users_dir

            with procs.file_lock(_users_dir(self.lc) / ".lock"):
                self.users_file.unlink(missing_ok=True)
                others = _live_users(_users_dir(self.lc))
                if not self.started_cluster:
                    say("the local cluster was running before the demo: left running")
                elif self.args.keep_cluster:
                    say("--keep-cluster: the local cluster keeps running (stop it with `tokenfactory cluster down`)")
                elif others:
                    say(f"the local cluster is in use by other processes ({others}): left running")
                else:
                    self.lc.down(progress=lambda m: say(f"  cluster: {m}"))

    def _report(self, interrupted: bool, wall: float) -> None:
        from tokenfactory.demo_report import plot, summarize

        summary = summarize(self.samples, self.manifest["spec"].get("objectives") or {}, self.args.duration,
                            interrupted=interrupted, extra={"wallSeconds": round(wall, 1), "namespace": self.namespace,
                                                            "trace": self.args.trace or str(self.out / "trace.csv"),
                                                            "compression": {"factor": self.compression.factor,
                                                                            "settings": self.compression.scaled,
                                                                            "fullSpeed": self.compression.full,
                                                                            "atFloor": list(self.compression.floored)}})
        png = plot(self.samples, self.out / "demo.png",
                   title=f"tokenfactory demo: {FACTORY} on H200 + GB300 ({summary['durationSeconds']:.0f}s)")
        summary["plot"] = str(png)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        (self.out / "samples.json").write_text(json.dumps(self.samples))
        say = self.r.say
        say("summary")
        cpm = summary["costPerMillionTokens"]
        slo = summary["sloAttainment"]
        lines = [
            f"  demo time {summary['durationSeconds']:.0f}s, {summary['samples']} samples",
            f"  total cost ${summary['totalDollars']:.4f} for {summary['deliveredTokens']:,} tokens delivered "
            f"(demanded {summary['demandedTokens']:,})",
            f"  $/Mtok delivered: {'-' if cpm is None else f'${cpm:.4f}'}",
            f"  SLO attainment (TTFT p95 <= {summary['objectives']['ttftP95Seconds']}s and ITL p95 <= "
            f"{summary['objectives']['itlP95Seconds']}s): {'-' if slo is None else f'{slo:.1%}'} of {summary['sloSamples']} samples",
            f"  scaling decisions: {summary['decisions']}",
        ]
        for name, p in summary["pools"].items():
            pc = p["costPerMillionTokens"]
            lines.append(f"  {name}: ${p['dollars']:.4f}, {p['tokens']:,} tokens, "
                         f"{'-' if pc is None else f'${pc:.4f}'}/Mtok, up to {p['maxReadyReplicas']} replicas ready")
        if summary.get("lastComparison"):
            lines.append(f"  {summary['lastComparison']}")
        lines.append(f"  {summary['seedComparison']}")
        lines.append(f"  wrote {self.out / 'summary.json'} and {png}")
        for line in lines:
            with contextlib.suppress(OSError):
                if self.r.console is not None:
                    self.r.console.print(line, highlight=False, markup=False)
                else:
                    print(line, flush=True)
