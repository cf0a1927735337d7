"""Soak: N TokenFactories over M namespaces on the local cluster, one operator (`tokenfactory run`).

Measures (printed as one JSON object, also written to --json):

* ``apply_to_deployments_seconds`` {p50, p95, max}: from a factory's create call returning to all of its
  pools' Deployments existing (seen by a watch);
* ``operator_cpu_cores_steady``: the operator process's CPU time over a steady-state window / its length;
* ``operator_rss_mb_max``: the operator's largest resident set, sampled every second all run long;
* ``apiserver_requests_per_minute``: over the steady window, non-WATCH requests the apiserver served for the
  kinds the operator touches (tokenfactories, deployments, services, pods, events) plus Leases, from the
  apiserver's ``apiserver_request_total`` (it has no per-client label: other components' requests on these
  kinds count too; ``apiserver_requests_by_resource`` breaks it down);
* ``prometheus_queries_per_minute``: instant queries Prometheus answered over the window
  (``prometheus_http_requests_total{handler="/api/v1/query"}``);
* ``delete_seconds``: from deleting every factory to no TokenFactory, Deployment or Service left.

Targets (issue 14; a benchmark, not a test): at N=500 over 10 namespaces, apply -> Deployments p95 < 5 s,
steady CPU < 0.25 core at ``interval: 30s``, RSS < 250 MB, deletion < 60 s.

    TOKENFACTORY_CLUSTER_DIR=... tokenfactory cluster up
    python bench/soak.py --factories 500 --namespaces 10 --json soak.json

Pools start at ``--min-replicas`` (default 0: Deployments without pods, so the figures are the operator's
and not the kwok scheduler's).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "examples" / "deepseek-r1-h200-gb300.yaml"
CRD = ROOT / "crds" / "tokenfactory.dev_tokenfactories.yaml"
TARGETS = {"apply_to_deployments_p95_seconds": 5.0, "operator_cpu_cores_steady": 0.25, "operator_rss_mb_max": 250.0,
           "delete_seconds": 60.0}
TOUCHED = ("tokenfactories", "deployments", "services", "pods", "events", "leases")


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(len(xs) - 1, int(k) + 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def factory_doc(name: str, interval: str, min_replicas: int) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"] = {"name": name}
    doc["spec"]["scaling"]["interval"] = interval
    for p in doc["spec"]["pools"]:
        p["minReplicas"] = min_replicas
    return doc


def apiserver_counts(kubectl: list[str]) -> dict[str, float]:
    text = subprocess.run([*kubectl, "get", "--raw", "/metrics"], capture_output=True, text=True, check=True).stdout
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if labels.get("verb") in ("WATCH", "WATCHLIST") or labels.get("resource") not in TOUCHED:
            continue
        key = f"{labels['verb']} {labels['resource']}{'/' + labels['subresource'] if labels.get('subresource') else ''}"
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def prometheus_queries(url: str) -> float:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.max_mb, self.stop_flag = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop_flag.wait(1.0):
            try:
                self.max_mb = max(self.max_mb, proc_rss_mb(self.pid))
            except OSError:
                return


class DeploymentWatch(threading.Thread):
    """First time each managed Deployment was seen (monotonic), and whether it is gone."""

    def __init__(self, kubeconfig: str):
        super().__init__(daemon=True)
        self.kubeconfig = kubeconfig
        self.seen: dict[tuple[str, str], float] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        from lightkube import Client, KubeConfig
        from lightkube.resources.apps_v1 import Deployment

        client = Client(config=KubeConfig.from_file(self.kubeconfig))
        sel = {"app.kubernetes.io/managed-by": "tokenfactory"}
        while True:
            try:
                listing = client.list(Deployment, namespace="*", labels=sel)
                for d in listing:
                    self.seen.setdefault((d.metadata.namespace, d.metadata.name), time.monotonic())
                self.ready.set()
                for typ, d in client.watch(Deployment, namespace="*", labels=sel, resource_version=listing.resourceVersion):
                    if typ == "ADDED":
                        self.seen.setdefault((d.metadata.namespace, d.metadata.name), time.monotonic())
            except Exception:  # noqa: BLE001 - re-list
                time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factories", type=int, default=500)
    ap.add_argument("--namespaces", type=int, default=10)
    ap.add_argument("--json", dest="json_file", help="write the JSON here too")
    ap.add_argument("--interval", default="30s", help="spec.scaling.interval of every factory (default 30s)")
    ap.add_argument("--min-replicas", type=int, default=0, help="minReplicas of each of the two pools (default 0)")
    ap.add_argument("--steady-seconds", type=float, default=120.0, help="steady-state window (default 120)")
    ap.add_argument("--settle-seconds", type=float, default=30.0, help="wait before the window (default 30)")
    ap.add_argument("--concurrency", type=int, default=8, help="operator --concurrency (default 8)")
    args = ap.parse_args()

    from lightkube import Client, KubeConfig, codecs
    from lightkube.generic_resource import create_namespaced_resource

    from tokenfactory.localcluster import binaries
    from tokenfactory.localcluster.cluster import LocalCluster, default_state_dir
    from tokenfactory.localcluster.prometheus import PrometheusServer

    lc = LocalCluster(default_state_dir())
    info = lc.info()
    kubeconfig = str(info.kubeconfig)
    kubectl = [str(binaries.binary("kubectl")), "--kubeconfig", kubeconfig]
    subprocess.run([*kubectl, "apply", "-f", str(CRD)], check=True, capture_output=True)
    subprocess.run([*kubectl, "wait", "--for", "condition=Established", "crd/tokenfactories.tokenfactory.dev"], check=True,
                   capture_output=True)
    run_id = os.urandom(2).hex()  # namespaces of an earlier run may still be terminating
    namespaces = [f"soak-{run_id}-{i}" for i in range(args.namespaces)]
    for ns in namespaces:
        subprocess.run([*kubectl, "create", "namespace", ns], capture_output=True)

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    prom = PrometheusServer(tmp / "prometheus", targets=[], scrape_interval="15s")
    prom.start()
    op_log = open(tmp / "operator.log", "w")  # noqa: SIM115
    op = subprocess.Popen([sys.executable, "-m", "tokenfactory.cli", "run", "-A", "--metrics-port", "0", "--health-port", "0",
                           "--prometheus-url", prom.url, "--lease-namespace", "default", "--concurrency", str(args.concurrency)],
                          stdout=op_log, stderr=subprocess.STDOUT, env={**os.environ, "KUBECONFIG": kubeconfig})
    rss = RssSampler(op.pid)
    rss.start()
    watch = DeploymentWatch(kubeconfig)
    watch.start()
    watch.ready.wait(30)
    client = Client(config=KubeConfig.from_file(kubeconfig))
    create_namespaced_resource("tokenfactory.dev", "v1alpha1", "TokenFactory", "tokenfactories")
    try:
        deadline = time.monotonic() + 120  # the operator takes its Lease (an old holder's may first expire)
        while "became leader" not in (tmp / "operator.log").read_text(errors="replace"):
            if op.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the operator did not take the Lease; log: {tmp / 'operator.log'}")
            time.sleep(0.2)
        time.sleep(1)  # its watches list
        created: dict[tuple[str, str], float] = {}
        t_apply = time.monotonic()
        for i in range(args.factories):
            ns, name = namespaces[i % len(namespaces)], f"tf-{i:04d}"
            client.create(codecs.from_dict(factory_doc(name, args.interval, args.min_replicas)), namespace=ns)
            created[(ns, name)] = time.monotonic()
        apply_seconds = time.monotonic() - t_apply
        pools = ("gb300", "h200")

        def latencies() -> dict[tuple[str, str], float]:
            out = {}
            for (ns, name), t in created.items():
                seen = [watch.seen.get((ns, f"{name}-{p}")) for p in pools]
                if all(s is not None for s in seen):
                    out[(ns, name)] = max(seen) - t  # type: ignore[type-var]
            return out

        deadline = time.monotonic() + 1800
        while len(latencies()) < len(created) and time.monotonic() < deadline:
            time.sleep(0.5)
        lat = list(latencies().values())
        time.sleep(args.settle_seconds)
        api0, q0, cpu0, t0 = apiserver_counts(kubectl), prometheus_queries(prom.url), proc_cpu_seconds(op.pid), time.monotonic()
        time.sleep(args.steady_seconds)
        api1, q1, cpu1, t1 = apiserver_counts(kubectl), prometheus_queries(prom.url), proc_cpu_seconds(op.pid), time.monotonic()
        minutes = (t1 - t0) / 60
        by_resource = {k: round((api1.get(k, 0) - api0.get(k, 0)) / minutes, 1) for k in sorted(api1)
                       if api1.get(k, 0) - api0.get(k, 0) > 0}

        t_del = time.monotonic()
        for ns in namespaces:
            subprocess.run([*kubectl, "delete", "tokenfactories", "--all", "-n", ns, "--wait=false"], capture_output=True)

        def left() -> int:
            n = 0
            for kind in ("tokenfactories", "deployments", "services"):
                sel = [] if kind == "tokenfactories" else ["-l", "app.kubernetes.io/managed-by=tokenfactory"]
                out = subprocess.run([*kubectl, "get", kind, "-A", *sel, "-o", "name"], capture_output=True, text=True).stdout
                n += len([ln for ln in out.splitlines() if ln.strip()])
            return n

        while left() and time.monotonic() - t_del < 600:
            time.sleep(1)
        delete_seconds = time.monotonic() - t_del
        result = {
            "benchmark": "soak",
            "factories": args.factories, "namespaces": args.namespaces, "interval": args.interval,
            "min_replicas": args.min_replicas, "pools_per_factory": len(pools), "concurrency": args.concurrency,
            "cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0],
            "create_all_seconds": round(apply_seconds, 2),
            "factories_with_deployments": len(lat),
            "apply_to_deployments_seconds": {"p50": round(percentile(lat, 0.5), 2), "p95": round(percentile(lat, 0.95), 2),
                                             "max": round(max(lat), 2) if lat else None},
            "steady_window_seconds": round(t1 - t0, 1),
            "operator_cpu_cores_steady": round((cpu1 - cpu0) / (t1 - t0), 4),
            "operator_rss_mb_max": round(rss.max_mb, 1),
            "apiserver_requests_per_minute": round(sum(by_resource.values()), 1),
            "apiserver_requests_by_resource": by_resource,
            "prometheus_queries_per_minute": round((q1 - q0) / minutes, 1),
            "delete_seconds": round(delete_seconds, 1),
            "targets": TARGETS,
        }
        result["meets_targets"] = {
            "apply_to_deployments_p95_seconds": bool(lat) and result["apply_to_deployments_seconds"]["p95"] < TARGETS["apply_to_deployments_p95_seconds"],
            "operator_cpu_cores_steady": result["operator_cpu_cores_steady"] < TARGETS["operator_cpu_cores_steady"],
            "operator_rss_mb_max": result["operator_rss_mb_max"] < TARGETS["operator_rss_mb_max"],
            "delete_seconds": result["delete_seconds"] < TARGETS["delete_seconds"],
        }
        text = json.dumps(result, indent=2)
        print(text)
        if args.json_file:
            Path(args.json_file).write_text(text + "\n")
        tracebacks = (tmp / "operator.log").read_text(errors="replace").count("Traceback")
        print(f"operator log: {tmp / 'operator.log'} ({tracebacks} tracebacks)", file=sys.stderr)
        return 0
    finally:
        rss.stop_flag.set()
        op.terminate()
        try:
            op.wait(20)
        except subprocess.TimeoutExpired:
            op.kill()
        op_log.close()
        prom.stop()
        for ns in namespaces:
            subprocess.run([*kubectl, "delete", "namespace", ns, "--wait=false"], capture_output=True)


if __name__ == "__main__":
    raise SystemExit(main())
