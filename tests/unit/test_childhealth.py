from __future__ import annotations

from tokenfactory import childhealth

# The condition the Deployment controller copied from a ReplicaSet refused by Pod Security (as the
# apiserver returned it for a vLLM pod without a securityContext in a "restricted" namespace).
PSA = ('pods "deepseek-r1-h200-5d8f7c9b4-x2x9q" is forbidden: violates PodSecurity "restricted:latest": '
       'allowPrivilegeEscalation != false (container "vllm" must set securityContext.allowPrivilegeEscalation=false), '
       'unrestricted capabilities (container "vllm" must set securityContext.capabilities.drop=["ALL"]), '
       'runAsNonRoot != true (pod or container "vllm" must set securityContext.runAsNonRoot=true), '
       'seccompProfile (pod or container "vllm" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')


def deployment(name, *conditions):
    return {"kind": "Deployment", "metadata": {"name": name}, "status": {"conditions": list(conditions)}}


def test_pod_security_refusal_is_reported_as_degraded_with_the_cause():
    deps = [
        deployment("deepseek-r1-gb300", {"type": "Available", "status": "True"}),
        deployment("deepseek-r1-h200", {"type": "Available", "status": "False"},
                   {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": PSA}),
    ]
    (f,) = childhealth.creation_failures(deps)
    assert (f.kind, f.name, f.cause) == ("Deployment", "deepseek-r1-h200", "PodSecurity")
    r = childhealth.report([f])
    assert r.reason == "PodCreationFailed"
    assert r.message.startswith("Deployment deepseek-r1-h200: PodSecurity: pods ")
    assert r.events == [("PodCreationFailed", r.message)]


def test_quota_other_causes_long_messages_and_healthy_objects():
    quota = 'pods "x" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=8, used: 8, limited: 8'
    rs = {"kind": "ReplicaSet", "metadata": {"name": "a-1"},
          "status": {"conditions": [{"type": "ReplicaFailure", "status": "True", "message": quota}]}}
    other = deployment("b", {"type": "ReplicaFailure", "status": "True", "message": "x" * 5000})
    cleared = deployment("c", {"type": "ReplicaFailure", "status": "False", "message": quota})
    fs = childhealth.creation_failures([rs, other, cleared, {"kind": "Deployment", "metadata": {"name": "d"}}])
    assert [(f.name, f.cause) for f in fs] == [("a-1", "QuotaExceeded"), ("b", "FailedCreate")]
    assert len(fs[1].message) == childhealth.MAX_MESSAGE and fs[1].message.endswith("...")
    assert childhealth.report([]) is None
