"""Issue 15, operator side: no SSRF, planner time budget, metrics edge cases, child drift, RBAC."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from test_measure import NAME, NS, Rig

from tokenfactory.exporter import FakeExporter
from tokenfactory.kube import FakeKube
from tokenfactory.metrics_source import FakeMetricsSource, SourcesByUrl
from tokenfactory.pipeline import FactoryMemory, Reconciler

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


# ------------------------------------------------------------------------------ item 2: no SSRF


class Recording(FakeMetricsSource):
    pass


def ssrf_rig(example, spec_url, allowed=frozenset(), default="http://prometheus.monitoring:9090"):
    rig = Rig(example)
    rig.obj["spec"]["metrics"]["prometheusUrl"] = spec_url
    rig.sources = {u: Recording() for u in {spec_url, default, *allowed}}
    rig.rec = Reconciler(rig.kube, sources=SourcesByUrl(preset=rig.sources), exporter=FakeExporter(),
                         default_prometheus_url=default, allowed_prometheus_urls=frozenset(allowed))
    return rig


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://db.llm.svc:5432",
                                 "https://kubernetes.default.svc"])
async def test_spec_prometheus_url_outside_the_allow_list_is_never_fetched(two_pool_example, url):
    rig = ssrf_rig(two_pool_example, url, allowed={"http://thanos.monitoring:9090"})
    await rig.step()
    events = await rig.step()
    assert rig.sources[url].calls == []  # nothing was fetched from the user's URL
    assert rig.sources["http://prometheus.monitoring:9090"].calls == []  # nor silently from another one
    cond = rig.cond("MetricsAvailable")
    assert cond["status"] == "False" and cond["reason"] == "PrometheusURLNotAllowed"
    assert "spec.metrics.prometheusUrl" in cond["message"] and "allow-list" in cond["message"]
    assert [e.reason for e in events if e.type == "Warning"] == ["MetricsUnavailable"]


async def test_spec_prometheus_url_on_the_allow_list_is_read(two_pool_example):
    allowed = "http://thanos.monitoring:9090"
    rig = ssrf_rig(two_pool_example, allowed + "/", allowed={allowed})
    rig.sources[allowed].set_pool(NS, NAME, "gb300", generation_tokens_per_second=1000.0)
    await rig.step()
    await rig.step()
    assert rig.sources[allowed].calls and rig.cond("MetricsAvailable")["status"] == "True"
    assert rig.sources["http://prometheus.monitoring:9090"].calls == []


async def test_without_spec_url_the_operators_prometheus_is_read(two_pool_example):
    rig = ssrf_rig(two_pool_example, "http://prometheus.monitoring:9090")
    del rig.obj["spec"]["metrics"]["prometheusUrl"]
    rig.sources["http://prometheus.monitoring:9090"].set_pool(NS, NAME, "gb300", generation_tokens_per_second=1000.0)
    await rig.step()
    await rig.step()
    assert rig.cond("MetricsAvailable")["status"] == "True"


# ------------------------------------------------------------------ item 5: children stay as written

from tokenfactory import drift, render  # noqa: E402
from tokenfactory import api  # noqa: E402


def rendered_pod(example):
    spec = api.parse_spec(example["spec"])
    dep = render.render(render.Owner("deepseek-r1", "llm", "uid"), spec)[0]
    return dep["spec"]["template"]["spec"]


def defaulted(pod):
    """What the apiserver stores: defaults filled in (not drift)."""
    pod = copy.deepcopy(pod)
    pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst", schedulerName="default-scheduler", securityContext={})
    for c in pod["containers"]:
        c.update(terminationMessagePath="/dev/termination-log", imagePullPolicy="IfNotPresent")
    for v in pod.get("volumes", []):
        v.get("emptyDir", {}).setdefault("medium", "Memory")
    return pod


def test_defaults_are_not_drift(two_pool_example):
    pod = rendered_pod(two_pool_example)
    assert drift.pod_spec_drift(pod, defaulted(pod)) == []


@pytest.mark.parametrize("edit, field", [
    (lambda p: p["containers"].append({"name": "miner", "image": "busybox"}), "containers[miner] (added)"),
    (lambda p: p.update(hostNetwork=True), "spec.template.spec.hostNetwork"),
    (lambda p: p.update(hostPID=True), "spec.template.spec.hostPID"),
    (lambda p: p["containers"][0].update(securityContext={"privileged": True}), "containers[vllm].securityContext"),
    (lambda p: p.update(securityContext={"runAsUser": 0}), "spec.template.spec.securityContext"),
    (lambda p: p["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "spec.template.spec.volumes"),
    (lambda p: p["containers"][0].setdefault("volumeMounts", []).append({"name": "host", "mountPath": "/host"}),
     "containers[vllm].volumeMounts"),
    (lambda p: p["containers"][0].update(image="evil/vllm"), "containers[vllm].image"),
    (lambda p: p["containers"][0].setdefault("env", []).append({"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}),
     "containers[vllm].env"),
    (lambda p: p.update(serviceAccountName="admin"), "spec.template.spec.serviceAccountName"),
    (lambda p: p.update(initContainers=[{"name": "init", "image": "busybox"}]), "spec.template.spec.initContainers"),
])
def test_security_relevant_edits_are_drift(two_pool_example, edit, field):
    pod = rendered_pod(two_pool_example)
    live = defaulted(pod)
    edit(live)
    found = drift.pod_spec_drift(pod, live)
    assert len(found) == 1 and found[0].endswith(field), found


async def test_hand_edited_child_is_reverted_with_a_warning(two_pool_example):
    from test_controller import factory

    kube = FakeKube()
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    await rec.reconcile(obj, mem, T0)
    # what issue 15 saw persist: an extra container, privileged, hostNetwork, added by another manager
    kube.edit_pod_spec("llm", "deepseek-r1-gb300", {"hostNetwork": True, "containers": [{"name": "sidecar", "image": "busybox"}]})
    events = await rec.reconcile(obj, mem, T0 + dt.timedelta(seconds=5))
    pod = kube.objects[("Deployment", "llm", "deepseek-r1-gb300")]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["vllm"] and "hostNetwork" not in pod
    (warn,) = [e for e in events if e.type == "Warning"]
    assert warn.reason == "DriftReverted" and "deepseek-r1-gb300" in warn.message
    assert "containers[sidecar] (added)" in warn.message and "spec.template.spec.hostNetwork" in warn.message
    # reverted: the next pass finds nothing to revert
    again = await rec.reconcile(obj, mem, T0 + dt.timedelta(seconds=10))
    assert [e for e in again if e.reason == "DriftReverted"] == []
    assert ("replace_pod_spec", "Deployment", "llm", "deepseek-r1-h200") not in kube.calls
