"""The Helm chart, the Grafana dashboard and the alerts, on the real local control plane and a real Prometheus.

* The rendered chart (CRD, RBAC, operator Deployment, metrics Service, ServiceMonitor, PodMonitor,
  PrometheusRule, dashboard ConfigMap) is applied for real into a namespace that enforces the
  "restricted" Pod Security Standard; the prometheus-operator CRDs are the real ones (v0.85.0, read
  from the Go module of prometheus-operator), so the apiserver validates the monitoring objects.
* The operator's ServiceAccount can do what the operator needs and is refused Secrets
  (``kubectl auth can-i --as system:serviceaccount:NS:NAME``), cluster-wide and per namespace; in
  watchNamespaces mode the real operator runs with that ServiceAccount's token and reconciles a
  TokenFactory end to end (children, status, events, finalizer) without a single Forbidden.
* With the operator and the simulator running and Prometheus scraping both (and loading the
  generated alert rules), every dashboard panel query and template variable, and every alert's
  data expressions, return data for the test's namespace; every rule evaluates without error.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from harness import Operator, Stack, example_doc, wait_for
from tokenfactory import alerts, dashboard
from tokenfactory.localcluster.prometheus import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tokenfactory"
DASHBOARD_FILE = ROOT / "deploy" / "grafana" / "tokenfactory-dashboard.json"
ALERTS_FILE = ROOT / "deploy" / "prometheus" / "tokenfactory-alerts.yaml"
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
MONITORING_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")
MONITORS_ON = ["serviceMonitor.enabled=true", "podMonitor.enabled=true", "prometheusRule.enabled=true",
               "grafanaDashboard.enabled=true"]
WINDOW = 10

# (verb, resource) the operator needs in every namespace it watches (handlers.py, kube.py).
NEEDED = [
    ("get", "tokenfactories.tokenfactory.dev"), ("list", "tokenfactories.tokenfactory.dev"),
    ("watch", "tokenfactories.tokenfactory.dev"), ("patch", "tokenfactories.tokenfactory.dev"),
    ("get", "tokenfactories.tokenfactory.dev:status"), ("patch", "tokenfactories.tokenfactory.dev:status"),
    ("update", "tokenfactories.tokenfactory.dev:status"),
    *[(v, "deployments.apps") for v in ("get", "list", "watch", "create", "patch", "update", "delete")],
    *[(v, "services") for v in ("get", "list", "watch", "create", "patch", "update", "delete")],
    ("get", "pods"), ("list", "pods"), ("watch", "pods"),
    ("create", "events"), ("patch", "events"), ("create", "events.events.k8s.io"),
    *[(v, r) for r in ("httproutes.gateway.networking.k8s.io", "inferencepools.inference.networking.k8s.io")
      for v in ("get", "list", "watch", "create", "patch", "delete")],
]
REFUSED = [
    ("get", "secrets"), ("list", "secrets"), ("watch", "secrets"), ("create", "secrets"),
    ("get", "configmaps"), ("delete", "pods"), ("create", "pods"), ("delete", "tokenfactories.tokenfactory.dev"),
    ("create", "tokenfactories.tokenfactory.dev"), ("create", "pods:exec"), ("create", "serviceaccounts:token"),
    ("update", "pods:status"), ("update", "deployments.apps:scale"),
    ("create", "roles.rbac.authorization.k8s.io"), ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("update", "httproutes.gateway.networking.k8s.io"), ("create", "gateways.gateway.networking.k8s.io"),
    ("update", "inferencepools.inference.networking.k8s.io"),
]
CLUSTER_REFUSED = [("list", "nodes"), ("create", "customresourcedefinitions.apiextensions.k8s.io"),
                   ("create", "clusterrolebindings.rbac.authorization.k8s.io"), ("create", "namespaces"),
                   ("delete", "namespaces")]


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def helm() -> str:
    from tokenfactory.localcluster import binaries

    binaries.ensure(["helm"], progress=None)  # builds it (with Go) when missing; fails loudly
    return str(binaries.binary("helm"))


@pytest.fixture(scope="session")
def monitoring_crds(kubectl) -> list[str]:
    """The real prometheus-operator CRDs for ServiceMonitor, PodMonitor and PrometheusRule."""
    go = shutil.which("go")
    assert go, "Go is needed to fetch the prometheus-operator CRDs (its Go module) - run `make setup`"
    res = subprocess.run([go, "mod", "download", "-json", PROMETHEUS_OPERATOR], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    crd_dir = Path(json.loads(res.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    names = []
    for plural in MONITORING_CRDS:
        kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", "tokenfactory-e2e", "-f",
                str(crd_dir / f"monitoring.coreos.com_{plural}.yaml"), timeout=120)
        names.append(f"{plural}.monitoring.coreos.com")
    for name in names:
        kubectl("wait", "--for", "condition=Established", f"crd/{name}", "--timeout=60s")
    return names


@pytest.fixture
def extra_namespace(kubectl):
    name = f"e2e-chart-watched-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    wait_for(lambda: kubectl.run("get", "serviceaccount", "default", "-n", name).returncode == 0, 30,
             f"default ServiceAccount in {name}")
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false")


# ------------------------------------------------------------------------------------ helpers


def render(helm: str, release: str, namespace: str, *sets: str) -> list[dict]:
    argv = [helm, "template", release, str(CHART), "--namespace", namespace, "--include-crds"]
    for s in sets:
        argv += ["--set", s]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def install(kubectl, docs: list[dict]) -> None:
    """Apply the rendered chart for real (CRDs first, as helm does) and check every object is there, as rendered."""
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    if crds:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(crds), timeout=120)
        for d in crds:
            kubectl("wait", "--for", "condition=Established", f"crd/{d['metadata']['name']}", "--timeout=60s")
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([d for d in docs if d not in crds]), timeout=120)
    for d in docs:
        ns = ["-n", d["metadata"]["namespace"]] if d["metadata"].get("namespace") else []
        kind = d["kind"].lower() + ("." + d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else "")
        obj = kubectl.json("get", kind, d["metadata"]["name"], *ns)
        assert obj["metadata"]["labels"].items() >= (d["metadata"].get("labels") or {}).items(), d["kind"]
        if d["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
            # the apiserver's structural schema pruned nothing: every rendered field was accepted
            assert obj["spec"] == d["spec"], f"{d['kind']}: the apiserver dropped or changed fields"


def can_i(kubectl, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    """``resource`` may name a subresource after a colon: ``tokenfactories.tokenfactory.dev:status``."""
    ns = ["-n", namespace] if namespace else []
    resource, _, sub = resource.partition(":")
    subresource = [f"--subresource={sub}"] if sub else []
    res = kubectl.run("auth", "can-i", verb, resource, *subresource, "--as", user, *ns)
    answer = res.stdout.strip()
    assert answer in ("yes", "no"), res.stdout + res.stderr
    return answer == "yes"


def check_rbac(kubectl, user: str, allowed_ns: list[str | None], denied_ns: list[str]) -> None:
    problems = []
    for ns in allowed_ns:
        problems += [f"cannot {v} {r} in {ns or 'all namespaces'}" for v, r in NEEDED if not can_i(kubectl, user, v, r, ns)]
        problems += [f"may {v} {r} in {ns or 'all namespaces'}" for v, r in REFUSED if can_i(kubectl, user, v, r, ns)]
    for ns in denied_ns:
        problems += [f"may {v} {r} in unwatched {ns}" for v, r in NEEDED if can_i(kubectl, user, v, r, ns)]
    problems += [f"may {v} {r}" for v, r in CLUSTER_REFUSED if can_i(kubectl, user, v, r, None)]
    # kopf's read-only observation of the cluster
    for v in ("list", "watch"):
        if not can_i(kubectl, user, v, "customresourcedefinitions.apiextensions.k8s.io", None):
            problems.append(f"cannot {v} CRDs")
    assert not problems, "\n".join(problems)


def service_account(docs: list[dict]) -> tuple[str, str]:
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    return sa["metadata"]["namespace"], sa["metadata"]["name"]


def delete_cluster_scoped(kubectl, docs: list[dict]) -> None:
    for d in docs:
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            kubectl.run("delete", d["kind"].lower(), d["metadata"]["name"], "--ignore-not-found")
        if d["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "TokenFactoryAllowList"):
            group = d["apiVersion"].split("/")[0]
            kubectl.run("delete", f"{d['kind'].lower()}.{group}", d["metadata"]["name"], "--ignore-not-found")


# ------------------------------------------------------------------------------- chart install


def test_chart_installs_cluster_wide(helm, kubectl, namespace, monitoring_crds):
    release = f"tf{uuid.uuid4().hex[:6]}"
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest")
    docs = render(helm, release, namespace, *MONITORS_ON, "prometheus.url=http://prometheus.monitoring:9090")
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "CustomResourceDefinition", "Deployment",
                     "PodDisruptionBudget", "PodMonitor", "PrometheusRule", "Role", "RoleBinding", "Service",
                     "ServiceAccount", "ServiceMonitor", "TokenFactoryAllowList", "ValidatingAdmissionPolicy",
                     "ValidatingAdmissionPolicyBinding"]
    try:
        install(kubectl, docs)
        (dep,) = [d for d in docs if d["kind"] == "Deployment"]
        name = dep["metadata"]["name"]
        # The operator pod is admitted under the "restricted" Pod Security Standard, scheduled (on the
        # CPU pool: no GPU toleration) and reported Ready by kwok.
        kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=120s", timeout=130)
        pods = kubectl.json("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"]
        assert len(pods) == 2  # two replicas; leader election picks the one that acts
        pod = pods[0]
        assert pod["spec"]["serviceAccountName"] == service_account(docs)[1]
        assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        node = kubectl.json("get", "node", pod["spec"]["nodeName"])
        assert "nvidia.com/gpu" not in node["status"].get("capacity", {})
        # the metrics Service resolves to the operator pod
        (svc,) = [d for d in docs if d["kind"] == "Service"]
        eps = wait_for(lambda: kubectl.json("get", "endpoints", svc["metadata"]["name"], "-n", namespace).get("subsets"),
                       60, "metrics Service endpoints")
        assert eps[0]["ports"][0] == {"name": "metrics", "port": 8080, "protocol": "TCP"}
        # dashboard ConfigMap for Grafana's sidecar
        (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]
        live = kubectl.json("get", "configmap", cm["metadata"]["name"], "-n", namespace)
        assert live["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(live["data"]["tokenfactory-dashboard.json"]) == json.loads(DASHBOARD_FILE.read_text())

        sa_ns, sa_name = service_account(docs)
        user = f"system:serviceaccount:{sa_ns}:{sa_name}"
        check_rbac(kubectl, user, allowed_ns=[namespace, "default", None], denied_ns=[])
    finally:
        delete_cluster_scoped(kubectl, docs)


def _sa_kubeconfig(cluster, kubectl, sa_ns: str, sa_name: str, path: Path) -> Path:
    token = kubectl("create", "token", sa_name, "-n", sa_ns, "--duration=1h").strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server, "certificate-authority": str(cluster.ca_file)}}],
        "users": [{"name": sa_name, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": sa_name, "namespace": sa_ns}}],
        "current-context": "sa",
    }))
    return path


FORBIDDEN = re.compile(r"forbidden|\b403\b|not enough permissions", re.I)


def test_operator_runs_with_the_chart_service_account(cluster, helm, kubectl, namespace, extra_namespace, tmp_path):
    """watchNamespaces mode: the real operator, authenticated as the chart's ServiceAccount, reconciles a
    TokenFactory in the watched namespace (Deployments, Service, status, events, finalizer, deletion)."""
    watched = extra_namespace
    release = f"tf{uuid.uuid4().hex[:6]}"
    docs = render(helm, release, namespace, f"watchNamespaces={{{watched}}}")
    assert {d["kind"] for d in docs} == {"CustomResourceDefinition", "ServiceAccount", "Role", "RoleBinding",
                                         "ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
                                         "PodDisruptionBudget", "TokenFactoryAllowList", "ValidatingAdmissionPolicy",
                                         "ValidatingAdmissionPolicyBinding"}
    try:
        install(kubectl, docs)
        sa_ns, sa_name = service_account(docs)
        user = f"system:serviceaccount:{sa_ns}:{sa_name}"
        check_rbac(kubectl, user, allowed_ns=[watched], denied_ns=[namespace, "default"])
        for v in ("list", "watch"):
            assert can_i(kubectl, user, v, "namespaces", None), f"kopf cannot {v} namespaces"

        kubeconfig = _sa_kubeconfig(cluster, kubectl, sa_ns, sa_name, tmp_path / "sa.kubeconfig")
        # The SA kubeconfig itself is refused what the operator must not do.
        sa = subprocess.run([kubectl_binary(), "--kubeconfig", str(kubeconfig), "get", "secrets", "-n", watched],
                            capture_output=True, text=True, timeout=30)
        assert sa.returncode != 0 and "forbidden" in sa.stderr.lower(), sa.stdout + sa.stderr

        # leader election: the Lease in the release namespace, by name, and nothing else there
        for verb in ("get", "update"):
            assert can_i(kubectl, user, verb, "leases.coordination.k8s.io/tokenfactory-operator", namespace)
        assert not can_i(kubectl, user, "get", "leases.coordination.k8s.io/kube-scheduler", namespace)
        assert not can_i(kubectl, user, "update", "leases.coordination.k8s.io/tokenfactory-operator", watched)
        op = Operator(kubeconfig, tmp_path, namespaces=[watched], extra=["--lease-namespace", namespace])
        try:
            doc = example_doc(scaling={"mode": "Off", "interval": "2s"})
            kubectl.apply(doc, watched)
            name = doc["metadata"]["name"]
            for pool in ("gb300", "h200"):
                wait_for(lambda p=pool: kubectl.run("get", "deployment", f"{name}-{p}", "-n", watched).returncode == 0,
                         60, f"Deployment {name}-{pool} created by the operator")
            wait_for(lambda: kubectl.run("get", "service", name, "-n", watched).returncode == 0, 60, "Service")
            # routing under the same RBAC: an HTTPRoute, then a switch to an InferencePool (which deletes the route)
            kubectl.apply(example_doc(scaling={"mode": "Off", "interval": "2s"},
                                      routing={"mode": "HTTPRoute", "gateway": {"name": "gw"}}), watched)
            wait_for(lambda: kubectl.run("get", "httproute", name, "-n", watched).returncode == 0, 60, "HTTPRoute")
            kubectl.apply(example_doc(scaling={"mode": "Off", "interval": "2s"},
                                      routing={"mode": "InferencePool", "endpointPicker": {"name": "epp"}}), watched)
            wait_for(lambda: kubectl.run("get", "inferencepool", name, "-n", watched).returncode == 0
                     and kubectl.run("get", "httproute", name, "-n", watched).returncode != 0, 60,
                     "InferencePool in, HTTPRoute out")
            tf = wait_for(lambda: (o := kubectl.json("get", "tokenfactory", name, "-n", watched)).get("status", {})
                          .get("conditions") and o, 60, "status written by the operator")
            assert "became leader" in op.log()
            assert not tf["metadata"].get("finalizers")  # nothing to block deletion: children go by owner references
            wait_for(lambda: kubectl.json("get", "events", "-n", watched, "--field-selector",
                                          "involvedObject.kind=TokenFactory")["items"], 60,
                     "an Event recorded by the operator")
            # deletion completes (no finalizer), the children are garbage-collected
            kubectl("delete", "tokenfactory", name, "-n", watched, "--timeout=60s", timeout=70)
            assert op.alive(), op.log()[-3000:]
            log = op.log()
            bad = [line for line in log.splitlines() if FORBIDDEN.search(line)]
            assert not bad, "operator hit RBAC refusals:\n" + "\n".join(bad[:20])
        finally:
            op.stop()
    finally:
        kubectl.run("delete", "tokenfactories", "--all", "-n", watched, "--timeout=30s")
        delete_cluster_scoped(kubectl, docs)


def kubectl_binary() -> str:
    from tokenfactory.localcluster import binaries

    return str(binaries.binary("kubectl"))


# ------------------------------------------------------------------- dashboard and alert queries


class RulesPrometheus(PrometheusServer):
    """A Prometheus that also loads rule files (the generated alerts)."""

    def __init__(self, *args, rule_files: list[Path], **kwargs):
        super().__init__(*args, **kwargs)
        self.rule_files = [str(p) for p in rule_files]

    def config(self) -> dict:
        return {**super().config(), "rule_files": self.rule_files}


@pytest.fixture
def rules_prometheus(tmp_path):
    prom = RulesPrometheus(tmp_path / "prometheus", targets=[], scrape_interval="2s", rule_files=[ALERTS_FILE])
    prom.start()
    yield prom
    prom.stop()


def template_variable_queries(model: dict) -> list[tuple[str, str]]:
    """label_values(SELECTOR, LABEL) -> count by (LABEL) (SELECTOR)."""
    out = []
    for v in model["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["query"]["query"], re.S)
        assert m, v["query"]
        out.append((f"variable {v['name']}", f"count by ({m.group(2)}) ({m.group(1)})"))
    return out


def test_every_dashboard_query_and_alert_expression_returns_data(cluster, kubectl, namespace, rules_prometheus,
                                                                  tmp_path):
    prom = rules_prometheus
    # 3,000 tok/s, then 40,000 from t=20 s (one GB300 replica carries 24,000): the planner scales GB300 up,
    # so the scaling-decisions counter exists too.
    stack = Stack(cluster, kubectl, prom, namespace, tmp_path, trace="step:3000,40000@20",
                  sim_args=["--window", str(WINDOW), "--tick", "0.5"])
    try:
        doc = example_doc(scaling={"mode": "Auto", "interval": "2s", "scaleDownStabilization": "20s"},
                          metrics={"window": f"{WINDOW}s", "prometheusUrl": prom.url})
        for pool in doc["spec"]["pools"]:
            pool["startupSeconds"] = 0  # kwok pods are Ready at once; the simulator adds no load delay either
        kubectl.apply(doc, namespace)
        prom.wait_targets_up(["vllm", "tokenfactory-operator"], timeout=60)
        wait_for(lambda: stack.condition("MetricsAvailable").get("status") == "True", 120, "MetricsAvailable=True")

        model = json.loads(DASHBOARD_FILE.read_text())
        queries = [(title, dashboard.expand(e, {"namespace": namespace})) for title, e in dashboard.panel_queries(model)]
        queries += [(t, dashboard.expand(e, {"namespace": namespace})) for t, e in template_variable_queries(model)]
        assert len(queries) >= 25

        file_rules = {r["alert"]: r for r in yaml.safe_load(ALERTS_FILE.read_text())["groups"][0]["rules"]}
        assert set(file_rules) == {a.name for a in alerts.alerts()}
        alert_queries = []
        for a in alerts.alerts():
            for e in a.data_exprs:
                assert e in file_rules[a.name]["expr"], (a.name, e)
                alert_queries.append((f"alert {a.name}", e))

        operator_instance = f"127.0.0.1:{stack.operator.metrics_port}"

        def ours(series: dict) -> bool:
            labels = series["metric"]
            if labels.get("namespace") == namespace:
                return True
            return labels.get("job") == "tokenfactory-operator" and labels.get("instance") == operator_instance

        def empty() -> list[str]:
            missing = []
            for title, q in queries + alert_queries:
                try:
                    result = prom.query(q)
                except Exception as err:  # noqa: BLE001 - a query error is a failure, reported below
                    missing.append(f"{title}: ERROR {err}: {q}")
                    continue
                # dashboard queries are restricted to our namespace by $namespace; the alerts' data
                # expressions are not, so they must return our factory's (or our operator's) series
                if not result or (title.startswith("alert") and not any(map(ours, result))):
                    missing.append(f"{title}: no data: {q}")
            return missing

        last: list[str] = []

        def all_have_data() -> bool:
            nonlocal last
            last = empty()
            return not last

        try:
            wait_for(all_have_data, 180, "every dashboard query and alert data expression to return data", interval=3)
        except AssertionError:
            pytest.fail("queries without data after 180s:\n" + "\n".join(last) + "\n--- operator log tail ---\n"
                        + stack.operator.log()[-3000:])

        # Every full alert expression evaluates (firing or not), and Prometheus evaluated every loaded rule.
        for a in alerts.alerts():
            prom.query(file_rules[a.name]["expr"])

        def rules_ok():
            groups = httpx.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            assert len(rules) == len(file_rules)
            bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
            assert not bad, bad
            return True

        wait_for(rules_ok, 30, "all alert rules evaluated with health ok", interval=1)
        # The scale-up the planner decided shows on the dashboard's decisions panel.
        up = prom.query(f'tokenfactory_scaling_decisions_total{{namespace="{namespace}"}}')
        assert up and sum(float(s["value"][1]) for s in up) >= 1
    finally:
        stack.close()
