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
