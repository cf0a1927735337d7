"""The operator reads a Prometheus that serves HTTPS, requires a client certificate and basic auth
(``--web.config.file``), as many production servers do: a real /usr/bin/prometheus, real TLS, real bcrypt.

Its own reader (PrometheusSource) is checked against that server with each part of the configuration
missing or wrong, then the operator process, configured by its --prometheus-* flags, reads a factory's
figures through it (MetricsAvailable=True).
"""

from __future__ import annotations

import time

import pytest

from harness import CRD, EXAMPLE, Proc, Simulator, free_port, tokenfactory_argv, wait_for
from tokenfactory.localcluster import pki
from tokenfactory.localcluster.prometheus import PrometheusServer, WebSecurity
from tokenfactory.metrics_source import (
    PROMETHEUS_ERROR,
    PROMETHEUS_UNREACHABLE,
    MetricsUnavailable,
    PrometheusAuth,
    PrometheusSource,
)
from tokenfactory.sim.fleet import EngineSpec, Fleet
from tokenfactory.sim.server import RealtimeRunner, SimServer
from tokenfactory.sim.traces import Constant

USER, PASSWORD = "tokenfactory", "s3cret-for-e2e"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    p = pki.generate(d, specs=[
        pki.CertSpec("prometheus", "prometheus", usage=pki.SERVER, dns_names=("localhost",), ip_addresses=("127.0.0.1",)),
        pki.CertSpec("operator", "tokenfactory-operator", usage=pki.CLIENT),
    ])
    pw = d / "password"
    pw.write_text(PASSWORD + "\n")
    wrong = d / "wrong-password"
    wrong.write_text("nope\n")
    return {"ca": str(p.ca_crt), "crt": str(p.crt("prometheus")), "key": str(p.key("prometheus")),
            "client_crt": str(p.crt("operator")), "client_key": str(p.key("operator")), "password": str(pw),
            "wrong": str(wrong)}


@pytest.fixture(scope="module")
def secure_prometheus(certs, tmp_path_factory):
    web = WebSecurity(cert_file=certs["crt"], key_file=certs["key"], ca_file=certs["ca"], client_ca_file=certs["ca"],
                      client_cert=(certs["client_crt"], certs["client_key"]), basic_auth=(USER, PASSWORD))
    prom = PrometheusServer(tmp_path_factory.mktemp("secure-prometheus"), targets=[], scrape_interval="2s", web=web)
    prom.start()
    yield prom
    prom.stop()


@pytest.fixture
def sim():
    fleet = Fleet(Constant(500.0), start_time=time.time(), window_seconds=30)
    runner = RealtimeRunner(fleet, tick=0.5)
    runner.set_engines([EngineSpec(name="r1-h200-0", namespace="e2e-auth", factory="r1", pool="h200", gpu_type="h200",
                                   gpus=8, startup_seconds=0)])
    server = SimServer(runner, "127.0.0.1", 0)
    server.start()
    runner.start()
    yield server
    runner.stop()
    server.stop()


def full(certs, **changes) -> PrometheusAuth:
    base = dict(username=USER, password_file=certs["password"], ca_file=certs["ca"], cert_file=certs["client_crt"],
                key_file=certs["client_key"], headers=(("X-Scope-OrgID", "tenant-a"),))
    base.update(changes)
    return PrometheusAuth(**base)


async def read(url: str, auth: PrometheusAuth):
    src = PrometheusSource(url, timeout=3, auth=auth)
    try:
        return await src.pool_metrics("e2e-auth", "r1", 10)
    finally:
        await src.aclose()


async def test_source_reads_through_tls_client_cert_and_basic_auth(secure_prometheus, sim, certs):
    assert secure_prometheus.url.startswith("https://")
    secure_prometheus.set_targets([("vllm", f"127.0.0.1:{sim.port}", True)])
    secure_prometheus.wait_targets_up(["vllm"], timeout=30)

    async def ok():
        try:
            return await read(secure_prometheus.url, full(certs))
        except MetricsUnavailable:
            return None

    fm = None
    for _ in range(60):
        fm = await ok()
        if fm is not None and fm.generation_tokens_per_second > 0:
            break
        time.sleep(1)
    assert fm is not None and fm.pools["h200"].engines_reporting == 1 and fm.generation_tokens_per_second > 0

    with pytest.raises(MetricsUnavailable) as ei:  # wrong password: the server answers 401
        await read(secure_prometheus.url, full(certs, password_file=certs["wrong"]))
    assert ei.value.reason == PROMETHEUS_ERROR and "HTTP 401" in ei.value.message and "nope" not in ei.value.message
    with pytest.raises(MetricsUnavailable) as ei:  # no basic auth at all
        await read(secure_prometheus.url, full(certs, username=None, password_file=None))
    assert "HTTP 401" in ei.value.message
    with pytest.raises(MetricsUnavailable) as ei:  # the system CAs do not know the server's CA
        await read(secure_prometheus.url, full(certs, ca_file=None))
    assert ei.value.reason == PROMETHEUS_UNREACHABLE and "CERTIFICATE_VERIFY_FAILED" in ei.value.message
    with pytest.raises(MetricsUnavailable) as ei:  # no client certificate: the TLS handshake is refused
        await read(secure_prometheus.url, full(certs, cert_file=None, key_file=None))
    assert ei.value.reason == PROMETHEUS_UNREACHABLE, ei.value.message
    with pytest.raises(MetricsUnavailable) as ei:  # plain HTTP to an HTTPS server
        await read(secure_prometheus.url.replace("https://", "http://"), full(certs))
    assert ei.value.reason in (PROMETHEUS_UNREACHABLE, PROMETHEUS_ERROR)


def test_operator_flags_reach_the_secure_prometheus(cluster, kubectl, namespace, secure_prometheus, certs, tmp_path):
    import yaml

    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for", "condition=Established", "crd/tokenfactories.tokenfactory.dev", "--timeout=60s")
    health = free_port()
    argv = tokenfactory_argv(
        "run", "--namespace", namespace, "--metrics-port", "0", "--health-port", str(health),
        "--prometheus-timeout", "3", "--prometheus-url", secure_prometheus.url,
        "--prometheus-ca-file", certs["ca"], "--prometheus-cert-file", certs["client_crt"],
        "--prometheus-key-file", certs["client_key"], "--prometheus-username", USER,
        "--prometheus-password-file", certs["password"], "--prometheus-header", "X-Scope-OrgID: tenant-a")
    op = Proc("operator", argv, tmp_path, env={"KUBECONFIG": str(cluster.kubeconfig)})
    simulator = None
    try:
        op.wait_http(f"http://127.0.0.1:{health}/healthz", timeout=60)
        assert "Prometheus client: basic auth as tokenfactory; CA " in op.log()
        assert PASSWORD not in op.log()
        simulator = Simulator(cluster.kubeconfig, tmp_path, namespace, "deepseek-r1", "constant:3000")
        secure_prometheus.set_targets([("vllm", simulator.address, True)])
        doc = yaml.safe_load(EXAMPLE.read_text())
        doc["spec"]["scaling"] = {"mode": "Recommend", "interval": "2s"}
        doc["spec"]["metrics"] = {"window": "10s"}
        kubectl.apply(doc, namespace)

        def available():
            tf = kubectl.json("get", "tokenfactory", "deepseek-r1", "-n", namespace)
            cond = next((c for c in (tf.get("status") or {}).get("conditions", []) if c["type"] == "MetricsAvailable"), {})
            return cond if cond.get("status") == "True" else None

        cond = wait_for(available, 90, "MetricsAvailable=True through TLS + client cert + basic auth")
        assert cond["message"].startswith(f"read from {secure_prometheus.url}")
        wait_for(lambda: (kubectl.json("get", "tokenfactory", "deepseek-r1", "-n", namespace)["status"]
                          .get("tokensPerSecond") or 0) > 0, 60, "tokens/s read through the secure Prometheus")
    finally:
        kubectl.run("delete", "tokenfactories", "--all", "-n", namespace, "--timeout=30s")
        if simulator is not None:
            simulator.stop()
        op.stop()
        secure_prometheus.set_targets([])
