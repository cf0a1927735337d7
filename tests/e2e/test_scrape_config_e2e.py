"""The plain-Prometheus scrape config docs/metrics.md documents (``kubernetes_sd_configs``), loaded as
written by the Prometheus the tests run (built from its Go module: Debian's 2.42 cannot load it),
discovers the vLLM pods of a TokenFactory on the real local control plane and labels each target
with the pod's namespace, pod, factory, pool and gpu_type, and only the pods' ``http`` port.

The one addition to the documented block is ``kubeconfig_file`` in each ``kubernetes_sd_configs``
entry: this Prometheus runs outside the cluster, where in-cluster credentials do not exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from harness import CRD, Operator, example_doc, wait_for
from tokenfactory.localcluster.prometheus import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
METRICS_MD = ROOT / "docs" / "metrics.md"


def documented_scrape_config() -> dict:
    text = METRICS_MD.read_text()
    start = text.index("### Plain Prometheus: kubernetes_sd")
    m = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M).search(text, start)
    assert m, "no yaml block in docs/metrics.md under 'Plain Prometheus: kubernetes_sd'"
    return yaml.safe_load(m.group(1))


class DocumentedPrometheus(PrometheusServer):
    def __init__(self, directory: Path, scrape_configs: list[dict]):
        super().__init__(directory, targets=[], scrape_interval="15s")
        self.scrape_configs = scrape_configs

    def config(self) -> dict:
        return {**super().config(), "scrape_configs": self.scrape_configs}


def test_documented_kubernetes_sd_config_discovers_the_vllm_pods(cluster, kubectl, namespace, tmp_path):
    cfg = documented_scrape_config()
    for job in cfg["scrape_configs"]:
        for sd in job.get("kubernetes_sd_configs", []):
            sd["kubeconfig_file"] = str(cluster.kubeconfig)
    prom = DocumentedPrometheus(tmp_path / "prometheus", cfg["scrape_configs"])
    prom.start()  # fails here (config rejected) with a Prometheus that lacks kubernetes_sd_configs
    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for", "condition=Established", "crd/tokenfactories.tokenfactory.dev", "--timeout=60s")
    op = Operator(cluster.kubeconfig, tmp_path, namespaces=[namespace], prometheus_url=prom.url)
    try:
        doc = example_doc(scaling={"mode": "Off", "interval": "2s"})
        kubectl.apply(doc, namespace)
        factory = doc["metadata"]["name"]

        def running_pods():
            pods = kubectl.json("get", "pods", "-n", namespace, "-l", f"tokenfactory.dev/factory={factory}")["items"]
            ok = [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
            return ok if ok and len(ok) == len(pods) else None

        pods = wait_for(running_pods, 120, "the factory's vLLM pods Running with an IP")
        want = set()
        for p in pods:
            labels = p["metadata"]["labels"]
            port = next(cp["containerPort"] for c in p["spec"]["containers"] for cp in c.get("ports", [])
                        if cp.get("name") == "http")
            want.add((f"{p['status']['podIP']}:{port}", namespace, p["metadata"]["name"], factory,
                      labels["tokenfactory.dev/pool"], labels["tokenfactory.dev/gpu-type"]))
        assert {w[4] for w in want} == {"gb300", "h200"}

        def discovered():
            got = set()
            for t in prom.active_targets():
                lab = t["labels"]
                if lab.get("job") == "tokenfactory-vllm" and lab.get("namespace") == namespace:
                    got.add((lab["instance"], lab["namespace"], lab.get("pod"), lab.get("factory"), lab.get("pool"),
                             lab.get("gpu_type")))
            return got if got == want else None

        last = {}

        def check():
            last["got"] = discovered()
            return last["got"]

        try:
            wait_for(check, 90, "Prometheus to discover exactly the vLLM pods' http ports, labelled", interval=2)
        except AssertionError:
            seen = [t["labels"] for t in prom.active_targets() if t["labels"].get("job") == "tokenfactory-vllm"]
            raise AssertionError(f"want {sorted(want)}\nactive tokenfactory-vllm targets: {seen}") from None
    finally:
        op.stop()
        prom.stop()
