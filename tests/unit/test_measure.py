"""Measuring, pricing and planning inside the reconcile loop, on fakes (Kube, Prometheus, exporter)."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from tokenfactory.exporter import FakeExporter
from tokenfactory.kube import FakeKube
from tokenfactory.metrics_source import FakeMetricsSource, SourcesByUrl
from tokenfactory.pipeline import FactoryMemory, Reconciler

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
NS, NAME = "llm", "deepseek-r1"
LABELS = {"tokenfactory.dev/factory": NAME, "app.kubernetes.io/managed-by": "tokenfactory"}


class Rig:
    def __init__(self, example, mode="Auto"):
        self.kube, self.prom, self.exporter = FakeKube(), FakeMetricsSource(), FakeExporter()
        self.obj = copy.deepcopy(example)
        self.obj["metadata"].update(namespace=NS, uid="uid-tf", generation=1)
        self.obj["spec"]["scaling"]["mode"] = mode
        self.obj["spec"]["metrics"]["prometheusUrl"] = "http://prom.test:9090"
        self.obj["spec"]["pools"][0]["startupSeconds"] = 0
        self.obj["spec"]["pools"][1]["startupSeconds"] = 0
        self.rec = Reconciler(self.kube, sources=SourcesByUrl(preset={"http://prom.test:9090": self.prom}),
                              exporter=self.exporter)
        self.memory = FactoryMemory()
        self.now = T0

    def live(self):
        obj = copy.deepcopy(self.obj)
        obj["status"] = copy.deepcopy(self.kube.statuses.get((NS, NAME), {}))
        return obj

    async def step(self, seconds=30):
        events = await self.rec.reconcile(self.live(), self.memory, self.now, measure=True)
        self.cluster_catches_up()
        self.now += dt.timedelta(seconds=seconds)
        return events

    def cluster_catches_up(self):
        """What the real cluster does after an apply: every desired pod is scheduled and Ready."""
        for pool, gpus in (("gb300", 4), ("h200", 8)):
            key = ("Deployment", NS, f"{NAME}-{pool}")
            if key not in self.kube.objects:
                continue
            want = self.kube.objects[key]["spec"]["replicas"]
            self.kube.set_deployment_status(NS, f"{NAME}-{pool}", ready=want)
            for k in [k for k in self.kube.objects if k[0] == "Pod" and k[2].startswith(f"{pool}-")]:
                del self.kube.objects[k]
            for i in range(want):
                self.kube.add_pod(NS, f"{pool}-{i}", {**LABELS, "tokenfactory.dev/pool": pool}, gpus=gpus)

    def status(self):
        return self.kube.statuses[(NS, NAME)]

    def pool(self, name):
        return next(p for p in self.status()["pools"] if p["name"] == name)

    def cond(self, type_):
        return next(c for c in self.status()["conditions"] if c["type"] == type_)

    def replicas(self, pool):
        return self.kube.objects[("Deployment", NS, f"{NAME}-{pool}")]["spec"]["replicas"]


@pytest.fixture
def rig(two_pool_example):
    return Rig(two_pool_example)


async def test_cost_figures_in_status_and_exported(rig):
    await rig.step()  # creates the pools; nothing to measure yet
    assert rig.cond("MetricsAvailable")["status"] == "Unknown" and rig.cond("MetricsAvailable")["reason"] == "NotReadYet"
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=20_000.0, prompt_tokens_per_second=40_000.0)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=600.0, prompt_tokens_per_second=1_200.0)
    await rig.step()
    gb, h = rig.pool("gb300"), rig.pool("h200")
    # 4 GPUs x $2.65 = $10.60/h over 20,000 tok/s: 10.6 / (20,000 x 3600) x 1e6
    assert gb["dollarsPerHour"] == pytest.approx(10.6)
    assert gb["costPerMillionTokens"] == pytest.approx(10.6 / (20_000 * 3600) * 1e6, rel=1e-5)
    assert h["costPerMillionTokens"] == pytest.approx(8 * 1.41 / (600 * 3600) * 1e6, rel=1e-5)
    assert gb["tokensPerSecondPerGpu"] == pytest.approx(5_000)
    assert gb["tokensPerSecondPerMegawatt"] == pytest.approx(20_000 / (4 * 2.143 / 1000), rel=1e-5)
    s = rig.status()
    assert s["tokensPerSecond"] == pytest.approx(20_600)
    assert s["costPerMillionTokens"] == pytest.approx((10.6 + 11.28) / (20_600 * 3600) * 1e6, rel=1e-5)
    assert rig.cond("MetricsAvailable")["status"] == "True" and s["lastMetricsTime"] == "2026-11-23T12:00:30Z"
    assert rig.exporter.value("tokenfactory_cost_per_million_tokens_dollars", pool="gb300", gpu_type="gb300") == pytest.approx(
        gb["costPerMillionTokens"], rel=1e-5)
    assert rig.exporter.value("tokenfactory_cost_per_million_tokens_dollars", pool="") == pytest.approx(
        s["costPerMillionTokens"], rel=1e-5)


async def test_no_tokens_no_cost_per_token_but_idle_cost_shows(rig):
    await rig.step()
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=0.0)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=0.0)
    await rig.step()
    assert rig.pool("gb300").get("costPerMillionTokens") is None
    assert rig.pool("gb300")["dollarsPerHour"] == pytest.approx(10.6)
    assert rig.status().get("costPerMillionTokens") is None and rig.status()["dollarsPerHour"] == pytest.approx(21.88)


async def test_prometheus_down_keeps_last_figures_and_holds(rig):
    await rig.step()
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=20_000.0)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=600.0)
    await rig.step()
    good_time, good_cost = rig.status()["lastMetricsTime"], rig.status()["costPerMillionTokens"]
    before = (rig.replicas("gb300"), rig.replicas("h200"))
    rig.prom.fail("PrometheusUnreachable")
    events = await rig.step()
    events += await rig.step()
    assert rig.cond("MetricsAvailable")["status"] == "False" and rig.cond("MetricsAvailable")["reason"] == "PrometheusUnreachable"
    assert rig.status()["lastMetricsTime"] == good_time and rig.status()["costPerMillionTokens"] == good_cost
    assert (rig.replicas("gb300"), rig.replicas("h200")) == before
    assert [e.reason for e in events if e.type == "Warning"] == ["MetricsUnavailable"]  # once, not every interval
    assert [v for n, _, v in rig.exporter.samples() if n == "tokenfactory_metrics_up"] == [0.0]
    rig.prom.recover()
    await rig.step()
    assert rig.cond("MetricsAvailable")["status"] == "True"


@pytest.mark.parametrize("mode", ["Auto", "Recommend"])
async def test_demand_step_scales_cheapest_pool_or_only_recommends(two_pool_example, mode):
    rig = Rig(two_pool_example, mode=mode)
    await rig.step()
    # one gb300 replica saturated at 24,000 tok/s with a queue: demand is beyond it
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=24_000.0, requests_waiting=200.0, requests_running=256.0)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=700.0)
    events = await rig.step()
    decision = rig.status()["lastDecision"]
    assert decision["mode"] == mode and decision["applied"] == (mode == "Auto")
    change = next(c for c in decision["changes"] if c["pool"] == "gb300")
    assert (change["from"], change["to"]) == (1, 2)
    assert decision["expectedDollarsPerHour"] > 0
    if mode == "Auto":
        assert rig.replicas("gb300") == 2
        assert any(e.reason == "ScaledUp" and e.message.startswith("gb300: 1 -> 2") for e in events)
    else:
        assert rig.replicas("gb300") == 1
        assert any(e.reason == "Recommendation" and "not applied" in e.message for e in events)
    assert any(k[2] == "gb300" and k[3] == "up" for k in rig.exporter.decisions())


async def test_off_mode_prices_but_never_plans(two_pool_example):
    rig = Rig(two_pool_example, mode="Off")
    await rig.step()
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=24_000.0, requests_waiting=500.0)
    await rig.step()
    assert rig.replicas("gb300") == 1 and "lastDecision" not in rig.status()
    assert rig.pool("gb300")["costPerMillionTokens"] is not None


async def test_budget_exceeded_condition_and_event(rig):
    rig.obj["spec"]["objectives"]["maxCostPerMillionTokens"] = 0.2
    await rig.step()
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=2_000.0)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=100.0)
    events = await rig.step()
    assert rig.cond("BudgetExceeded")["status"] == "True" and "maxCostPerMillionTokens" in rig.cond("BudgetExceeded")["message"]
    assert [e.reason for e in events if e.type == "Warning"] == ["BudgetExceeded"]
    events = await rig.step()
    assert not [e for e in events if e.reason == "BudgetExceeded"]  # not repeated while it stays over


async def test_removed_pool_series_are_forgotten(rig):
    await rig.step()
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=1_000.0)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=100.0)
    await rig.step()
    rig.obj["spec"]["pools"] = rig.obj["spec"]["pools"][:1]
    await rig.step()
    assert rig.exporter.value("tokenfactory_cost_per_hour_dollars", pool="gb300") is not None
    assert not [s for s in rig.exporter.samples() if "h200" in s[1]]
    rig.rec.forget(NS, NAME)
    assert rig.exporter.samples() == []


async def test_backlog_uses_measured_tokens_per_request(two_pool_example):
    # 48 requests/s complete for 24,000 generation tok/s on gb300 (and 1.4 for 700 on h200): 500
    # output tokens per request, so 200 waiting requests are 100,000 backlog tokens (not 200 x 1,000)
    rig = Rig(two_pool_example)
    await rig.step()
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=24_000.0, requests_waiting=200.0,
                      requests_running=256.0, requests_per_second=48.0)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=700.0, requests_per_second=1.4)
    await rig.step()
    reason = rig.status()["lastDecision"]["reason"]
    assert "200 waiting x 500 tok/request" in reason, reason


async def test_new_factory_applies_before_measuring_and_gets_no_metrics_warning(rig):
    events = await rig.step()  # first pass: applies, reads nothing
    # (UnevenCapacity: routing warns that one Service spreads evenly over a gb300 and an h200 replica)
    assert rig.prom.calls == [] and [e.reason for e in events] == ["Created", "Created", "UnevenCapacity"]
    assert rig.memory.last_measure is None  # so the next pass measures
    # the pools exist and are ready but Prometheus has no series yet (no scrape so far): not an outage yet
    events = await rig.step(seconds=2)
    assert len(rig.prom.calls) == 1
    assert rig.cond("MetricsAvailable")["status"] == "False" and rig.cond("MetricsAvailable")["reason"] == "NoSeries"
    assert "not served long enough" in rig.cond("MetricsAvailable")["message"]
    assert not [e for e in events if e.type == "Warning"]
    assert [e["reason"] for e in rig.kube.events if e["type"] == "Warning"] == ["UnevenCapacity"]  # routing's, pass 1
    # still no series a full window (2m) after the replicas became ready: that is an outage, said once
    rig.now += dt.timedelta(minutes=2)
    events = await rig.step()
    assert [e.reason for e in events if e.type == "Warning"] == ["MetricsUnavailable"]
    events = await rig.step()
    assert not [e for e in events if e.type == "Warning"]


async def test_a_measuring_bug_keeps_reconciling_the_children(rig, monkeypatch):
    from tokenfactory.pipeline import assess

    await rig.step()
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=1_000.0)
    await rig.step()
    good = rig.status()["costPerMillionTokens"]

    def broken(*_a, **_k):
        raise RuntimeError("bug")

    monkeypatch.setattr(assess, "assess", broken)
    del rig.kube.objects[("Deployment", NS, f"{NAME}-h200")]  # a child deleted by hand
    await rig.step()
    assert ("Deployment", NS, f"{NAME}-h200") in rig.kube.objects and rig.status()["costPerMillionTokens"] == good
