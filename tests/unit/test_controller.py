"""The reconcile pipeline (children and replica status) against the in-memory KubeClient."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from tokenfactory.pipeline import FactoryMemory, Reconciler
from tokenfactory.kube import FakeKube

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def factory(example, generation=1):
    obj = copy.deepcopy(example)
    obj["metadata"].update(namespace="llm", uid="uid-tf", generation=generation)
    return obj


def with_status(kube, obj):
    obj = copy.deepcopy(obj)
    obj["status"] = copy.deepcopy(kube.statuses.get(("llm", obj["metadata"]["name"]), {}))
    return obj


def conds(kube, name="deepseek-r1"):
    return {c["type"]: c for c in kube.statuses[("llm", name)]["conditions"]}


@pytest.fixture
def kube():
    return FakeKube()


async def test_creates_children_then_is_idempotent(kube, two_pool_example):
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    events = await rec.reconcile(obj, mem, NOW)
    assert sorted(k for k in kube.objects) == [
        ("Deployment", "llm", "deepseek-r1-gb300"), ("Deployment", "llm", "deepseek-r1-h200"), ("Service", "llm", "deepseek-r1")]
    # one Service over a 24,000 tok/s gb300 replica and a 720 tok/s h200 replica: routing warns (once)
    assert [e.reason for e in events] == ["Created", "Created", "UnevenCapacity"]
    status = kube.statuses[("llm", "deepseek-r1")]
    assert status["observedGeneration"] == 1 and status["replicas"] == "0/2"
    assert conds(kube)["Ready"]["status"] == "False" and conds(kube)["Progressing"]["status"] == "True"
    # nothing changed: a second pass writes nothing new and says nothing
    rv = {k: o["metadata"]["resourceVersion"] for k, o in kube.objects.items()}
    patches = sum(1 for c in kube.calls if c[0] == "patch_status")
    events = await rec.reconcile(with_status(kube, obj), mem, NOW)
    assert events == [] and rv == {k: o["metadata"]["resourceVersion"] for k, o in kube.objects.items()}
    assert sum(1 for c in kube.calls if c[0] == "patch_status") == patches


async def test_ready_when_pools_ready_and_gpus_counted(kube, two_pool_example):
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    await rec.reconcile(obj, mem, NOW)
    kube.set_deployment_status("llm", "deepseek-r1-gb300", ready=1)
    kube.set_deployment_status("llm", "deepseek-r1-h200", ready=1)
    labels = {"tokenfactory.dev/factory": "deepseek-r1", "app.kubernetes.io/managed-by": "tokenfactory"}
    kube.add_pod("llm", "gb-1", {**labels, "tokenfactory.dev/pool": "gb300"}, gpus=4)
    kube.add_pod("llm", "h-1", {**labels, "tokenfactory.dev/pool": "h200"}, gpus=8)
    kube.add_pod("llm", "h-2", {**labels, "tokenfactory.dev/pool": "h200"}, gpus=8, node=None, ready=False)  # pending: not paid for
    await rec.reconcile(with_status(kube, obj), mem, NOW + dt.timedelta(seconds=5))
    status = kube.statuses[("llm", "deepseek-r1")]
    assert conds(kube)["Ready"]["status"] == "True" and conds(kube)["Ready"]["reason"] == "AllPoolsReady"
    assert conds(kube)["Progressing"]["status"] == "False"
    assert status["replicas"] == "2/2" and status["gpus"] == 12
    assert {p["name"]: p["gpus"] for p in status["pools"]} == {"gb300": 4, "h200": 8}
    assert conds(kube)["Ready"]["lastTransitionTime"] == "2026-11-23T12:00:05Z"


async def test_spec_update_rolls_and_removed_pool_is_deleted(kube, two_pool_example):
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    await rec.reconcile(obj, mem, NOW)
    obj2 = factory(two_pool_example, generation=2)
    obj2["spec"]["model"]["maxModelLen"] = 16384
    obj2["spec"]["pools"] = [p for p in obj2["spec"]["pools"] if p["name"] == "gb300"]
    events = await rec.reconcile(with_status(kube, obj2), mem, NOW)
    assert ("Deployment", "llm", "deepseek-r1-h200") not in kube.objects
    args = kube.objects[("Deployment", "llm", "deepseek-r1-gb300")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-model-len") + 1] == "16384"
    reasons = sorted(e.reason for e in events)
    assert reasons == ["Deleted", "Updated"]
    assert kube.statuses[("llm", "deepseek-r1")]["observedGeneration"] == 2
    assert [p["name"] for p in kube.statuses[("llm", "deepseek-r1")]["pools"]] == ["gb300"]


async def test_deleted_or_edited_child_is_restored(kube, two_pool_example):
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    await rec.reconcile(obj, mem, NOW)
    del kube.objects[("Deployment", "llm", "deepseek-r1-h200")]
    kube.edit("Deployment", "llm", "deepseek-r1-gb300",
              lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="evil:latest"))
    events = await rec.reconcile(with_status(kube, obj), mem, NOW)
    assert ("Deployment", "llm", "deepseek-r1-h200") in kube.objects
    image = kube.objects[("Deployment", "llm", "deepseek-r1-gb300")]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "vllm/vllm-openai:v0.11.0"
    assert sorted(e.reason for e in events) == ["Created", "Updated"]


async def test_invalid_spec_sets_degraded_and_touches_nothing(kube, two_pool_example):
    rec, mem = Reconciler(kube), FactoryMemory()
    obj = factory(two_pool_example)
    obj["spec"]["pools"][1]["gpuType"] = "mi355x"
    del obj["spec"]["pools"][1]["pricePerGpuHour"]
    events = await rec.reconcile(obj, mem, NOW)
    assert kube.objects == {}
    c = conds(kube)
    assert c["Degraded"]["status"] == "True" and c["Degraded"]["reason"] == "InvalidSpec"
    assert "spec.pools[1].pricePerGpuHour" in c["Degraded"]["message"]
    assert c["Ready"]["status"] == "False"
    assert [e.type for e in events] == ["Warning"] and len(kube.events) == 1
    # the same problem again: status kept, no second Event (no event storm while the user fixes it)
    await rec.reconcile(with_status(kube, obj), mem, NOW)
    assert len(kube.events) == 1


async def test_replicas_survive_restart_via_status_and_follow_bounds(kube, two_pool_example):
    rec, obj = Reconciler(kube), factory(two_pool_example)
    await rec.reconcile(obj, FactoryMemory(desired={"h200": 5}), NOW)
    assert kube.objects[("Deployment", "llm", "deepseek-r1-h200")]["spec"]["replicas"] == 5
    # a fresh operator (empty memory) keeps 5 from status instead of resetting to minReplicas
    await rec.reconcile(with_status(kube, obj), FactoryMemory(), NOW)
    assert kube.objects[("Deployment", "llm", "deepseek-r1-h200")]["spec"]["replicas"] == 5
    obj2 = factory(two_pool_example, generation=2)
    obj2["spec"]["pools"][1]["maxReplicas"] = 3
    await rec.reconcile(with_status(kube, obj2), FactoryMemory(), NOW)
    assert kube.objects[("Deployment", "llm", "deepseek-r1-h200")]["spec"]["replicas"] == 3


async def test_unschedulable_pods_mark_degraded(kube, two_pool_example):
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    await rec.reconcile(obj, mem, NOW)
    labels = {"tokenfactory.dev/factory": "deepseek-r1", "app.kubernetes.io/managed-by": "tokenfactory",
              "tokenfactory.dev/pool": "gb300"}
    kube.add_pod("llm", "gb-1", labels, gpus=4, node=None, ready=False, unschedulable=True)
    await rec.reconcile(with_status(kube, obj), mem, NOW)
    c = conds(kube)
    assert c["Degraded"]["status"] == "True" and c["Degraded"]["reason"] == "Unschedulable"
    assert "pool gb300" in c["Degraded"]["message"] and "Insufficient nvidia.com/gpu" in c["Degraded"]["message"]


async def test_apply_failure_is_reported_not_raised(kube, two_pool_example):
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    kube.fail_next_apply = RuntimeError("admission webhook denied")
    await rec.reconcile(obj, mem, NOW)
    c = conds(kube)
    assert c["Degraded"]["reason"] == "ApplyFailed" and "admission webhook denied" in c["Degraded"]["message"]


async def test_throughput_profile_condition_says_when_sheet_figures_are_for_another_model(kube, two_pool_example):
    rec = Reconciler(kube)
    await rec.reconcile(factory(two_pool_example), FactoryMemory(), NOW)
    same = conds(kube)["ThroughputProfile"]
    assert same["status"] == "True" and same["reason"] == "MatchesModel"

    other = factory(two_pool_example)
    other["metadata"]["name"] = "llama"
    other["spec"]["model"]["name"] = "meta-llama/Llama-3.1-70B-Instruct"
    await rec.reconcile(other, FactoryMemory(), NOW)
    c = conds(kube, "llama")["ThroughputProfile"]
    assert c["status"] == "False" and c["reason"] == "SheetProfileForOtherModel"
    assert "Llama-3.1-70B" in c["message"] and "gb300" in c["message"] and "h200" in c["message"]


async def test_pods_refused_by_the_apiserver_make_the_factory_degraded_with_one_warning(kube, two_pool_example):
    """A Deployment exists but its ReplicaSet cannot create pods (here: Pod Security): not 'all children applied'."""
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    await rec.reconcile(obj, mem, NOW)
    dep = kube.objects[("Deployment", "llm", "deepseek-r1-h200")]
    dep["status"] = {"replicas": 0, "conditions": [{
        "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
        "message": 'pods "deepseek-r1-h200-abc" is forbidden: violates PodSecurity "restricted:latest": '
                   "allowPrivilegeEscalation != false"}]}
    events = await rec.reconcile(with_status(kube, obj), mem, NOW)
    degraded = conds(kube)["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "PodCreationFailed"
    assert "deepseek-r1-h200" in degraded["message"] and "PodSecurity" in degraded["message"]
    warnings = [e for e in events if e.type == "Warning" and e.reason == "PodCreationFailed"]
    assert len(warnings) == 1 and "deepseek-r1-h200" in warnings[0].message
    emitted = [e for e in kube.events if e["reason"] == "PodCreationFailed"]
    assert len(emitted) == 1
    await rec.reconcile(with_status(kube, obj), mem, NOW)  # the same failure again: no second Event
    assert len([e for e in kube.events if e["reason"] == "PodCreationFailed"]) == 1
    dep = kube.objects[("Deployment", "llm", "deepseek-r1-h200")]
    dep["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    await rec.reconcile(with_status(kube, obj), mem, NOW)
    assert conds(kube)["Degraded"]["reason"] != "PodCreationFailed"
