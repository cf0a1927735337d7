"""Cluster mode routes as the cluster does: the live HTTPRoute's backend weights -> weights per pool (pure), the
TokenFactories' spec.routing.mode -> the fleet's routing (pure), the poller applying both, and the fleet routing by
per-factory weights and switching routing on the fly."""

from __future__ import annotations

import argparse
import copy

import httpx
import pytest
from lightkube import ApiError

from tokenfactory import api, render
from tokenfactory.sim import cli as sim_cli
from tokenfactory.sim import traces as tr
from tokenfactory.sim.cluster import ClusterRouting, PodPoller, cluster_routing, factory_mode, route_weights
from tokenfactory.sim.fleet import EngineSpec, Fleet
from tokenfactory.sim.server import RealtimeRunner

OWNER = render.Owner(name="deepseek-r1", namespace="llm", uid="uid-tf")
GATEWAY = {"name": "inference-gw", "sectionName": "http"}


def factory(example: dict, mode: str | None = "HTTPRoute", name: str = "deepseek-r1", ns: str = "llm") -> dict:
    doc = copy.deepcopy(example)
    doc["metadata"] = {"name": name, "namespace": ns}
    if mode == "HTTPRoute":
        doc["spec"]["routing"] = {"mode": "HTTPRoute", "gateway": GATEWAY}
    elif mode is not None:
        doc["spec"]["routing"] = {"mode": mode}
    else:
        doc["spec"].pop("routing", None)
    return doc


def rendered_route(example: dict, weights: dict[str, int]) -> dict:
    spec = api.parse_spec({**copy.deepcopy(example["spec"]), "routing": {"mode": "HTTPRoute", "gateway": GATEWAY}})
    return render.render_httproute(OWNER, spec, weights)


# ------------------------------------------------------------------------------- route -> weights


def test_route_weights_read_back_what_the_operator_renders(two_pool_example):
    route = rendered_route(two_pool_example, {"gb300": 971, "h200": 29})
    assert route_weights(route, "deepseek-r1") == {"gb300": 971, "h200": 29}
    zero = rendered_route(two_pool_example, {"gb300": 1000})  # h200 has no ready replica: weight 0
    assert route_weights(zero, "deepseek-r1") == {"gb300": 1000, "h200": 0}


def test_route_weights_default_to_one_and_skip_foreign_or_bad_refs():
    route = {"spec": {"rules": [{"backendRefs": [
        {"name": "r1-h200"},                   # no weight: the Gateway API default, 1
        {"name": "r1-gb300", "weight": 7},
        {"name": "other-h200", "weight": 5},   # another factory's Service
        {"name": "r1-", "weight": 5},          # no pool name
        {"name": "r1-a100", "weight": -1},     # not a weight
        {"name": "r1-b200", "weight": "3"},
        {"name": "r1-mi300", "weight": True},
    ]}, {"backendRefs": [{"name": "r1-late", "weight": 9}]}]}}  # only the first rule carries the pools
    assert route_weights(route, "r1") == {"h200": 1, "gb300": 7}
    assert route_weights({"spec": {"rules": []}}, "r1") == {}
    assert route_weights({}, "r1") == {}


# ------------------------------------------------------------------------- factories -> routing


def test_cluster_routing_follows_the_mode_and_the_route(two_pool_example):
    tf = factory(two_pool_example)
    route = rendered_route(two_pool_example, {"gb300": 971, "h200": 29})
    got = cluster_routing([tf], {("llm", "deepseek-r1"): route})
    assert got == ClusterRouting("HTTPRoute", {"llm/deepseek-r1/gb300": 971, "llm/deepseek-r1/h200": 29})
    # the route does not exist yet: 1 per pool of the spec (an even split over pools), said in a note
    early = cluster_routing([tf], {("llm", "deepseek-r1"): None})
    assert early is not None
    assert (early.mode, early.weights) == ("HTTPRoute", {"llm/deepseek-r1/gb300": 1, "llm/deepseek-r1/h200": 1})
    assert "no HTTPRoute llm/deepseek-r1" in early.notes[0]
    assert cluster_routing([factory(two_pool_example, "InferencePool")], {}) == ClusterRouting("InferencePool")
    assert cluster_routing([factory(two_pool_example, None)], {}) == ClusterRouting("Service")
    assert factory_mode(factory(two_pool_example, None)) == "Service"
    assert cluster_routing([], {}) is None


def test_cluster_routing_of_several_factories(two_pool_example):
    a = factory(two_pool_example, name="a")
    b = factory(two_pool_example, name="b", ns="other")
    c = factory(two_pool_example, "Service", name="c", ns="zz")
    routes = {("llm", "a"): rendered_route(two_pool_example, {"gb300": 900, "h200": 100}),
              ("other", "b"): None}
    routes[("llm", "a")]["spec"]["rules"][0]["backendRefs"][0]["name"] = "a-gb300"
    routes[("llm", "a")]["spec"]["rules"][0]["backendRefs"][1]["name"] = "a-h200"
    got = cluster_routing([c, b, a], routes)
    assert got is not None and got.mode == "HTTPRoute"  # llm/a sorts first
    assert got.weights == {"llm/a/gb300": 900, "llm/a/h200": 100, "other/b/gb300": 1, "other/b/h200": 1,
                           "zz/c/gb300": 1, "zz/c/h200": 1}
    assert any("zz/c has routing.mode Service" in n for n in got.notes)
    odd = factory(two_pool_example, "Mesh")
    assert cluster_routing([odd], {}) == ClusterRouting(
        "Service", None, ("spec.routing.mode 'Mesh' is not one of Service, HTTPRoute, InferencePool: routing as Service",))


# ------------------------------------------------------------------------------------- fleet


def received(fleet: Fleet) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in fleet.truth()["engines"]:
        out[e["pool"]] = out.get(e["pool"], 0.0) + (e["requests_success_total"] + e["requests_running"]
                                                     + e["requests_waiting"] + e["requests_dropped_total"])
    return out


def test_fleet_routes_by_per_factory_weights_and_switches_routing():
    specs = [EngineSpec(name="h0", namespace="llm", factory="r1", pool="h200", gpu_type="h200", gpus=8, startup_seconds=0),
             EngineSpec(name="g0", namespace="llm", factory="r1", pool="gb300", gpu_type="gb300", gpus=4, startup_seconds=0)]
    f = Fleet(tr.Constant(6000.0), routing="HTTPRoute", weights={"llm/r1/gb300": 97, "llm/r1/h200": 3, "h200": 50},
              seed=2)
    for s in specs:
        f.add_engine(s, 0.0)
    f.run(600, 1.0)
    got = received(f)
    assert got["gb300"] / sum(got.values()) == pytest.approx(0.97, abs=0.02)  # the namespaced key wins
    assert f.truth()["factories"][0]["route_weights"] == {"gb300": 97, "h200": 3}
    before = received(f)
    f.set_routing("Service")
    f.run(1200, 1.0)
    after = {k: v - before[k] for k, v in received(f).items()}
    assert after["gb300"] == pytest.approx(after["h200"], rel=0.1)  # kube-proxy: even per pod
    assert f.truth()["factories"][0]["route_weights"] == {}
    with pytest.raises(ValueError, match="weights"):
        f.set_routing("HTTPRoute", {"gb300": -1})
    with pytest.raises(ValueError, match="routing"):
        f.set_routing("Mesh")
    assert f.routing == "Service"


# ------------------------------------------------------------------------------------ poller


class _Obj:
    def __init__(self, d):
        self.d = d

    def to_dict(self):
        return self.d


def _not_found() -> ApiError:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "not found", "code": 404,
            "reason": "NotFound", "metadata": {}}
    return ApiError(response=httpx.Response(404, json=body, request=httpx.Request("GET", "https://k/x")))


def _pod(name, pool, gpu, gpus):
    return {"metadata": {"name": name, "namespace": "llm",
                         "labels": {"tokenfactory.dev/factory": "deepseek-r1", "tokenfactory.dev/pool": pool,
                                    "tokenfactory.dev/gpu-type": gpu}},
            "spec": {"containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"}]}}


class FakeClient:
    def __init__(self, factories, route):
        self.factories, self.route, self.calls = factories, route, []

    def list(self, res, namespace=None, labels=None):
        self.calls.append(("list", res.__name__, namespace))
        if res.__name__ == "Pod":
            return [_Obj(_pod("g", "gb300", "gb300", "4")), _Obj(_pod("h", "h200", "h200", "8"))]
        return [_Obj(f) for f in self.factories]

    def get(self, res, name, namespace=None):
        self.calls.append(("get", res.__name__, namespace, name))
        if self.route is None:
            raise _not_found()
        return _Obj(self.route)


def test_poller_applies_the_cluster_routing_with_one_route_get_per_poll(two_pool_example):
    clock = [1767225700.0]
    f = Fleet(tr.Constant(100.0), start_time=clock[0])
    runner = RealtimeRunner(f, clock=lambda: clock[0])
    tf = factory(two_pool_example)
    other = factory(two_pool_example, name="other")  # not watched (--factory deepseek-r1)
    client = FakeClient([tf, other], None)
    poller = PodPoller(runner.set_engines, namespace="llm", factory="deepseek-r1", client=client,
                       on_routing=lambda r: runner.set_routing(r.mode, r.weights))
    poller.poll_once()
    assert (f.routing, f.weights) == ("HTTPRoute", {"llm/deepseek-r1/gb300": 1, "llm/deepseek-r1/h200": 1})
    client.route = rendered_route(two_pool_example, {"gb300": 971, "h200": 29})
    client.calls.clear()
    poller.poll_once()
    assert (f.routing, f.weights) == ("HTTPRoute", {"llm/deepseek-r1/gb300": 971, "llm/deepseek-r1/h200": 29})
    assert client.calls == [("list", "Pod", "llm"), ("list", "TokenFactory", "llm"),
                            ("get", "HTTPRoute", "llm", "deepseek-r1")]
    # the factory switches to InferencePool: no route GET any more
    client.factories = [factory(two_pool_example, "InferencePool")]
    client.calls.clear()
    poller.poll_once()
    assert (f.routing, f.weights) == ("InferencePool", None)
    assert [c for c in client.calls if c[0] == "get"] == []
    # the TokenFactory kind cannot be read: the routing stays, the error is counted, pods still sync
    def broken(res, namespace=None, labels=None):
        if res.__name__ != "Pod":
            raise RuntimeError("the apiserver does not serve TokenFactory")
        return FakeClient.list(client, res, namespace, labels)

    client.list = broken  # type: ignore[method-assign]
    errors = poller.errors
    poller.poll_once()
    assert f.routing == "InferencePool" and poller.errors == errors + 1 and sorted(f.engines) == ["llm/g", "llm/h"]


def test_poller_without_on_routing_reads_no_factories(two_pool_example):
    f = Fleet(tr.Constant(100.0), routing="Service")
    runner = RealtimeRunner(f)
    client = FakeClient([factory(two_pool_example)], rendered_route(two_pool_example, {"gb300": 1000}))
    PodPoller(runner.set_engines, namespace="llm", client=client).poll_once()
    assert client.calls == [("list", "Pod", "llm")] and f.routing == "Service"


def _sim_args(argv):
    p = argparse.ArgumentParser()
    sim_cli.register(p.add_subparsers())
    return p.parse_args(["sim", *argv])


def test_cli_routing_defaults_to_following_the_cluster_and_weight_needs_httproute(capsys):
    assert _sim_args([]).routing is None
    args = _sim_args(["--port", "0", "--duration", "0.1", "--weight", "h200=1"])
    assert args.func(args) == 2
    assert "--weight needs --routing HTTPRoute" in capsys.readouterr().err
