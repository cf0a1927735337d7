from __future__ import annotations

import pytest

from tokenfactory import api, render

OWNER = render.Owner(name="deepseek-r1", namespace="llm", uid="1234")


def rendered(example, replicas=None):
    spec = api.parse_spec(example["spec"])
    return spec, render.render(OWNER, spec, replicas)


def test_one_deployment_per_pool_and_one_service(two_pool_example):
    spec, out = rendered(two_pool_example)
    assert [(m["kind"], m["metadata"]["name"]) for m in out] == [
        ("Deployment", "deepseek-r1-gb300"), ("Deployment", "deepseek-r1-h200"), ("Service", "deepseek-r1")]
    for m in out:
        assert m["metadata"]["namespace"] == "llm"
        (ref,) = m["metadata"]["ownerReferences"]
        assert ref == {"apiVersion": "tokenfactory.dev/v1alpha1", "kind": "TokenFactory", "name": "deepseek-r1",
                       "uid": "1234", "controller": True, "blockOwnerDeletion": True}


def test_vllm_container(two_pool_example):
    _, out = rendered(two_pool_example)
    gb300 = out[0]
    pod = gb300["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "4"
    assert args[args.index("--model") + 1] == "deepseek-ai/DeepSeek-R1"
    assert args[args.index("--served-model-name") + 1] == "deepseek-r1"
    assert args[args.index("--quantization") + 1] == "fp8"
    assert args[args.index("--max-model-len") + 1] == "32768"
    assert args[-2:] == ["--gpu-memory-utilization", "0.95"]  # extraArgs last
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert c["resources"]["requests"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "4"}
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-GB300"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]


def test_labels_selector_and_service(two_pool_example):
    _, out = rendered(two_pool_example)
    h200, svc = out[1], out[2]
    labels = h200["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "deepseek-r1",
        "app.kubernetes.io/component": "inference-pool", "app.kubernetes.io/managed-by": "tokenfactory",
        "tokenfactory.dev/factory": "deepseek-r1", "tokenfactory.dev/pool": "h200", "tokenfactory.dev/gpu-type": "h200"}
    selector = h200["spec"]["selector"]["matchLabels"]
    assert all(labels[k] == v for k, v in selector.items())
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())  # the Service selects every pool
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_replicas_start_at_min_and_are_clamped(two_pool_example):
    _, out = rendered(two_pool_example)
    assert [m["spec"]["replicas"] for m in out[:2]] == [1, 1]
    _, out = rendered(two_pool_example, {"gb300": 9, "h200": 0})
    assert [m["spec"]["replicas"] for m in out[:2]] == [2, 1]  # gb300 max 2, h200 min 1


def test_render_is_pure(two_pool_example):
    assert rendered(two_pool_example)[1] == rendered(two_pool_example)[1]


def _pool_override_spec(**engine):
    from tokenfactory import api as _api

    return _api.parse_spec({
        "model": {"name": "m"},
        "engine": {"image": "base:1", "extraArgs": ["--a"], "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                   "resources": {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "64Gi"}}},
        "pools": [{"name": "arm", "gpuType": "gb300", "engine": engine}, {"name": "x86", "gpuType": "h200"}],
    })


def test_pool_engine_overrides_image_args_env_resources():
    from tokenfactory import render as r

    spec = _pool_override_spec(image="arm:1", extraArgs=["--b"], env=[{"name": "Y", "value": "pool"}, {"name": "Z", "value": "3"}],
                               resources={"requests": {"cpu": "32"}})
    arm, x86, _svc = r.render(r.Owner("f", "ns", "u"), spec)
    ca, cx = arm["spec"]["template"]["spec"]["containers"][0], x86["spec"]["template"]["spec"]["containers"][0]
    assert ca["image"] == "arm:1" and cx["image"] == "base:1"
    assert ca["args"][-2:] == ["--a", "--b"] and cx["args"][-1] == "--a"
    home = {"name": "HOME", "value": r.HOME_DIR}  # the non-root user's writable home comes first
    assert ca["env"] == [home, {"name": "X", "value": "1"}, {"name": "Y", "value": "pool"}, {"name": "Z", "value": "3"}]
    assert cx["env"] == [home, {"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert ca["resources"]["requests"] == {"cpu": "32", "memory": "64Gi", "nvidia.com/gpu": "8"}
    assert cx["resources"]["requests"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "8"}


def test_pool_engine_override_may_not_set_gpus():
    from tokenfactory import api as _api

    with pytest.raises(_api.SpecError) as ei:
        _pool_override_spec(resources={"limits": {"nvidia.com/gpu": 2}})
    assert "spec.pools[0].engine.resources" in str(ei.value) and "nvidia.com/gpu is set from pools[].gpusPerReplica" in str(ei.value)


RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"}}


def pod_specs(out):
    return [m["spec"]["template"]["spec"] for m in out if m["kind"] == "Deployment"]


def test_pods_are_restricted_by_default(two_pool_example):
    """What the restricted Pod Security Standard asks of a pod, and a non-root uid with a writable $HOME."""
    _, out = rendered(two_pool_example)
    for pod in pod_specs(out):
        assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": render.DEFAULT_UID,
                                          "runAsGroup": render.DEFAULT_GID, "fsGroup": render.DEFAULT_GID,
                                          "seccompProfile": {"type": "RuntimeDefault"}}
        (c,) = pod["containers"]
        assert c["securityContext"] == RESTRICTED_CONTAINER
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        # only emptyDir volumes (restricted allows them), one of them the non-root user's home
        assert all(set(v) == {"name", "emptyDir"} for v in pod["volumes"])
        assert {"name": "home", "mountPath": render.HOME_DIR} in c["volumeMounts"]
        assert {"name": "HOME", "value": render.HOME_DIR} in c["env"]
        assert pod["automountServiceAccountToken"] is False


def test_security_context_ids_are_overridable_within_the_safe_subset(two_pool_example):
    doc = two_pool_example["spec"]
    doc["engine"]["securityContext"] = {"runAsUser": 2000, "runAsGroup": 0, "fsGroup": 3000}
    doc["engine"]["env"] = [{"name": "HOME", "value": "/models"}]
    _, out = rendered(two_pool_example)
    for pod in pod_specs(out):
        sc = pod["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"], sc["runAsNonRoot"]) == (2000, 0, 3000, True)
        (c,) = pod["containers"]
        assert c["securityContext"] == RESTRICTED_CONTAINER
        assert [e for e in c["env"] if e["name"] == "HOME"] == [{"name": "HOME", "value": "/models"}]
    for bad in ({"runAsUser": 0}, {"privileged": True}, {"runAsNonRoot": False}, {"capabilities": {"add": ["NET_ADMIN"]}}):
        doc["engine"]["securityContext"] = bad
        try:
            api.parse_spec(doc)
        except api.SpecError as err:
            assert all(p.startswith("spec.engine.securityContext") for p in err.problems), err.problems
        else:
            raise AssertionError(f"accepted {bad}")


def test_env_sources_are_rendered_as_kubernetes_env(two_pool_example):
    two_pool_example["spec"]["engine"]["env"] = [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    _, out = rendered(two_pool_example)
    (c,) = pod_specs(out)[0]["containers"]
    assert c["env"][1:] == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
                            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
