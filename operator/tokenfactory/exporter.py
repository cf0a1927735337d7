"""The operator's own metrics: live $/Mtok, $/hour, tokens/s, ... per pool and per factory.

A :class:`MetricsExporter` gets a full snapshot per factory (:meth:`publish`) and drops it on
:meth:`forget`. The prometheus-client implementation keeps those snapshots in a dict and exposes
them through a custom collector, so whatever is no longer published is no longer exposed: no stale
series after a pool or factory is deleted, and ``None`` figures (e.g. $/Mtok with no tokens) are
simply absent.

Names follow Prometheus' conventions (docs/metrics.md has the table):

* per-pool gauges are ``tokenfactory_pool_*`` with labels ``namespace, factory, pool, model,
  gpu_type`` (+ ``kind`` or ``state`` where noted); the factory's totals are ``tokenfactory_factory_*``
  with ``namespace, factory, model``. A per-pool name never carries a total, so
  ``sum(tokenfactory_pool_cost_dollars_per_hour)`` counts every dollar once;
* base units: watts, seconds, tokens per joule (= tok/s per W; x 1e6 = tok/s per MW);
* rates the operator measures over its window are gauges named ``..._per_second``/``..._per_hour``;
  the cumulative counters ``tokenfactory_spend_dollars_total`` and
  ``tokenfactory_tokens_total{kind}`` (per pool) integrate them between two publishes, so FinOps
  tools can use ``increase()``;
* ``tokenfactory_build_info{version, python_version} 1``.

The names of the previous release (``tokenfactory_cost_per_hour_dollars`` ..., pool rows and
``pool=""`` totals under one name) are still exposed, as deprecated aliases with ``DEPRECATED`` in
their help text, for one release (CHANGELOG.md); ``PrometheusExporter(deprecated_aliases=False)``
drops them.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from dataclasses import dataclass, field
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

from tokenfactory import __version__
from tokenfactory import cost as cost_mod
from tokenfactory.ports import MetricsExporter  # noqa: F401 - re-exported: the Protocol this module implements

POOL_LABELS = ("namespace", "factory", "pool", "model", "gpu_type")
FACTORY_LABELS = ("namespace", "factory", "model")
DECISION_LABELS = ("namespace", "factory", "pool", "direction")
BUILD_INFO = "tokenfactory_build_info"
BUILD_INFO_LABELS = ("version", "python_version")


@dataclass(frozen=True)
class Family:
    """One exposed metric family: name as exposed (counters end in ``_total``), type, labels."""

    name: str
    help: str
    type: str  # "gauge" | "counter"
    labels: tuple[str, ...]
    replaced_by: str | None = None  # deprecated alias: the name to use instead


# (suffix, help, extra label or None): exposed as tokenfactory_pool_<suffix> (POOL_LABELS + extra)
# and tokenfactory_factory_<suffix> (FACTORY_LABELS + extra, the factory's totals).
_FIGURES: tuple[tuple[str, str, str | None], ...] = (
    ("cost_per_million_tokens_dollars",
     "All-in $ per million delivered tokens (token_accounting chooses output or total); absent with no tokens", None),
    ("cost_dollars_per_hour", "$ per hour of the GPUs held by scheduled pods, idle ones included", None),
    ("tokens_per_second", "Delivered tokens per second over the metrics window, by kind (prompt|generation)", "kind"),
    ("tokens_per_second_per_gpu", "Delivered (headline) tokens per second per GPU held", None),
    ("tokens_per_joule", "Delivered (headline) tokens per joule of all-in power (tok/s per W; x 1e6 = tok/s per MW)",
     None),
    ("power_watts", "All-in power of the GPUs held (GPU power x PUE), watts", None),
    ("gpus", "GPUs held by the scheduled pods", None),
    ("replicas", "vLLM replicas, by state (desired|ready)", "state"),
    ("ttft_p95_seconds", "Time to first token, 95th percentile over the metrics window", None),
    ("itl_p95_seconds", "Inter-token latency, 95th percentile over the metrics window", None),
)
POOL_PREFIX = "tokenfactory_pool_"
FACTORY_PREFIX = "tokenfactory_factory_"

POOL_GAUGES: dict[str, tuple[str, str | None]] = {
    POOL_PREFIX + suffix: (help_text, extra) for suffix, help_text, extra in _FIGURES
}
"""Per-pool gauges: name -> (help, extra label or None); labels ``POOL_LABELS`` + extra."""
# Latency p95s are per pool only (a factory-wide quantile is not the sum of anything).
_TOTAL_SUFFIXES = tuple(f[0] for f in _FIGURES if not f[0].endswith("_p95_seconds"))
ADDITIVE_TOTALS = ("cost_dollars_per_hour", "tokens_per_second", "power_watts", "gpus", "replicas")
"""Totals that equal the sum of the pool series (the others are ratios, recomputed from the sums)."""
FACTORY_TOTAL_GAUGES: dict[str, tuple[str, str | None]] = {
    FACTORY_PREFIX + suffix: (f"Factory total (all pools): {help_text[0].lower()}{help_text[1:]}", extra)
    for suffix, help_text, extra in _FIGURES if suffix in _TOTAL_SUFFIXES
}
"""Factory totals: name -> (help, extra label or None); labels ``FACTORY_LABELS`` + extra."""
FACTORY_GAUGES: dict[str, str] = {
    "tokenfactory_metrics_up": "1 when the factory's vLLM figures could be read, else 0",
    "tokenfactory_objective_cost_per_million_tokens_dollars": "Objective: maximum $ per million tokens (when set)",
    "tokenfactory_objective_dollars_per_hour": "Objective: budget in $ per hour (when set)",
    "tokenfactory_objective_ttft_p95_seconds": "Objective: maximum TTFT p95 (when set)",
    "tokenfactory_objective_itl_p95_seconds": "Objective: maximum ITL p95 (when set)",
}
"""Factory-level gauges: name -> help; labels ``FACTORY_LABELS``."""
SPEND = "tokenfactory_spend_dollars_total"
TOKENS = "tokenfactory_tokens_total"
POOL_COUNTERS: dict[str, tuple[str, str | None]] = {
    SPEND: ("$ spent on the GPUs held by the pool's scheduled pods ($/hour integrated over time)", None),
    TOKENS: ("Tokens delivered by the pool, by kind (prompt|generation): the measured tokens/s integrated over "
             "time", "kind"),
}
"""Per-pool counters (exposed names): name -> (help, extra label); labels ``POOL_LABELS`` + extra."""
DECISIONS = "tokenfactory_scaling_decisions"  # exposed as ..._total
DECISIONS_HELP = "Scaling decisions taken, by pool and direction (up|down)"

# The previous release's names: pool rows and the factory total (pool="", gpu_type="") under one
# name. Exposed for one more release; name -> (replacement, help, extra label or None).
DEPRECATED_GAUGES: dict[str, tuple[str, str, str | None]] = {
    "tokenfactory_cost_per_million_tokens_dollars": ("tokenfactory_pool_cost_per_million_tokens_dollars and "
                                                     "tokenfactory_factory_cost_per_million_tokens_dollars", "", None),
    "tokenfactory_cost_per_hour_dollars": ("tokenfactory_pool_cost_dollars_per_hour and "
                                           "tokenfactory_factory_cost_dollars_per_hour", "", None),
    "tokenfactory_tokens_per_second": ("tokenfactory_pool_tokens_per_second{kind} (or rate(tokenfactory_tokens_total))",
                                       "", "token_type"),
    "tokenfactory_tokens_per_second_per_gpu": ("tokenfactory_pool_tokens_per_second_per_gpu", "", None),
    "tokenfactory_tokens_per_second_per_megawatt": ("tokenfactory_pool_tokens_per_joule x 1e6", "", None),
    "tokenfactory_power_kilowatts": ("tokenfactory_pool_power_watts / 1000", "", None),
    "tokenfactory_gpus": ("tokenfactory_pool_gpus", "", None),
    "tokenfactory_replicas": ("tokenfactory_pool_replicas", "", "state"),
    "tokenfactory_ttft_p95_seconds": ("tokenfactory_pool_ttft_p95_seconds", "", None),
    "tokenfactory_itl_p95_seconds": ("tokenfactory_pool_itl_p95_seconds", "", None),
}


def families(deprecated_aliases: bool = True) -> dict[str, Family]:
    """Every metric family the exporter may expose, by exposed name."""
    out: dict[str, Family] = {}
    for name, (h, extra) in POOL_GAUGES.items():
        out[name] = Family(name, h, "gauge", POOL_LABELS + ((extra,) if extra else ()))
    for name, (h, extra) in FACTORY_TOTAL_GAUGES.items():
        out[name] = Family(name, h, "gauge", FACTORY_LABELS + ((extra,) if extra else ()))
    for name, h in FACTORY_GAUGES.items():
        out[name] = Family(name, h, "gauge", FACTORY_LABELS)
    for name, (h, extra) in POOL_COUNTERS.items():
        out[name] = Family(name, h, "counter", POOL_LABELS + ((extra,) if extra else ()))
    out[DECISIONS + "_total"] = Family(DECISIONS + "_total", DECISIONS_HELP, "counter", DECISION_LABELS)
    out[BUILD_INFO] = Family(BUILD_INFO, "TokenFactory build: version and Python version (value 1)", "gauge",
                             BUILD_INFO_LABELS)
    if deprecated_aliases:
        for name, (instead, _h, extra) in DEPRECATED_GAUGES.items():
            out[name] = Family(name, f"DEPRECATED, removed in the next release: use {instead}", "gauge",
                               POOL_LABELS + ((extra,) if extra else ()), replaced_by=instead)
    return out


FAMILIES = families()


@dataclass(frozen=True)
class PoolExport:
    """What is exported for one pool (or for the factory total, ``pool == ""``). None = absent."""

    pool: str
    gpu_type: str
    dollars_per_hour: float
    gpus: float
    power_kilowatts: float
    cost_per_million_tokens: float | None = None
    prompt_tokens_per_second: float | None = None
    generation_tokens_per_second: float | None = None
    tokens_per_second_per_gpu: float | None = None
    tokens_per_second_per_megawatt: float | None = None
    replicas_desired: int | None = None
    replicas_ready: int | None = None
    ttft_p95_seconds: float | None = None
    itl_p95_seconds: float | None = None

    @classmethod
    def from_cost(
        cls,
        figures: cost_mod.CostFigures,
        *,
        replicas_desired: int | None = None,
        replicas_ready: int | None = None,
        ttft_p95_seconds: float | None = None,
        itl_p95_seconds: float | None = None,
        tokens_measured: bool = True,
    ) -> PoolExport:
        """From :class:`cost.CostFigures`; ``tokens_measured=False`` (metrics down) drops every
        token-based figure but keeps $/hour, GPUs and power."""
        t = tokens_measured
        return cls(
            pool=figures.name,
            gpu_type=figures.gpu_type,
            dollars_per_hour=figures.dollars_per_hour,
            gpus=figures.gpus,
            power_kilowatts=figures.power_kilowatts,
            cost_per_million_tokens=figures.cost_per_million_tokens if t else None,
            prompt_tokens_per_second=figures.prompt_tokens_per_second if t else None,
            generation_tokens_per_second=figures.generation_tokens_per_second if t else None,
            tokens_per_second_per_gpu=figures.tokens_per_second_per_gpu if t else None,
            tokens_per_second_per_megawatt=figures.tokens_per_second_per_megawatt if t else None,
            replicas_desired=replicas_desired,
            replicas_ready=replicas_ready,
            ttft_p95_seconds=ttft_p95_seconds,
            itl_p95_seconds=itl_p95_seconds,
        )


@dataclass(frozen=True)
class Objectives:
    cost_per_million_tokens: float | None = None
    dollars_per_hour: float | None = None
    ttft_p95_seconds: float | None = None
    itl_p95_seconds: float | None = None


@dataclass(frozen=True)
class FactoryFigures:
    pools: tuple[PoolExport, ...] = ()
    total: PoolExport | None = None
    metrics_up: bool = True
    objectives: Objectives = field(default_factory=Objectives)

    @classmethod
    def from_cost(
        cls,
        fc: cost_mod.FactoryCost,
        *,
        replicas: Mapping[str, tuple[int | None, int | None]] | None = None,
        latency: Mapping[str, tuple[float | None, float | None]] | None = None,
        metrics_up: bool = True,
        objectives: Objectives | None = None,
    ) -> FactoryFigures:
        """``replicas[pool] = (desired, ready)``, ``latency[pool] = (ttft_p95, itl_p95)``; the key
        ``""`` stands for the factory total (replica totals are summed when not given)."""
        replicas = dict(replicas or {})
        latency = dict(latency or {})
        pools = tuple(
            PoolExport.from_cost(
                p,
                replicas_desired=replicas.get(p.name, (None, None))[0],
                replicas_ready=replicas.get(p.name, (None, None))[1],
                ttft_p95_seconds=latency.get(p.name, (None, None))[0],
                itl_p95_seconds=latency.get(p.name, (None, None))[1],
                tokens_measured=metrics_up,
            )
            for p in fc.pools
        )
        if "" in replicas:
            desired, ready = replicas[""]
        else:
            ds = [replicas[p.name][0] for p in fc.pools if p.name in replicas]
            rs = [replicas[p.name][1] for p in fc.pools if p.name in replicas]
            desired = sum(d for d in ds if d is not None) if ds and None not in ds else None
            ready = sum(r for r in rs if r is not None) if rs and None not in rs else None
        total = PoolExport.from_cost(
            fc.total,
            replicas_desired=desired,
            replicas_ready=ready,
            ttft_p95_seconds=latency.get("", (None, None))[0],
            itl_p95_seconds=latency.get("", (None, None))[1],
            tokens_measured=metrics_up,
        )
        return cls(pools=pools, total=total, metrics_up=metrics_up, objectives=objectives or Objectives())


# A sample: (exposed metric name, label values in the order of the family's labels, value)
Sample = tuple[str, tuple[str, ...], float]


def _rows(p: PoolExport) -> list[tuple[str, float | None, tuple[str, ...]]]:
    """(suffix, value, extra label values) of one pool (or total) row, in the new names."""
    return [
        ("cost_per_million_tokens_dollars", p.cost_per_million_tokens, ()),
        ("cost_dollars_per_hour", p.dollars_per_hour, ()),
        ("tokens_per_second", p.prompt_tokens_per_second, ("prompt",)),
        ("tokens_per_second", p.generation_tokens_per_second, ("generation",)),
        ("tokens_per_second_per_gpu", p.tokens_per_second_per_gpu, ()),
        ("tokens_per_joule", None if p.tokens_per_second_per_megawatt is None
         else p.tokens_per_second_per_megawatt / 1e6, ()),
        ("power_watts", p.power_kilowatts * 1000.0, ()),
        ("gpus", p.gpus, ()),
        ("replicas", p.replicas_desired, ("desired",)),
        ("replicas", p.replicas_ready, ("ready",)),
        ("ttft_p95_seconds", p.ttft_p95_seconds, ()),
        ("itl_p95_seconds", p.itl_p95_seconds, ()),
    ]


def _deprecated_rows(p: PoolExport) -> list[tuple[str, float | None, tuple[str, ...]]]:
    """The previous release's samples of one row (pool, or the total with pool="")."""
    return [
        ("tokenfactory_cost_per_million_tokens_dollars", p.cost_per_million_tokens, ()),
        ("tokenfactory_cost_per_hour_dollars", p.dollars_per_hour, ()),
        ("tokenfactory_tokens_per_second", p.prompt_tokens_per_second, ("prompt",)),
        ("tokenfactory_tokens_per_second", p.generation_tokens_per_second, ("generation",)),
        ("tokenfactory_tokens_per_second_per_gpu", p.tokens_per_second_per_gpu, ()),
        ("tokenfactory_tokens_per_second_per_megawatt", p.tokens_per_second_per_megawatt, ()),
        ("tokenfactory_power_kilowatts", p.power_kilowatts, ()),
        ("tokenfactory_gpus", p.gpus, ()),
        ("tokenfactory_replicas", p.replicas_desired, ("desired",)),
        ("tokenfactory_replicas", p.replicas_ready, ("ready",)),
        ("tokenfactory_ttft_p95_seconds", p.ttft_p95_seconds, ()),
        ("tokenfactory_itl_p95_seconds", p.itl_p95_seconds, ()),
    ]


def snapshot(namespace: str, factory: str, model: str, figures: FactoryFigures,
             deprecated_aliases: bool = True) -> list[Sample]:
    """The gauge samples one factory exposes (pure; ``None`` figures yield no sample). Counters are
    kept by the exporter (they integrate over publishes)."""
    out: list[Sample] = []
    fbase = (namespace, factory, model)
    for p in figures.pools:
        base = (namespace, factory, p.pool, model, p.gpu_type)
        for suffix, value, extra in _rows(p):
            if value is not None:
                out.append((POOL_PREFIX + suffix, base + extra, float(value)))
    if figures.total is not None:
        for suffix, value, extra in _rows(figures.total):
            if value is not None and suffix in _TOTAL_SUFFIXES:
                out.append((FACTORY_PREFIX + suffix, fbase + extra, float(value)))
    if deprecated_aliases:
        rows = list(figures.pools) + ([figures.total] if figures.total is not None else [])
        for p in rows:
            base = (namespace, factory, p.pool, model, p.gpu_type)
            for name, value, extra in _deprecated_rows(p):
                if value is not None:
                    out.append((name, base + extra, float(value)))
    out.append(("tokenfactory_metrics_up", fbase, 1.0 if figures.metrics_up else 0.0))
    o = figures.objectives
    for name, v in (
        ("tokenfactory_objective_cost_per_million_tokens_dollars", o.cost_per_million_tokens),
        ("tokenfactory_objective_dollars_per_hour", o.dollars_per_hour),
        ("tokenfactory_objective_ttft_p95_seconds", o.ttft_p95_seconds),
        ("tokenfactory_objective_itl_p95_seconds", o.itl_p95_seconds),
    ):
        if v is not None:
            out.append((name, fbase, float(v)))
    return out


@dataclass
class _Integral:
    """A pool's cumulative counters: spend and tokens, integrated between publishes."""

    last: float  # clock reading of the previous publish
    labels: tuple[str, ...]  # POOL_LABELS values
    spend: float = 0.0
    prompt: float = 0.0
    generation: float = 0.0


DEFAULT_MAX_GAP_SECONDS = 600.0


class _Store:
    """Snapshots, counters and decision counters, guarded by one lock (shared by the real and fake
    exporters). ``clock`` (seconds, monotonic) times the integration of the counters: each publish
    adds each pool's current $/hour and tokens/s times the time since its previous publish (the
    measured rates are averages over the trailing metrics window, so this right-hand sum is exact
    when publishes are one window apart). A gap longer than ``max_gap_seconds`` is not integrated
    (nothing is known about it); tokens do not advance while the metrics are down."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, deprecated_aliases: bool = True,
                 max_gap_seconds: float = DEFAULT_MAX_GAP_SECONDS) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._deprecated = deprecated_aliases
        self._max_gap = max_gap_seconds
        self._factories: dict[tuple[str, str], list[Sample]] = {}
        self._integrals: dict[tuple[str, str, str], _Integral] = {}
        self._decisions: dict[tuple[str, str, str, str], float] = {}

    def publish(self, namespace: str, factory: str, model: str, figures: FactoryFigures) -> None:
        samples = snapshot(namespace, factory, model, figures, deprecated_aliases=self._deprecated)
        pools = {p.pool for p in figures.pools}
        now = self._clock()
        with self._lock:
            self._factories[(namespace, factory)] = samples
            for key in [k for k in self._decisions if k[:2] == (namespace, factory) and k[2] not in pools]:
                del self._decisions[key]
            for ikey in [k for k in self._integrals if k[:2] == (namespace, factory) and k[2] not in pools]:
                del self._integrals[ikey]
            for p in figures.pools:
                labels = (namespace, factory, p.pool, model, p.gpu_type)
                acc = self._integrals.get((namespace, factory, p.pool))
                if acc is None:
                    self._integrals[(namespace, factory, p.pool)] = _Integral(last=now, labels=labels)
                    continue
                dt = now - acc.last
                if 0 < dt <= self._max_gap:
                    acc.spend += p.dollars_per_hour * dt / 3600.0
                    acc.prompt += (p.prompt_tokens_per_second or 0.0) * dt
                    acc.generation += (p.generation_tokens_per_second or 0.0) * dt
                acc.last, acc.labels = max(now, acc.last), labels

    def forget(self, namespace: str, factory: str) -> None:
        with self._lock:
            self._factories.pop((namespace, factory), None)
            for key in [k for k in self._decisions if k[:2] == (namespace, factory)]:
                del self._decisions[key]
            for ikey in [k for k in self._integrals if k[:2] == (namespace, factory)]:
                del self._integrals[ikey]

    def forget_pool(self, namespace: str, factory: str, pool: str) -> None:
        with self._lock:
            samples = self._factories.get((namespace, factory))
            if samples is not None:
                self._factories[(namespace, factory)] = [
                    s for s in samples if not (FAMILIES[s[0]].labels[:5] == POOL_LABELS and s[1][2] == pool)
                ]
            for key in [k for k in self._decisions if k[:3] == (namespace, factory, pool)]:
                del self._decisions[key]
            self._integrals.pop((namespace, factory, pool), None)

    def record_scaling_decision(self, namespace: str, factory: str, pool: str, direction: str, count: int = 1) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            key = (namespace, factory, pool, direction)
            self._decisions[key] = self._decisions.get(key, 0.0) + count

    def samples(self) -> tuple[list[Sample], dict[tuple[str, str, str, str], float]]:
        """Gauges and the per-pool counters (exposed names), and the decision counters."""
        with self._lock:
            out = [s for ss in self._factories.values() for s in ss]
            for acc in self._integrals.values():
                out.append((SPEND, acc.labels, acc.spend))
                out.append((TOKENS, acc.labels + ("prompt",), acc.prompt))
                out.append((TOKENS, acc.labels + ("generation",), acc.generation))
            return out, dict(self._decisions)


def build_info() -> Sample:
    return (BUILD_INFO, (__version__, platform.python_version()), 1.0)


class _Collector:
    def __init__(self, store: _Store) -> None:
        self._store = store

    def describe(self):  # no fixed description: families depend on what is published
        return []

    def collect(self) -> Iterable:
        samples, decisions = self._store.samples()
        fams: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for spec in FAMILIES.values():
            cls = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
            fams[spec.name] = cls(spec.name, spec.help, labels=list(spec.labels))
        for name, labels, value in [build_info(), *samples]:
            fams[name].add_metric(list(labels), value)
        for key, v in sorted(decisions.items()):
            fams[DECISIONS + "_total"].add_metric(list(key), v)
        for fam in fams.values():
            if fam.samples:
                yield fam


class PrometheusExporter:
    """prometheus-client exporter with its own registry; :meth:`start` serves ``/metrics``."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, deprecated_aliases: bool = True,
                 max_gap_seconds: float = DEFAULT_MAX_GAP_SECONDS) -> None:
        self._store = _Store(clock, deprecated_aliases, max_gap_seconds)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self._store))
        self._server: Any = None
        self._thread: Any = None

    def publish(self, namespace: str, factory: str, model: str, figures: FactoryFigures) -> None:
        self._store.publish(namespace, factory, model, figures)

    def forget(self, namespace: str, factory: str) -> None:
        self._store.forget(namespace, factory)

    def forget_pool(self, namespace: str, factory: str, pool: str) -> None:
        self._store.forget_pool(namespace, factory, pool)

    def record_scaling_decision(self, namespace: str, factory: str, pool: str, direction: str, count: int = 1) -> None:
        self._store.record_scaling_decision(namespace, factory, pool, direction, count)

    def exposition(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def start(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns the bound port."""
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class FakeExporter:
    """Records every call and keeps the same snapshots as the real exporter (``samples()``)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, deprecated_aliases: bool = True,
                 max_gap_seconds: float = DEFAULT_MAX_GAP_SECONDS) -> None:
        self._store = _Store(clock, deprecated_aliases, max_gap_seconds)
        self.calls: list[tuple] = []

    def publish(self, namespace: str, factory: str, model: str, figures: FactoryFigures) -> None:
        self.calls.append(("publish", namespace, factory, model, figures))
        self._store.publish(namespace, factory, model, figures)

    def forget(self, namespace: str, factory: str) -> None:
        self.calls.append(("forget", namespace, factory))
        self._store.forget(namespace, factory)

    def forget_pool(self, namespace: str, factory: str, pool: str) -> None:
        self.calls.append(("forget_pool", namespace, factory, pool))
        self._store.forget_pool(namespace, factory, pool)

    def record_scaling_decision(self, namespace: str, factory: str, pool: str, direction: str, count: int = 1) -> None:
        self.calls.append(("decision", namespace, factory, pool, direction, count))
        self._store.record_scaling_decision(namespace, factory, pool, direction, count)

    def samples(self) -> list[Sample]:
        return self._store.samples()[0]

    def decisions(self) -> dict[tuple[str, str, str, str], float]:
        return self._store.samples()[1]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample of ``name`` (exposed name) matching ``labels`` (None if absent)."""
        for n, vals, v in self.samples():
            if n != name:
                continue
            d = dict(zip(FAMILIES[n].labels, vals))
            if all(d.get(k) == want for k, want in labels.items()):
                return v
        return None
