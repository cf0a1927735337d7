"""The chart's prometheus.auth on the real apiserver: the operator Deployment with Secret volumes for a bearer
token, basic auth, a CA and a client certificate is admitted in a namespace enforcing the "restricted" Pod
Security Standard, its pod is scheduled with those Secrets mounted (kwok reports it Ready), and the operator's
ServiceAccount still cannot read Secrets."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import yaml

from harness import ROOT, wait_for

CHART = ROOT / "charts" / "tokenfactory"


@pytest.fixture(scope="module")
def helm() -> str:
    from tokenfactory.localcluster import binaries

    binaries.ensure(["helm"], progress=None)
    return str(binaries.binary("helm"))


def test_operator_with_prometheus_auth_secrets_is_admitted_and_mounts_them(helm, kubectl, namespace):
    release = f"tfa{uuid.uuid4().hex[:5]}"
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest")
    sets = ["watchNamespaces={" + namespace + "}", "prometheus.url=https://prom.monitoring:9090",
            "prometheus.auth.basicAuth.username=tf", "prometheus.auth.basicAuth.passwordSecret.name=prom-basic",
            "prometheus.auth.tls.caSecret.name=prom-ca", "prometheus.auth.tls.clientCertSecret.name=prom-client",
            "prometheus.auth.headers.X-Scope-OrgID=tenant-a"]
    argv = [helm, "template", release, str(CHART), "--namespace", namespace, "--skip-crds"]
    for s in sets:
        argv += ["--set", s]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    for name, data in (("prom-basic", {"password": "pw"}), ("prom-ca", {"ca.crt": "x"}),
                       ("prom-client", {"tls.crt": "x", "tls.key": "y"})):
        kubectl("create", "secret", "generic", name, "-n", namespace, *[f"--from-literal={k}={v}" for k, v in data.items()])
    ours = [d for d in docs if d["kind"] not in ("ClusterRole", "ClusterRoleBinding")]
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": ours}, namespace)
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    name = dep["metadata"]["name"]
    kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=120s", timeout=130)
    pod = wait_for(lambda: (kubectl.json("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")
                            ["items"] or [None])[0], 30, "operator pod")
    secrets = {v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v}
    assert {"prom-basic", "prom-ca", "prom-client"} <= secrets
    sa = pod["spec"]["serviceAccountName"]
    can = kubectl.run("auth", "can-i", "get", "secrets", "-n", namespace, "--as", f"system:serviceaccount:{namespace}:{sa}")
    assert can.stdout.strip() == "no", json.dumps(can.stdout)
