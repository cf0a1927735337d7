"""Real processes for end-to-end tests: the operator (`tokenfactory run`) and the simulator (`tokenfactory sim`).

Both run as the same command a user types, as child processes with their own logs, pointed at the
local cluster's kubeconfig. Nothing here mocks an API.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "tokenfactory.dev_tokenfactories.yaml"
EXAMPLE = ROOT / "deploy" / "examples" / "deepseek-r1-h200-gb300.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` and the last value/error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as err:  # noqa: BLE001 - keep polling, report the last error
            last = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


class Proc:
    """A child process with a log file; stopped with SIGTERM (or killed) on exit."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name, self.argv = name, argv
        self.log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                      start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no clean-up runs."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15) -> int | None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.popen.returncode

    def wait_http(self, url: str, timeout: float = 30) -> None:
        def ok() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            return httpx.get(url, timeout=2).status_code == 200

        wait_for(ok, timeout, f"{self.name} at {url}")


def tokenfactory_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokenfactory.cli", *args]


class Operator(Proc):
    def __init__(self, kubeconfig: Path | str, log_dir: Path, namespaces: list[str], prometheus_url: str | None = None,
                 extra: list[str] | None = None, name: str = "operator"):
        self.metrics_port, self.health_port = free_port(), free_port()
        argv = tokenfactory_argv("run", "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1",
                                 "--health-port", str(self.health_port), "--prometheus-timeout", "2")
        for ns in namespaces:
            argv += ["--namespace", ns]
        if prometheus_url:
            argv += ["--prometheus-url", prometheus_url]
        argv += list(extra or [])
        super().__init__(name, argv, log_dir, env={"KUBECONFIG": str(kubeconfig)})
        self.wait_http(f"http://127.0.0.1:{self.health_port}/healthz", timeout=60)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def exposition(self) -> str:
        return httpx.get(self.metrics_url, timeout=5).text


class Simulator(Proc):
    def __init__(self, kubeconfig: Path | str, log_dir: Path, namespace: str, factory: str, trace: str,
                 extra: list[str] | None = None):
        self.port = free_port()
        argv = tokenfactory_argv("sim", "--host", "127.0.0.1", "--port", str(self.port), "--kubeconfig", str(kubeconfig),
                                 "--namespace", namespace, "--factory", factory, "--trace", trace, *(extra or []))
        super().__init__("sim", argv, log_dir, env={"KUBECONFIG": str(kubeconfig)})
        self.wait_http(f"http://127.0.0.1:{self.port}/healthz", timeout=30)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def truth(self) -> dict[str, Any]:
        return httpx.get(f"http://{self.address}/truth", timeout=5).json()


@contextlib.contextmanager
def running(proc_factory: Callable[[], Proc]) -> Iterator[Proc]:
    proc = proc_factory()
    try:
        yield proc
    finally:
        proc.stop()


def example_doc(**spec_edits: Any) -> dict[str, Any]:
    """The two-pool example with top-level spec sections updated (e.g. scaling={"mode": "Off"})."""
    import yaml

    doc = yaml.safe_load(EXAMPLE.read_text())
    for section, values in spec_edits.items():
        if isinstance(values, dict) and isinstance(doc["spec"].get(section), dict):
            doc["spec"][section].update(values)
        else:
            doc["spec"][section] = values
    return doc


class Stack:
    """Operator + simulator (cluster mode) + Prometheus scraping both, for one namespace."""

    def __init__(self, cluster: Any, kubectl: Any, prometheus: Any, namespace: str, log_dir: Path, trace: str,
                 sim_args: list[str] | None = None, factory: str = "deepseek-r1"):
        self.kubectl, self.prometheus, self.namespace, self.factory = kubectl, prometheus, namespace, factory
        kubectl("apply", "-f", str(CRD))
        kubectl("wait", "--for", "condition=Established", "crd/tokenfactories.tokenfactory.dev", "--timeout=60s")
        self.operator = Operator(cluster.kubeconfig, log_dir, namespaces=[namespace], prometheus_url=prometheus.url)
        self.sim = Simulator(cluster.kubeconfig, log_dir, namespace, factory, trace, extra=sim_args)
        # The operator's target carries the labels the chart's ServiceMonitor sets (the alerts select it by them).
        from tokenfactory.alerts import OPERATOR_LABELS
        from tokenfactory.localcluster.prometheus import ScrapeTarget

        prometheus.set_targets([("vllm", self.sim.address, True),
                                ScrapeTarget("tokenfactory-operator", f"127.0.0.1:{self.operator.metrics_port}",
                                             labels=tuple(sorted(OPERATOR_LABELS.items())))])

    def tf(self) -> dict[str, Any]:
        return self.kubectl.json("get", "tokenfactory", self.factory, "-n", self.namespace)

    def condition(self, type_: str) -> dict[str, Any]:
        return next((c for c in (self.tf().get("status") or {}).get("conditions", []) if c["type"] == type_), {})

    def pool_status(self, pool: str) -> dict[str, Any]:
        return next((p for p in (self.tf().get("status") or {}).get("pools", []) if p["name"] == pool), {})

    def replicas(self, pool: str) -> int:
        dep = self.kubectl.json("get", "deployment", f"{self.factory}-{pool}", "-n", self.namespace)
        return int(dep["spec"]["replicas"])

    def events(self) -> list[dict[str, Any]]:
        return self.kubectl.json("get", "events", "-n", self.namespace, "--field-selector",
                                 "involvedObject.kind=TokenFactory")["items"]

    def close(self) -> None:
        self.kubectl.run("delete", "tokenfactories", "--all", "-n", self.namespace, "--timeout=30s")
        self.sim.stop()
        self.operator.stop()
        self.prometheus.set_targets([])
