"""Simulated GPU node pools: parse ``nodepools.yaml`` and render the Node objects (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

GPU_RESOURCE = "nvidia.com/gpu"
POOL_LABEL = "tokenfactory.dev/node-pool"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
TAINT_EFFECTS = {"NoSchedule", "PreferNoSchedule", "NoExecute"}


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str
    value: str = ""

    def manifest(self) -> dict[str, str]:
        out = {"key": self.key, "effect": self.effect}
        if self.value:
            out["value"] = self.value
        return out


@dataclass(frozen=True)
class NodePool:
    name: str
    count: int
    gpus: int = 0
    capacity: dict[str, str] = field(default_factory=dict)  # cpu, memory, pods, ... (no GPUs)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    arch: str = "amd64"

    def node_names(self) -> list[str]:
        return [f"{self.name}-{i:02d}" for i in range(self.count)]

    @property
    def total_gpus(self) -> int:
        return self.count * self.gpus


def default_path() -> Path:
    return Path(str(resources.files("tokenfactory.localcluster").joinpath("nodepools.yaml")))


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def parse_nodepools(data: dict) -> list[NodePool]:
    """Build pools from the parsed YAML document; raises ValueError with the culprit's path."""
    if not isinstance(data, dict) or not isinstance(data.get("pools"), list) or not data["pools"]:
        raise ValueError("nodepools: expected a mapping with a non-empty 'pools' list")
    defaults = data.get("defaults") or {}
    d_capacity = _str_map(defaults.get("capacity"), "defaults.capacity")
    d_labels = _str_map(defaults.get("labels"), "defaults.labels")
    d_annotations = _str_map(defaults.get("annotations"), "defaults.annotations")
    d_arch = str(defaults.get("arch", "amd64"))
    pools: list[NodePool] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["pools"]):
        where = f"pools[{i}]"
        if not isinstance(raw, dict) or not raw.get("name"):
            raise ValueError(f"{where}: every pool needs a name")
        name = str(raw["name"])
        where = f"pools[{i}] ({name})"
        if name in seen:
            raise ValueError(f"{where}: duplicate pool name")
        seen.add(name)
        count, gpus = raw.get("count"), raw.get("gpus", 0)
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"{where}: count must be a positive integer")
        if not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"{where}: gpus must be a non-negative integer")
        capacity = {**d_capacity, **_str_map(raw.get("capacity"), f"{where}.capacity")}
        if GPU_RESOURCE in capacity:
            raise ValueError(f"{where}: give GPUs with 'gpus', not in capacity")
        for need in ("cpu", "memory", "pods"):
            if need not in capacity:
                raise ValueError(f"{where}: capacity lacks {need!r}")
        labels = {**d_labels, **_str_map(raw.get("labels"), f"{where}.labels")}
        labels.setdefault(POOL_LABEL, name)
        annotations = {**d_annotations, **_str_map(raw.get("annotations"), f"{where}.annotations")}
        taints = []
        for j, t in enumerate(raw.get("taints") or []):
            if not isinstance(t, dict) or not t.get("key") or t.get("effect") not in TAINT_EFFECTS:
                raise ValueError(
                    f"{where}.taints[{j}]: needs key and effect in {sorted(TAINT_EFFECTS)}"
                )
            taints.append(Taint(str(t["key"]), str(t["effect"]), str(t.get("value", ""))))
        pools.append(
            NodePool(
                name=name, count=count, gpus=gpus, capacity=capacity, labels=labels,
                annotations=annotations, taints=tuple(taints), arch=str(raw.get("arch", d_arch)),
            )
        )
    return pools


def load_nodepools(path: str | Path | None = None) -> list[NodePool]:
    """Pools from ``path`` (default: the packaged ``nodepools.yaml``)."""
    p = Path(path) if path else default_path()
    return parse_nodepools(yaml.safe_load(p.read_text()))


def node_manifests(pools: list[NodePool]) -> list[dict]:
    """One ``v1/Node`` per simulated machine, status included (kwok keeps it alive)."""
    nodes = []
    n = 0
    for p_index, pool in enumerate(pools):
        for i, name in enumerate(pool.node_names()):
            capacity = dict(pool.capacity)
            if pool.gpus:
                capacity[GPU_RESOURCE] = str(pool.gpus)
            labels = {
                **pool.labels,
                "kubernetes.io/hostname": name,
                "kubernetes.io/arch": pool.arch,
                "beta.kubernetes.io/arch": pool.arch,
                "beta.kubernetes.io/os": pool.labels.get("kubernetes.io/os", "linux"),
            }
            ip = f"10.128.{p_index}.{10 + i}"
            node: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": dict(sorted(labels.items())),
                    "annotations": {
                        **pool.annotations,
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                },
                "spec": {"podCIDR": f"10.244.{n}.0/24", "podCIDRs": [f"10.244.{n}.0/24"]},
                "status": {
                    "capacity": capacity,
                    "allocatable": dict(capacity),
                    "addresses": [
                        {"type": "InternalIP", "address": ip},
                        {"type": "Hostname", "address": name},
                    ],
                    "nodeInfo": {
                        "architecture": pool.arch,
                        "operatingSystem": "linux",
                        "kubeletVersion": "kwok",
                        "containerRuntimeVersion": "kwok",
                        "kernelVersion": "kwok",
                        "kubeProxyVersion": "kwok",
                        "osImage": "kwok simulated node",
                        "bootID": "",
                        "machineID": "",
                        "systemUUID": "",
                    },
                },
            }
            if pool.taints:
                node["spec"]["taints"] = [t.manifest() for t in pool.taints]
            nodes.append(node)
            n += 1
    if n > 256:
        raise ValueError(f"{n} nodes: the 10.244.N.0/24 pod CIDR scheme allows at most 256")
    return nodes


def node_names(pools: list[NodePool]) -> list[str]:
    return [name for pool in pools for name in pool.node_names()]
