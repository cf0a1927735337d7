"""Issue 14 in the small: ownership (NameConflict), no writes at steady state, the shared children cache,
the work queue, leader election on a Lease and the batched metrics, all against in-memory fakes."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import logging
from typing import Any

import httpx
import pytest

from tokenfactory.controller import Controller
from tokenfactory.informer import Store
from tokenfactory.kube import FakeKube
from tokenfactory.leader import AlwaysLeader, LeaseElector
from tokenfactory.metrics_batch import BatchedSource, batch_queries, fan_out, parse_grouped
from tokenfactory.metrics_source import PROMETHEUS_UNREACHABLE, MetricsUnavailable, PrometheusSource
from tokenfactory.pipeline import FactoryMemory, Reconciler
from tokenfactory.pipeline.actuate import contains

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
WRITES = ("create", "apply", "delete", "patch_status")


def factory(example, name="deepseek-r1", uid="uid-tf"):
    obj = copy.deepcopy(example)
    obj["metadata"].update(name=name, namespace="llm", uid=uid, generation=1)
    return obj


def with_status(kube, obj):
    obj = copy.deepcopy(obj)
    obj["status"] = copy.deepcopy(kube.statuses.get(("llm", obj["metadata"]["name"]), {}))
    return obj


def writes(kube):
    return [c for c in kube.calls if c[0] in WRITES]


# ------------------------------------------------------------------------------------- ownership


async def test_name_conflict_leaves_a_foreign_service_alone(two_pool_example):
    kube = FakeKube()
    shop = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "shop", "namespace": "llm", "uid": "uid-shop", "resourceVersion": "7", "labels": {"app": "shop"}},
            "spec": {"selector": {"app": "shop"}, "ports": [{"port": 80}]}}
    kube.objects[("Service", "llm", "shop")] = copy.deepcopy(shop)
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example, name="shop")
    events = await rec.reconcile(obj, mem, NOW)
    assert kube.objects[("Service", "llm", "shop")] == shop  # untouched: same selector, same everything
    assert ("apply", "Service", "llm", "shop") not in kube.calls
    conds = {c["type"]: c for c in kube.statuses[("llm", "shop")]["conditions"]}
    assert conds["Degraded"]["status"] == "True" and conds["Degraded"]["reason"] == "NameConflict"
    assert "Service llm/shop" in conds["Degraded"]["message"]
    warning = [e for e in events if e.reason == "NameConflict"]
    assert len(warning) == 1 and warning[0].type == "Warning" and "Service llm/shop" in warning[0].message
    # the Deployments (free names) were created, owned by the factory
    dep = kube.objects[("Deployment", "llm", "shop-gb300")]
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-tf"
    # a second pass repeats no Warning Event and still leaves the Service alone
    events = await rec.reconcile(with_status(kube, obj), mem, NOW)
    assert [e for e in kube.events if e["reason"] == "NameConflict"] == [
        {"name": "shop", "type": "Warning", "reason": "NameConflict", "message": warning[0].message}]
    assert kube.objects[("Service", "llm", "shop")] == shop


async def test_a_child_owned_by_another_factory_is_a_conflict(two_pool_example):
    kube = FakeKube()
    rec, mem = Reconciler(kube), FactoryMemory()
    await rec.reconcile(factory(two_pool_example, uid="uid-old"), mem, NOW)
    before = copy.deepcopy(kube.objects)
    # a TokenFactory of the same name but another uid (the old one's children are not GC'd yet)
    obj = factory(two_pool_example, uid="uid-new")
    await Reconciler(kube).reconcile(obj, FactoryMemory(), NOW)
    assert kube.objects == before
    degraded = next(c for c in kube.statuses[("llm", "deepseek-r1")]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "NameConflict" and "TokenFactory/deepseek-r1" in degraded["message"]


async def test_removed_pool_is_deleted_only_when_owned(two_pool_example):
    kube = FakeKube()
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    await rec.reconcile(obj, mem, NOW)
    # someone else's Deployment wearing our labels, for a pool not in the spec
    intruder = copy.deepcopy(kube.objects[("Deployment", "llm", "deepseek-r1-h200")])
    intruder["metadata"].update(name="deepseek-r1-a100", ownerReferences=[])
    intruder["metadata"]["labels"]["tokenfactory.dev/pool"] = "a100"
    kube.objects[("Deployment", "llm", "deepseek-r1-a100")] = intruder
    one_pool = with_status(kube, obj)
    one_pool["spec"]["pools"] = [p for p in one_pool["spec"]["pools"] if p["name"] == "gb300"]
    await rec.reconcile(one_pool, mem, NOW)
    assert ("Deployment", "llm", "deepseek-r1-a100") in kube.objects  # not ours: never deleted
    assert ("Deployment", "llm", "deepseek-r1-h200") not in kube.objects  # ours: deleted


# --------------------------------------------------------------------------------- no churn


async def test_steady_state_sends_no_writes(two_pool_example):
    kube = FakeKube()
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    await rec.reconcile(obj, mem, NOW)
    assert [c[0] for c in writes(kube)].count("create") == 3
    kube.calls.clear()
    for _ in range(3):
        await rec.reconcile(with_status(kube, obj), mem, NOW)
    assert writes(kube) == []
    # someone scales a Deployment by hand: exactly one apply puts it back
    kube.edit("Deployment", "llm", "deepseek-r1-h200", lambda d: d["spec"].update(replicas=5))
    await rec.reconcile(with_status(kube, obj), mem, NOW)
    assert [c for c in writes(kube) if c[0] != "patch_status"] == [("apply", "Deployment", "llm", "deepseek-r1-h200")]
    assert kube.objects[("Deployment", "llm", "deepseek-r1-h200")]["spec"]["replicas"] == 1


def test_contains_ignores_defaults_but_not_changes():
    desired = {"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "vllm", "ports": [{"containerPort": 8000}]}]}}}}
    live = copy.deepcopy(desired)
    live["spec"]["revisionHistoryLimit"] = 10
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    assert contains(live, desired)
    live["spec"]["replicas"] = 2
    assert not contains(live, desired)
    live["spec"]["replicas"] = 1
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    assert not contains(live, desired)


# ------------------------------------------------------------------------------ children cache


def dep(ns, name, factory, rv="1"):
    return {"kind": "Deployment", "metadata": {"namespace": ns, "name": name, "resourceVersion": rv,
                                               "labels": {"tokenfactory.dev/factory": factory}}}


def test_store_indexes_by_factory_and_relist_drops_what_was_deleted_meanwhile():
    s = Store("Deployment")
    s.upsert(dep("a", "f-x", "f"))
    s.upsert(dep("a", "f-y", "f"))
    s.upsert(dep("a", "g-x", "g"))
    s.upsert(dep("b", "f-x", "f"))
    assert [o["metadata"]["name"] for o in s.list("a", {"tokenfactory.dev/factory": "f"})] == ["f-x", "f-y"]
    # a re-list of namespace a after a watch outage: f-y was deleted, g-x changed, f-x unchanged
    changed = s.replace("a", [dep("a", "f-x", "f"), dep("a", "g-x", "g", rv="2")])
    assert changed == {("a", "f"), ("a", "g")}
    assert [o["metadata"]["name"] for o in s.list("a", {"tokenfactory.dev/factory": "f"})] == ["f-x"]
    assert s.list("b", {"tokenfactory.dev/factory": "f"})[0]["metadata"]["name"] == "f-x"  # other namespace kept


# ------------------------------------------------------------------------------------ work queue


class Gate:
    def __init__(self, leader: bool):
        self.is_leader = leader


async def test_queue_reconciles_only_when_leading_and_backs_off_per_factory(two_pool_example):
    kube = FakeKube()
    gate = Gate(False)
    ctl = Controller(Reconciler(kube), gate, concurrency=2)
    ctl.start()
    try:
        ctl.upsert(factory(two_pool_example))
        await ctl.drain()
        assert kube.objects == {} and ctl.passes == 0  # a follower does nothing
        gate.is_leader = True
        await asyncio.sleep(0.5)  # the leadership loop notices and queues every factory
        await ctl.drain()
        assert ("Deployment", "llm", "deepseek-r1-h200") in kube.objects
        # a pass that raises (the status write fails) is retried with backoff, the loop survives
        real_patch = kube.patch_status

        async def fail_once(*a):
            kube.patch_status = real_patch
            raise RuntimeError("apiserver said no")

        kube.patch_status = fail_once
        kube.edit("Deployment", "llm", "deepseek-r1-h200", lambda d: d["spec"].update(replicas=3))
        ctl.child_changed("llm", "deepseek-r1")
        await asyncio.sleep(0.7)  # child events are coalesced for 0.5 s
        await ctl.drain()
        assert ctl._next[("llm", "deepseek-r1")] - ctl._clock() <= 1.0  # retried within the first backoff (1 s)
        await asyncio.sleep(1.2)
        await ctl.drain()
        assert kube.objects[("Deployment", "llm", "deepseek-r1-h200")]["spec"]["replicas"] == 1
    finally:
        await ctl.stop()


async def test_queue_never_runs_one_factory_twice_at_once(two_pool_example):
    running, peak = 0, 0

    class Slow(Reconciler):
        async def reconcile(self, obj, memory, now, measure=False):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            running -= 1
            return []

    ctl = Controller(Slow(FakeKube()), AlwaysLeader(), concurrency=4)
    ctl.start()
    try:
        ctl.upsert(factory(two_pool_example))
        for _ in range(20):
            ctl.child_changed("llm", "deepseek-r1")
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.7)
        await ctl.drain()
        assert peak == 1 and 2 <= ctl.passes <= 3  # a burst of child events is coalesced into one more pass
    finally:
        await ctl.stop()


# ------------------------------------------------------------------------------- leader election


class FakeLeaseApi:
    """The Lease part of the apiserver: get/create/replace with resourceVersion conflicts."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.down = False

    def _check(self):
        if self.down:
            raise httpx.ConnectError("connection refused")

    @staticmethod
    def _err(code):
        from lightkube import ApiError

        return ApiError(response=httpx.Response(code, json={"kind": "Status", "code": code, "message": str(code)},
                                                request=httpx.Request("GET", "http://x")))

    async def get(self, res, name, namespace=None):
        self._check()
        if self.lease is None:
            raise self._err(404)
        return res.from_dict(copy.deepcopy(self.lease))

    async def create(self, obj, namespace=None):
        self._check()
        if self.lease is not None:
            raise self._err(409)
        self.rv += 1
        self.lease = obj.to_dict()
        self.lease["metadata"]["resourceVersion"] = str(self.rv)

    async def replace(self, obj, namespace=None):
        self._check()
        d = obj.to_dict()
        if self.lease is None or d["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise self._err(409)
        self.rv += 1
        d["metadata"]["resourceVersion"] = str(self.rv)
        self.lease = d


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


async def test_exactly_one_leader_and_takeover_after_expiry():
    api, clock = FakeLeaseApi(), Clock()
    a = LeaseElector(api, "ops", identity="a", lease_duration=6, renew_deadline=4, retry_period=1, clock=clock)
    b = LeaseElector(api, "ops", identity="b", lease_duration=6, renew_deadline=4, retry_period=1, clock=clock)
    for _ in range(10):
        await a.step()
        await b.step()
        clock.t += 1
        assert [a.is_leader, b.is_leader].count(True) == 1
    assert a.is_leader and api.lease["spec"]["holderIdentity"] == "a"
    # a is killed (stops renewing): b waits for the Lease to expire, as b observed it, then takes it
    took = None
    for i in range(12):
        await b.step()
        if b.is_leader:
            took = i
            break
        clock.t += 1
    assert took is not None and 5 <= took <= 7
    assert api.lease["spec"]["holderIdentity"] == "b" and api.lease["spec"]["leaseTransitions"] == 1


async def test_leader_that_cannot_renew_stops_acting_before_the_lease_expires():
    api, clock = FakeLeaseApi(), Clock()
    a = LeaseElector(api, "ops", identity="a", lease_duration=6, renew_deadline=4, retry_period=1, clock=clock)
    await a.step()
    assert a.is_leader
    api.down = True
    for _ in range(4):
        clock.t += 1
        await a.step()
    assert not a.is_leader  # after renew_deadline (4 s) < lease_duration (6 s)


async def test_release_hands_over_at_once():
    api, clock = FakeLeaseApi(), Clock()
    a = LeaseElector(api, "ops", identity="a", lease_duration=15, renew_deadline=10, retry_period=2, clock=clock)
    b = LeaseElector(api, "ops", identity="b", lease_duration=15, renew_deadline=10, retry_period=2, clock=clock)
    await a.step()
    await b.step()
    await a.release()
    await b.step()
    assert b.is_leader and not a.is_leader


def test_timings_must_nest():
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaseElector(None, "ops", lease_duration=5, renew_deadline=6, retry_period=1)


# ------------------------------------------------------------------------------- batched metrics


def prom_answer(results):
    return {"status": "success", "data": {"resultType": "vector", "result": results}}


def series(ns, f, pool, v):
    return {"metric": {"namespace": ns, "factory": f, "pool": pool}, "value": [1.7e9, str(v)]}


class PromCounter:
    def __init__(self):
        self.queries: list[str] = []
        self.down = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("refused")
        q = request.url.params["query"]
        self.queries.append(q)
        rows = []
        for ns, f in (("a", "f1"), ("a", "f2"), ("b", "f1")):
            for pool in ("h200", "gb300"):
                rows.append(series(ns, f, pool, 10.0 if "generation" in q else 1.0))
        return httpx.Response(200, json=prom_answer(rows))


async def test_one_query_per_metric_for_all_factories_and_pools(caplog):
    prom, clock = PromCounter(), Clock()
    src = BatchedSource(PrometheusSource("http://prom:9090", transport=httpx.MockTransport(prom)), clock=clock)
    got = {}
    for ns, f in (("a", "f1"), ("a", "f2"), ("b", "f1")):
        got[(ns, f)] = await src.batched_metrics(ns, f, 60, max_age=30)
    assert len(prom.queries) == 9  # one batch, whatever the number of factories and pools
    assert all('by (namespace, factory, pool' in q for q in prom.queries)
    assert sorted(got[("a", "f2")].pools) == ["gb300", "h200"]
    assert got[("b", "f1")].pools["h200"].generation_tokens_per_second == 10.0
    with pytest.raises(MetricsUnavailable, match="NoSeries"):
        await src.batched_metrics("a", "nobody", 60, max_age=30)
    assert len(prom.queries) == 9
    clock.t += 31  # older than the interval: the next measuring factory refreshes it for everyone
    await src.batched_metrics("a", "f1", 60, max_age=30)
    assert len(prom.queries) == 18
    # an outage: every factory sees it, one refresh per interval, one log line for the outage
    prom.down = True
    caplog.set_level(logging.INFO, logger="tokenfactory.metrics")
    for _ in range(5):
        clock.t += 31
        for ns, f in (("a", "f1"), ("a", "f2")):
            with pytest.raises(MetricsUnavailable) as err:
                await src.batched_metrics(ns, f, 60, max_age=30)
            assert err.value.reason == PROMETHEUS_UNREACHABLE
    assert src.refreshes == 7
    prom.down = False
    clock.t += 31
    await src.batched_metrics("a", "f1", 60, max_age=30)
    lines = [r.getMessage() for r in caplog.records if r.name == "tokenfactory.metrics"]
    assert len(lines) == 2 and "unavailable" in lines[0] and "answers again" in lines[1]


def test_batch_queries_scope_and_fan_out():
    qs = batch_queries(120, ("llm", "batch"))
    assert len(qs) == 9 and all('namespace=~"llm|batch"' in q for q in qs.values())
    assert "[120s]" in qs["generation_tokens_per_second"] and "[120s]" in qs["ttft_p95_seconds"]
    payload = json.loads(json.dumps(prom_answer([series("llm", "f", "h200", 3.0), series("llm", "g", "h200", 4.0)])))
    out = fan_out({"generation_tokens_per_second": parse_grouped(payload)})
    assert out == {("llm", "f"): {"generation_tokens_per_second": [("h200", 1.7e9, 3.0)]},
                   ("llm", "g"): {"generation_tokens_per_second": [("h200", 1.7e9, 4.0)]}}
    with pytest.raises(MetricsUnavailable, match="BadResponse"):
        parse_grouped({"status": "success", "data": {"resultType": "matrix", "result": []}})


async def test_api_outage_is_one_log_line_not_one_per_factory(two_pool_example, caplog):
    from tokenfactory.controller import transient

    class Down(Reconciler):
        down = True

        async def reconcile(self, obj, memory, now, measure=False):
            if self.down:
                raise ConnectionRefusedError("connect refused")
            return []

    rec = Down(FakeKube())
    ctl = Controller(rec, AlwaysLeader(), concurrency=4)
    caplog.set_level(logging.INFO, logger="tokenfactory.controller")
    for i in range(5):
        ctl.upsert(factory(two_pool_example, name=f"f{i}"))
        await ctl.process(("llm", f"f{i}"))
    rec.down = False
    await ctl.process(("llm", "f0"))
    lines = [r for r in caplog.records if r.name == "tokenfactory.controller" and r.levelno >= logging.INFO]
    assert [r.levelname for r in lines] == ["WARNING", "INFO"] and not any(r.exc_info for r in lines)
    assert transient(ConnectionRefusedError()) and not transient(KeyError("bug"))
