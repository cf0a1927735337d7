"""Security on the real control plane (issue 15): the admission policy that checks a TokenFactory's
author (impersonated users, the chart's ValidatingAdmissionPolicy), and vLLM pods admitted in a
namespace that enforces the "restricted" Pod Security Standard."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from harness import CRD, Operator, example_doc, wait_for
from tokenfactory import api, childhealth, render

ALLOWLIST_CRD = CRD.parent / "tokenfactory.dev_tokenfactoryallowlists.yaml"

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tokenfactory"
AUTHORS = "tf-authors"  # the group that may create TokenFactories


@pytest.fixture(scope="module")
def crd(kubectl):
    for path in (CRD, ALLOWLIST_CRD):
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for name in ("tokenfactories", "tokenfactoryallowlists"):
        kubectl("wait", "--for", "condition=Established", f"crd/{name}.tokenfactory.dev", "--timeout=60s")
    return CRD


@pytest.fixture(scope="module")
def helm() -> str:
    from tokenfactory.localcluster import binaries

    binaries.ensure(["helm"], progress=None)
    return str(binaries.binary("helm"))


def render_policy(helm: str, release: str, namespace: str, *sets: str) -> list[dict]:
    argv = [helm, "template", release, str(CHART), "--namespace", namespace,
            "--show-only", "templates/admission-policy.yaml"]
    for s in sets:
        argv += ["--set-json" if s.startswith("json:") else "--set", s.removeprefix("json:")]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def as_user(kubectl, user: str, groups: list[str], *args: str, input: str | None = None):
    who = ["--as", user] + [a for g in groups for a in ("--as-group", g)]
    return kubectl.run(*who, *args, input=input)


def factory(name: str, *, image: str | None = None, env: list[dict] | None = None,
            tolerations: dict[str, list[dict]] | None = None) -> dict:
    doc = example_doc(scaling={"mode": "Off", "interval": "5s"})
    doc["metadata"]["name"] = name
    if image:
        doc["spec"]["engine"]["image"] = image
    if env is not None:
        doc["spec"]["engine"]["env"] = env
    for pool in doc["spec"]["pools"]:
        if tolerations and pool["name"] in tolerations:
            pool["tolerations"] = tolerations[pool["name"]]
    return doc


@pytest.fixture
def policy(helm, kubectl, crd, namespace):
    """The chart's policy, its binding restricted to this test's namespace, and its allow-lists; users
    alice and bob in group tf-authors; alice may read Secret hf-token, nobody may read ConfigMap private."""
    reserved = {"gpuTypes": ["gb300"], "key": "tokenfactory.dev/reserved", "operator": "Equal", "value": "gb300",
                "effect": "NoSchedule"}
    gpu = {"gpuTypes": ["*"], "key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    release = f"sec{uuid.uuid4().hex[:6]}"
    docs = render_policy(
        helm, release, namespace,
        "json:admissionPolicy.namespaceSelector=" + json.dumps({"matchLabels": {"kubernetes.io/metadata.name": namespace}}),
        "json:admissionPolicy.allowedTolerations=" + json.dumps([gpu, reserved]),
    )
    assert sorted(d["kind"] for d in docs) == ["TokenFactoryAllowList", "ValidatingAdmissionPolicy",
                                               "ValidatingAdmissionPolicyBinding"]
    kubectl("create", "secret", "generic", "hf-token", "-n", namespace, "--from-literal=token=hf_secret")
    kubectl("create", "configmap", "private", "-n", namespace, "--from-literal=k=v")
    kubectl("create", "role", "tf-author", "-n", namespace, "--verb=get,list,create,update,patch",
            "--resource=tokenfactories.tokenfactory.dev")
    kubectl("create", "rolebinding", "tf-author", "-n", namespace, "--role=tf-author", f"--group={AUTHORS}")
    kubectl("create", "role", "hf-reader", "-n", namespace, "--verb=get", "--resource=secrets", "--resource-name=hf-token")
    kubectl("create", "rolebinding", "hf-reader", "-n", namespace, "--role=hf-reader", "--user=alice")
    kubectl.apply(docs)
    try:
        # The apiserver loads a new policy asynchronously: wait until it refuses what it must refuse.
        probe = yaml.safe_dump(factory("probe", image="busybox"))
        wait_for(lambda: "spec.engine.image" in kubectl.run("create", "--dry-run=server", "-n", namespace, "-f", "-",
                                                            input=probe).stderr,
                 60, "the admission policy to be active")
        yield {d["kind"]: d for d in docs}
    finally:
        kubectl.run("delete", "tokenfactories", "--all", "-n", namespace, "--timeout=30s")
        for d in docs:
            group = d["apiVersion"].split("/")[0]
            kubectl.run("delete", f"{d['kind'].lower()}.{group}", d["metadata"]["name"], "--ignore-not-found")


HF = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}]


def create_as(kubectl, user, namespace, doc):
    return as_user(kubectl, user, [AUTHORS], "create", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


def test_author_with_the_rights_passes_and_one_without_is_refused(kubectl, namespace, policy):
    ok = create_as(kubectl, "alice", namespace, factory("alice-tf", env=HF))
    assert ok.returncode == 0, ok.stderr
    # bob may create TokenFactories but not read the Secret: the operator must not read it for him
    res = create_as(kubectl, "bob", namespace, factory("bob-tf", env=HF))
    assert res.returncode != 0
    assert ("spec.engine.env[].valueFrom.secretKeyRef: bob may not get every Secret referenced "
            f"(env[name=HF_TOKEN]: Secret {namespace}/hf-token)") in res.stderr, res.stderr
    assert "ValidatingAdmissionPolicy" in res.stderr and "denied request" in res.stderr
    # nobody was given the ConfigMap
    cm = [{"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "private", "key": "k"}}}]
    res = create_as(kubectl, "alice", namespace, factory("alice-cm", env=cm))
    assert ("spec.engine.env[].valueFrom.configMapKeyRef: alice may not get every ConfigMap referenced "
            f"(env[name=CFG]: ConfigMap {namespace}/private)") in res.stderr, res.stderr
    # bob may not rewrite alice's spec (it still hands her Secret to the pods) ...
    res = as_user(kubectl, "bob", [AUTHORS], "patch", "tokenfactory", "alice-tf", "-n", namespace, "--type=merge",
                  '--patch={"spec": {"scaling": {"mode": "Recommend"}}}')
    assert res.returncode != 0 and "bob may not get every Secret referenced" in res.stderr, res.stderr
    # ... but a metadata-only change is no escalation
    res = as_user(kubectl, "bob", [AUTHORS], "label", "tokenfactory", "alice-tf", "-n", namespace, "team=search")
    assert res.returncode == 0, res.stderr
    assert kubectl.json("get", "tokenfactory", "alice-tf", "-n", namespace)["spec"]["scaling"]["mode"] == "Off"


def test_images_and_tolerations_come_from_the_admins_allow_lists(kubectl, namespace, policy):
    res = create_as(kubectl, "alice", namespace, factory("busybox", image="busybox:latest"))
    assert res.returncode != 0
    assert "spec.engine.image: busybox:latest is not allowed; the cluster admin allows: vllm/vllm-openai:*" in res.stderr
    allow = policy["TokenFactoryAllowList"]["metadata"]["name"]
    assert f"(TokenFactoryAllowList {allow}, spec.allowedImages)" in res.stderr, res.stderr
    # a digest of the allowed repository passes
    digest = "vllm/vllm-openai@sha256:" + "a" * 64
    assert create_as(kubectl, "alice", namespace, factory("pinned", image=digest)).returncode == 0

    everything = [{"operator": "Exists"}]
    res = create_as(kubectl, "alice", namespace, factory("tol-all", tolerations={"h200": everything}))
    assert res.returncode != 0
    assert "spec.pools[name=h200].tolerations: * not allowed for gpuType h200" in res.stderr, res.stderr
    # per GPU type: the reserved gb300 taint is allowed on the gb300 pool only
    reserved = [{"key": "tokenfactory.dev/reserved", "operator": "Equal", "value": "gb300", "effect": "NoSchedule"}]
    ok = create_as(kubectl, "alice", namespace, factory("tol-gb300", tolerations={"gb300": reserved}))
    assert ok.returncode == 0, ok.stderr
    res = create_as(kubectl, "alice", namespace, factory("tol-h200", tolerations={"h200": reserved}))
    assert "spec.pools[name=h200].tolerations: tokenfactory.dev/reserved=gb300:NoSchedule not allowed for gpuType h200" \
        in res.stderr, res.stderr


def test_trust_remote_code_needs_the_admins_allow(kubectl, namespace, policy):
    """The author names the model repository (spec.model.name) and the engine's extraArgs: vLLM's
    --trust-remote-code would run that repository's code in the allowed image. Refused, in any form, on the
    shared engine and on a pool override, until the admin's allow-list says allowTrustRemoteCode: true."""
    allow = policy["TokenFactoryAllowList"]["metadata"]["name"]
    assert policy["TokenFactoryAllowList"]["spec"]["allowTrustRemoteCode"] is False  # the chart's default
    doc = factory("trc")
    doc["spec"]["engine"]["extraArgs"] = ["--gpu-memory-utilization", "0.95", "--trust-remote-code"]
    res = create_as(kubectl, "alice", namespace, doc)
    assert res.returncode != 0
    assert ("spec.engine.extraArgs: --trust-remote-code runs code from the model repository (spec.model.name) in "
            f"the vLLM pods; the cluster admin does not allow it (TokenFactoryAllowList {allow}, "
            "spec.allowTrustRemoteCode: true allows it)") in res.stderr, res.stderr
    pooled = factory("trc-pool")
    pooled["spec"]["pools"][0]["engine"] = {"extraArgs": ["--trust_remote_code=true"]}
    res = create_as(kubectl, "alice", namespace, pooled)
    assert res.returncode != 0
    assert f"spec.pools[name={pooled['spec']['pools'][0]['name']}].engine.extraArgs: --trust-remote-code" in res.stderr, \
        res.stderr
    kubectl("patch", "tokenfactoryallowlist", allow, "--type=merge", "-p", '{"spec": {"allowTrustRemoteCode": true}}')
    ok = wait_for(lambda: (r := create_as(kubectl, "alice", namespace, doc)).returncode == 0 and r, 30,
                  "--trust-remote-code admitted once the admin allows it")
    assert ok.returncode == 0


def test_without_its_parameters_the_policy_refuses(kubectl, namespace, policy):
    allow = policy["TokenFactoryAllowList"]["metadata"]["name"]
    kubectl("delete", "tokenfactoryallowlist", allow)
    doc = yaml.safe_dump(factory("no-params"))
    res = wait_for(lambda: (r := kubectl.run("create", "-n", namespace, "-f", "-", input=doc)).returncode != 0 and r,
                   30, "a refusal without the policy's TokenFactoryAllowList")
    assert "no params found for policy binding with `Deny` parameterNotFoundAction" in res.stderr, res.stderr


# ---------------------------------------------------------------------------- restricted namespace


def restricted(kubectl, namespace):
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest")


def test_vllm_pods_are_admitted_in_a_restricted_namespace(cluster, kubectl, crd, namespace, tmp_path):
    restricted(kubectl, namespace)
    doc = example_doc(scaling={"mode": "Off", "interval": "2s"})
    name = doc["metadata"]["name"]
    op = Operator(cluster.kubeconfig, tmp_path, namespaces=[namespace])
    try:
        kubectl.apply(doc, namespace)
        for pool in doc["spec"]["pools"]:
            dep = f"{name}-{pool['name']}"

            def pods_running(dep=dep, want=pool["minReplicas"]):
                d = kubectl.json("get", "deployment", dep, "-n", namespace)
                assert not childhealth.creation_failures([d]), childhealth.creation_failures([d])
                return (d.get("status") or {}).get("readyReplicas", 0) >= want and d

            wait_for(pods_running, 120, f"{dep}: pods created and ready under Pod Security restricted")
        rss = kubectl.json("get", "replicasets", "-n", namespace, "-l", f"tokenfactory.dev/factory={name}")["items"]
        assert rss and not childhealth.creation_failures(rss)
        events = kubectl.json("get", "events", "-n", namespace, "--field-selector", "reason=FailedCreate")["items"]
        assert not events, [e["message"] for e in events]
        for pod in kubectl.json("get", "pods", "-n", namespace, "-l", f"tokenfactory.dev/factory={name}")["items"]:
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
            assert pod["spec"]["securityContext"]["runAsUser"] == render.DEFAULT_UID
        assert "Traceback" not in op.log()
    finally:
        kubectl.run("delete", "tokenfactories", "--all", "-n", namespace, "--timeout=30s")
        op.stop()


def test_without_the_security_context_pod_security_refuses_and_it_is_detected(kubectl, namespace):
    """The control: the same Deployment without TokenFactory's security context is refused in the same kind of
    namespace (FailedCreate), and childhealth reads the apiserver's condition as a PodSecurity failure."""
    restricted(kubectl, namespace)
    spec = api.parse_spec(example_doc()["spec"])
    owner = render.Owner(name="bare", namespace=namespace, uid="0")
    dep = copy.deepcopy(render.render_deployment(owner, spec, spec.pools[1], 1))
    dep["metadata"].pop("ownerReferences")
    pod = dep["spec"]["template"]["spec"]
    pod.pop("securityContext")
    pod["containers"][0].pop("securityContext")
    kubectl.apply(dep)

    def failed():
        d = kubectl.json("get", "deployment", dep["metadata"]["name"], "-n", namespace)
        return childhealth.creation_failures([d])

    (f,) = wait_for(failed, 60, "ReplicaFailure on the Deployment without a security context")
    assert f.cause == "PodSecurity" and "restricted" in f.message, f
    assert childhealth.report([f]).reason == "PodCreationFailed"


def test_per_pool_engine_overrides_are_held_to_the_same_rules(kubectl, namespace, policy):
    """pools[].engine may set its own image and env: the policy checks them like spec.engine's."""
    doc = factory("pool-image")
    doc["spec"]["pools"][0]["engine"] = {"image": "busybox:latest"}
    pool = doc["spec"]["pools"][0]["name"]
    res = create_as(kubectl, "alice", namespace, doc)
    assert res.returncode != 0
    assert f"spec.pools[name={pool}].engine.image: busybox:latest is not allowed" in res.stderr, res.stderr

    doc = factory("pool-env")
    doc["spec"]["pools"][0]["engine"] = {"env": HF}
    res = create_as(kubectl, "bob", namespace, doc)  # bob may not read hf-token
    assert res.returncode != 0
    assert (f"spec.pools[name={pool}].engine.env[].valueFrom: bob may not get every Secret/ConfigMap referenced "
            f"(env[name=HF_TOKEN]: Secret {namespace}/hf-token)") in res.stderr, res.stderr
    ok = create_as(kubectl, "alice", namespace, doc)  # alice may
    assert ok.returncode == 0, ok.stderr
    doc = factory("pool-image-ok")
    doc["spec"]["pools"][0]["engine"] = {"image": "vllm/vllm-openai:v0.11.0-arm64"}
    ok = create_as(kubectl, "alice", namespace, doc)
    assert ok.returncode == 0, ok.stderr


def test_a_namespace_the_binding_leaves_out_is_rechecked_as_unprotected(helm, cluster, kubectl, crd, namespace, tmp_path):
    """The binding's namespaceSelector selects namespaces by a label this namespace lacks, so the policy never
    checks authors here and a Secret reference is admitted; the operator (run as the chart runs it, with
    --admission-policy) reads the selector and the Namespace's labels and refuses it, as without the policy."""
    release = f"sel{uuid.uuid4().hex[:6]}"
    docs = render_policy(helm, release, namespace, "json:admissionPolicy.namespaceSelector=" + json.dumps(
        {"matchLabels": {f"e2e.tokenfactory.dev/{release}": "on"}}))
    vap = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")["metadata"]["name"]
    kubectl.apply(docs)
    op = Operator(cluster.kubeconfig, tmp_path, namespaces=[namespace], extra=["--admission-policy", vap])
    try:
        doc = factory("unchecked", env=HF)
        res = kubectl.run("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
        assert res.returncode == 0, res.stderr  # not selected: the apiserver's policy does not look at it

        def refused():
            obj = kubectl.json("get", "tokenfactory", "unchecked", "-n", namespace)
            return next((c for c in (obj.get("status") or {}).get("conditions", [])
                         if c["type"] == "Degraded" and c["reason"] == "AdmissionPolicyMissing"), None)

        cond = wait_for(refused, 60, "Degraded AdmissionPolicyMissing")
        assert f"does not select namespace {namespace}" in cond["message"], cond["message"]
        assert "secretKeyRef.name: Secret hf-token" in cond["message"], cond["message"]
        assert kubectl.json("get", "deployments", "-n", namespace)["items"] == []
        # label the namespace into the binding: now the allow-list applies (the example passes it) and it is
        # served (the operator's cache of the policy and labels lasts 30 s)
        kubectl("label", "namespace", namespace, f"e2e.tokenfactory.dev/{release}=on")
        wait_for(lambda: kubectl.run("get", "deployment", "unchecked-h200", "-n", namespace).returncode == 0, 90,
                 "served once the binding selects the namespace")
    finally:
        kubectl.run("delete", "tokenfactories", "--all", "-n", namespace, "--timeout=30s")
        op.stop()
        for d in docs:
            group = d["apiVersion"].split("/")[0]
            kubectl.run("delete", f"{d['kind'].lower()}.{group}", d["metadata"]["name"], "--ignore-not-found")
