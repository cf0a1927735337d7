"""The TokenFactory custom resource, as pydantic models.

These models are the single source of truth: the CRD in ``crds/`` is generated from them
(``tokenfactory crd``), the operator parses what it watches with them, and ``tokenfactory
validate`` / ``render`` check files offline with them. Descriptions here are what ``kubectl explain``
shows; bounds, enums and defaults become OpenAPI constraints; the ``x-kubernetes-validations``
(CEL) rules attached to the classes are enforced by the apiserver and re-checked in Python so that
offline validation agrees with the cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from tokenfactory import cost, gpusheet

GROUP = "tokenfactory.dev"
VERSION = "v1alpha1"
KIND = "TokenFactory"
PLURAL = "tokenfactories"
SINGULAR = "tokenfactory"
SHORT_NAMES = ["tf"]
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A Service name (RFC 1035 label): the factory's name becomes the Service name, so it must start with a letter.
DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# At most 4 parts of at most 6 digits: "1h30m", "500ms", never a number that overflows a Go duration.
DURATION = r"^([0-9]{1,6}(\.[0-9]{1,6})?(ms|s|m|h)){1,4}$"
# A Kubernetes resource quantity (no sign: requests and limits are never negative), e.g. 8, 500m, 64Gi, 1e3.
QUANTITY = (r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
NO_SPACE = r"^\S+$"
# Names: <factory> is the Service, <factory>-<pool> each Deployment; both must fit a 63-character label.
NAME_MAX = 63
POOL_NAME_MAX = 24
INTERVAL_MIN, INTERVAL_MAX = "1s", "1h"
WINDOW_MIN, WINDOW_MAX = "5s", "24h"
STABILIZATION_MAX = "24h"

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``30s``, ``5m`` or ``1h30m``."""
    if not re.fullmatch(DURATION, text):
        raise ValueError(f"{text!r} is not a duration; use e.g. 30s, 5m, 1h30m")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields refused (the apiserver prunes them; we say so)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        # As the apiserver: "8" is not an integer and 8.5 is not a count (JSON types, no coercion).
        strict=True,
    )


Quantity = Annotated[int, Field(ge=0, le=10**15)] | Annotated[str, Field(min_length=1, max_length=64, pattern=QUANTITY)]
"""A Kubernetes quantity: a non-negative integer or a string such as 500m, 64Gi, 1e3."""


# --------------------------------------------------------------------------------------------- spec


class ModelSpec(Model):
    """The model every pool serves."""

    name: str = Field(min_length=1, max_length=256, examples=["deepseek-ai/DeepSeek-R1"])
    """Model to load (vLLM --model): a Hugging Face id such as deepseek-ai/DeepSeek-R1, or a path."""
    served_name: str | None = Field(default=None, min_length=1, max_length=256)
    """Name clients use in the OpenAI API (vLLM --served-model-name). Defaults to model.name."""
    max_model_len: int = Field(default=32768, ge=1, le=10_000_000)
    """Maximum context length in tokens (vLLM --max-model-len)."""
    quantization: (
        Literal["fp8", "mxfp4", "modelopt", "modelopt_fp4", "awq", "gptq", "compressed-tensors", "bitsandbytes"]
        | None
    ) = None
    """Weight quantization (vLLM --quantization). Leave unset to serve the checkpoint as it is."""


class KeySelector(Model):
    """A key of a Secret or ConfigMap in the factory's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the Secret or ConfigMap (its author must be allowed to get it, see docs/deploy.md)."""
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """The key to read."""
    optional: bool | None = None
    """Whether the container starts when the object or key is missing."""


class FieldSelector(Model):
    """A field of the pod (e.g. metadata.name, status.podIP)."""

    field_path: str = Field(min_length=1, max_length=256, pattern=NO_SPACE)
    """Path of the field, e.g. metadata.name."""
    api_version: str | None = Field(default=None, max_length=64, pattern=NO_SPACE)
    """Schema version the path is written in (default v1)."""


class ResourceFieldSelector(Model):
    """A resource request or limit of the container (e.g. limits.memory)."""

    resource: str = Field(min_length=1, max_length=256, pattern=NO_SPACE)
    """The resource, e.g. limits.memory."""
    container_name: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL)
    """Container name (default: the vLLM container)."""
    divisor: Quantity | None = None
    """Output unit, e.g. 1Mi."""


_ENV_SOURCE_RULES: list[Any] = [
    cel("[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), has(self.resourceFieldRef)]"
        ".filter(x, x).size() == 1",
        "set exactly one of secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef"),
]


class EnvVarSource(Model):
    """Where a variable's value comes from: exactly one of the four sources."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _ENV_SOURCE_RULES})

    secret_key_ref: KeySelector | None = None
    """A key of a Secret in the factory's namespace."""
    config_map_key_ref: KeySelector | None = None
    """A key of a ConfigMap in the factory's namespace."""
    field_ref: FieldSelector | None = None
    """A field of the pod."""
    resource_field_ref: ResourceFieldSelector | None = None
    """A resource of the container."""

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvVarSource:
        given = [self.secret_key_ref, self.config_map_key_ref, self.field_ref, self.resource_field_ref]
        if sum(x is not None for x in given) != 1:
            raise ValueError(_ENV_SOURCE_RULES[0]["message"])
        return self


_ENV_RULES: list[Any] = [cel("!(has(self.value) && has(self.valueFrom))", "set value or valueFrom, not both")]


class EnvVar(Model):
    """An environment variable for the vLLM container."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _ENV_RULES})

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME)
    """Variable name (letters, digits, '_', '-', '.'; not starting with a digit)."""
    value: str | None = Field(default=None, max_length=32768)
    """Literal value."""
    value_from: EnvVarSource | None = None
    """A Kubernetes EnvVarSource: secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef."""

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(_ENV_RULES[0]["message"])
        return self


_RESOURCES_RULES: list[Any] = [
    cel("!(has(self.requests) && 'nvidia.com/gpu' in self.requests) && !(has(self.limits) && 'nvidia.com/gpu' in self.limits)",
        "nvidia.com/gpu is set from pools[].gpusPerReplica; remove it here"),
    cel("!has(self.requests) || self.requests.all(k, k.matches(r'" + LABEL_KEY + "'))",
        "resource names must look like cpu, memory or example.com/resource", ".requests"),
    cel("!has(self.limits) || self.limits.all(k, k.matches(r'" + LABEL_KEY + "'))",
        "resource names must look like cpu, memory or example.com/resource", ".limits"),
]


class Resources(Model):
    """CPU, memory and other resources for the vLLM container, beyond GPUs (GPUs come from the pool)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _RESOURCES_RULES})

    requests: dict[Annotated[str, Field(max_length=253)], Quantity] = Field(default_factory=dict, max_length=16)
    """Resource requests, e.g. {cpu: 8, memory: 64Gi}."""
    limits: dict[Annotated[str, Field(max_length=253)], Quantity] = Field(default_factory=dict, max_length=16)
    """Resource limits. nvidia.com/gpu is set from the pool's gpusPerReplica and may not be given here."""

    @model_validator(mode="after")
    def _no_gpu(self) -> Resources:
        for part in ("requests", "limits"):
            if "nvidia.com/gpu" in getattr(self, part):
                raise ValueError(f"{part}: nvidia.com/gpu is set from pools[].gpusPerReplica; remove it here")
            bad = [k for k in getattr(self, part) if len(k) > 253 or not re.fullmatch(LABEL_KEY, k)]
            if bad:
                raise ValueError(f"{part}: resource names must look like cpu, memory or example.com/resource, got {bad[0]!r}")
        return self


class EngineSecurityContext(Model):
    """Who the vLLM container runs as. The rest of the pod's security context is fixed by TokenFactory and
    passes the restricted Pod Security Standard: runAsNonRoot, no privilege escalation, all capabilities
    dropped, seccomp RuntimeDefault."""

    run_as_user: int | None = Field(default=None, ge=1, le=2147483647)
    """User id of the vLLM process (never 0). Default 1000."""
    run_as_group: int | None = Field(default=None, ge=0, le=2147483647)
    """Primary group id of the vLLM process. Default 1000."""
    fs_group: int | None = Field(default=None, ge=0, le=2147483647)
    """Group that owns the pod's volumes. Default 1000."""


class EngineSpec(Model):
    """How vLLM runs: image, port, extra arguments, environment and resources."""

    image: str = Field(default="vllm/vllm-openai:v0.11.0", min_length=1, max_length=512, pattern=NO_SPACE)
    """vLLM OpenAI-server container image (the cluster admin may restrict images, see docs/deploy.md)."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port of vLLM's OpenAI API and /metrics (vLLM --port)."""
    extra_args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    """Further vLLM arguments, appended after the ones TokenFactory sets (e.g. --enable-expert-parallel)."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Environment variables for the vLLM container."""
    resources: Resources = Field(default_factory=Resources)
    """CPU/memory requests and limits beyond GPUs."""
    shm_size: str = Field(default="16Gi", max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti)?$")
    """Size of the in-memory /dev/shm volume (NCCL and tensor-parallel workers need it)."""
    security_context: EngineSecurityContext = Field(default_factory=EngineSecurityContext)
    """User and group ids of the vLLM pods (the only part of their security context a factory may choose)."""


_TOLERATION_RULES: list[Any] = [
    cel("self.operator != 'Exists' || !has(self.value) || self.value == ''",
        "value must be empty when operator is Exists", ".value"),
    cel("has(self.key) && self.key != '' || self.operator == 'Exists'",
        "an empty key needs operator Exists", ".key"),
    cel("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
        "tolerationSeconds needs effect NoExecute", ".tolerationSeconds"),
]


class PoolEngineSpec(Model):
    """Per-pool engine overrides over spec.engine, for pools whose nodes need another build or settings
    (e.g. an arm64 image for GB300's Grace hosts, an x86_64 one for H200)."""

    image: str | None = Field(default=None, min_length=1, max_length=512, pattern=NO_SPACE)
    """vLLM image for this pool only (replaces spec.engine.image); the image must suit the nodes' CPU architecture."""
    extra_args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    """Further vLLM arguments for this pool, appended after spec.engine.extraArgs."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Environment variables for this pool; a name also set in spec.engine.env takes this value."""
    resources: Resources = Field(default_factory=Resources)
    """CPU/memory requests and limits for this pool; each key given here replaces spec.engine.resources' one."""


class Toleration(Model):
    """A Kubernetes toleration for the pool's pods."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _TOLERATION_RULES})

    key: str | None = Field(default=None, max_length=317, pattern=r"^$|" + LABEL_KEY)
    """Taint key to tolerate; empty with operator Exists tolerates everything."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists or Equal."""
    value: str | None = Field(default=None, max_length=63, pattern=LABEL_VALUE)
    """Taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = Field(default=None, ge=0, le=31_536_000)
    """For NoExecute: how long the pod stays bound after the taint appears (at most a year)."""

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError(_TOLERATION_RULES[0]["message"])
        if not self.key and self.operator != "Exists":
            raise ValueError(_TOLERATION_RULES[1]["message"])
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError(_TOLERATION_RULES[2]["message"])
        return self


_POOL_RULES: list[Any] = [
    cel("!has(self.nodeSelector) || self.nodeSelector.all(k, k.matches(r'" + LABEL_KEY + "'))",
        "nodeSelector keys must be label keys (prefix/name, e.g. tokenfactory.dev/node-pool)", ".nodeSelector"),
    cel("self.minReplicas <= self.maxReplicas", "minReplicas must be less than or equal to maxReplicas", ".minReplicas"),
    cel("!has(self.pricePerGpuHour) || self.pricePerGpuHour > 0.0", "pricePerGpuHour must be greater than 0", ".pricePerGpuHour"),
    cel(
        "!(has(self.pricePerGpuHour) && has(self.capexPerGpu))",
        "set either pricePerGpuHour (cloud) or capexPerGpu with amortizationYears and dollarsPerKwh (on-prem), not both",
    ),
    cel(
        "has(self.capexPerGpu) == has(self.amortizationYears) && has(self.capexPerGpu) == has(self.dollarsPerKwh)",
        "on-prem pricing needs capexPerGpu, amortizationYears and dollarsPerKwh together",
    ),
]


# Cross-field rules that CEL enforces on the server, re-checked here for offline validation.
def _check_pool_rules(pool: PoolSpec) -> PoolSpec:
    bad = [k for k in pool.node_selector if len(k) > 317 or not re.fullmatch(LABEL_KEY, k)]
    if bad:
        raise ValueError(f"nodeSelector keys must be label keys (prefix/name, e.g. tokenfactory.dev/node-pool), got {bad[0]!r}")
    if pool.min_replicas > pool.max_replicas:
        raise ValueError(f"minReplicas ({pool.min_replicas}) must be less than or equal to maxReplicas ({pool.max_replicas})")
    onprem = [pool.capex_per_gpu is not None, pool.amortization_years is not None, pool.dollars_per_kwh is not None]
    if pool.price_per_gpu_hour is not None and onprem[0]:
        raise ValueError("set either pricePerGpuHour (cloud) or capexPerGpu with amortizationYears and dollarsPerKwh (on-prem), not both")
    if any(onprem) and not all(onprem):
        raise ValueError("on-prem pricing needs capexPerGpu, amortizationYears and dollarsPerKwh together")
    return pool


class PoolSpec(Model):
    """A GPU node pool serving the model: its hardware, its price, its power and its replica bounds."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _POOL_RULES})

    name: str = Field(min_length=1, max_length=POOL_NAME_MAX, pattern=DNS_LABEL)
    """Pool name (DNS label). The pool's Deployment is named <factory>-<pool>, which must fit 63 characters."""
    gpu_type: str = Field(min_length=1, max_length=32, pattern=DNS_LABEL, examples=["h200", "gb300"])
    """GPU type, lower case (e.g. h200, gb300). Known types take their price, throughput and power from the
    built-in GPU sheet wherever this pool leaves them out; other types need pricePerGpuHour (or on-prem figures)."""
    gpus_per_replica: int = Field(default=8, ge=1, le=72)
    """GPUs per vLLM replica: the tensor-parallel size (vLLM --tensor-parallel-size) and the nvidia.com/gpu limit."""
    min_replicas: int = Field(default=1, ge=0, le=1000)
    """Fewest replicas the pool keeps (the autoscaler never goes below; reconcile starts here)."""
    max_replicas: int = Field(default=10, ge=0, le=1000)
    """Most replicas the pool may run (bounded in practice by the pool's nodes)."""
    node_selector: dict[Annotated[str, Field(max_length=317)], Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = (
        Field(default_factory=dict, max_length=16))
    """Node labels the pool's pods must match, e.g. GPU feature discovery's {nvidia.com/gpu.product: NVIDIA-H200}."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=16)
    """Tolerations for the pool's pods (GPU nodes are usually tainted, e.g. nvidia.com/gpu=present:NoSchedule)."""
    price_per_gpu_hour: float | None = Field(default=None, gt=0, le=1000)
    """Cloud price in dollars per GPU-hour, all-in. Defaults to the GPU sheet's figure for gpuType."""
    capex_per_gpu: float | None = Field(default=None, gt=0, le=10_000_000)
    """On-prem: purchase cost per GPU in dollars (with amortizationYears and dollarsPerKwh instead of pricePerGpuHour)."""
    amortization_years: float | None = Field(default=None, gt=0, le=20)
    """On-prem: years over which capexPerGpu is written off."""
    dollars_per_kwh: float | None = Field(default=None, ge=0, le=10)
    """On-prem: electricity price in dollars per kWh."""
    pue: float = Field(default=1.0, ge=1.0, le=3.0)
    """On-prem: power usage effectiveness applied to kilowattsPerGpu. The sheet's kW figures are already all-in,
    so leave 1.0 unless kilowattsPerGpu is IT power only."""
    kilowatts_per_gpu: float | None = Field(default=None, gt=0, le=100)
    """All-in power per GPU in kW, for tokens per megawatt and the power cap. Defaults to the GPU sheet."""
    tokens_per_second_per_gpu: float | None = Field(default=None, gt=0, le=10_000_000)
    """Throughput profile: delivered tokens/s per GPU at saturation. Defaults to the GPU sheet; the autoscaler
    refines it from what the pool really delivers."""
    startup_seconds: float | None = Field(default=None, ge=0, le=86400)
    """Time from a replica being scheduled to serving (model load). Defaults to the GPU sheet."""
    engine: PoolEngineSpec | None = None
    """Engine overrides for this pool only (image, extraArgs, env, resources) over spec.engine."""

    @model_validator(mode="after")
    def _cross_field(self) -> PoolSpec:
        return _check_pool_rules(self)


def _duration_rules(field: str, low: str | None, high: str) -> list[dict[str, str]]:
    # A value that is not a duration is reported once, by the field's pattern; the bounds skip it.
    guard = f"!has(self.{field}) || !self.{field}.matches(r'{DURATION}') || "
    rules = []
    if low:
        rules.append(cel(f"{guard}duration(self.{field}) >= duration('{low}')", f"{field} must be at least {low}", f".{field}"))
    rules.append(cel(f"{guard}duration(self.{field}) <= duration('{high}')", f"{field} must be at most {high}", f".{field}"))
    return rules


def _check_duration(field: str, text: str, low: str | None, high: str) -> None:
    seconds = parse_duration(text)
    if low and seconds < parse_duration(low):
        raise ValueError(f"{field} must be at least {low}, got {text}")
    if seconds > parse_duration(high):
        raise ValueError(f"{field} must be at most {high}, got {text}")


_SCALING_RULES: list[Any] = (_duration_rules("interval", INTERVAL_MIN, INTERVAL_MAX)
                  + _duration_rules("scaleDownStabilization", None, STABILIZATION_MAX))


class ScalingSpec(Model):
    """How the operator picks replica counts."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SCALING_RULES})

    mode: Literal["Auto", "Recommend", "Off"] = "Auto"
    """Auto: apply the cheapest replica mix that meets demand and objectives. Recommend: compute it and report it
    in status and Events, change no replicas. Off: no planning. In Recommend and Off, replicas stay where they are
    (minReplicas for a new pool), kept within the pool's bounds."""
    interval: str = Field(default="30s", max_length=32, pattern=DURATION)
    """How often to read metrics and plan (a duration from 1s to 1h: 30s, 1m)."""
    scale_down_stabilization: str = Field(default="5m", max_length=32, pattern=DURATION)
    """A lower replica count must hold this long before the operator scales down."""
    headroom: float | None = Field(default=None, ge=0, le=4)
    """Optional floor on spare capacity, as a fraction of demand (0.2 = at least 20% above forecast demand).
    Unset (the default): the planner sizes for objectives.sloAttainment alone (latency-safe load per pool,
    demand forecast quantile)."""

    @field_validator("interval")
    @classmethod
    def _interval(cls, text: str) -> str:
        _check_duration("interval", text, INTERVAL_MIN, INTERVAL_MAX)
        return text

    @field_validator("scale_down_stabilization")
    @classmethod
    def _stabilization(cls, text: str) -> str:
        _check_duration("scaleDownStabilization", text, None, STABILIZATION_MAX)
        return text


class ObjectivesSpec(Model):
    """Service-level and cost objectives. All optional; set what matters."""

    ttft_p95_seconds: float | None = Field(default=None, gt=0, le=3600)
    """Target p95 time to first token, seconds."""
    itl_p95_seconds: float | None = Field(default=None, gt=0, le=60)
    """Target p95 inter-token latency, seconds."""
    max_cost_per_million_tokens: float | None = Field(default=None, gt=0, le=1_000_000)
    """Budget in dollars per million delivered tokens; above it BudgetExceeded is set."""
    max_dollars_per_hour: float | None = Field(default=None, gt=0, le=1_000_000_000)
    """Budget in dollars per hour for the whole factory; the autoscaler never plans above it."""
    max_megawatts: float | None = Field(default=None, gt=0, le=10_000)
    """Power cap in megawatts (all-in) for the whole factory; the autoscaler never plans above it."""
    slo_attainment: float = Field(default=0.99, ge=0.5, lt=1)
    """Share of metrics intervals whose p95 TTFT and ITL must meet the objectives (0.99 = 99%). The planner sizes
    each pool for the load at which its learned p95 latencies stay within them, for this quantile of the demand
    forecast."""


URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s]*)?$"

_METRICS_RULES: list[Any] = [
    cel("!has(self.prometheusUrl) || (isURL(self.prometheusUrl) && url(self.prometheusUrl).getHostname() != ''"
        " && (url(self.prometheusUrl).getPort() == '' || int(url(self.prometheusUrl).getPort()) <= 65535))",
        "prometheusUrl must be an http(s) URL with a host and an optional port up to 65535, "
        "e.g. http://prometheus.monitoring:9090", ".prometheusUrl"),
    *_duration_rules("window", WINDOW_MIN, WINDOW_MAX),
]


def check_url(text: str) -> None:
    """Raise ValueError unless ``text`` is an http(s) URL with a host (what the CEL rule checks)."""
    from urllib.parse import urlsplit

    problem = "prometheusUrl must be an http(s) URL with a host and an optional port up to 65535, e.g. http://prometheus.monitoring:9090"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or (port is not None and not 0 < port <= 65535):
        raise ValueError(problem)


class MetricsSpec(Model):
    """Where and how throughput and latency are read."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _METRICS_RULES})

    prometheus_url: str | None = Field(default=None, max_length=2048, pattern=URL_PATTERN)
    """Prometheus base URL (e.g. http://prometheus.monitoring:9090). Honoured only when the operator allows it
    (--prometheus-url-allow, chart value prometheus.allowedUrls); otherwise nothing is read
    (MetricsAvailable=False, PrometheusURLNotAllowed). Unset: the operator's --prometheus-url."""
    window: str = Field(default="2m", max_length=32, pattern=DURATION)
    """Rate window for token throughput and latency quantiles (PromQL range, from 5s to 24h)."""
    token_accounting: Literal["output", "total"] = "output"
    """Which tokens the headline $/Mtok counts: output (generated tokens) or total (prompt + generated)."""

    @field_validator("prometheus_url")
    @classmethod
    def _url(cls, text: str | None) -> str | None:
        if text is not None:
            check_url(text)
        return text

    @field_validator("window")
    @classmethod
    def _window(cls, text: str) -> str:
        _check_duration("window", text, WINDOW_MIN, WINDOW_MAX)
        return text


class GatewayRef(Model):
    """The Gateway API Gateway the HTTPRoute attaches to (its parentRefs entry)."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the Gateway."""
    namespace: str | None = Field(default=None, min_length=1, max_length=63, pattern=DNS_LABEL)
    """Namespace of the Gateway. Defaults to the TokenFactory's namespace (a Gateway elsewhere must allow routes from
    this namespace in its listeners' allowedRoutes)."""
    section_name: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Listener of the Gateway to attach to (parentRefs sectionName). Leave unset to attach to every listener that
    allows the route."""


class EndpointPickerRef(Model):
    """The endpoint picker (EPP, e.g. the llm-d router) an InferencePool hands its routing decisions to. The
    operator does not run it."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_1035)
    """Name of the endpoint picker's Service, in the TokenFactory's namespace."""
    port: int = Field(default=9002, ge=1, le=65535)
    """Port of the endpoint picker's ext-proc gRPC service."""
    failure_mode: Literal["FailClose", "FailOpen"] = "FailClose"
    """What the gateway does when the picker does not answer: FailClose rejects the request, FailOpen routes it to
    any pod of the pool."""


_ROUTING_RULES: list[Any] = [
    cel("!has(self.mode) || self.mode != 'HTTPRoute' || has(self.gateway)", "routing.mode HTTPRoute needs routing.gateway (the Gateway to attach to)",
        ".gateway"),
    cel("!has(self.mode) || self.mode != 'InferencePool' || has(self.endpointPicker)",
        "routing.mode InferencePool needs routing.endpointPicker (the endpoint picker Service)", ".endpointPicker"),
]


class RoutingSpec(Model):
    """How requests reach the pools' vLLM pods."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _ROUTING_RULES})

    mode: Literal["Service", "HTTPRoute", "InferencePool"] = "Service"
    """Service: one ClusterIP Service <factory> over every pool's pods; kube-proxy splits connections evenly per pod,
    whatever each pod can carry (fine for one pool or pools of equal replicas). HTTPRoute: one Service per pool
    (<factory>-<pool>) and a Gateway API HTTPRoute <factory> on routing.gateway whose backend weights follow each
    pool's ready replicas x learned capacity per replica (needs the Gateway API CRDs and a Gateway implementation).
    InferencePool: a Gateway API Inference Extension InferencePool <factory> over every pool's pods, for a cluster
    running an endpoint picker that routes by queue and KV-cache load (routing.endpointPicker)."""
    gateway: GatewayRef | None = None
    """HTTPRoute mode: the Gateway the route attaches to (required in that mode)."""
    hostnames: list[Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME)]] = Field(
        default_factory=list, max_length=16)
    """HTTPRoute mode: hostnames the route answers for (HTTPRoute spec.hostnames). Empty: every hostname of the
    Gateway's listener."""
    endpoint_picker: EndpointPickerRef | None = None
    """InferencePool mode: the endpoint picker the InferencePool refers to (required in that mode)."""

    @model_validator(mode="after")
    def _mode_needs(self) -> RoutingSpec:
        if self.mode == "HTTPRoute" and self.gateway is None:
            raise ValueError("routing.mode HTTPRoute needs routing.gateway (the Gateway to attach to)")
        if self.mode == "InferencePool" and self.endpoint_picker is None:
            raise ValueError("routing.mode InferencePool needs routing.endpointPicker (the endpoint picker Service)")
        return self


_SPEC_RULES: list[Any] = [
    cel("size(self.pools) > 0", "at least one pool is required", ".pools"),
    cel("self.pools.all(p, self.pools.exists_one(q, q.name == p.name))", "pool names must be unique", ".pools"),
]


class TokenFactorySpec(Model):
    """Desired state: one model served by vLLM on one or more GPU pools, with objectives and a budget."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    model: ModelSpec
    """The model to serve."""
    engine: EngineSpec = Field(default_factory=EngineSpec)
    """The vLLM engine settings shared by all pools."""
    pools: list[PoolSpec] = Field(min_length=1, max_length=8)
    """GPU node pools that serve the model; each becomes one Deployment."""
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    """Autoscaling mode and pacing."""
    objectives: ObjectivesSpec = Field(default_factory=ObjectivesSpec)
    """Latency and cost objectives."""
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    """Metrics source and accounting."""
    routing: RoutingSpec = Field(default_factory=RoutingSpec)
    """How requests reach the pools: one Service (even split), a capacity-weighted Gateway API HTTPRoute, or an
    Inference Extension InferencePool."""

    @field_validator("pools")
    @classmethod
    def _unique_pools(cls, pools: list[PoolSpec]) -> list[PoolSpec]:
        seen: set[str] = set()
        for i, p in enumerate(pools):
            if p.name in seen:
                raise ValueError(f"pool names must be unique: pools[{i}].name {p.name!r} is used twice")
            seen.add(p.name)
        return pools

    @property
    def served_name(self) -> str:
        return self.model.served_name or self.model.name

    def resolve_pools(self) -> list[ResolvedPool]:
        """Every pool with the GPU sheet's defaults filled in. Raises PoolResolutionError naming the field."""
        return [resolve_pool(p, i) for i, p in enumerate(self.pools)]


# ------------------------------------------------------------------------------------ allow-list
# The cluster admin's allow-lists for the author-rights admission policy (charts/tokenfactory/templates/
# admission-policy.yaml): a small cluster-scoped resource, the policy's paramKind. (A ConfigMap would do,
# but Kubernetes stops watching a built-in paramKind for good once no binding names it, kubernetes#130887.)

ALLOWLIST_KIND = "TokenFactoryAllowList"
ALLOWLIST_PLURAL = "tokenfactoryallowlists"
ALLOWLIST_SINGULAR = "tokenfactoryallowlist"


class AllowedToleration(Model):
    """A toleration TokenFactory pools may carry, for some GPU types. A pool's toleration is allowed when some
    entry has the same key, operator, value and effect (absent = empty) and lists its gpuType or '*'."""

    gpu_types: list[Annotated[str, Field(min_length=1, max_length=32, pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")]] = (
        Field(default_factory=lambda: ["*"], min_length=1, max_length=32))
    """GPU types (pools[].gpuType) this toleration is allowed for; '*' for all."""
    key: str | None = Field(default=None, max_length=317, pattern=r"^$|" + LABEL_KEY)
    """Taint key; absent with operator Exists is the toleration of every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists or Equal."""
    value: str | None = Field(default=None, max_length=63, pattern=LABEL_VALUE)
    """Taint value (operator Equal)."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect; absent matches a toleration without effect only."""


class AllowListSpec(Model):
    """What TokenFactory authors may use beyond their own rights: images, tolerations and --trust-remote-code."""

    allowed_images: list[Annotated[str, Field(min_length=1, max_length=512, pattern=NO_SPACE)]] = Field(
        default_factory=list, max_length=128)
    """Images spec.engine.image may name: an exact reference, or a prefix ending in '*' (vllm/vllm-openai:*)."""
    allowed_tolerations: list[AllowedToleration] = Field(default_factory=list, max_length=64)
    """Tolerations pools may carry, per GPU type."""
    allow_trust_remote_code: bool = False
    """Whether engine extraArgs (spec.engine and spec.pools[].engine) may pass vLLM --trust-remote-code, which runs
    Python code from the model repository the author names (spec.model.name) inside the vLLM pods. Default false."""


# ------------------------------------------------------------------------------------------- status


class Condition(Model):
    """A Kubernetes-style condition."""

    model_config = ConfigDict(extra="ignore")

    type: str
    """Ready, Progressing, Degraded, MetricsAvailable, BudgetExceeded or Routed."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str = ""
    """One CamelCase word saying why."""
    message: str = ""
    """What happened, for people."""
    last_transition_time: str | None = None
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The .metadata.generation this condition was computed from."""


class PoolStatus(Model):
    """What one pool is doing and what it costs."""

    model_config = ConfigDict(extra="ignore")

    name: str
    """Pool name."""
    gpu_type: str | None = None
    """GPU type."""
    deployment: str | None = None
    """The pool's Deployment."""
    desired_replicas: int = 0
    """Replicas the operator asks for."""
    ready_replicas: int = 0
    """Replicas ready to serve."""
    gpus: int = 0
    """GPUs held by the pool's scheduled pods (what is paid for)."""
    price_per_gpu_hour: float | None = None
    """Effective price per GPU-hour (spec, on-prem formula or sheet)."""
    tokens_per_second: float | None = None
    """Delivered tokens/s counted by metrics.tokenAccounting."""
    prompt_tokens_per_second: float | None = None
    """Delivered prompt (input) tokens/s."""
    generation_tokens_per_second: float | None = None
    """Delivered generated (output) tokens/s."""
    dollars_per_hour: float | None = None
    """GPUs held x price per GPU-hour."""
    cost_per_million_tokens: float | None = None
    """Dollars per million delivered tokens; absent when no tokens flow."""
    tokens_per_second_per_gpu: float | None = None
    """Delivered tokens/s per GPU held."""
    tokens_per_second_per_megawatt: float | None = None
    """Delivered tokens/s per megawatt of all-in power."""
    power_kilowatts: float | None = None
    """All-in power of the GPUs held, kW."""
    utilization: float | None = None
    """Delivered tokens/s over the pool's estimated capacity."""
    capacity_tokens_per_second: float | None = None
    """Estimated capacity of the ready replicas, tokens/s."""
    ttft_p95_seconds: float | None = None
    """p95 time to first token over metrics.window."""
    itl_p95_seconds: float | None = None
    """p95 inter-token latency over metrics.window."""
    requests_waiting: float | None = None
    """Requests queued in the pool's engines."""
    route_weight: int | None = None
    """HTTPRoute mode: the pool's backend weight in the HTTPRoute (ready replicas x capacity per replica, out of
    1000 over all pools); 0 when no replica is ready."""


class PoolChange(Model):
    model_config = ConfigDict(extra="ignore")

    pool: str
    """Pool name."""
    from_replicas: int = Field(alias="from")
    """Replicas before."""
    to_replicas: int = Field(alias="to")
    """Replicas after."""
    reason: str = ""
    """Why."""


class Decision(Model):
    """The autoscaler's last decision."""

    model_config = ConfigDict(extra="ignore")

    time: str
    """When it was made (RFC 3339)."""
    mode: str
    """Scaling mode it was made in."""
    applied: bool
    """Whether replicas were changed (Auto) or only recommended."""
    changes: list[PoolChange] = Field(default_factory=list)
    """Old -> new replicas per pool."""
    reason: str = ""
    """Summary of why."""
    demand_tokens_per_second: float | None = None
    """Demand the plan was made for (forecast, before headroom)."""
    expected_dollars_per_hour: float | None = None
    """$/hour of the planned fleet."""
    expected_cost_per_million_tokens: float | None = None
    """$/Mtok of the planned fleet at the forecast demand."""


class RoutingStatus(Model):
    """The routing objects the operator keeps, and the traffic share each pool gets."""

    model_config = ConfigDict(extra="ignore")

    mode: str
    """Routing mode in force (spec.routing.mode)."""
    objects: list[str] = Field(default_factory=list)
    """The routing objects applied, as Kind/name."""
    weights: str | None = None
    """How traffic is split, for kubectl get -o wide: pool=weight,... (HTTPRoute mode, out of 1000), even (Service
    mode: per pod), endpoint-picker (InferencePool mode), none (the routing objects could not be applied)."""


class TokenFactoryStatus(Model):
    """Observed state, written by the operator."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    """The .metadata.generation last reconciled."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Degraded, MetricsAvailable, BudgetExceeded, Routed."""
    replicas: str | None = None
    """ready/desired replicas over all pools, for kubectl get."""
    ready_replicas: int = 0
    """Ready replicas over all pools."""
    desired_replicas: int = 0
    """Desired replicas over all pools."""
    gpus: int = 0
    """GPUs held over all pools."""
    tokens_per_second: float | None = None
    """Delivered tokens/s over all pools (metrics.tokenAccounting)."""
    dollars_per_hour: float | None = None
    """$/hour over all pools."""
    cost_per_million_tokens: float | None = None
    """Factory $/Mtok: total $/hour over total delivered tokens."""
    tokens_per_second_per_gpu: float | None = None
    """Delivered tokens/s per GPU held, whole factory."""
    tokens_per_second_per_megawatt: float | None = None
    """Delivered tokens/s per megawatt, whole factory."""
    power_kilowatts: float | None = None
    """All-in power of the GPUs held, kW."""
    ttft_p95_seconds: float | None = None
    """Worst pool p95 time to first token."""
    itl_p95_seconds: float | None = None
    """Worst pool p95 inter-token latency."""
    last_metrics_time: str | None = None
    """When the figures were last read from Prometheus (RFC 3339)."""
    pools: list[PoolStatus] = Field(default_factory=list)
    """Per-pool figures."""
    last_decision: Decision | None = None
    """The autoscaler's last decision."""
    routing: RoutingStatus | None = None
    """How requests are routed now."""


# Rules on the whole object (the CRD's root): the name becomes the Service name and, with each pool's
# name, a Deployment name; both must be RFC 1035 labels of at most 63 characters.
NAME_RULE_MESSAGE = (f"metadata.name must be an RFC 1035 label (lower case letters, digits and '-', starting with a "
                     f"letter) of at most {NAME_MAX} characters: it names the factory's Service")
OBJECT_RULES = [
    cel(f"self.metadata.name.matches(r'{DNS_1035}') && size(self.metadata.name) <= {NAME_MAX}",
        NAME_RULE_MESSAGE, ".metadata.name", "FieldValueInvalid"),
    cel(f"self.spec.pools.all(p, size(self.metadata.name) + 1 + size(p.name) <= {NAME_MAX})",
        f"metadata.name + '-' + each pools[].name names a Deployment and must fit {NAME_MAX} characters",
        ".metadata.name", "FieldValueInvalid"),
]


def check_name(name: Any, spec: Any = None) -> list[str]:
    """What OBJECT_RULES check, for offline validation: problems with metadata.name, one line each."""
    if not isinstance(name, str) or not re.fullmatch(DNS_1035, name) or len(name) > NAME_MAX:
        return [f"metadata.name: {NAME_RULE_MESSAGE}"]
    pools = (spec or {}).get("pools") if isinstance(spec, dict) else None
    for i, pool in enumerate(pools if isinstance(pools, list) else []):
        pool_name = pool.get("name") if isinstance(pool, dict) else None
        if isinstance(pool_name, str) and len(name) + 1 + len(pool_name) > NAME_MAX:
            return [f"metadata.name: {name!r} + '-' + spec.pools[{i}].name {pool_name!r} names a Deployment of "
                    f"{len(name) + 1 + len(pool_name)} characters; at most {NAME_MAX} fit"]
    return []


class TokenFactory(BaseModel):
    """A TokenFactory object as stored in the cluster (for parsing only; the CRD is built from the spec)."""

    model_config = ConfigDict(extra="ignore")

    apiVersion: Literal["tokenfactory.dev/v1alpha1"]
    kind: Literal["TokenFactory"]
    metadata: dict[str, Any]
    spec: TokenFactorySpec
    status: TokenFactoryStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def namespace(self) -> str:
        return self.metadata.get("namespace") or "default"


# --------------------------------------------------------------------------------- resolved pools


class PoolResolutionError(ValueError):
    """A pool passes the schema but cannot be served (e.g. an unknown gpuType without a price)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class ResolvedPool:
    """A pool with every figure settled (spec value, on-prem formula, or GPU sheet), and where each came from."""

    name: str
    gpu_type: str
    gpus_per_replica: int
    min_replicas: int
    max_replicas: int
    price_per_gpu_hour: float
    tokens_per_second_per_gpu: float
    kilowatts_per_gpu: float
    startup_seconds: float
    sources: dict[str, str]
    latency_points: tuple[tuple[float, float, float], ...] = ()
    """The sheet's calibrated (load fraction, ITL p95, TTFT p95) points of one replica, when the sheet has them for
    this gpuType and GPUs per replica (the SLO planner's prior); empty otherwise."""

    @property
    def price_per_replica_hour(self) -> float:
        return self.price_per_gpu_hour * self.gpus_per_replica

    @property
    def tokens_per_second_per_replica(self) -> float:
        return self.tokens_per_second_per_gpu * self.gpus_per_replica

    @property
    def kilowatts_per_replica(self) -> float:
        return self.kilowatts_per_gpu * self.gpus_per_replica


def resolve_pool(pool: PoolSpec, index: int = 0) -> ResolvedPool:
    where = f"spec.pools[{index}]"
    sheet = gpusheet.lookup(pool.gpu_type)
    known = ", ".join(gpusheet.known_types())
    sources: dict[str, str] = {}

    missing: list[str] = []

    def pick(field: str, spec_value: float | None, sheet_value: float | None) -> float:
        if spec_value is not None:
            sources[field] = "spec"
            return float(spec_value)
        if sheet_value is not None:
            sources[field] = "sheet"
            return float(sheet_value)
        missing.append(field)
        return 0.0

    onprem = pool.capex_per_gpu is not None
    if not onprem:
        price = pick("pricePerGpuHour", pool.price_per_gpu_hour, sheet.price_per_gpu_hour if sheet else None)
    kw = pick("kilowattsPerGpu", pool.kilowatts_per_gpu, sheet.kilowatts_per_gpu if sheet else None)
    tps = pick("tokensPerSecondPerGpu", pool.tokens_per_second_per_gpu, sheet.tokens_per_second_per_gpu if sheet else None)
    if missing:
        raise PoolResolutionError(
            f"{where}.{missing[0]}",
            f"gpuType {pool.gpu_type!r} is not in the built-in GPU sheet (known: {known}), so the pool must set "
            + ", ".join(missing),
        )
    if onprem:
        assert pool.capex_per_gpu is not None and pool.amortization_years is not None and pool.dollars_per_kwh is not None
        price = cost.on_prem_price_per_gpu_hour(pool.capex_per_gpu, pool.amortization_years, kw, pool.pue, pool.dollars_per_kwh)
        sources["pricePerGpuHour"] = "onPrem"
    if pool.startup_seconds is not None:
        startup, sources["startupSeconds"] = pool.startup_seconds, "spec"
    else:
        startup, sources["startupSeconds"] = (sheet.startup_seconds if sheet else 300.0), ("sheet" if sheet else "default")
    return ResolvedPool(
        name=pool.name,
        gpu_type=pool.gpu_type.lower(),
        gpus_per_replica=pool.gpus_per_replica,
        min_replicas=pool.min_replicas,
        max_replicas=pool.max_replicas,
        price_per_gpu_hour=price,
        tokens_per_second_per_gpu=tps,
        kilowatts_per_gpu=kw,
        startup_seconds=float(startup),
        sources=sources,
        latency_points=(sheet.latency_points if sheet and sheet.latency_gpus in (None, pool.gpus_per_replica)
                        else ()),
    )


# ------------------------------------------------------------------------------------ validation


class SpecError(ValueError):
    """Bad input, with one line per problem: the field path and what is allowed."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}"
    return out


def format_validation_error(err: ValidationError, prefix: str = "spec") -> list[str]:
    problems = []
    for e in err.errors():
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not in the TokenFactory schema)"
        elif e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
            msg = f"must be one of {e['ctx']['expected']}"
        problems.append(f"{_loc(prefix, e['loc'])}: {msg}")
    return problems


def parse_spec(data: Any, prefix: str = "spec", resolve: bool = True) -> TokenFactorySpec:
    """Parse and validate a spec dict; raise SpecError listing every problem with its field path."""
    if not isinstance(data, dict):
        raise SpecError([f"{prefix}: must be an object, got {type(data).__name__}"])
    try:
        spec = TokenFactorySpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, prefix)) from None
    if resolve:
        problems = []
        for i, pool in enumerate(spec.pools):
            try:
                resolve_pool(pool, i)
            except PoolResolutionError as err:
                problems.append(str(err))
        if problems:
            raise SpecError(problems)
    return spec


def parse_object(obj: Any) -> TokenFactory:
    """Validate a whole TokenFactory manifest (apiVersion, kind, metadata.name, spec)."""
    if not isinstance(obj, dict):
        raise SpecError([f"document: must be a mapping, got {type(obj).__name__}"])
    problems = []
    if obj.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: must be {API_VERSION}, got {obj.get('apiVersion')!r}")
    if obj.get("kind") != KIND:
        problems.append(f"kind: must be {KIND}, got {obj.get('kind')!r}")
    problems += check_name((obj.get("metadata") or {}).get("name"), obj.get("spec"))
    if "spec" not in obj:
        problems.append("spec: required")
    spec_problems: list[str] = []
    if "spec" in obj:
        try:
            parse_spec(obj["spec"])
        except SpecError as err:
            spec_problems = err.problems
    if problems or spec_problems:
        raise SpecError(problems + spec_problems)
    return TokenFactory.model_validate(obj)
