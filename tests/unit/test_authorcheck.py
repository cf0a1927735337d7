from __future__ import annotations

import copy

from tokenfactory import api, authorcheck

# The chart's default allow-list (charts/tokenfactory/values.yaml)
DEFAULT = api.AllowListSpec.model_validate({
    "allowedImages": ["vllm/vllm-openai:*", "vllm/vllm-openai@sha256:*", "docker.io/vllm/vllm-openai:*"],
    "allowedTolerations": [
        {"gpuTypes": ["*"], "key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"gpuTypes": ["gb300"], "key": "tokenfactory.dev/reserved", "operator": "Equal", "value": "gb300",
         "effect": "NoSchedule"},
    ],
})


def spec_of(example, **engine):
    doc = copy.deepcopy(example["spec"])
    doc["engine"].update(engine)
    return doc


def test_the_shipped_example_passes_the_default_allow_list(two_pool_example):
    spec = api.parse_spec(two_pool_example["spec"])
    assert authorcheck.check(spec, DEFAULT) == []


def test_images_and_tolerations_as_the_policy_words_them(two_pool_example):
    doc = spec_of(two_pool_example, image="busybox:latest")
    doc["pools"][1]["tolerations"] = [{"operator": "Exists"},
                                      {"key": "tokenfactory.dev/reserved", "operator": "Equal", "value": "gb300",
                                       "effect": "NoSchedule"}]
    doc["pools"][0]["tolerations"] = [{"key": "tokenfactory.dev/reserved", "operator": "Equal", "value": "gb300",
                                       "effect": "NoSchedule"}]
    problems = authorcheck.check(api.parse_spec(doc), DEFAULT)
    assert problems == [
        "spec.engine.image: busybox:latest is not allowed; the cluster admin allows: vllm/vllm-openai:*, "
        "vllm/vllm-openai@sha256:*, docker.io/vllm/vllm-openai:*",
        "spec.pools[name=h200].tolerations: *, tokenfactory.dev/reserved=gb300:NoSchedule not allowed for gpuType h200",
    ]
    pinned = api.parse_spec(spec_of(two_pool_example, image="vllm/vllm-openai@sha256:" + "a" * 64))
    assert authorcheck.check(pinned, DEFAULT) == []
    # a prefix is a prefix: "vllm/vllm-openai:*" does not allow another repository that starts alike
    other = api.parse_spec(spec_of(two_pool_example, image="vllm/vllm-openai-evil:1"))
    assert authorcheck.check(other, DEFAULT)[0].startswith("spec.engine.image: vllm/vllm-openai-evil:1")
    assert authorcheck.check(api.parse_spec(two_pool_example["spec"]), api.AllowListSpec())[0].endswith("no image")


def test_references_and_unsafe_fields_without_a_policy(two_pool_example):
    doc = spec_of(two_pool_example, env=[
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PLAIN", "value": "x"},
    ])
    spec = api.parse_spec(doc)
    assert authorcheck.references(spec) == [
        ("spec.engine.env[name=HF_TOKEN].valueFrom.secretKeyRef.name", "Secret", "hf"),
        ("spec.engine.env[name=CFG].valueFrom.configMapKeyRef.name", "ConfigMap", "cfg"),
    ]
    unsafe = authorcheck.unsafe_without_policy(spec)
    assert unsafe[:2] == ["spec.engine.env[name=HF_TOKEN].valueFrom.secretKeyRef.name: Secret hf",
                          "spec.engine.env[name=CFG].valueFrom.configMapKeyRef.name: ConfigMap cfg"]
    assert "spec.pools[name=gb300].tolerations" in unsafe  # the example's pools carry tolerations
    minimal = api.parse_spec({"model": {"name": "m"}, "pools": [{"name": "h200", "gpuType": "h200"}]})
    assert authorcheck.unsafe_without_policy(minimal) == []


import pytest  # noqa: E402


@pytest.mark.parametrize("arg", ["--trust-remote-code", "--trust-remote-code=true", "--trust-remote-code=True",
                                 "--trust_remote_code", "--trust", "--trust-remote"])
def test_trust_remote_code_needs_the_admins_allow(two_pool_example, arg):
    """The author names the model repository (spec.model.name); --trust-remote-code would run its code in the
    vLLM pods: refused unless the allow-list says allowTrustRemoteCode, in any form vLLM's parser takes."""
    doc = spec_of(two_pool_example, extraArgs=["--gpu-memory-utilization", "0.95", arg])
    spec = api.parse_spec(doc)
    (problem,) = authorcheck.check(spec, DEFAULT)
    assert problem.startswith("spec.engine.extraArgs: --trust-remote-code runs code from the model repository")
    assert "spec.allowTrustRemoteCode: true" in problem
    allowed = DEFAULT.model_copy(update={"allow_trust_remote_code": True})
    assert authorcheck.check(spec, allowed) == []
    assert "spec.engine.extraArgs: --trust-remote-code" in authorcheck.unsafe_without_policy(spec)


def test_trust_remote_code_in_a_pool_override_is_named_and_lookalikes_pass(two_pool_example):
    doc = copy.deepcopy(two_pool_example["spec"])
    doc["pools"][1]["engine"] = {"extraArgs": ["--trust-remote-code"]}
    name = doc["pools"][1]["name"]
    (problem,) = authorcheck.check(api.parse_spec(doc), DEFAULT)
    assert problem.startswith(f"spec.pools[name={name}].engine.extraArgs: --trust-remote-code")
    # not the option: another flag, a value that mentions it, the negation
    ok = spec_of(two_pool_example, extraArgs=["--tokenizer-mode", "auto", "--served-model-name", "--trust-remote-code-x",
                                              "--no-trust-remote-code", "-t", "--t"])
    assert authorcheck.check(api.parse_spec(ok), DEFAULT) == []
    assert [a for a in ("--tr", "--trust-remote-code=false") if authorcheck.trusts_remote_code(a)] == [
        "--tr", "--trust-remote-code=false"]  # the flag given at all is refused, whatever its value
