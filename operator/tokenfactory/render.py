"""Pure rendering: a TokenFactory spec -> one vLLM Deployment per pool and the routing objects of spec.routing.

Routing objects by mode: ``Service`` one Service over every pool; ``HTTPRoute`` one Service per pool and a
Gateway API HTTPRoute whose backend weights come in from the caller (``routing.weights``); ``InferencePool`` a
Gateway API Inference Extension InferencePool over every pool's pods (plus an HTTPRoute to it when a Gateway is
named).

No I/O and no clock: the same inputs always give the same manifests (plain dicts, ready for
server-side apply). Replica counts come in from the caller (the reconcile loop, which takes them from
the planner or holds them), so autoscaling plugs in without touching rendering.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenfactory import api

MANAGED_BY = "tokenfactory"
LABEL_FACTORY = "tokenfactory.dev/factory"
LABEL_POOL = "tokenfactory.dev/pool"
LABEL_GPU_TYPE = "tokenfactory.dev/gpu-type"
GPU_RESOURCE = "nvidia.com/gpu"
VLLM_ENTRYPOINT = ["python3", "-m", "vllm.entrypoints.openai.api_server"]
GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
INFERENCE_API_VERSION = "inference.networking.k8s.io/v1"
# vLLM runs as this non-root user unless spec.engine.securityContext says otherwise.
DEFAULT_UID = 1000
DEFAULT_GID = 1000
# A writable home for the non-root user (Hugging Face and vLLM caches live under $HOME/.cache).
HOME_DIR = "/home/vllm"


@dataclass(frozen=True)
class Owner:
    """The TokenFactory that owns what is rendered (for names, labels and owner references)."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def deployment_name(factory: str, pool: str) -> str:
    return f"{factory}-{pool}"


def factory_labels(factory: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": factory,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_FACTORY: factory,
    }


def pool_labels(factory: str, pool: api.PoolSpec) -> dict[str, str]:
    return {
        **factory_labels(factory),
        "app.kubernetes.io/component": "inference-pool",
        LABEL_POOL: pool.name,
        LABEL_GPU_TYPE: pool.gpu_type.lower(),
    }


def selector_labels(factory: str, pool: str) -> dict[str, str]:
    """The Deployment selector: immutable, so only labels that never change for a pool."""
    return {LABEL_FACTORY: factory, LABEL_POOL: pool}


@dataclass(frozen=True)
class EffectiveEngine:
    """spec.engine with the pool's overrides applied (pools[].engine)."""

    image: str
    extra_args: tuple[str, ...]
    env: tuple[api.EnvVar, ...]
    requests: dict[str, int | str]
    limits: dict[str, int | str]


def effective_engine(spec: api.TokenFactorySpec, pool: api.PoolSpec) -> EffectiveEngine:
    """The pool's image (its own, else spec.engine's), args (spec.engine's, then the pool's), env (merged by
    name, the pool's value wins, spec order first) and resources (merged per key, the pool's wins)."""
    base, over = spec.engine, pool.engine
    if over is None:
        return EffectiveEngine(base.image, tuple(base.extra_args), tuple(base.env),
                               dict(base.resources.requests), dict(base.resources.limits))
    env = {v.name: v for v in base.env}
    for v in over.env:
        env[v.name] = v
    return EffectiveEngine(
        image=over.image or base.image,
        extra_args=tuple(base.extra_args) + tuple(over.extra_args),
        env=tuple(env.values()),
        requests={**base.resources.requests, **over.resources.requests},
        limits={**base.resources.limits, **over.resources.limits},
    )


def vllm_args(spec: api.TokenFactorySpec, pool: api.PoolSpec) -> list[str]:
    args = [
        "--model", spec.model.name,
        "--served-model-name", spec.served_name,
        "--tensor-parallel-size", str(pool.gpus_per_replica),
        "--max-model-len", str(spec.model.max_model_len),
        "--host", "0.0.0.0",
        "--port", str(spec.engine.port),
    ]
    if spec.model.quantization:
        args += ["--quantization", spec.model.quantization]
    return args + list(effective_engine(spec, pool).extra_args)


def _quantity(value: int | str) -> str:
    return str(value)


def _container(spec: api.TokenFactorySpec, pool: api.PoolSpec) -> dict[str, Any]:
    gpus = str(pool.gpus_per_replica)
    engine = effective_engine(spec, pool)
    requests = {k: _quantity(v) for k, v in engine.requests.items()}
    limits = {k: _quantity(v) for k, v in engine.limits.items()}
    limits[GPU_RESOURCE] = gpus
    requests[GPU_RESOURCE] = gpus
    env: list[dict[str, Any]] = []
    for var in engine.env:
        item: dict[str, Any] = {"name": var.name}
        if var.value is not None:
            item["value"] = var.value
        if var.value_from is not None:
            item["valueFrom"] = var.value_from.model_dump(by_alias=True, exclude_none=True)
        env.append(item)
    def probe(**timing: int) -> dict[str, Any]:
        return {"httpGet": {"path": "/health", "port": "http"}, **timing}

    container: dict[str, Any] = {
        "name": "vllm",
        "image": engine.image,
        "command": list(VLLM_ENTRYPOINT),
        "args": vllm_args(spec, pool),
        "ports": [{"name": "http", "containerPort": spec.engine.port, "protocol": "TCP"}],
        "resources": {"requests": requests, "limits": limits},
        # Loading a large model takes minutes: the startup probe allows 30 minutes before liveness applies.
        "startupProbe": probe(periodSeconds=10, failureThreshold=180),
        "readinessProbe": probe(periodSeconds=5, failureThreshold=3),
        "livenessProbe": probe(periodSeconds=10, failureThreshold=6),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if not any(var.name == "HOME" for var in spec.engine.env):
        env.insert(0, {"name": "HOME", "value": HOME_DIR})
    container["env"] = env
    container["volumeMounts"].append({"name": "home", "mountPath": HOME_DIR})
    # Restricted Pod Security Standard, container part.
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return container


def pod_security_context(spec: api.TokenFactorySpec) -> dict[str, Any]:
    """The pod's security context: restricted-compatible, with the ids spec.engine.securityContext chooses."""
    sc = spec.engine.security_context
    return {
        "runAsNonRoot": True,
        "runAsUser": sc.run_as_user if sc.run_as_user is not None else DEFAULT_UID,
        "runAsGroup": sc.run_as_group if sc.run_as_group is not None else DEFAULT_GID,
        "fsGroup": sc.fs_group if sc.fs_group is not None else DEFAULT_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def render_deployment(owner: Owner, spec: api.TokenFactorySpec, pool: api.PoolSpec, replicas: int) -> dict[str, Any]:
    labels = pool_labels(owner.name, pool)
    pod_spec: dict[str, Any] = {
        "containers": [_container(spec, pool)],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.engine.shm_size}},
                    {"name": "home", "emptyDir": {}}],
        "securityContext": pod_security_context(spec),
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 60,
    }
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in pool.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(owner.name, pool.name),
            "namespace": owner.namespace,
            "labels": dict(labels),
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(owner.name, pool.name)},
            # New GPUs come up before old ones go, so a rollout never drops serving capacity.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def render_service(owner: Owner, spec: api.TokenFactorySpec) -> dict[str, Any]:
    labels = factory_labels(owner.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": owner.name,
            "namespace": owner.namespace,
            "labels": {**labels, "app.kubernetes.io/component": "openai-endpoint"},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": "vllm", LABEL_FACTORY: owner.name},
            "ports": [{"name": "http", "port": spec.engine.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def pool_service_name(factory: str, pool: str) -> str:
    return f"{factory}-{pool}"


def render_pool_service(owner: Owner, spec: api.TokenFactorySpec, pool: api.PoolSpec) -> dict[str, Any]:
    """HTTPRoute mode: a Service over one pool's pods, the HTTPRoute's backend for that pool."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": pool_service_name(owner.name, pool.name),
            "namespace": owner.namespace,
            "labels": {**factory_labels(owner.name), "app.kubernetes.io/component": "pool-endpoint", LABEL_POOL: pool.name},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": "vllm", LABEL_FACTORY: owner.name, LABEL_POOL: pool.name},
            "ports": [{"name": "http", "port": spec.engine.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _route(owner: Owner, spec: api.TokenFactorySpec, backend_refs: list[dict[str, Any]]) -> dict[str, Any]:
    routing = spec.routing
    assert routing.gateway is not None
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": routing.gateway.name}
    if routing.gateway.namespace:
        parent["namespace"] = routing.gateway.namespace
    if routing.gateway.section_name:
        parent["sectionName"] = routing.gateway.section_name
    route_spec: dict[str, Any] = {"parentRefs": [parent]}
    if routing.hostnames:
        route_spec["hostnames"] = list(routing.hostnames)
    route_spec["rules"] = [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": backend_refs}]
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {
            "name": owner.name,
            "namespace": owner.namespace,
            "labels": {**factory_labels(owner.name), "app.kubernetes.io/component": "route"},
            "ownerReferences": [owner.reference()],
        },
        "spec": route_spec,
    }


def render_httproute(owner: Owner, spec: api.TokenFactorySpec, weights: Mapping[str, int]) -> dict[str, Any]:
    """HTTPRoute mode: one rule sending everything to the pools' Services, weighted by ``weights`` (pool -> int)."""
    refs = [{"group": "", "kind": "Service", "name": pool_service_name(owner.name, p.name), "port": spec.engine.port,
             "weight": int(weights.get(p.name, 0))} for p in spec.pools]
    return _route(owner, spec, refs)


def render_inferencepool(owner: Owner, spec: api.TokenFactorySpec) -> dict[str, Any]:
    """InferencePool mode: every pool's pods behind one InferencePool; the endpoint picker chooses the pod."""
    picker = spec.routing.endpoint_picker
    assert picker is not None
    return {
        "apiVersion": INFERENCE_API_VERSION,
        "kind": "InferencePool",
        "metadata": {
            "name": owner.name,
            "namespace": owner.namespace,
            "labels": {**factory_labels(owner.name), "app.kubernetes.io/component": "inference-pool-endpoint"},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "vllm", LABEL_FACTORY: owner.name}},
            "targetPorts": [{"number": spec.engine.port}],
            "endpointPickerRef": {"kind": "Service", "name": picker.name, "port": {"number": picker.port},
                                  "failureMode": picker.failure_mode},
        },
    }


def render_routing(owner: Owner, spec: api.TokenFactorySpec, weights: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """The routing objects of spec.routing.mode. ``weights`` (HTTPRoute mode): backend weight per pool, 0 if absent."""
    mode = spec.routing.mode
    if mode == "HTTPRoute":
        return [*(render_pool_service(owner, spec, p) for p in spec.pools), render_httproute(owner, spec, weights or {})]
    if mode == "InferencePool":
        out = [render_inferencepool(owner, spec)]
        if spec.routing.gateway is not None:
            out.append(_route(owner, spec, [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                             "name": owner.name}]))
        return out
    return [render_service(owner, spec)]


def clamp_replicas(spec: api.TokenFactorySpec, wanted: Mapping[str, int]) -> dict[str, int]:
    """Replicas per pool: the wanted count where given, else minReplicas, always within the pool's bounds."""
    return {p.name: max(p.min_replicas, min(p.max_replicas, wanted.get(p.name, p.min_replicas))) for p in spec.pools}


def render_deployments(owner: Owner, spec: api.TokenFactorySpec, replicas: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """One Deployment per pool, in spec order."""
    counts = clamp_replicas(spec, replicas or {})
    return [render_deployment(owner, spec, pool, counts[pool.name]) for pool in spec.pools]


def render(owner: Owner, spec: api.TokenFactorySpec, replicas: Mapping[str, int] | None = None,
           weights: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """All manifests for a factory: one Deployment per pool (in spec order), then the routing objects."""
    return render_deployments(owner, spec, replicas) + render_routing(owner, spec, weights)
