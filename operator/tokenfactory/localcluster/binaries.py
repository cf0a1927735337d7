"""Where the control plane's binaries are cached, and building them with ``build-binaries.sh``."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

Progress = Callable[[str], None]

COMPONENT_BINARIES: dict[str, tuple[str, ...]] = {
    "kubernetes": ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    "etcd": ("etcd",),
    "kwok": ("kwok",),
    "helm": ("helm",),
    "prometheus": ("prometheus", "promtool"),
}
# The script's variable holding each component's pinned version.
_VERSION_VARS = {"kubernetes": "K8S_VERSION", "etcd": "ETCD_VERSION", "kwok": "KWOK_VERSION",
                 "helm": "HELM_VERSION", "prometheus": "PROMETHEUS_VERSION"}
# Prometheus is built from its Go module too: the Debian package's 2.42 lacks kubernetes_sd_configs,
# so the scrape config docs/metrics.md documents could not be loaded by it.
# CRD sets the script copies out of Go modules (component "crds"): cache sub-directory -> version variable.
CRD_SETS = {"gateway-api": "GATEWAY_API_VERSION", "gateway-api-inference-extension": "INFERENCE_EXTENSION_VERSION"}
CLUSTER_COMPONENTS = ("etcd", "kwok", "kubernetes", "prometheus")


class BuildError(RuntimeError):
    """Building the binaries failed (the message carries the end of the build output)."""


def cache_dir() -> Path:
    return Path(os.environ.get("TOKENFACTORY_CACHE") or Path.home() / ".cache" / "tokenfactory")


def bin_dir() -> Path:
    return cache_dir() / "bin"


def binary(name: str) -> Path:
    return bin_dir() / name


def build_script() -> Path:
    return Path(str(resources.files("tokenfactory.localcluster").joinpath("build-binaries.sh")))


def pinned_versions(script: Path | None = None) -> dict[str, str]:
    """Versions the build script pins (its ``NAME_VERSION="${NAME_VERSION:-x.y.z}"`` lines), with
    the same environment overrides the script honours."""
    text = (script or build_script()).read_text()
    out = {}
    for component, var in _VERSION_VARS.items():
        m = re.search(rf'^{var}="\$\{{{var}:-([^}}]+)\}}"', text, re.M)
        if m:
            out[component] = os.environ.get(var) or m.group(1)
    return out


def crd_dir(name: str) -> Path:
    """Where the script leaves the CRD YAML of one CRD set (see CRD_SETS)."""
    return cache_dir() / "crds" / name


def crd_versions(script: Path | None = None) -> dict[str, str]:
    """Pinned versions of the CRD sets, with the script's environment overrides."""
    text = (script or build_script()).read_text()
    out = {}
    for name, var in CRD_SETS.items():
        m = re.search(rf'^{var}="\$\{{{var}:-([^}}]+)\}}"', text, re.M)
        if m:
            out[name] = os.environ.get(var) or m.group(1)
    return out


def crds_missing() -> list[str]:
    """CRD sets absent from the cache or fetched for another version than pinned."""
    versions = crd_versions()
    out = []
    for name in CRD_SETS:
        stamp = crd_dir(name) / ".version"
        if not stamp.exists() or stamp.read_text().strip() != versions.get(name):
            out.append(name)
    return out


def crd_files() -> list[Path]:
    """The cached CRD files of every set, in a stable order."""
    return sorted(p for name in CRD_SETS for p in crd_dir(name).glob("*.yaml"))


def missing(components: Iterable[str] = CLUSTER_COMPONENTS) -> list[str]:
    """Components whose binaries are absent or were built for another version than pinned."""
    versions = pinned_versions()
    todo = []
    for c in components:
        for name in COMPONENT_BINARIES[c]:
            path = binary(name)
            stamp = bin_dir() / f".{name}.version"
            want = versions.get(c)
            have = stamp.read_text().strip() if stamp.exists() else None
            if not os.access(path, os.X_OK) or (want is not None and have != want):
                todo.append(c)
                break
    return todo


def ensure(components: Iterable[str] = CLUSTER_COMPONENTS, progress: Progress | None = print) -> Path:
    """Build whatever of ``components`` is missing (streaming the build's output to ``progress``)
    and return the binary directory. A no-op when all are cached."""
    components = list(components)
    todo = missing([c for c in components if c in COMPONENT_BINARIES])
    if "crds" in components and crds_missing():
        todo.append("crds")
    if not todo:
        return bin_dir()
    say = progress or (lambda _line: None)
    if todo == ["crds"]:
        say(f"fetching the Gateway API / Inference Extension CRDs into {cache_dir() / 'crds'}")
    else:
        say(f"building {', '.join(todo)} into {bin_dir()} (a cold Kubernetes build takes several minutes)")
    proc = subprocess.Popen(
        ["bash", str(build_script()), *todo],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = (tail + [line])[-40:]
        say(line)
    rc = proc.wait()
    still = missing([c for c in components if c in COMPONENT_BINARIES]) + (["crds"] if "crds" in todo and crds_missing() else [])
    if rc != 0 or still:
        raise BuildError(
            f"build-binaries.sh {' '.join(todo)} failed (exit {rc}); still missing: "
            f"{', '.join(still) or 'none'}\n--- last build output ---\n" + "\n".join(tail)
        )
    return bin_dir()
