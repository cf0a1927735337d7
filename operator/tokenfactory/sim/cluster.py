"""Cluster mode: one simulated engine per Ready pod labelled ``tokenfactory.dev/factory``, routed as the cluster is.

:func:`specs_from_pods` is pure (pods as plain dicts, the Kubernetes JSON shape); so are
:func:`route_weights` (a live HTTPRoute -> weight per pool) and :func:`cluster_routing` (the TokenFactories'
``spec.routing.mode`` and their live HTTPRoutes -> the fleet's routing). :class:`PodPoller` lists pods with
lightkube's sync client every ``interval`` seconds (in a thread) and hands the specs to a callback; given
``on_routing`` it also lists the TokenFactories and GETs each HTTPRoute-mode factory's route once per poll
(not per request) and hands the routing to that callback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from dataclasses import dataclass, field

from tokenfactory.sim.fleet import ROUTING_MODES, EngineSpec

FACTORY_LABEL = "tokenfactory.dev/factory"
POOL_LABEL = "tokenfactory.dev/pool"
GPU_TYPE_LABEL = "tokenfactory.dev/gpu-type"
GPU_RESOURCE = "nvidia.com/gpu"

log = logging.getLogger(__name__)


def _ts(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _gpus(pod: Mapping) -> int:
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        v = (res.get("limits") or {}).get(GPU_RESOURCE) or (res.get("requests") or {}).get(GPU_RESOURCE)
        if v is not None:
            try:
                total += int(str(v))
            except ValueError:
                pass
    return total


def ready_since(pod: Mapping) -> float | None:
    """When the pod became Ready (epoch seconds), or None if it is not Ready."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") != "True":
                return None
            return _ts(cond.get("lastTransitionTime")) or 0.0
    return None


def specs_from_pods(
    pods: Iterable[Mapping],
    *,
    factory: str | None = None,
    startup_seconds: float = 0.0,
    capacity_factors: Mapping[str, float] | None = None,
    default_gpus: int = 1,
) -> list[EngineSpec]:
    """One :class:`EngineSpec` per Ready, not-terminating pod of a factory.

    ``capacity_factors`` maps a pool name (or ``namespace/factory/pool``) to its factor.
    Engines start at the pod's Ready time; the simulator adds ``startup_seconds`` to it.
    """
    factors = dict(capacity_factors or {})
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        fac = labels.get(FACTORY_LABEL)
        if not fac or (factory and fac != factory) or meta.get("deletionTimestamp"):
            continue
        ready = ready_since(pod)
        if ready is None:
            continue
        ns = meta.get("namespace") or "default"
        pool = labels.get(POOL_LABEL, "default")
        factor = factors.get(f"{ns}/{fac}/{pool}", factors.get(pool, 1.0))
        out.append(
            EngineSpec(
                name=f"{ns}/{meta.get('name')}",
                pod=str(meta.get("name")),
                namespace=ns,
                factory=fac,
                pool=pool,
                gpu_type=labels.get(GPU_TYPE_LABEL, "h200").lower(),
                gpus=_gpus(pod) or default_gpus,
                capacity_factor=factor,
                startup_seconds=startup_seconds,
                ready_at=ready,
            )
        )
    return out


def factory_mode(tf: Mapping) -> str:
    """A TokenFactory's ``spec.routing.mode`` (``Service`` when unset, as the CRD defaults it)."""
    return str(((tf.get("spec") or {}).get("routing") or {}).get("mode") or "Service")


def route_weights(route: Mapping, factory: str) -> dict[str, int]:
    """Weight per pool of a factory's HTTPRoute: ``spec.rules[0].backendRefs[]`` named ``<factory>-<pool>``
    (the pool Services ``render.render_httproute`` points at). A ref without ``weight`` weighs 1 (the Gateway
    API default); refs of other names, and weights that are not integers >= 0, are left out."""
    rules = (route.get("spec") or {}).get("rules") or []
    refs = (rules[0] or {}).get("backendRefs") or [] if rules else []
    prefix = f"{factory}-"
    out: dict[str, int] = {}
    for ref in refs:
        name = str((ref or {}).get("name") or "")
        if not name.startswith(prefix) or len(name) == len(prefix):
            continue
        w = ref.get("weight", 1)
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            continue
        out[name[len(prefix):]] = w
    return out


@dataclass(frozen=True)
class ClusterRouting:
    """The fleet's routing as the cluster has it: ``mode`` and, in HTTPRoute mode, the weight per
    ``namespace/factory/pool``; ``notes`` say where the cluster could not be followed exactly."""

    mode: str
    weights: dict[str, int] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def cluster_routing(factories: Iterable[Mapping], routes: Mapping[tuple[str, str], Mapping | None]) -> ClusterRouting | None:
    """The routing of the watched ``factories`` (TokenFactory objects) given their live HTTPRoutes
    (``routes[(namespace, name)]``, None where there is none yet). None when there is no factory.

    The fleet routes all its factories one way: the first factory's (by namespace/name) mode wins and a factory
    in another mode is noted. HTTPRoute: each pool's weight from the factory's route; a factory whose route
    does not exist yet (the operator has not written it) gets 1 per pool of its spec, i.e. an even split over pools.
    """
    facs = sorted(factories, key=lambda f: ((f.get("metadata") or {}).get("namespace") or "default",
                                            (f.get("metadata") or {}).get("name") or ""))
    if not facs:
        return None
    notes: list[str] = []
    modes = [factory_mode(f) for f in facs]
    mode = modes[0]
    if mode not in ROUTING_MODES:
        notes.append(f"spec.routing.mode {mode!r} is not one of {', '.join(ROUTING_MODES)}: routing as Service")
        mode = "Service"
    for f, m in zip(facs[1:], modes[1:]):
        if m != mode:
            meta = f.get("metadata") or {}
            notes.append(f"{meta.get('namespace')}/{meta.get('name')} has routing.mode {m}; the simulator routes "
                         f"every factory one way: {mode}")
    if mode != "HTTPRoute":
        return ClusterRouting(mode, None, tuple(notes))
    weights: dict[str, int] = {}
    for f in facs:
        meta = f.get("metadata") or {}
        ns, name = meta.get("namespace") or "default", str(meta.get("name") or "")
        route = routes.get((ns, name))
        if route is not None:
            pools = route_weights(route, name)
        else:
            pools = {str(p.get("name")): 1 for p in (f.get("spec") or {}).get("pools") or [] if p.get("name")}
            if factory_mode(f) == "HTTPRoute":
                notes.append(f"no HTTPRoute {ns}/{name} yet: 1 per pool")
        weights.update({f"{ns}/{name}/{pool}": w for pool, w in pools.items()})
    return ClusterRouting(mode, weights, tuple(notes))


def _ns_name(f: Mapping) -> tuple[str, str]:
    meta = f.get("metadata") or {}
    return meta.get("namespace") or "default", str(meta.get("name") or "")


class PodPoller:
    """Polls pods via lightkube and calls ``on_specs(specs)`` with the result every ``interval``."""

    def __init__(
        self,
        on_specs: Callable[[list[EngineSpec]], None],
        *,
        kubeconfig: str | None = None,
        namespace: str | None = None,
        factory: str | None = None,
        startup_seconds: float = 0.0,
        capacity_factors: Mapping[str, float] | None = None,
        interval: float = 1.0,
        client=None,
        on_routing: Callable[[ClusterRouting], None] | None = None,
    ):
        self.on_specs = on_specs
        self.on_routing = on_routing
        self.routing: ClusterRouting | None = None
        self._routing_error: str | None = None
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.factory = factory
        self.startup_seconds = startup_seconds
        self.capacity_factors = dict(capacity_factors or {})
        self.interval = interval
        self._client = client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.polls = 0

    def client(self):
        if self._client is None:
            from lightkube import Client
            from lightkube.config.kubeconfig import KubeConfig

            config = KubeConfig.from_file(self.kubeconfig) if self.kubeconfig else KubeConfig.from_env()
            self._client = Client(config=config, field_manager="tokenfactory-sim")
        return self._client

    def poll_once(self) -> list[EngineSpec]:
        from lightkube import operators
        from lightkube.resources.core_v1 import Pod

        selector = {FACTORY_LABEL: operators.equal(self.factory) if self.factory else operators.exists()}
        pods = [p.to_dict() for p in self.client().list(Pod, namespace=self.namespace or "*", labels=selector)]
        specs = specs_from_pods(
            pods, factory=self.factory, startup_seconds=self.startup_seconds, capacity_factors=self.capacity_factors
        )
        self.on_specs(specs)
        self.polls += 1
        if self.on_routing is not None:
            try:
                self.poll_routing()
            except Exception as e:  # no TokenFactory CRD, RBAC, API hiccup: keep the last routing
                self.errors += 1
                if str(e) != self._routing_error:  # once per distinct error, not every second
                    log.warning("reading the factories' routing failed (routing stays %s): %s",
                                self.routing.mode if self.routing else "as it was", e)
                self._routing_error = str(e)
            else:
                self._routing_error = None
        return specs

    def poll_routing(self) -> ClusterRouting | None:
        """List the watched TokenFactories, GET the HTTPRoute of each one in HTTPRoute mode, hand the routing to
        ``on_routing`` (unchanged when there is no factory)."""
        from lightkube import ApiError
        from lightkube.generic_resource import create_namespaced_resource

        from tokenfactory import api
        from tokenfactory.kube import ROUTE_KINDS

        tf_res = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)
        facs = [f.to_dict() for f in self.client().list(tf_res, namespace=self.namespace or "*")]
        facs = [f for f in facs if not self.factory or (f.get("metadata") or {}).get("name") == self.factory]
        routes: dict[tuple[str, str], Mapping | None] = {}
        if facs and factory_mode(min(facs, key=_ns_name)) == "HTTPRoute":
            group, version, plural = ROUTE_KINDS["HTTPRoute"]
            route_res = create_namespaced_resource(group, version, "HTTPRoute", plural)
            for f in facs:
                if factory_mode(f) != "HTTPRoute":
                    continue
                ns, name = _ns_name(f)
                try:
                    routes[(ns, name)] = self.client().get(route_res, name, namespace=ns).to_dict()
                except ApiError as e:
                    if e.status.code != 404:
                        raise
                    routes[(ns, name)] = None
        routing = cluster_routing(facs, routes)
        if routing is not None:
            if routing != self.routing:
                for note in routing.notes:
                    log.warning("routing: %s", note)
                log.info("routing: %s %s", routing.mode, routing.weights or "")
            self.routing = routing
            self.on_routing(routing)  # type: ignore[misc]
        return routing

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as e:  # keep polling through API hiccups
                self.errors += 1
                log.warning("listing pods failed: %s", e)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sim-pods", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
