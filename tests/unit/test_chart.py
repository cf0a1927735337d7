"""The Helm chart (charts/tokenfactory) and the kustomize base (deploy/kustomize/base), rendered offline
with the real helm (built by build-binaries.sh) and kubectl kustomize: lint, default and non-default
values, schema rejections, least-privilege RBAC, hardened operator pod, CRD copies, monitoring objects."""

from __future__ import annotations

import json
import os
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
ALLOWLIST_CRD = ROOT / "crds" / "tokenfactory.dev_tokenfactoryallowlists.yaml"
CRD_COPIES = [CHART / "crds" / CRD.name, KUSTOMIZE / CRD.name]
ALLOWLIST_COPIES = [CHART / "crds" / ALLOWLIST_CRD.name, KUSTOMIZE / ALLOWLIST_CRD.name]
RELEASE_NS = "tokenfactory-system"

# What the operator does, per kind (handlers.py, kube.py): nothing more.
NAMESPACED_RULES = [
    {"apiGroups": ["tokenfactory.dev"], "resources": ["tokenfactories"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": ["tokenfactory.dev"], "resources": ["tokenfactories/status"], "verbs": ["patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
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

# issue 15: the operator reads the author-rights policy, its binding and its allow-list, by name only
ADMISSION_READ = [
    {"apiGroups": ["admissionregistration.k8s.io"],
     "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings"],
     "resourceNames": ["tokenfactory-author-rights"], "verbs": ["get"]},
    {"apiGroups": ["tokenfactory.dev"], "resources": ["tokenfactoryallowlists"], "resourceNames": ["tokenfactory"],
     "verbs": ["get"]},
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


@pytest.mark.parametrize("copy", ALLOWLIST_COPIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_allowlist_crd_copies_are_identical(copy):
    from tokenfactory import crd

    assert ALLOWLIST_CRD.read_text() == crd.crd_yaml("TokenFactoryAllowList"), "run `make crd`"
    assert copy.read_bytes() == ALLOWLIST_CRD.read_bytes(), f"{copy} differs from {ALLOWLIST_CRD}: run `make crd`"


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
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Role",
                     "RoleBinding", "Service", "ServiceAccount", "TokenFactoryAllowList", "ValidatingAdmissionPolicy",
                     "ValidatingAdmissionPolicyBinding"]
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                             "ValidatingAdmissionPolicyBinding", "TokenFactoryAllowList"):
            assert d["metadata"]["namespace"] == RELEASE_NS, d["kind"]
    role = one(docs, "ClusterRole")
    assert role["rules"] == NAMESPACED_RULES + ADMISSION_READ + [CRD_READ]
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
    assert args[args.index("--lease-duration") + 1] == "15" and "--no-leader-elect" not in args
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # the Lease is in the pod's own namespace (runner.lease_namespace reads $POD_NAMESPACE): overlay-safe
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
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
                if rule["resources"] in (["namespaces"], ["customresourcedefinitions"]):
                    assert rule["verbs"] == ["get", "list", "watch"], rule
                if rule["resources"] == ["pods"]:
                    assert rule["verbs"] == ["list", "watch"], rule


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
    assert c["args"] == ["run", "--metrics-port", "8080", "--metrics-address", "0.0.0.0", "--health-port", "8081",
                         "--health-address", "0.0.0.0", "--log-format", "json",
                         "--prometheus-url", "http://prom:9090", "--prometheus-timeout", "5",
                         "--lease-name", "tokenfactory-operator", "--lease-duration", "15",
                         "--lease-renew-deadline", "10", "--lease-retry-period", "2", "--concurrency", "8",
                         "--admission-policy", "tokenfactory-author-rights"]
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


def test_network_policy_admits_only_prometheus_to_the_metrics_port(helm):
    """Ingress only (egress to the apiserver and Prometheus stays open), one rule: the metrics port from
    exactly networkPolicy.metricsFrom, whose default needs both the monitoring namespace and the
    Prometheus pod label (a label alone can be worn by any pod a tenant creates)."""
    docs = template(helm)
    np = one(docs, "NetworkPolicy")["spec"]
    assert np["podSelector"]["matchLabels"].items() <= one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    assert np["policyTypes"] == ["Ingress"] and "egress" not in np
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    metrics_port = next(p for p in container["ports"] if p["name"] == "metrics")
    assert metrics_port["containerPort"] == 8080
    assert np["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]}]
    # the value is what lands in `from`
    mine = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "obs"}},
            "podSelector": {"matchLabels": {"app": "prom"}}}
    res = run(helm, "template", "t", str(CHART), "--set-json", f"networkPolicy.metricsFrom={json.dumps([mine])}")
    assert res.returncode == 0, res.stderr
    (np,) = [d["spec"] for d in yaml.safe_load_all(res.stdout) if d and d["kind"] == "NetworkPolicy"]
    assert np["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [mine]}]
    # an empty list admits nobody: no rule at all (a rule with `from: []` would admit every source)
    res = run(helm, "template", "t", str(CHART), "--set-json", "networkPolicy.metricsFrom=[]")
    assert res.returncode == 0, res.stderr
    (np,) = [d["spec"] for d in yaml.safe_load_all(res.stdout) if d and d["kind"] == "NetworkPolicy"]
    assert np["ingress"] == [] and np["policyTypes"] == ["Ingress"]
    assert not [d for d in template(helm, "networkPolicy.enabled=false") if d["kind"] == "NetworkPolicy"]


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
    assert cr["rules"] == ADMISSION_READ + [CRD_READ, NS_READ]
    (crb,) = by_kind(docs, "ClusterRoleBinding")
    assert crb["roleRef"]["name"] == cr["metadata"]["name"]


def test_observation_grants_can_be_turned_off(helm):
    docs = template(helm, "watchNamespaces={team-a}", "rbac.readCustomResourceDefinitions=false",
                    "rbac.readNamespaces=false")
    (cr,) = by_kind(docs, "ClusterRole")  # what remains cluster-wide: reading the admission policy, by name
    assert cr["rules"] == ADMISSION_READ
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
    # the target labels the operator alerts select by are copied from the Service's own labels
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in sm["spec"]["endpoints"][0]["relabelings"]}
    for target, value in alerts.OPERATOR_LABELS.items():
        (source,) = relabel[target]
        k8s_label = next(k for k in svc["metadata"]["labels"]
                         if "__meta_kubernetes_service_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k) == source)
        assert svc["metadata"]["labels"][k8s_label] == value, target

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


def test_values_list_every_alert_with_its_defaults():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["prometheusRule"]["alerts"] == alerts.chart_values()


def test_prometheus_rule_tuned_from_values(helm, tmp_path):
    """Disable one alert, change another's severity, for and threshold, add labels and a runbook
    base: the rendered rules say so, and promtool shows the tuned threshold in effect."""
    values = tmp_path / "values.yaml"  # a file: `--set x=1.5` would make a string of 1.5
    values.write_text(yaml.safe_dump({"prometheusRule": {
        "enabled": True, "additionalRuleLabels": {"team": "ml-platform"}, "runbookBaseUrl": "https://wiki.example/tf",
        "alerts": {"TokenFactoryOperatorAbsent": {"enabled": False},
                   "TokenFactoryCostPerMillionTokensOverObjective": {"severity": "critical", "for": "30m",
                                                                     "threshold": 1.5},
                   "TokenFactoryPoolReplicasUnavailable": {"threshold": 3}}}}))
    res = run(helm, "template", "tokenfactory", str(CHART), "--namespace", RELEASE_NS, "-f", str(values))
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    rules = {r["alert"]: r for r in one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]}
    defaults = {r["alert"]: r for r in alerts.rules()["groups"][0]["rules"]}
    assert set(rules) == set(defaults) - {"TokenFactoryOperatorAbsent"}
    cost = rules["TokenFactoryCostPerMillionTokensOverObjective"]
    assert cost["for"] == "30m" and cost["labels"] == {"severity": "critical", "team": "ml-platform"}
    by_name = {a.name: a for a in alerts.alerts()}
    assert cost["expr"] == by_name["TokenFactoryCostPerMillionTokensOverObjective"].expr_for(1.5)
    assert rules["TokenFactoryPoolReplicasUnavailable"]["expr"] == by_name[
        "TokenFactoryPoolReplicasUnavailable"].expr_for(3)
    for name, r in rules.items():
        assert r["annotations"]["runbook_url"] == f"https://wiki.example/tf#{name.lower()}"
        if name not in ("TokenFactoryCostPerMillionTokensOverObjective", "TokenFactoryPoolReplicasUnavailable"):
            assert r["expr"] == defaults[name]["expr"] and r["for"] == defaults[name]["for"], name
    # the rendered file is a valid rules file, and the tuned threshold is what fires
    from test_dashboard import FACTORY, FIRING, _expect, _promtool_test

    doc = {"groups": one(docs, "PrometheusRule")["spec"]["groups"]}
    longer = [{**x, "values": x["values"].replace("x30", "x60")} for x in FIRING["input_series"]]
    cost_2x = {**FIRING, "input_series": longer, "alert_rule_test": [
        _expect("40m", "TokenFactoryCostPerMillionTokensOverObjective",
                {"severity": "critical", "team": "ml-platform", **FACTORY}),
        _expect("25m", "TokenFactoryCostPerMillionTokensOverObjective"),  # for 30m now
        _expect("40m", "TokenFactoryPoolReplicasUnavailable"),  # 2 short < threshold 3
    ]}
    res = _promtool_test(tmp_path, doc, [cost_2x])
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(("sets", "message"), [
    (["prometheusRule.alerts.TokenFactoryOverBudget.severity=page"], "/prometheusRule/alerts/TokenFactoryOverBudget/severity"),
    (["prometheusRule.alerts.TokenFactoryOverBudget.for=ten"], "/prometheusRule/alerts/TokenFactoryOverBudget/for"),
    (["prometheusRule.alerts.TokenFactoryMetricsMissing.threshold=2"], "/prometheusRule/alerts/TokenFactoryMetricsMissing"),
    (["prometheusRule.alerts.TokenFactoryOverBudgt.enabled=false"], "TokenFactoryOverBudgt"),
], ids=["severity", "for", "no-threshold", "typo"])
def test_bad_alert_settings_are_rejected(helm, sets, message):
    argv = [helm, "template", "tokenfactory", str(CHART)]
    for s in sets:
        argv += ["--set", s]
    res = run(*argv)
    assert res.returncode != 0 and message in res.stderr, res.stderr


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
    assert kinds == sorted(["Namespace", "CustomResourceDefinition", "CustomResourceDefinition", "ServiceAccount",
                            "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "NetworkPolicy", "TokenFactoryAllowList",
                            "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "Role", "RoleBinding",
                            "PodDisruptionBudget"])
    assert sorted((d for d in by_kind(kdocs, "CustomResourceDefinition")), key=lambda d: d["metadata"]["name"]) == [
        yaml.safe_load(CRD.read_text()), yaml.safe_load(ALLOWLIST_CRD.read_text())]
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
    assert one(kdocs, "NetworkPolicy")["spec"] == one(hdocs, "NetworkPolicy")["spec"]
    # the admission policy, its binding and its parameters: the same as the chart's
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        assert one(kdocs, kind)["metadata"]["name"] == one(hdocs, kind)["metadata"]["name"]
        assert one(kdocs, kind)["spec"] == one(hdocs, kind)["spec"], kind
    kal, hal = one(kdocs, "TokenFactoryAllowList"), one(hdocs, "TokenFactoryAllowList")
    assert (kal["metadata"]["name"], kal["spec"]) == (hal["metadata"]["name"], hal["spec"])
    # (kustomize, not knowing the kind is cluster-scoped, adds its namespace; the apiserver ignores it)


@pytest.mark.parametrize("overlay", [
    {"namespace": "platform-ops"},
    {"namespace": "platform-ops", "namePrefix": "acme-"},
], ids=["namespace", "namespace+namePrefix"])
def test_kustomize_overlay_moves_the_operator_and_its_binding(kubectl, tmp_path, overlay):
    """An overlay that sets another namespace (and a name prefix) moves the ServiceAccount, and the
    ClusterRoleBinding's subject follows it: otherwise the operator is refused every call."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(KUSTOMIZE, tmp_path)], **overlay}))
    res = run(kubectl, "kustomize", str(tmp_path))
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    ns = overlay["namespace"]
    sa = one(docs, "ServiceAccount")["metadata"]
    assert sa["namespace"] == ns
    assert one(docs, "Namespace")["metadata"]["name"] == ns
    (subject,) = one(docs, "ClusterRoleBinding")["subjects"]
    assert subject == {"kind": "ServiceAccount", "name": sa["name"], "namespace": ns}
    assert one(docs, "ClusterRoleBinding")["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    dep = one(docs, "Deployment")
    assert dep["metadata"]["namespace"] == ns and one(docs, "Service")["metadata"]["namespace"] == ns
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["name"]
    assert not [d["kind"] for d in docs if d["metadata"].get("namespace") not in (None, ns)]
    assert "tokenfactory-system" not in res.stdout


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


def test_notes_point_only_at_what_a_packaged_chart_has(helm, tmp_path):
    """NOTES.txt is shown after `helm install` of a packaged chart: it may name files of that package
    (or URLs), not paths of this repository (it used to send users to deploy/examples/)."""
    import tarfile

    res = run(helm, "package", str(CHART), "-d", str(tmp_path))
    assert res.returncode == 0, res.stderr
    (tgz,) = tmp_path.glob("tokenfactory-*.tgz")
    with tarfile.open(tgz) as tar:
        packaged = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    paths = re.findall(r"(?<![\w/.:-])((?:deploy|docs|crds|charts|hack|operator|tests|bench|files)/[\w.-][\w./-]*)", notes)
    assert not [p for p in paths if p.rstrip("/") not in packaged and not any(
        f.startswith(p) for f in packaged)], paths
    assert "https://github.com/tokenfactory/tokenfactory/tree/main/deploy/examples" in notes
    assert (ROOT / "deploy" / "examples").is_dir()


# -------------------------------------------------------------------------- admission policy


def test_admission_policy_checks_the_author(helm):
    from tokenfactory import api

    docs = template(helm)
    vap, binding, allow = (one(docs, k) for k in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                                                   "TokenFactoryAllowList"))
    assert vap["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    spec = vap["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["paramKind"] == {"apiVersion": "tokenfactory.dev/v1alpha1", "kind": "TokenFactoryAllowList"}
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["tokenfactories"] and rule["operations"] == ["CREATE", "UPDATE"]
    text = json.dumps(spec)
    for needed in ("authorizer.group('').resource('secrets')", "authorizer.group('').resource('configmaps')",
                   "check('get').allowed()", "params.spec.allowedImages", "params.spec.allowedTolerations",
                   "request.userInfo.username"):
        assert needed in text, needed
    messages = " ".join(v["messageExpression"] for v in spec["validations"])
    for field in ("spec.engine.env[].valueFrom.secretKeyRef: ", "spec.engine.env[].valueFrom.configMapKeyRef: ",
                  "spec.engine.image: ", "spec.pools[name="):
        assert field in messages, field
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["paramRef"] == {"name": allow["metadata"]["name"], "parameterNotFoundAction": "Deny"}
    assert "matchResources" not in binding["spec"]  # every namespace by default
    # the default allow-list is valid for its CRD's schema and lets the shipped examples through
    allowed = api.AllowListSpec.model_validate(allow["spec"])
    assert allowed.allowed_images == ["vllm/vllm-openai:*", "vllm/vllm-openai@sha256:*", "docker.io/vllm/vllm-openai:*"]
    assert [(t.key, t.operator, t.value, t.effect) for t in allowed.allowed_tolerations] == [
        ("nvidia.com/gpu", "Exists", None, "NoSchedule"), ("nvidia.com/gpu", "Equal", "present", "NoSchedule")]


def test_admission_policy_options(helm):
    binding = one(template(helm, "watchNamespaces={team-a,team-b}"), "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]}
    binding = one(template(helm, "admissionPolicy.namespaceSelector.matchLabels.tier=gpu"), "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {"matchLabels": {"tier": "gpu"}}
    docs = template(helm, "admissionPolicy.enabled=false")
    assert not {d["kind"] for d in docs} & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                                            "TokenFactoryAllowList"}
    res = run(helm, "template", "tokenfactory", str(CHART), "--set", "admissionPolicy.allowedTolerations[0].operator=Any")
    assert res.returncode != 0 and "/admissionPolicy/allowedTolerations/0" in res.stderr, res.stderr
