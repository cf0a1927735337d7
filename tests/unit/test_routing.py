"""Routing: HTTPRoute weights from ready replicas x capacity, rounding, zero-ready pools, mode switches, the
Routed condition, and the reconcile step against the in-memory KubeClient."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenfactory import api, render, routing
from tokenfactory.pipeline import FactoryMemory, Reconciler
from tokenfactory.kube import FakeKube
from tokenfactory.routing import PoolCapacity

OWNER = render.Owner(name="deepseek-r1", namespace="llm", uid="uid-tf")
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
GATEWAY = {"name": "inference-gw", "namespace": "gateway-system", "sectionName": "http"}


def spec_with(example, **routing_spec):
    doc = copy.deepcopy(example["spec"])
    if routing_spec:
        doc["routing"] = routing_spec
    return api.parse_spec(doc)


# ------------------------------------------------------------------------------------ weights


def test_weights_follow_ready_replicas_times_capacity():
    # the issue's mix: 2 GB300 replicas at 24,000 tok/s and 14 H200 replicas at 720 tok/s
    w = routing.weights([PoolCapacity("gb300", 2, 24_000.0), PoolCapacity("h200", 14, 720.0)])
    # 48,000 : 10,080 -> 826.4 : 173.6 per mille
    assert w == {"gb300": 826, "h200": 174}
    assert sum(w.values()) == routing.WEIGHT_TOTAL


def test_weights_round_by_largest_remainder_and_add_up():
    # three equal pools: 333.33 each; the one remainder unit goes to the first listed
    w = routing.weights([PoolCapacity("a", 1, 100.0), PoolCapacity("b", 1, 100.0), PoolCapacity("c", 1, 100.0)])
    assert w == {"a": 334, "b": 333, "c": 333}
    # remainders .6/.4: the larger remainder wins the spare unit
    w = routing.weights([PoolCapacity("a", 1, 0.4), PoolCapacity("b", 1, 999.6)], total=1000)
    assert sum(w.values()) == 1000 and w["b"] == 999


def test_a_pool_without_ready_replicas_gets_zero():
    w = routing.weights([PoolCapacity("gb300", 0, 24_000.0), PoolCapacity("h200", 3, 720.0)])
    assert w == {"gb300": 0, "h200": 1000}


def test_no_ready_replica_anywhere_gives_all_zero():
    assert routing.weights([PoolCapacity("gb300", 0, 24_000.0), PoolCapacity("h200", 0, 720.0)]) == {"gb300": 0, "h200": 0}
    assert routing.weights([]) == {}


def test_a_serving_pool_whose_share_rounds_to_zero_keeps_one():
    # 1 x 10 tok/s next to 100 x 24,000: 0.004 per mille would round to 0
    w = routing.weights([PoolCapacity("big", 100, 24_000.0), PoolCapacity("tiny", 1, 10.0)])
    assert w == {"big": 999, "tiny": 1}


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 1e6, allow_nan=False)), min_size=1, max_size=8))
def test_weights_properties(pools):
    caps = [PoolCapacity(f"p{i}", r, c) for i, (r, c) in enumerate(pools)]
    w = routing.weights(caps)
    serving = [p for p in caps if p.ready_replicas * p.capacity_per_replica > 0]
    for p in caps:
        assert w[p.name] >= 0
        if p.ready_replicas * p.capacity_per_replica <= 0:
            assert w[p.name] == 0
    if serving:
        assert sum(w.values()) == routing.WEIGHT_TOTAL
        if len(serving) <= routing.WEIGHT_TOTAL:
            assert all(w[p.name] >= 1 for p in serving)
        # more capacity never gets a smaller weight (up to the one-unit floor)
        for a in serving:
            for b in serving:
                if a.ready_replicas * a.capacity_per_replica > b.ready_replicas * b.capacity_per_replica:
                    assert w[a.name] >= w[b.name] - 1
    else:
        assert sum(w.values()) == 0


def test_learned_capacity_wins_over_the_profile(two_pool_example):
    spec = spec_with(two_pool_example)
    caps = {c.name: c for c in routing.capacities(spec, {"gb300": 1, "h200": 2}, {"h200": 1_000.0})}
    assert (caps["h200"].capacity_per_replica, caps["h200"].source) == (1_000.0, "learned")
    # gb300: the sheet's 6,000 tok/s/GPU x 4 GPUs per replica
    assert (caps["gb300"].capacity_per_replica, caps["gb300"].source) == (24_000.0, "profile")
    assert caps["h200"].ready_replicas == 2


def test_learned_capacities_come_from_the_planner_state_for_the_current_profile(two_pool_example):
    from tokenfactory import planner

    pools = spec_with(two_pool_example).resolve_pools()  # gb300 profile 24,000, h200 720 tok/s per replica
    state = planner.PlannerState(capacity=(
        planner.CapacityState(pool="gb300", profile=24_000.0, estimate=20_000.0),
        planner.CapacityState(pool="h200", profile=999.0, estimate=650.0)))  # learned against an older profile
    assert routing.learned_capacities(state, pools) == {"gb300": 20_000.0}
    assert routing.learned_capacities(state) == {"gb300": 20_000.0, "h200": 650.0}
    assert routing.learned_capacities(None, pools) == {}


# ------------------------------------------------------------------------------------ plans


def test_service_mode_renders_one_service_and_warns_about_uneven_pools(two_pool_example):
    p = routing.plan(OWNER, spec_with(two_pool_example), {"gb300": 1, "h200": 1})
    assert [(m["kind"], m["metadata"]["name"]) for m in p.manifests] == [("Service", "deepseek-r1")]
    assert p.weights == {}
    assert p.uneven is not None and "33.3x" in p.uneven and "HTTPRoute" in p.uneven


def test_service_mode_with_alike_pools_does_not_warn(two_pool_example):
    doc = copy.deepcopy(two_pool_example["spec"])
    for pool in doc["pools"]:
        pool.update(gpuType="h200", gpusPerReplica=8)
    p = routing.plan(OWNER, api.parse_spec(doc), {"gb300": 1, "h200": 1})
    assert p.uneven is None
    assert routing.assess(routing.Applied(plan=p, applied=["Service/deepseek-r1"])).reason == "EvenSplit"


def test_httproute_mode_renders_pool_services_and_a_weighted_route(two_pool_example):
    spec = spec_with(two_pool_example, mode="HTTPRoute", gateway=GATEWAY, hostnames=["llm.example.com"])
    p = routing.plan(OWNER, spec, {"gb300": 2, "h200": 14})
    kinds = [(m["kind"], m["metadata"]["name"]) for m in p.manifests]
    assert kinds == [("Service", "deepseek-r1-gb300"), ("Service", "deepseek-r1-h200"), ("HTTPRoute", "deepseek-r1")]
    route = p.manifests[-1]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "inference-gw", "namespace": "gateway-system", "sectionName": "http"}]
    assert route["spec"]["hostnames"] == ["llm.example.com"]
    (rule,) = route["spec"]["rules"]
    assert [(b["name"], b["port"], b["weight"]) for b in rule["backendRefs"]] == [
        ("deepseek-r1-gb300", 8000, 826), ("deepseek-r1-h200", 8000, 174)]
    svc = p.manifests[1]
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "vllm", "tokenfactory.dev/factory": "deepseek-r1",
                                       "tokenfactory.dev/pool": "h200"}
    for m in p.manifests:
        assert m["metadata"]["ownerReferences"] == [OWNER.reference()]
        assert m["metadata"]["labels"]["tokenfactory.dev/factory"] == "deepseek-r1"


def test_inferencepool_mode_selects_every_pool(two_pool_example):
    spec = spec_with(two_pool_example, mode="InferencePool", endpointPicker={"name": "vllm-epp"})
    p = routing.plan(OWNER, spec, {"gb300": 1, "h200": 1})
    (pool,) = p.manifests
    assert (pool["apiVersion"], pool["kind"]) == ("inference.networking.k8s.io/v1", "InferencePool")
    assert pool["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm", "tokenfactory.dev/factory": "deepseek-r1"}
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["endpointPickerRef"] == {"kind": "Service", "name": "vllm-epp", "port": {"number": 9002},
                                                 "failureMode": "FailClose"}
    # with a Gateway named, an HTTPRoute sends its traffic to the InferencePool
    spec = spec_with(two_pool_example, mode="InferencePool", endpointPicker={"name": "vllm-epp"}, gateway={"name": "gw"})
    route = routing.plan(OWNER, spec, {}).manifests[-1]
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "deepseek-r1"}]


@pytest.mark.parametrize("routing_spec, field", [
    ({"mode": "HTTPRoute"}, "routing.gateway"),
    ({"mode": "InferencePool"}, "routing.endpointPicker"),
    ({"mode": "Ingress"}, "spec.routing.mode"),
    ({"mode": "HTTPRoute", "gateway": {"name": "gw"}, "hostnames": ["Not_A_Host"]}, "spec.routing.hostnames[0]"),
    ({"mode": "HTTPRoute", "gateway": {"name": "gw; rm -rf /"}}, "spec.routing.gateway.name"),
    ({"mode": "HTTPRoute", "gateway": {"name": "gw", "sectionName": "HTTP Listener"}}, "spec.routing.gateway.sectionName"),
    ({"mode": "InferencePool", "endpointPicker": {"name": "9epp"}}, "spec.routing.endpointPicker.name"),
    ({"mode": "InferencePool", "endpointPicker": {"name": "epp", "port": 70000}}, "spec.routing.endpointPicker.port"),
])
def test_bad_routing_is_refused_with_the_field(two_pool_example, routing_spec, field):
    doc = copy.deepcopy(two_pool_example["spec"])
    doc["routing"] = routing_spec
    with pytest.raises(api.SpecError) as err:
        api.parse_spec(doc)
    assert field in str(err.value)


# ------------------------------------------------------------------------------------ mode switches


def _live(kind, name, uid="uid-tf"):
    return {"kind": kind, "metadata": {"name": name, "ownerReferences": [
        {"apiVersion": "tokenfactory.dev/v1alpha1", "kind": "TokenFactory", "name": "deepseek-r1", "uid": uid}]}}


def test_switch_from_service_to_httproute_deletes_only_the_shared_service(two_pool_example):
    spec = spec_with(two_pool_example, mode="HTTPRoute", gateway=GATEWAY)
    p = routing.plan(OWNER, spec, {"gb300": 1})
    live = [_live("Service", "deepseek-r1"), _live("Service", "deepseek-r1-gb300"), _live("Service", "deepseek-r1-h200")]
    assert routing.stale(p.keys(), live, "uid-tf") == [("Service", "deepseek-r1")]


def test_switch_from_httproute_to_inferencepool_deletes_route_and_pool_services(two_pool_example):
    spec = spec_with(two_pool_example, mode="InferencePool", endpointPicker={"name": "epp"})
    p = routing.plan(OWNER, spec, {})
    live = [_live("Service", "deepseek-r1-gb300"), _live("Service", "deepseek-r1-h200"), _live("HTTPRoute", "deepseek-r1"),
            _live("InferencePool", "deepseek-r1")]
    assert routing.stale(p.keys(), live, "uid-tf") == [
        ("HTTPRoute", "deepseek-r1"), ("Service", "deepseek-r1-gb300"), ("Service", "deepseek-r1-h200")]


def test_switch_never_deletes_what_another_owner_holds(two_pool_example):
    p = routing.plan(OWNER, spec_with(two_pool_example), {})
    someone_elses = _live("HTTPRoute", "deepseek-r1", uid="uid-other")
    no_owner = {"kind": "Service", "metadata": {"name": "deepseek-r1-h200"}}
    assert routing.stale(p.keys(), [someone_elses, no_owner, _live("HTTPRoute", "deepseek-r1")], "uid-tf") == [
        ("HTTPRoute", "deepseek-r1")]
    assert routing.stale(p.keys(), [someone_elses, no_owner], "uid-tf") == []


def test_a_removed_pool_loses_its_service_in_httproute_mode(two_pool_example):
    doc = copy.deepcopy(two_pool_example["spec"])
    doc["pools"] = doc["pools"][:1]
    doc["routing"] = {"mode": "HTTPRoute", "gateway": GATEWAY}
    p = routing.plan(OWNER, api.parse_spec(doc), {})
    live = [_live("Service", "deepseek-r1-gb300"), _live("Service", "deepseek-r1-h200"), _live("HTTPRoute", "deepseek-r1")]
    assert routing.stale(p.keys(), live, "uid-tf") == [("Service", "deepseek-r1-h200")]


# ------------------------------------------------------------------------------------ condition


def test_assess_reports_missing_crds_once(two_pool_example):
    spec = spec_with(two_pool_example, mode="HTTPRoute", gateway=GATEWAY)
    applied = routing.Applied(plan=routing.plan(OWNER, spec, {"gb300": 1}), missing_kinds=["HTTPRoute"])
    a = routing.assess(applied)
    assert (a.status, a.reason) == (False, "GatewayAPIMissing")
    assert "httproutes.gateway.networking.k8s.io" in a.message
    assert [e[:2] for e in a.events] == [("Warning", "GatewayAPIMissing")]
    assert routing.assess(applied, previous_reason="GatewayAPIMissing").events == ()


def test_assess_no_ready_replica_and_weights(two_pool_example):
    spec = spec_with(two_pool_example, mode="HTTPRoute", gateway=GATEWAY)
    a = routing.assess(routing.Applied(plan=routing.plan(OWNER, spec, {})))
    assert (a.status, a.reason) == (False, "NoReadyReplicas")
    a = routing.assess(routing.Applied(plan=routing.plan(OWNER, spec, {"h200": 1})))
    assert (a.status, a.reason) == (True, "WeightsApplied") and "h200 1000" in a.message and a.events == ()


# ------------------------------------------------------------------------------------ reconcile


def factory(example, **routing_spec):
    obj = copy.deepcopy(example)
    obj["metadata"] = {"name": "deepseek-r1", "namespace": "llm", "uid": "uid-tf", "generation": 1}
    if routing_spec:
        obj["spec"]["routing"] = routing_spec
    return obj


def with_status(kube, obj):
    out = copy.deepcopy(obj)
    out["status"] = copy.deepcopy(kube.statuses.get(("llm", "deepseek-r1"), {}))
    return out


def routed(kube):
    return next(c for c in kube.statuses[("llm", "deepseek-r1")]["conditions"] if c["type"] == "Routed")


async def test_reconcile_weights_follow_ready_replicas_and_modes_switch_cleanly(two_pool_example):
    kube, mem = FakeKube(), FactoryMemory()
    rec = Reconciler(kube)
    obj = factory(two_pool_example, mode="HTTPRoute", gateway=GATEWAY)
    await rec.reconcile(obj, mem, NOW)
    route = kube.objects[("HTTPRoute", "llm", "deepseek-r1")]
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [0, 0]
    assert routed(kube)["reason"] == "NoReadyReplicas"
    kube.set_deployment_status("llm", "deepseek-r1-gb300", ready=1)
    kube.set_deployment_status("llm", "deepseek-r1-h200", ready=1)
    await rec.reconcile(with_status(kube, obj), mem, NOW)
    route = kube.objects[("HTTPRoute", "llm", "deepseek-r1")]
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [971, 29]  # 24,000 : 720
    status = kube.statuses[("llm", "deepseek-r1")]
    assert status["routing"]["weights"] == "gb300=971,h200=29"
    assert [p["routeWeight"] for p in status["pools"]] == [971, 29]
    assert routed(kube)["status"] == "True"

    # switch to Service: the route and the pool Services go, the shared Service comes
    obj["spec"]["routing"] = {"mode": "Service"}
    events = await rec.reconcile(with_status(kube, obj), mem, NOW)
    assert sorted(k for k in kube.objects if k[0] != "Deployment") == [("Service", "llm", "deepseek-r1")]
    assert {e.message for e in events if e.reason == "Deleted"} == {
        "Deleted HTTPRoute/deepseek-r1: not used by routing mode Service",
        "Deleted Service/deepseek-r1-gb300: not used by routing mode Service",
        "Deleted Service/deepseek-r1-h200: not used by routing mode Service"}
    assert "routeWeight" not in kube.statuses[("llm", "deepseek-r1")]["pools"][0]
    assert kube.statuses[("llm", "deepseek-r1")]["routing"]["weights"] == "even"


async def test_reconcile_without_gateway_api_keeps_serving_and_says_why(two_pool_example):
    kube, mem = FakeKube(), FactoryMemory()
    rec = Reconciler(kube)
    obj = factory(two_pool_example)
    await rec.reconcile(obj, mem, NOW)  # Service mode: the shared Service exists
    kube.unserved = {"HTTPRoute", "InferencePool"}
    obj["spec"]["routing"] = {"mode": "HTTPRoute", "gateway": GATEWAY}
    events = await rec.reconcile(with_status(kube, obj), mem, NOW)
    c = routed(kube)
    assert (c["status"], c["reason"]) == ("False", "GatewayAPIMissing")
    assert [e.reason for e in events if e.type == "Warning"] == ["GatewayAPIMissing"]
    # nothing else breaks: Deployments stay, the old Service keeps serving until the route can exist
    assert ("Service", "llm", "deepseek-r1") in kube.objects
    assert ("Deployment", "llm", "deepseek-r1-gb300") in kube.objects
    assert kube.statuses[("llm", "deepseek-r1")]["routing"]["weights"] == "none"
    degraded = next(c for c in kube.statuses[("llm", "deepseek-r1")]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "False"
    # the CRDs arrive: the next pass creates the route and removes the shared Service
    kube.unserved = set()
    await rec.reconcile(with_status(kube, obj), mem, NOW)
    assert ("HTTPRoute", "llm", "deepseek-r1") in kube.objects and ("Service", "llm", "deepseek-r1") not in kube.objects


# ------------------------------------------------------------------------------ kube adapter


class _Status:
    def __init__(self, code, message):
        self.code, self.message = code, message


class _ApiError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.status = _Status(code, message)


class _Request:
    method = "PATCH"

    class url:  # noqa: N801 - shaped like httpx.URL
        path = "/apis/gateway.networking.k8s.io/v1/namespaces/llm/httproutes/deepseek-r1"


class _Response:
    def __init__(self, code):
        self.status_code, self.request = code, _Request()


class _HTTPError(Exception):
    def __init__(self, code):
        super().__init__(f"{code}")
        self.response = _Response(code)


def test_a_missing_routing_crd_is_told_apart_from_other_errors():
    from tokenfactory.kube import KindNotServed, _not_served

    # the apiserver's plain-text "404 page not found" for an unknown resource type (lightkube: HTTP error)
    assert isinstance(_not_served("HTTPRoute", _HTTPError(404)), KindNotServed)
    assert isinstance(_not_served("InferencePool", _ApiError(404, "the server could not find the requested resource")),
                      KindNotServed)
    # anything else is passed through: a namespace not found, a refusal, a core kind
    for kind, err in [("HTTPRoute", _ApiError(404, 'namespaces "llm" not found')), ("HTTPRoute", _HTTPError(403)),
                      ("Service", _HTTPError(404)), ("HTTPRoute", _ApiError(422, "invalid"))]:
        assert _not_served(kind, err) is err


async def test_service_mode_needs_no_gateway_api(two_pool_example):
    kube, mem = FakeKube(), FactoryMemory()
    kube.unserved = {"HTTPRoute", "InferencePool"}
    await Reconciler(kube).reconcile(factory(two_pool_example), mem, NOW)
    c = routed(kube)
    assert (c["status"], c["reason"]) == ("True", "UnevenCapacity")
    assert ("Service", "llm", "deepseek-r1") in kube.objects
    assert kube.statuses[("llm", "deepseek-r1")]["routing"] == {"mode": "Service", "objects": ["Service/deepseek-r1"],
                                                                 "weights": "even"}


async def test_weights_use_learned_capacity_and_hold_between_measurements(two_pool_example):
    from test_measure import NAME, NS, Rig

    rig = Rig(two_pool_example)
    rig.obj["spec"]["routing"] = {"mode": "HTTPRoute", "gateway": GATEWAY}
    rig.obj["spec"]["scaling"]["mode"] = "Recommend"  # plans (and learns capacity) without changing replicas
    await rig.step()  # creates the pools
    # gb300 saturated (a queue builds) at 12,000 tok/s: half its 24,000 profile; h200 healthy
    for _ in range(4):
        rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=12_000.0, requests_waiting=300.0,
                          requests_running=256.0, requests_per_second=24.0, kv_cache_usage=0.99)
        rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=300.0, requests_per_second=0.6,
                          kv_cache_usage=0.2)
        await rig.step()

    def weights():
        route = rig.kube.objects[("HTTPRoute", NS, NAME)]
        return [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]]

    learned = routing.learned_capacities(rig.memory.planner_state)
    assert learned["gb300"] < 24_000.0  # learned below the profile
    measured = weights()
    assert measured != [971, 29]  # not the profile split
    # the weights follow what the plan counts per replica: the learned capacity, at most the load at which the
    # pool's p95 latencies stay within the objectives (SLO planning), x ready replicas: status.pools[].capacity
    planned = {p["name"]: p["capacityTokensPerSecond"] for p in rig.status()["pools"]}
    w_gb = round(planned["gb300"] / (planned["gb300"] + planned["h200"]) * 1000)
    assert abs(measured[0] - w_gb) <= 1
    # a pass that does not measure (a watch event) keeps the same weights: no flapping back to the profile
    await rig.rec.reconcile(rig.live(), rig.memory, rig.now, measure=False)
    assert weights() == measured


class _WatchCache:
    """A watch cache that, like the operator's informer, holds Deployments, Services and Pods only."""

    kinds = ("Deployment", "Service", "Pod")

    def __init__(self, kube):
        self.kube = kube

    def cached(self, kind, namespace, name):
        return self.kube.cached(kind, namespace, name) if kind in self.kinds else None

    async def list(self, kind, namespace, labels):
        return await self.kube.list(kind, namespace, labels)


async def test_steady_state_tries_no_create_for_kinds_the_watch_cache_does_not_hold(two_pool_example):
    # HTTPRoutes are not in the informer's cache: a pass must read them, not try a create the apiserver refuses
    kube, mem = FakeKube(), FactoryMemory()
    rec = Reconciler(kube, cache=_WatchCache(kube))
    obj = factory(two_pool_example, mode="HTTPRoute", gateway=GATEWAY)
    await rec.reconcile(obj, mem, NOW)
    assert ("HTTPRoute", "llm", "deepseek-r1") in kube.objects
    kube.calls.clear()
    for _ in range(2):
        await rec.reconcile(with_status(kube, obj), mem, NOW)
    assert [c for c in kube.calls if c[0] in ("create", "apply", "delete")] == []
    assert ("get", "HTTPRoute", "llm", "deepseek-r1") in kube.calls


async def test_missing_gateway_api_is_reported_when_the_route_is_read_not_created(two_pool_example):
    # with the informer's cache the route is read with a GET first: a kind not served must still read as
    # GatewayAPIMissing (not as an error of the object)
    kube, mem = FakeKube(), FactoryMemory()
    kube.unserved = {"HTTPRoute", "InferencePool"}
    rec = Reconciler(kube, cache=_WatchCache(kube))
    events = await rec.reconcile(factory(two_pool_example, mode="HTTPRoute", gateway=GATEWAY), mem, NOW)
    c = routed(kube)
    assert (c["status"], c["reason"]) == ("False", "GatewayAPIMissing")
    assert [e.reason for e in events if e.type == "Warning"] == ["GatewayAPIMissing"]
