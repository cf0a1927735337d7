"""The operator's own metrics: live $/Mtok, $/hour, tokens/s, ... per pool and per factory.

A :class:`MetricsExporter` gets a full snapshot per factory (:meth:`publish`) and drops it on
:meth:`forget`. The prometheus-client implementation keeps those snapshots in a dict and exposes
them through a custom collector, so whatever is no longer published is no longer exposed: no stale
series after a pool or factory is deleted, and ``None`` figures (e.g. $/Mtok with no tokens) are
simply absent.

Labels: ``namespace, factory, pool, model, gpu_type`` (+ ``token_type`` or ``state`` where noted).
Factory totals carry ``pool=""`` and ``gpu_type=""`` (which Prometheus stores as "no such
label"), factory-level gauges (``metrics_up`` and objectives) carry ``namespace, factory, model``.
"""

from __future__ import annotations

import threading
from typing import Any
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

from tokenfactory import cost as cost_mod
from tokenfactory.ports import MetricsExporter  # noqa: F401 - re-exported: the Protocol this module implements

POOL_LABELS = ("namespace", "factory", "pool", "model", "gpu_type")
FACTORY_LABELS = ("namespace", "factory", "model")
DECISION_LABELS = ("namespace", "factory", "pool", "direction")

# name -> (help, extra label or None)
POOL_GAUGES: dict[str, tuple[str, str | None]] = {
    "tokenfactory_cost_per_million_tokens_dollars": (
        "All-in $ per million delivered tokens (token_accounting chooses output or total); absent with no tokens",
        None,
    ),
    "tokenfactory_cost_per_hour_dollars": ("$ per hour of the GPUs held by scheduled pods, idle ones included", None),
    "tokenfactory_tokens_per_second": ("Delivered tokens per second, by token_type (prompt|generation)", "token_type"),
    "tokenfactory_tokens_per_second_per_gpu": ("Delivered (headline) tokens per second per GPU held", None),
    "tokenfactory_tokens_per_second_per_megawatt": ("Delivered (headline) tokens per second per MW of all-in power", None),
    "tokenfactory_power_kilowatts": ("All-in power of the GPUs held, kW", None),
    "tokenfactory_gpus": ("GPUs held by the scheduled pods", None),
    "tokenfactory_replicas": ("vLLM replicas, by state (desired|ready)", "state"),
    "tokenfactory_ttft_p95_seconds": ("Time to first token, 95th percentile over the window", None),
    "tokenfactory_itl_p95_seconds": ("Inter-token latency, 95th percentile over the window", None),
}
FACTORY_GAUGES: dict[str, str] = {
    "tokenfactory_metrics_up": "1 when the factory's vLLM figures could be read, else 0",
    "tokenfactory_objective_cost_per_million_tokens_dollars": "Objective: maximum $ per million tokens (when set)",
    "tokenfactory_objective_dollars_per_hour": "Objective: budget in $ per hour (when set)",
    "tokenfactory_objective_ttft_p95_seconds": "Objective: maximum TTFT p95 (when set)",
    "tokenfactory_objective_itl_p95_seconds": "Objective: maximum ITL p95 (when set)",
}
DECISIONS = "tokenfactory_scaling_decisions"  # exposed as ..._total
DECISIONS_HELP = "Scaling decisions taken, by pool and direction (up|down)"


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


# A sample: (metric name, label values in the order of the family's labels, value)
Sample = tuple[str, tuple[str, ...], float]


def snapshot(namespace: str, factory: str, model: str, figures: FactoryFigures) -> list[Sample]:
    """The samples one factory exposes (pure; ``None`` figures yield no sample)."""
    out: list[Sample] = []
    rows = list(figures.pools) + ([figures.total] if figures.total is not None else [])
    for p in rows:
        base = (namespace, factory, p.pool, model, p.gpu_type)

        def add(name: str, value: float | None, *extra: str, base: tuple[str, ...] = base) -> None:
            if value is not None:
                out.append((name, base + extra, float(value)))

        add("tokenfactory_cost_per_million_tokens_dollars", p.cost_per_million_tokens)
        add("tokenfactory_cost_per_hour_dollars", p.dollars_per_hour)
        add("tokenfactory_tokens_per_second", p.prompt_tokens_per_second, "prompt")
        add("tokenfactory_tokens_per_second", p.generation_tokens_per_second, "generation")
        add("tokenfactory_tokens_per_second_per_gpu", p.tokens_per_second_per_gpu)
        add("tokenfactory_tokens_per_second_per_megawatt", p.tokens_per_second_per_megawatt)
        add("tokenfactory_power_kilowatts", p.power_kilowatts)
        add("tokenfactory_gpus", p.gpus)
        add("tokenfactory_replicas", p.replicas_desired, "desired")
        add("tokenfactory_replicas", p.replicas_ready, "ready")
        add("tokenfactory_ttft_p95_seconds", p.ttft_p95_seconds)
        add("tokenfactory_itl_p95_seconds", p.itl_p95_seconds)
    fbase = (namespace, factory, model)
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


class _Store:
    """Snapshots and decision counters, guarded by one lock (shared by the real and fake exporters)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._factories: dict[tuple[str, str], list[Sample]] = {}
        self._decisions: dict[tuple[str, str, str, str], float] = {}

    def publish(self, namespace: str, factory: str, model: str, figures: FactoryFigures) -> None:
        samples = snapshot(namespace, factory, model, figures)
        pools = {p.pool for p in figures.pools}
        with self._lock:
            self._factories[(namespace, factory)] = samples
            for key in [k for k in self._decisions if k[:2] == (namespace, factory) and k[2] not in pools]:
                del self._decisions[key]

    def forget(self, namespace: str, factory: str) -> None:
        with self._lock:
            self._factories.pop((namespace, factory), None)
            for key in [k for k in self._decisions if k[:2] == (namespace, factory)]:
                del self._decisions[key]

    def forget_pool(self, namespace: str, factory: str, pool: str) -> None:
        with self._lock:
            samples = self._factories.get((namespace, factory))
            if samples is not None:
                self._factories[(namespace, factory)] = [
                    s for s in samples if not (s[0] in POOL_GAUGES and s[1][2] == pool)
                ]
            for key in [k for k in self._decisions if k[:3] == (namespace, factory, pool)]:
                del self._decisions[key]

    def record_scaling_decision(self, namespace: str, factory: str, pool: str, direction: str, count: int = 1) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            key = (namespace, factory, pool, direction)
            self._decisions[key] = self._decisions.get(key, 0.0) + count

    def samples(self) -> tuple[list[Sample], dict[tuple[str, str, str, str], float]]:
        with self._lock:
            return [s for ss in self._factories.values() for s in ss], dict(self._decisions)


class _Collector:
    def __init__(self, store: _Store) -> None:
        self._store = store

    def describe(self):  # no fixed description: families depend on what is published
        return []

    def collect(self) -> Iterable:
        samples, decisions = self._store.samples()
        families: dict[str, GaugeMetricFamily] = {}
        for name, (help_text, extra) in POOL_GAUGES.items():
            labels = list(POOL_LABELS) + ([extra] if extra else [])
            families[name] = GaugeMetricFamily(name, help_text, labels=labels)
        for name, help_text in FACTORY_GAUGES.items():
            families[name] = GaugeMetricFamily(name, help_text, labels=list(FACTORY_LABELS))
        for name, label_values, value in samples:
            families[name].add_metric(list(label_values), value)
        for fam in families.values():
            if fam.samples:
                yield fam
        if decisions:
            c = CounterMetricFamily(DECISIONS, DECISIONS_HELP, labels=list(DECISION_LABELS))
            for key, v in sorted(decisions.items()):
                c.add_metric(list(key), v)
            yield c


class PrometheusExporter:
    """prometheus-client exporter with its own registry; :meth:`start` serves ``/metrics``."""

    def __init__(self) -> None:
        self._store = _Store()
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

    def __init__(self) -> None:
        self._store = _Store()
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
        """The value of the one sample of ``name`` matching ``labels`` (None if absent)."""
        for n, vals, v in self.samples():
            if n != name:
                continue
            names = FACTORY_LABELS if n in FACTORY_GAUGES else POOL_LABELS + ((POOL_GAUGES[n][1],) if POOL_GAUGES[n][1] else ())
            d = dict(zip(names, vals))
            if all(d.get(k) == want for k, want in labels.items()):
                return v
        return None
