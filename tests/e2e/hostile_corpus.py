"""A corpus of hostile TokenFactory specs and what must happen to each (issue 14, item 3).

Each case is a whole manifest, either built from ``BASE`` with one edit (``doc``) or written as raw YAML
text (``raw``: NaN/Inf, huge numbers, YAML 1.1 booleans, duplicate keys ... exactly as a user would
type them). The expected outcome is one of:

* ``Rejected(field, text)``: the apiserver refuses the object at admission, naming ``field`` (and
  saying ``text``); ``tokenfactory validate`` (``api.parse_object``) refuses it offline too, at that
  field or one of its parents. NaN and Inf are not JSON: the apiserver refuses them while decoding,
  before any field is known (``json: unsupported value: NaN``, 400, as kubectl does client-side), so
  those cases name the field only offline.
* ``Degraded(reason)``: admission accepts it (only the operator can know), and the operator reports
  Degraded=True with ``reason``, without a traceback.
* ``Accepted()``: a control: a spec that looks odd but is valid must be accepted (so that the rules
  are not simply refusing everything).

tests/e2e/test_hostile.py sends every case to the real apiserver; tests/unit/test_hostile_offline.py
checks the offline validator agrees.
"""

from __future__ import annotations

import copy
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MB = 1024 * 1024


@dataclass(frozen=True)
class Rejected:
    field: str
    text: str = ""
    offline: str | None = None  # the field the offline validator names, when the apiserver cannot name one


@dataclass(frozen=True)
class Degraded:
    reason: str


@dataclass(frozen=True)
class Accepted:
    pass


Outcome = Rejected | Degraded | Accepted

BASE: dict[str, Any] = {
    "apiVersion": "tokenfactory.dev/v1alpha1",
    "kind": "TokenFactory",
    "metadata": {"name": "hostile"},
    "spec": {
        "model": {"name": "deepseek-ai/DeepSeek-R1"},
        "pools": [{"name": "h200", "gpuType": "h200", "gpusPerReplica": 8, "minReplicas": 1, "maxReplicas": 2,
                   "nodeSelector": {"tokenfactory.dev/node-pool": "h200"},
                   "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}],
        "scaling": {"mode": "Off", "interval": "5s"},
        "metrics": {"window": "2m"},
    },
}

# The raw cases start from this text (the same object as BASE), with one line replaced.
BASE_YAML = textwrap.dedent("""\
    apiVersion: tokenfactory.dev/v1alpha1
    kind: TokenFactory
    metadata:
      name: hostile
    spec:
      model:
        name: deepseek-ai/DeepSeek-R1
      pools:
        - name: h200
          gpuType: h200
          gpusPerReplica: 8
          minReplicas: 1
          maxReplicas: 2
          nodeSelector: {tokenfactory.dev/node-pool: h200}
      scaling:
        mode: "Off"
        interval: 5s
      metrics:
        window: 2m
    """)


@dataclass(frozen=True)
class Case:
    id: str
    outcome: Outcome
    edit: Callable[[dict[str, Any]], None] | None = None
    raw: str | None = None
    notes: str = field(default="", compare=False)

    def manifest(self, name: str | None = None) -> dict[str, Any] | None:
        """The manifest as a dict (None for raw cases), with metadata.name replaced when ``name`` is given
        and the case does not test the name itself."""
        if self.raw is not None:
            return None
        doc = copy.deepcopy(BASE)
        assert self.edit is not None
        self.edit(doc)
        if name and doc["metadata"]["name"] == BASE["metadata"]["name"]:
            doc["metadata"]["name"] = name
        return doc

    def text(self, name: str | None = None) -> str:
        """The manifest as YAML text (raw cases as written)."""
        import yaml

        if self.raw is not None:
            return self.raw.replace("name: hostile", f"name: {name}", 1) if name else self.raw
        return yaml.safe_dump(self.manifest(name), sort_keys=False, allow_unicode=True, width=10**9)


def spec(**sections: Any) -> Callable[[dict[str, Any]], None]:
    """Merge ``sections`` into spec.<section> (dicts are updated, anything else replaced)."""

    def edit(doc: dict[str, Any]) -> None:
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(doc["spec"].get(key), dict):
                doc["spec"][key].update(value)
            else:
                doc["spec"][key] = value

    return edit


def pool(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["spec"]["pools"][0].update(fields)

    return edit


def engine(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["spec"].setdefault("engine", {}).update(fields)

    return edit


def name(value: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["metadata"]["name"] = value

    return edit


def raw(old: str, new: str) -> str:
    assert old in BASE_YAML, old
    return BASE_YAML.replace(old, new, 1)


def pools(n: int) -> list[dict[str, Any]]:
    return [{"name": f"p{i}", "gpuType": "h200"} for i in range(n)]


def tolerate(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return pool(tolerations=[fields])


def env(*items: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return engine(env=list(items))


SECRET = {"secretKeyRef": {"name": "hf-token", "key": "token"}}
P0 = "spec.pools[0]"

CASES: list[Case] = [
    # --- metadata.name: it names the Service, and with each pool a Deployment -------------------------
    Case("name-64-chars", Rejected("metadata.name", "RFC 1035"), name("a" * 64)),
    Case("name-100-chars", Rejected("metadata.name"), name("a" * 100)),
    Case("name-253-chars", Rejected("metadata.name"), name("a" * 253)),
    Case("name-with-dots", Rejected("metadata.name", "RFC 1035"), name("my.factory")),
    Case("name-leading-digit", Rejected("metadata.name", "RFC 1035"), name("1factory")),
    Case("name-uppercase", Rejected("metadata.name"), name("Factory")),
    Case("name-trailing-dash", Rejected("metadata.name"), name("factory-")),
    Case("name-unicode", Rejected("metadata.name"), name("fábrica")),
    Case("name-emoji", Rejected("metadata.name"), name("tf-\U0001f525")),
    Case("name-plus-pool-over-63", Rejected("metadata.name", "names a Deployment"), name("a" * 59)),
    Case("name-plus-pool-exactly-63", Accepted(), name("a" * 58)),
    # --- pools ---------------------------------------------------------------------------------------
    Case("pool-name-uppercase", Rejected(f"{P0}.name"), pool(name="H200")),
    Case("pool-name-25-chars", Rejected(f"{P0}.name"), pool(name="p" * 25)),
    Case("pool-name-unicode", Rejected(f"{P0}.name"), pool(name="h200é")),
    Case("pool-name-dot", Rejected(f"{P0}.name"), pool(name="h.200")),
    Case("nine-pools", Rejected("spec.pools", "8"), spec(pools=pools(9))),
    Case("gpu-type-empty", Rejected(f"{P0}.gpuType"), pool(gpuType="")),
    Case("gpus-zero", Rejected(f"{P0}.gpusPerReplica"), pool(gpusPerReplica=0)),
    Case("min-replicas-negative", Rejected(f"{P0}.minReplicas"), pool(minReplicas=-1)),
    Case("max-replicas-1e6", Rejected(f"{P0}.maxReplicas"), pool(maxReplicas=1_000_000)),
    Case("price-zero", Rejected(f"{P0}.pricePerGpuHour"), pool(pricePerGpuHour=0)),
    Case("price-1e308", Rejected(f"{P0}.pricePerGpuHour"), pool(pricePerGpuHour=1e308)),
    Case("node-selector-bad-key", Rejected(f"{P0}.nodeSelector", "label keys"), pool(nodeSelector={"bad key!": "x"})),
    Case("node-selector-bad-value", Rejected(f"{P0}.nodeSelector"), pool(nodeSelector={"pool": "a b"})),
    Case("node-selector-17-labels", Rejected(f"{P0}.nodeSelector"),
         pool(nodeSelector={f"k{i}": "v" for i in range(17)})),
    Case("toleration-exists-with-value", Rejected(f"{P0}.tolerations[0].value", "empty when operator is Exists"),
         tolerate(key="k", operator="Exists", value="v")),
    Case("toleration-empty-key-equal", Rejected(f"{P0}.tolerations[0].key", "operator Exists"),
         tolerate(operator="Equal", value="v")),
    Case("toleration-seconds-without-noexecute", Rejected(f"{P0}.tolerations[0].tolerationSeconds", "NoExecute"),
         tolerate(key="k", operator="Exists", effect="NoSchedule", tolerationSeconds=10)),
    Case("toleration-seconds-huge", Rejected(f"{P0}.tolerations[0].tolerationSeconds"),
         tolerate(key="k", operator="Exists", effect="NoExecute", tolerationSeconds=10**15)),
    Case("toleration-effect-unknown", Rejected(f"{P0}.tolerations[0].effect"),
         tolerate(key="k", operator="Exists", effect="Sometimes")),
    Case("toleration-key-1mb", Rejected(f"{P0}.tolerations[0].key"), tolerate(key="k" * MB, operator="Exists")),
    Case("seventeen-tolerations", Rejected(f"{P0}.tolerations"),
         pool(tolerations=[{"key": f"k{i}", "operator": "Exists"} for i in range(17)])),
    Case("capex-without-amortization", Rejected(P0, "together"), pool(capexPerGpu=30000)),
    Case("unknown-gpu-without-price", Degraded("InvalidSpec"), pool(gpuType="mi355x")),
    Case("unknown-gpu-price-only", Degraded("InvalidSpec"), pool(gpuType="tpu-v9", pricePerGpuHour=2.0)),
    Case("node-selector-matches-no-node", Degraded("Unschedulable"),
         pool(nodeSelector={"tokenfactory.dev/node-pool": "does-not-exist"})),
    # --- scaling -------------------------------------------------------------------------------------
    Case("interval-0s", Rejected("spec.scaling.interval", "at least 1s"), spec(scaling={"interval": "0s"})),
    Case("interval-500ms", Rejected("spec.scaling.interval", "at least 1s"), spec(scaling={"interval": "500ms"})),
    Case("interval-0.5s", Rejected("spec.scaling.interval", "at least 1s"), spec(scaling={"interval": "0.5s"})),
    Case("interval-2h", Rejected("spec.scaling.interval", "at most 1h"), spec(scaling={"interval": "2h"})),
    Case("interval-no-unit", Rejected("spec.scaling.interval"), spec(scaling={"interval": "30"})),
    Case("interval-negative", Rejected("spec.scaling.interval"), spec(scaling={"interval": "-5s"})),
    Case("interval-overflow", Rejected("spec.scaling.interval"), spec(scaling={"interval": "99999999999999h"})),
    Case("interval-1mb", Rejected("spec.scaling.interval"), spec(scaling={"interval": "1" * MB + "s"})),
    Case("interval-exactly-1s", Accepted(), spec(scaling={"interval": "1s"})),
    Case("stabilization-48h", Rejected("spec.scaling.scaleDownStabilization", "at most 24h"),
         spec(scaling={"scaleDownStabilization": "48h"})),
    Case("headroom-1e9", Rejected("spec.scaling.headroom"), spec(scaling={"headroom": 1e9})),
    Case("mode-lowercase", Rejected("spec.scaling.mode"), spec(scaling={"mode": "auto"})),
    # --- metrics -------------------------------------------------------------------------------------
    Case("window-0s", Rejected("spec.metrics.window", "at least 5s"), spec(metrics={"window": "0s"})),
    Case("window-1s", Rejected("spec.metrics.window", "at least 5s"), spec(metrics={"window": "1s"})),
    Case("window-48h", Rejected("spec.metrics.window", "at most 24h"), spec(metrics={"window": "48h"})),
    Case("url-with-space", Rejected("spec.metrics.prometheusUrl"),
         spec(metrics={"prometheusUrl": "http://prometheus monitoring:9090"})),
    Case("url-broken-ipv6", Rejected("spec.metrics.prometheusUrl"), spec(metrics={"prometheusUrl": "http://[::1:9090"})),
    Case("url-ftp", Rejected("spec.metrics.prometheusUrl"), spec(metrics={"prometheusUrl": "ftp://prometheus:21"})),
    Case("url-file", Rejected("spec.metrics.prometheusUrl"), spec(metrics={"prometheusUrl": "file:///etc/passwd"})),
    Case("url-no-host", Rejected("spec.metrics.prometheusUrl"), spec(metrics={"prometheusUrl": "http://:9090"})),
    Case("url-port-99999", Rejected("spec.metrics.prometheusUrl", "65535"),
         spec(metrics={"prometheusUrl": "http://prometheus:99999"})),
    Case("url-port-text", Rejected("spec.metrics.prometheusUrl"), spec(metrics={"prometheusUrl": "http://prometheus:port"})),
    Case("url-1mb", Rejected("spec.metrics.prometheusUrl"), spec(metrics={"prometheusUrl": "http://p/" + "a" * MB})),
    Case("url-ipv6-ok", Accepted(), spec(metrics={"prometheusUrl": "http://[::1]:9090/prometheus"})),
    Case("token-accounting-input", Rejected("spec.metrics.tokenAccounting"), spec(metrics={"tokenAccounting": "input"})),
    # --- objectives ----------------------------------------------------------------------------------
    Case("dollars-per-hour-1e300", Rejected("spec.objectives.maxDollarsPerHour"),
         spec(objectives={"maxDollarsPerHour": 1e300})),
    Case("ttft-negative", Rejected("spec.objectives.ttftP95Seconds"), spec(objectives={"ttftP95Seconds": -1})),
    Case("cost-cap-1e12", Rejected("spec.objectives.maxCostPerMillionTokens"),
         spec(objectives={"maxCostPerMillionTokens": 1e12})),
    # --- engine --------------------------------------------------------------------------------------
    Case("image-with-space", Rejected("spec.engine.image"), engine(image="busybox; rm -rf /")),
    Case("image-empty", Rejected("spec.engine.image"), engine(image="")),
    Case("image-1mb", Rejected("spec.engine.image"), engine(image="r/" + "a" * MB)),
    Case("env-name-leading-digit", Rejected("spec.engine.env[0].name"), env({"name": "1BAD", "value": "x"})),
    Case("env-value-1mb", Rejected("spec.engine.env[0].value"), env({"name": "BIG", "value": "x" * MB})),
    Case("env-value-and-value-from", Rejected("spec.engine.env[0]", "not both"),
         env({"name": "A", "value": "x", "valueFrom": SECRET})),
    Case("env-value-from-empty", Rejected("spec.engine.env[0].valueFrom", "exactly one"), env({"name": "A", "valueFrom": {}})),
    Case("env-value-from-two-sources", Rejected("spec.engine.env[0].valueFrom", "exactly one"),
         env({"name": "A", "valueFrom": {**SECRET, "fieldRef": {"fieldPath": "metadata.name"}}})),
    Case("env-secret-bad-name", Rejected("spec.engine.env[0].valueFrom.secretKeyRef.name"),
         env({"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}})),
    Case("env-value-from-unknown-source", Rejected("spec.engine.env[0].valueFrom", "unknown field"),
         env({"name": "A", "valueFrom": {"podRef": {"name": "x"}}})),
    Case("sixty-five-env-vars", Rejected("spec.engine.env"), env(*[{"name": f"V{i}", "value": "x"} for i in range(65)])),
    Case("extra-args-65", Rejected("spec.engine.extraArgs"), engine(extraArgs=["--x"] * 65)),
    Case("extra-arg-1mb", Rejected("spec.engine.extraArgs[0]"), engine(extraArgs=["--x=" + "a" * MB])),
    Case("cpu-garbage", Rejected("spec.engine.resources.requests.cpu"), engine(resources={"requests": {"cpu": "garbage"}})),
    Case("memory-negative", Rejected("spec.engine.resources.requests.memory"),
         engine(resources={"requests": {"memory": "-1Gi"}})),
    Case("cpu-negative-int", Rejected("spec.engine.resources.limits.cpu"), engine(resources={"limits": {"cpu": -1}})),
    Case("gpu-in-resources", Rejected("spec.engine.resources", "nvidia.com/gpu"),
         engine(resources={"limits": {"nvidia.com/gpu": 8}})),
    Case("resource-name-with-space", Rejected("spec.engine.resources.requests", "resource names"),
         engine(resources={"requests": {"my resource": "1"}})),
    Case("port-70000", Rejected("spec.engine.port"), engine(port=70000)),
    Case("shm-lots", Rejected("spec.engine.shmSize"), engine(shmSize="lots")),
    Case("run-as-root", Rejected("spec.engine.securityContext.runAsUser"), engine(securityContext={"runAsUser": 0})),
    Case("run-as-negative", Rejected("spec.engine.securityContext.runAsUser"), engine(securityContext={"runAsUser": -1})),
    Case("privileged", Rejected("spec.engine.securityContext", "unknown field"),
         engine(securityContext={"privileged": True})),
    Case("host-network", Rejected("spec.engine", "unknown field"), engine(hostNetwork=True)),
    Case("model-name-1mb", Rejected("spec.model.name"), spec(model={"name": "m" * MB})),
    Case("quantization-unknown", Rejected("spec.model.quantization"), spec(model={"quantization": "int3"})),
    Case("model-name-unicode-ok", Accepted(), spec(model={"name": "组织/模型-R1", "servedName": "modèle"})),
    Case("security-context-uid-ok", Accepted(), engine(securityContext={"runAsUser": 2000, "runAsGroup": 0, "fsGroup": 2000})),
    # --- YAML oddities, sent as the user typed them --------------------------------------------------
    Case("yaml-price-nan", Rejected("", "unsupported value: NaN", offline=f"{P0}.pricePerGpuHour"),
         raw=raw("      gpusPerReplica: 8\n", "      gpusPerReplica: 8\n      pricePerGpuHour: .nan\n")),
    Case("yaml-price-inf", Rejected("", "unsupported value: +Inf", offline=f"{P0}.pricePerGpuHour"),
         raw=raw("      gpusPerReplica: 8\n", "      gpusPerReplica: 8\n      pricePerGpuHour: .inf\n")),
    Case("yaml-headroom-minus-inf", Rejected("", "unsupported value: -Inf", offline="spec.scaling.headroom"),
         raw=raw("    interval: 5s\n", "    interval: 5s\n    headroom: -.inf\n")),
    Case("yaml-replicas-1e30", Rejected(f"{P0}.maxReplicas"), raw=raw("maxReplicas: 2", "maxReplicas: 1e30")),
    Case("yaml-replicas-huge-int", Rejected(f"{P0}.maxReplicas"),
         raw=raw("maxReplicas: 2", "maxReplicas: 100000000000000000000000000000000")),
    Case("yaml-gpus-float", Rejected(f"{P0}.gpusPerReplica"), raw=raw("gpusPerReplica: 8", "gpusPerReplica: 8.5")),
    Case("yaml-gpus-as-string", Rejected(f"{P0}.gpusPerReplica"), raw=raw("gpusPerReplica: 8", 'gpusPerReplica: "8"')),
    Case("yaml-norway-gpu-type", Rejected(f"{P0}.gpuType"), raw=raw("gpuType: h200", "gpuType: no")),
    Case("yaml-model-name-yes", Rejected("spec.model.name"), raw=raw("name: deepseek-ai/DeepSeek-R1", "name: yes")),
    Case("yaml-spec-is-a-list", Rejected("spec"), raw=BASE_YAML.split("spec:")[0] + "spec: [1, 2]\n"),
    Case("yaml-pools-null", Rejected("spec.pools"), raw=BASE_YAML.split("  pools:")[0] + "  pools: null\n"),
]
