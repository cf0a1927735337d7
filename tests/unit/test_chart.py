"""The Helm chart (charts/tokenfactory) and the kustomize base (deploy/kustomize/base), rendered offline
with the real helm (built by build-binaries.sh) and kubectl kustomize: lint, default and non-default
values, schema rejections, least-privilege RBAC, hardened operator pod, CRD copies, monitoring objects."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tokenfactory import alerts, dashboard

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tokenfactory"
KUSTOMIZE = ROOT / "deploy" / "kustomize" / "base"
CRD = ROOT / "crds" / "tokenfactory.dev_tokenfactories.yaml"
CRD_COPIES = [CHART / "crds" / CRD.name, KUSTOMIZE / CRD.name]
RELEASE_NS = "tokenfactory-system"

# What the operator does, per kind (handlers.py, kube.py): nothing more.
NAMESPACED_RULES = [
    {"apiGroups": ["tokenfactory.dev"], "resources": ["tokenfactories"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["tokenfactory.dev"], "resources": ["tokenfactories/status"], "verbs": ["get", "patch", "update"]},
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]
CRD_READ = {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
            "verbs": ["get", "list", "watch"]}
NS_READ = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}
# Leader election (leader.py): one Lease in the release namespace, by name.
LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["tokenfactory-operator"],
     "verbs": ["get", "update"]},
]


@pytest.fixture(scope="session")
def helm() -> str:
    from tokenfactory.localcluster import binaries

    if binaries.missing(["helm"]):
        if not shutil.which("go"):
            pytest.fail("helm is not built and Go is missing: run `make setup` "
                        "(bash operator/tokenfactory/localcluster/build-binaries.sh helm)")
        binaries.ensure(["helm"], progress=None)
    return str(binaries.binary("helm"))


@pytest.fixture(scope="session")
def kubectl() -> str:
    from tokenfactory.localcluster import binaries

    exe = binaries.binary("kubectl")
    if exe.exists():
        return str(exe)
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl is missing: run `make setup`")
    return found


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def template(helm: str, *sets: str, release: str = "tokenfactory", namespace: str = RELEASE_NS) -> list[dict]:
    argv = [helm, "template", release, str(CHART), "--namespace", namespace]
    for s in sets:
        argv += ["--set", s]
    res = run(*argv)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


MONITORS_ON = ["serviceMonitor.enabled=true", "podMonitor.enabled=true", "prometheusRule.enabled=true",
               "grafanaDashboard.enabled=true"]
NAMESPACED = ["watchNamespaces={team-a,team-b}", "prometheus.url=http://prometheus.monitoring:9090", *MONITORS_ON]


# ------------------------------------------------------------------------------------------ CRD


@pytest.mark.parametrize("copy", CRD_COPIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_crd_copies_are_identical(copy):
    assert copy.read_bytes() == CRD.read_bytes(), f"{copy} differs from {CRD}: run `make crd`"


# ------------------------------------------------------------------------------------------ lint


@pytest.mark.parametrize("sets", [[], NAMESPACED], ids=["default", "namespaced+monitors"])
def test_helm_lint_strict(helm, sets):
    argv = [helm, "lint", "--strict", str(CHART)]
    for s in sets:
        argv += ["--set", s]
    res = run(*argv)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in res.stdout


# -------------------------------------------------------------------------------------- default


def test_default_render_is_cluster_wide_and_minimal(helm):
    docs = template(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Role", "RoleBinding",
                     "Service", "ServiceAccount"]
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == RELEASE_NS, d["kind"]
    role = one(docs, "ClusterRole")
    assert role["rules"] == NAMESPACED_RULES + [CRD_READ]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    sa = one(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": RELEASE_NS}]
    # the only other grant: the leader-election Lease, in the release namespace
    lease_role = one(docs, "Role")
    assert lease_role["rules"] == LEASE_RULES and lease_role["metadata"]["namespace"] == RELEASE_NS
    assert one(docs, "RoleBinding")["subjects"] == binding["subjects"]


def test_high_availability_defaults(helm):
    docs = template(helm)
    spec = one(docs, "Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--lease-namespace") + 1] == RELEASE_NS
    assert args[args.index("--lease-duration") + 1] == "15" and "--no-leader-elect" not in args
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    spread = pod["topologySpreadConstraints"]
    assert {t["topologyKey"] for t in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(t["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"] for t in spread)
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": spec["selector"]["matchLabels"]}}
    # a single replica without election: no PDB, no Lease grant, the flag says so
    docs = template(helm, "replicaCount=1", "leaderElection.enabled=false")
    assert not by_kind(docs, "PodDisruptionBudget") and not by_kind(docs, "Role")
    assert "--no-leader-elect" in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]


def test_several_replicas_need_leader_election(helm):
    res = run(helm, "template", "t", str(CHART), "--set", "replicaCount=2", "--set", "leaderElection.enabled=false")
    assert res.returncode != 0 and "replicaCount" in res.stderr


def test_rbac_never_grants_secrets_or_wildcards(helm):
    for sets in ([], NAMESPACED):
        for d in template(helm, *sets):
            for rule in d.get("rules", []):
                assert "secrets" not in rule["resources"] and "configmaps" not in rule["resources"], rule
                assert "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"], rule
                if rule["resources"] in (["pods"], ["namespaces"], ["customresourcedefinitions"]):
                    assert rule["verbs"] == ["get", "list", "watch"], rule


def test_operator_deployment_is_hardened(helm):
    docs = template(helm, "prometheus.url=http://prom:9090")
    dep = one(docs, "Deployment")
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert c["command"] == ["tokenfactory"]
    assert c["args"] == ["run", "--metrics-port", "8080", "--health-port", "8081", "--log-format", "json",
                         "--prometheus-url", "http://prom:9090", "--prometheus-timeout", "5",
                         "--lease-namespace", RELEASE_NS, "--lease-name", "tokenfactory-operator", "--lease-duration", "15",
                         "--lease-renew-deadline", "10", "--lease-retry-period", "2", "--concurrency", "8"]
    assert c["image"] == "ghcr.io/tokenfactory/tokenfactory-operator:0.1.0"
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    # kopf calls getpass.getuser(): without USER, a uid with no passwd entry crashes it at start-up
    assert env["USER"] and env["HOME"] == "/tmp"


def test_args_parse_with_the_real_cli(helm):
    """The rendered command line is one `tokenfactory` accepts (no typo in a flag)."""
    from tokenfactory.cli import build_parser

    c = one(template(helm, *NAMESPACED), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(c["args"])
    assert args.command == "run" and args.namespace == ["team-a", "team-b"]
    assert (args.metrics_port, args.health_port, args.log_format) == (8080, 8081, "json")
    assert args.prometheus_url == "http://prometheus.monitoring:9090"


def test_metrics_service_selects_the_operator_pod(helm):
    docs = template(helm)
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


# ----------------------------------------------------------------------------------- namespaced


def test_watch_namespaces_mode(helm):
    docs = template(helm, *NAMESPACED)
    roles = [r for r in by_kind(docs, "Role") if not r["metadata"]["name"].endswith("-leader-election")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for r in roles:
        assert r["rules"] == NAMESPACED_RULES
    bindings = [b for b in by_kind(docs, "RoleBinding") if not b["metadata"]["name"].endswith("-leader-election")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["subjects"][0]["namespace"] == RELEASE_NS and b["roleRef"]["kind"] == "Role"
    # the only cluster-scoped grant is kopf's read-only observation of CRDs and namespaces
    (cr,) = by_kind(docs, "ClusterRole")
    assert cr["rules"] == [CRD_READ, NS_READ]
    (crb,) = by_kind(docs, "ClusterRoleBinding")
    assert crb["roleRef"]["name"] == cr["metadata"]["name"]


def test_observation_grants_can_be_turned_off(helm):
    docs = template(helm, "watchNamespaces={team-a}", "rbac.readCustomResourceDefinitions=false",
                    "rbac.readNamespaces=false")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    docs = template(helm, "rbac.create=false")
    assert not [d for d in docs if d["kind"].endswith(("Role", "RoleBinding"))]


def test_monitoring_objects(helm):
    docs = template(helm, *NAMESPACED)
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["jobLabel"] == "app.kubernetes.io/name"
    svc = one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    # the job label the ServiceMonitor takes from the Service matches the operator-down alerts
    assert re.fullmatch(alerts.OPERATOR_JOB_REGEX, svc["metadata"]["labels"]["app.kubernetes.io/name"])

    pm = one(docs, "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    # the labels render.py puts on every vLLM pod (docs/architecture.md)
    assert pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm",
                                                     "app.kubernetes.io/managed-by": "tokenfactory"}
    ep = pm["spec"]["podMetricsEndpoints"][0]
    assert ep["port"] == "http" and ep["path"] == "/metrics"
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in ep["relabelings"]}
    assert relabel == {
        "namespace": ["__meta_kubernetes_namespace"],
        "pod": ["__meta_kubernetes_pod_name"],
        "factory": ["__meta_kubernetes_pod_label_tokenfactory_dev_factory"],
        "pool": ["__meta_kubernetes_pod_label_tokenfactory_dev_pool"],
        "gpu_type": ["__meta_kubernetes_pod_label_tokenfactory_dev_gpu_type"],
    }

    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == alerts.rules()["groups"]

    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["tokenfactory-dashboard.json"]) == dashboard.dashboard()


def test_pod_monitor_cluster_wide_selects_any_namespace(helm):
    pm = one(template(helm, "podMonitor.enabled=true"), "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"any": True}


def test_monitors_are_off_by_default(helm):
    kinds = {d["kind"] for d in template(helm)}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}


def test_image_digest_and_overrides(helm):
    digest = "sha256:" + "a" * 64
    c = one(template(helm, f"image.digest={digest}", "image.repository=reg.example/tf"), "Deployment")
    assert c["spec"]["template"]["spec"]["containers"][0]["image"] == f"reg.example/tf@{digest}"
    dep = one(template(helm, "fullnameOverride=tf-op", "image.tag=dev"), "Deployment")
    assert dep["metadata"]["name"] == "tf-op"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":dev")


# ------------------------------------------------------------------------------------- schema


@pytest.mark.parametrize(("sets", "message"), [
    (["watchNamespaces={Team_A}"], "/watchNamespaces/0"),
    (["logFormat=xml"], "/logFormat"),
    (["metricsPort=0"], "/metricsPort"),
    (["prometheus.url=prometheus:9090"], "/prometheus/url"),
    (["serviceMonitr.enabled=true"], "serviceMonitr"),
    (["serviceMonitor.interval=soon"], "/serviceMonitor/interval"),
    (["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    (["resources.limits.memory=lots"], "/resources/limits/memory"),
], ids=lambda v: v if isinstance(v, str) else v[0])
def test_bad_values_are_rejected_by_the_schema(helm, sets, message):
    argv = [helm, "template", "tokenfactory", str(CHART)]
    for s in sets:
        argv += ["--set", s]
    res = run(*argv)
    assert res.returncode != 0
    assert "values don't meet the specifications of the schema" in res.stderr
    assert message in res.stderr, res.stderr


# ---------------------------------------------------------------------------------- kustomize


def test_kustomize_base_matches_the_chart(helm, kubectl):
    res = run(kubectl, "kustomize", str(KUSTOMIZE))
    assert res.returncode == 0, res.stderr
    kdocs = [d for d in yaml.safe_load_all(res.stdout) if d]
    kinds = sorted(d["kind"] for d in kdocs)
    assert kinds == sorted(["Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
                            "ClusterRoleBinding", "Deployment", "Service", "Role", "RoleBinding", "PodDisruptionBudget"])
    assert one(kdocs, "CustomResourceDefinition") == yaml.safe_load(CRD.read_text())
    hdocs = template(helm)
    assert one(kdocs, "ClusterRole")["rules"] == one(hdocs, "ClusterRole")["rules"]
    assert one(kdocs, "Role")["rules"] == one(hdocs, "Role")["rules"] == LEASE_RULES
    assert one(kdocs, "RoleBinding")["subjects"] == one(hdocs, "RoleBinding")["subjects"]
    assert one(kdocs, "PodDisruptionBudget")["spec"] == one(hdocs, "PodDisruptionBudget")["spec"]
    kb, hb = one(kdocs, "ClusterRoleBinding"), one(hdocs, "ClusterRoleBinding")
    assert kb["subjects"] == hb["subjects"]
    kpod = one(kdocs, "Deployment")["spec"]["template"]["spec"]
    hpod = one(hdocs, "Deployment")["spec"]["template"]["spec"]
    assert kpod == hpod
    for kind in ("Deployment", "Service", "ServiceAccount"):
        assert one(kdocs, kind)["metadata"]["namespace"] == RELEASE_NS
        assert one(kdocs, kind)["metadata"]["name"] == one(hdocs, kind)["metadata"]["name"]
    assert one(kdocs, "Service")["spec"] == one(hdocs, "Service")["spec"]


def test_pod_monitor_selects_the_pods_render_creates(helm, two_pool_example):
    """The PodMonitor's selector and relabelled pod labels are those render.py puts on vLLM pods."""
    from tokenfactory import api, render

    tf = api.parse_object(two_pool_example)
    owner = render.Owner(name=tf.name, namespace="llm", uid="uid-1")
    deployments = [d for d in render.render(owner, tf.spec) if d["kind"] == "Deployment"]
    assert deployments
    pm = one(template(helm, "podMonitor.enabled=true"), "PodMonitor")
    ep = pm["spec"]["podMetricsEndpoints"][0]
    for dep in deployments:
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert ep["port"] in {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        for r in ep["relabelings"]:
            source = r["sourceLabels"][0]
            if source.startswith("__meta_kubernetes_pod_label_"):
                sanitized = {re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in labels.items()}
                assert source.removeprefix("__meta_kubernetes_pod_label_") in sanitized, source
