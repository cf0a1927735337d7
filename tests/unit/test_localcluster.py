"""Pure parts of tokenfactory.localcluster: node pools, certificates, generated configs, CLI."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from tokenfactory.localcluster import binaries, nodepools, pki, procs, wait_until
from tokenfactory.localcluster.cluster import (
    COMPONENTS,
    Layout,
    LocalCluster,
    Ports,
    command_lines,
    kubeconfig_dict,
    kwok_config_documents,
)
from tokenfactory.localcluster.prometheus import PrometheusServer, ScrapeTarget, render_config

# -- node pools ---------------------------------------------------------------------------------


def test_default_nodepools():
    pools = {p.name: p for p in nodepools.load_nodepools()}
    assert set(pools) == {"h200", "gb300", "cpu"}
    h200, gb300, cpu = pools["h200"], pools["gb300"], pools["cpu"]
    assert (h200.count, h200.gpus, h200.total_gpus) == (24, 8, 192)
    assert (gb300.count, gb300.gpus, gb300.total_gpus) == (18, 4, 72)
    assert (cpu.count, cpu.gpus) == (3, 0)
    assert h200.labels["nvidia.com/gpu.product"] == "NVIDIA-H200"
    assert gb300.labels["nvidia.com/gpu.product"] == "NVIDIA-GB300"
    for p in (h200, gb300):
        assert p.taints == (nodepools.Taint("nvidia.com/gpu", "NoSchedule", "present"),)
    assert cpu.taints == ()
    for p in pools.values():
        assert p.labels["tokenfactory.dev/node-pool"] == p.name
        assert p.annotations["kwok.x-k8s.io/node"] == "fake"


def test_node_manifests():
    pools = nodepools.load_nodepools()
    nodes = nodepools.node_manifests(pools)
    assert len(nodes) == 45
    names = [n["metadata"]["name"] for n in nodes]
    assert len(set(names)) == 45 and names == nodepools.node_names(pools)
    assert len({n["spec"]["podCIDR"] for n in nodes}) == 45
    assert len({n["status"]["addresses"][0]["address"] for n in nodes}) == 45
    by_name = {n["metadata"]["name"]: n for n in nodes}
    g = by_name["gb300-17"]
    assert g["status"]["capacity"]["nvidia.com/gpu"] == "4"
    assert g["status"]["allocatable"] == g["status"]["capacity"]
    assert g["metadata"]["labels"]["kubernetes.io/hostname"] == "gb300-17"
    assert g["metadata"]["labels"]["kubernetes.io/arch"] == "arm64"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in g["spec"]["taints"]
    h = by_name["h200-00"]
    assert h["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert int(h["status"]["capacity"]["pods"]) >= 110
    c = by_name["cpu-02"]
    assert "nvidia.com/gpu" not in c["status"]["capacity"] and "taints" not in c["spec"]
    for n in nodes:
        assert n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        cap = n["status"]["capacity"]
        assert {"cpu", "memory", "pods"} <= set(cap)


@pytest.mark.parametrize(
    "doc, message",
    [
        ({}, "non-empty 'pools'"),
        ({"pools": [{"name": "a", "count": 1, "capacity": {"cpu": "1", "memory": "1Gi", "pods": "1"}},
                    {"name": "a", "count": 1, "capacity": {"cpu": "1", "memory": "1Gi", "pods": "1"}}]},
         "duplicate"),
        ({"pools": [{"name": "a", "count": 0}]}, "count"),
        ({"pools": [{"name": "a", "count": 1, "gpus": -1}]}, "gpus"),
        ({"pools": [{"name": "a", "count": 1, "capacity": {"cpu": "1", "memory": "1Gi"}}]}, "pods"),
        ({"defaults": {"capacity": {"cpu": "1", "memory": "1Gi", "pods": "1"}},
          "pools": [{"name": "a", "count": 1, "taints": [{"key": "k", "effect": "Sometimes"}]}]},
         "effect"),
        ({"defaults": {"capacity": {"cpu": "1", "memory": "1Gi", "pods": "1",
                                    "nvidia.com/gpu": "8"}},
          "pools": [{"name": "a", "count": 1}]}, "gpus"),
    ],
)
def test_nodepool_parse_errors(doc, message):
    with pytest.raises(ValueError, match=message):
        nodepools.parse_nodepools(doc)


def test_nodepools_from_file(tmp_path):
    f = tmp_path / "pools.yaml"
    f.write_text(yaml.safe_dump({
        "defaults": {"capacity": {"cpu": "8", "memory": "64Gi", "pods": "110"}},
        "pools": [{"name": "l4", "count": 2, "gpus": 1, "labels": {"x": "y"}}],
    }))
    (pool,) = nodepools.load_nodepools(f)
    assert pool.node_names() == ["l4-00", "l4-01"]
    assert pool.labels == {"x": "y", "tokenfactory.dev/node-pool": "l4"}


# -- certificates -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    pki.generate(d, service_ip="10.96.0.1")
    return d


def test_pki_apiserver_serving_cert(pki_dir):
    d = pki.describe(pki_dir / "apiserver.crt")
    assert d["usages"] == ["server"] and not d["ca"]
    assert d["issuer_cn"] == "tokenfactory-ca"
    assert {"127.0.0.1", "10.96.0.1"} <= set(d["ips"])
    assert {"localhost", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} <= set(d["dns"])


def test_pki_client_identities(pki_dir):
    admin = pki.describe(pki_dir / "admin.crt")
    assert admin["subject_o"] == ["system:masters"] and admin["usages"] == ["client"]
    assert pki.describe(pki_dir / "controller-manager.crt")["subject_cn"] == "system:kube-controller-manager"
    assert pki.describe(pki_dir / "scheduler.crt")["subject_cn"] == "system:kube-scheduler"
    assert pki.describe(pki_dir / "apiserver-etcd-client.crt")["issuer_cn"] == "tokenfactory-etcd-ca"
    assert pki.describe(pki_dir / "ca.crt")["ca"]


def test_pki_chain_verifies(pki_dir):
    def load(name):
        return x509.load_pem_x509_certificate((pki_dir / f"{name}.crt").read_bytes())

    ca, etcd_ca = load("ca"), load("etcd-ca")
    for name in ("apiserver", "admin", "controller-manager", "scheduler", "kwok"):
        load(name).verify_directly_issued_by(ca)
    for name in ("etcd-server", "apiserver-etcd-client"):
        load(name).verify_directly_issued_by(etcd_ca)
    load("front-proxy-client").verify_directly_issued_by(load("front-proxy-ca"))
    assert (pki_dir / "ca.key").stat().st_mode & 0o077 == 0
    assert b"PUBLIC KEY" in (pki_dir / "sa.pub").read_bytes()


def test_pki_is_idempotent(tmp_path):
    pki.generate(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    pki.generate(tmp_path)
    assert before == {p.name: p.read_bytes() for p in tmp_path.iterdir()}


# -- generated configuration --------------------------------------------------------------------


def test_command_lines(tmp_path):
    lay = Layout(tmp_path)
    ports = Ports(etcd=1, etcd_peer=2, apiserver=3, controller_manager=4, scheduler=5, kwok=6,
                  prometheus=7)
    argv = command_lines(lay, ports, Path("/bin-dir"))
    assert list(argv) == list(COMPONENTS)
    assert all(a[0] == f"/bin-dir/{name}" for name, a in argv.items())
    api = argv["kube-apiserver"]
    for flag in ("--authorization-mode=Node,RBAC", "--secure-port=3", "--bind-address=127.0.0.1",
                 "--etcd-servers=https://127.0.0.1:1", "--service-cluster-ip-range=10.96.0.0/16",
                 "--anonymous-auth=false",
                 "--service-account-issuer=https://kubernetes.default.svc.cluster.local"):
        assert flag in api
    assert f"--client-ca-file={tmp_path}/pki/ca.crt" in api
    kcm = argv["kube-controller-manager"]
    for flag in ("--use-service-account-credentials=true", f"--root-ca-file={tmp_path}/pki/ca.crt",
                 f"--service-account-private-key-file={tmp_path}/pki/sa.key",
                 f"--cluster-signing-key-file={tmp_path}/pki/ca.key"):
        assert flag in kcm
    assert "--client-cert-auth=true" in argv["etcd"]
    kwok = argv["kwok"]
    assert "--manage-all-nodes=false" in kwok
    assert "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake" in kwok
    # Only loopback addresses anywhere.
    joined = " ".join(" ".join(a) for a in argv.values())
    assert "0.0.0.0" not in joined


def test_kwok_config_documents():
    docs = kwok_config_documents()
    assert docs[0]["kind"] == "KwokConfiguration"
    assert docs[0]["options"]["manageAllNodes"] is False
    stages = {d["metadata"]["name"]: d for d in docs[1:]}
    assert all(d["kind"] == "Stage" for d in stages.values())
    assert {"node-ready", "node-heartbeat", "pod-running", "pod-succeeded", "pod-remove"} == set(stages)
    assert "phase: Running" in stages["pod-running"]["spec"]["next"]["statusTemplate"]
    assert stages["pod-remove"]["spec"]["next"]["delete"] is True


def test_kubeconfig_dict():
    cfg = kubeconfig_dict("https://127.0.0.1:6443", b"CA", b"CERT", b"KEY", "kubernetes-admin")
    assert cfg["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(cfg["users"][0]["user"]["client-key-data"]) == b"KEY"
    assert cfg["current-context"] == cfg["contexts"][0]["name"]


def test_pinned_versions_come_from_the_build_script():
    v = binaries.pinned_versions()
    assert set(v) == {"kubernetes", "etcd", "kwok", "helm", "prometheus"}
    assert all(x[0].isdigit() for x in v.values())


def test_missing_binaries_in_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENFACTORY_CACHE", str(tmp_path))
    assert binaries.missing() == list(binaries.CLUSTER_COMPONENTS)
    (tmp_path / "bin").mkdir()
    exe = tmp_path / "bin" / "etcd"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (tmp_path / "bin" / ".etcd.version").write_text(binaries.pinned_versions()["etcd"] + "\n")
    assert "etcd" not in binaries.missing()


# -- Prometheus config --------------------------------------------------------------------------


def test_prometheus_binary_prefers_the_cached_build(tmp_path, monkeypatch):
    from tokenfactory.localcluster import prometheus as prom_mod

    monkeypatch.setenv("TOKENFACTORY_CACHE", str(tmp_path))
    monkeypatch.delenv("TOKENFACTORY_PROMETHEUS", raising=False)
    assert prom_mod.default_binary() != str(tmp_path / "bin" / "prometheus")  # not built: PATH's
    (tmp_path / "bin").mkdir()
    exe = tmp_path / "bin" / "prometheus"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert prom_mod.default_binary() == str(exe)
    monkeypatch.setenv("TOKENFACTORY_PROMETHEUS", "/opt/prom")
    assert prom_mod.default_binary() == "/opt/prom"


def test_render_config_groups_targets_by_job():
    cfg = render_config(
        [("sim", "127.0.0.1:9000", True), ("sim", "127.0.0.1:9001", True), ("op", "127.0.0.1:8080")],
        scrape_interval="2s",
    )
    assert cfg["global"]["scrape_interval"] == "2s"
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["sim"]["honor_labels"] is True
    assert jobs["sim"]["static_configs"] == [{"targets": ["127.0.0.1:9000", "127.0.0.1:9001"]}]
    assert jobs["op"]["honor_labels"] is False


def test_render_config_tls_and_conflicts():
    t = ScrapeTarget("api", "127.0.0.1:6443", scheme="https", ca_file="/ca", cert_file="/c",
                     key_file="/k")
    (job,) = render_config([t])["scrape_configs"]
    assert job["scheme"] == "https"
    assert job["tls_config"] == {"ca_file": "/ca", "cert_file": "/c", "key_file": "/k"}
    with pytest.raises(ValueError, match="disagree"):
        render_config([("x", "a:1", True), ("x", "b:1", False)])
    with pytest.raises(TypeError):
        ScrapeTarget.of("127.0.0.1:1")


def test_prometheus_server_writes_config(tmp_path):
    prom = PrometheusServer(tmp_path, [("sim", "127.0.0.1:9000", True)], port=9999)
    prom.write_config()
    cfg = yaml.safe_load(prom.config_file.read_text())
    assert cfg["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9000"]
    assert "--web.enable-lifecycle" in prom.argv()
    assert "--web.listen-address=127.0.0.1:9999" in prom.argv()
    assert prom.url == "http://127.0.0.1:9999"
    assert not prom.is_running()


# -- processes, state, CLI ----------------------------------------------------------------------


def test_detached_process_group_is_stopped(tmp_path):
    pid = procs.start_detached(["/bin/sh", "-c", "sleep 60 & sleep 60"], tmp_path / "log",
                               tmp_path / "pid")
    assert procs.read_pid(tmp_path / "pid") == pid
    assert procs.alive(pid, "/bin/sh")
    assert not procs.alive(pid, "/bin/something-else") or pid in procs._CHILDREN
    wait_until(lambda: len(procs.group_members(pid)) == 3, timeout=5, what="sh and two sleeps")
    t0 = time.monotonic()
    assert procs.stop(pid, "/bin/sh", timeout=5)
    assert time.monotonic() - t0 < 5
    assert not procs.alive(pid)
    # The whole group went, background children included (zombies left for init to reap count
    # as gone).
    assert procs.group_members(pid) == []


def test_cluster_without_state(tmp_path):
    lc = LocalCluster(tmp_path / "nothing")
    assert not lc.is_running()
    assert lc.down(progress=None) is False


def test_down_leaves_foreign_directories_alone(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    LocalCluster(tmp_path).down(progress=None)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenfactory.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_cli_help():
    res = _cli("cluster", "--help")
    assert res.returncode == 0
    for action in ("up", "down", "status", "kubeconfig"):
        assert action in res.stdout
    res = _cli("cluster", "up", "--help")
    assert "--with-prometheus" in res.stdout and "--state-dir" in res.stdout


def test_cli_status_and_kubeconfig_without_cluster(tmp_path):
    res = _cli("cluster", "status", "--state-dir", str(tmp_path / "none"))
    assert res.returncode == 1 and "no cluster" in res.stdout
    res = _cli("cluster", "kubeconfig", "--state-dir", str(tmp_path / "none"))
    assert res.returncode == 1 and "no cluster" in res.stderr


# -- sharing one cluster between sessions -------------------------------------------------------


class FakeCluster:
    """Stands in for LocalCluster in shared_cluster(): records up/down calls."""

    def __init__(self, state_dir: Path, running: bool = False) -> None:
        self.state_dir = state_dir
        self.running = running
        self.calls: list[str] = []

    def is_running(self) -> bool:
        return self.running

    def up(self, progress=None, timeout=180):
        self.calls.append("up")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.running = True
        return "info"

    def down(self, progress=None, keep_state=False):
        self.calls.append("down")
        self.running = False
        if not keep_state:
            import shutil

            shutil.rmtree(self.state_dir, ignore_errors=True)


def test_shared_cluster_stops_what_it_started(tmp_path):
    from tokenfactory.localcluster.sharing import shared_cluster

    lc = FakeCluster(tmp_path / "c")
    with shared_cluster(lc) as info:
        assert info == "info"
    assert lc.calls == ["up", "down"]


def test_shared_cluster_leaves_a_running_cluster_alone(tmp_path):
    from tokenfactory.localcluster.sharing import shared_cluster

    lc = FakeCluster(tmp_path / "c", running=True)
    lc.state_dir.mkdir()
    with shared_cluster(lc):
        pass
    assert lc.calls == ["up"]


def test_shared_cluster_waits_for_the_last_user(tmp_path):
    from tokenfactory.localcluster.sharing import _users_dir, shared_cluster

    lc = FakeCluster(tmp_path / "c")
    other = subprocess.Popen(["sleep", "30"])
    try:
        with shared_cluster(lc):
            # Another live process registers as a user while we run.
            (_users_dir(lc) / str(other.pid)).write_text("")
        assert lc.calls == ["up"]  # still in use: not stopped
    finally:
        other.kill()
        other.wait()
    with shared_cluster(lc):  # the other user is gone now; the cluster was started by a session
        pass
    assert lc.calls == ["up", "up", "down"]


def test_shared_cluster_stops_a_failed_start(tmp_path):
    from tokenfactory.localcluster.sharing import shared_cluster

    lc = FakeCluster(tmp_path / "c")

    def boom(progress=None, timeout=180):
        lc.calls.append("up")
        raise RuntimeError("apiserver exited")

    lc.up = boom
    with pytest.raises(RuntimeError, match="apiserver exited"):
        with shared_cluster(lc):
            pass
    assert lc.calls == ["up", "down"]


def test_shared_cluster_resumes_but_keeps_a_stopped_cluster_of_someone_else(tmp_path):
    from tokenfactory.localcluster.sharing import shared_cluster

    lc = FakeCluster(tmp_path / "c")
    lc.state_dir.mkdir()
    (lc.state_dir / "state.json").write_text("{}")  # `cluster down --keep-state`, or a crash
    with shared_cluster(lc):
        pass
    assert lc.calls == ["up"]


# -- Gateway API / Inference Extension CRDs (build-binaries.sh crds) ------------------------------


def test_crd_sets_are_pinned_in_the_build_script_and_cached_by_version(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENFACTORY_CACHE", str(tmp_path))
    versions = binaries.crd_versions()
    assert set(versions) == {"gateway-api", "gateway-api-inference-extension"}
    assert all(v[0].isdigit() for v in versions.values())
    assert binaries.crds_missing() == ["gateway-api", "gateway-api-inference-extension"]
    d = binaries.crd_dir("gateway-api")
    d.mkdir(parents=True)
    (d / "gateway.networking.k8s.io_httproutes.yaml").write_text("kind: CustomResourceDefinition\n")
    (d / ".version").write_text("0.0.1\n")  # another version than pinned: still missing
    assert "gateway-api" in binaries.crds_missing()
    (d / ".version").write_text(versions["gateway-api"] + "\n")
    assert binaries.crds_missing() == ["gateway-api-inference-extension"]
    assert [p.name for p in binaries.crd_files()] == ["gateway.networking.k8s.io_httproutes.yaml"]
    monkeypatch.setenv("GATEWAY_API_VERSION", "9.9.9")  # the script's override is honoured
    assert binaries.crd_versions()["gateway-api"] == "9.9.9" and "gateway-api" in binaries.crds_missing()
