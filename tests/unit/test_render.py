from __future__ import annotations

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
    assert pod["nodeSelector"] == {"tokenfactory.dev/node-pool": "gb300"}
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
