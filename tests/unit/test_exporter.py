import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokenfactory import cost, exporter


def factory_cost(gen_h200=1440.0, gen_gb=24000.0):
    return cost.factory_cost(
        [
            cost.PoolInput("h200", "h200", 16, 1.41, 1.667, 2880.0, gen_h200, 90.0),
            cost.PoolInput("gb300", "gb300", 4, 2.65, 2.143, 0.0, gen_gb, 6000.0),
        ]
    )


def figures(**kw):
    return exporter.FactoryFigures.from_cost(
        factory_cost(**kw),
        replicas={"h200": (2, 2), "gb300": (1, 0)},
        latency={"h200": (0.6, 0.04)},
        objectives=exporter.Objectives(cost_per_million_tokens=1.0, ttft_p95_seconds=2.0),
    )


def parse(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def find(samples, name, **labels):
    hits = [v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == w for k, w in labels.items())]
    return hits


def test_publish_exposes_pool_and_total_series():
    e = exporter.PrometheusExporter()
    e.publish("ns", "r1", "deepseek-ai/DeepSeek-R1", figures())
    s = parse(e.exposition())
    [v] = find(s, "tokenfactory_cost_per_million_tokens_dollars", pool="h200")
    assert v == pytest.approx(4.352, abs=5e-4)
    [v] = find(s, "tokenfactory_cost_per_million_tokens_dollars", pool="gb300")
    assert v == pytest.approx(4 * 2.65 / (24000 * 3600) * 1e6)
    [total] = find(s, "tokenfactory_cost_per_hour_dollars", pool="")
    assert total == pytest.approx(16 * 1.41 + 4 * 2.65)
    assert find(s, "tokenfactory_tokens_per_second", pool="h200", token_type="prompt") == [2880.0]
    assert find(s, "tokenfactory_tokens_per_second", pool="h200", token_type="generation") == [1440.0]
    assert find(s, "tokenfactory_replicas", pool="gb300", state="desired") == [1.0]
    assert find(s, "tokenfactory_replicas", pool="gb300", state="ready") == [0.0]
    assert find(s, "tokenfactory_replicas", pool="", state="desired") == [3.0]
    assert find(s, "tokenfactory_ttft_p95_seconds", pool="h200") == [0.6]
    assert find(s, "tokenfactory_ttft_p95_seconds", pool="gb300") == []
    assert find(s, "tokenfactory_gpus", pool="") == [20.0]
    [mw] = find(s, "tokenfactory_tokens_per_second_per_megawatt", pool="h200")
    assert mw == pytest.approx(54000, rel=1e-3)
    assert find(s, "tokenfactory_metrics_up", factory="r1") == [1.0]
    assert find(s, "tokenfactory_objective_cost_per_million_tokens_dollars") == [1.0]
    assert find(s, "tokenfactory_objective_dollars_per_hour") == []
    labels = dict(next(ls for (n, ls) in s if n == "tokenfactory_gpus"))
    assert set(labels) == {"namespace", "factory", "pool", "model", "gpu_type"}
    assert labels["model"] == "deepseek-ai/DeepSeek-R1"


def test_no_tokens_means_no_cost_per_token_but_hourly_cost():
    e = exporter.PrometheusExporter()
    e.publish("ns", "r1", "m", figures(gen_h200=0.0, gen_gb=0.0))
    s = parse(e.exposition())
    assert find(s, "tokenfactory_cost_per_million_tokens_dollars", pool="h200") == []
    assert find(s, "tokenfactory_cost_per_million_tokens_dollars", pool="") == []
    assert find(s, "tokenfactory_cost_per_hour_dollars", pool="h200") == [pytest.approx(16 * 1.41)]


def test_metrics_down_drops_token_figures():
    e = exporter.PrometheusExporter()
    f = exporter.FactoryFigures.from_cost(factory_cost(), metrics_up=False)
    e.publish("ns", "r1", "m", f)
    s = parse(e.exposition())
    assert find(s, "tokenfactory_metrics_up") == [0.0]
    assert find(s, "tokenfactory_tokens_per_second") == []
    assert find(s, "tokenfactory_cost_per_million_tokens_dollars") == []
    assert len(find(s, "tokenfactory_cost_per_hour_dollars")) == 3


def test_pool_removed_on_republish_and_forget_pool():
    e = exporter.PrometheusExporter()
    e.publish("ns", "r1", "m", figures())
    e.record_scaling_decision("ns", "r1", "gb300", "up")
    e.record_scaling_decision("ns", "r1", "gb300", "up")
    e.record_scaling_decision("ns", "r1", "h200", "down")
    s = parse(e.exposition())
    assert find(s, "tokenfactory_scaling_decisions_total", pool="gb300", direction="up") == [2.0]
    # republish without gb300: its gauges and counters go
    only_h200 = cost.factory_cost([cost.PoolInput("h200", "h200", 16, 1.41, 1.667, 0.0, 100.0)])
    e.publish("ns", "r1", "m", exporter.FactoryFigures.from_cost(only_h200))
    s = parse(e.exposition())
    assert find(s, "tokenfactory_gpus", pool="gb300") == []
    assert find(s, "tokenfactory_scaling_decisions_total", pool="gb300") == []
    assert find(s, "tokenfactory_scaling_decisions_total", pool="h200") == [1.0]
    e.forget_pool("ns", "r1", "h200")
    s = parse(e.exposition())
    assert find(s, "tokenfactory_gpus", pool="h200") == []
    assert find(s, "tokenfactory_scaling_decisions_total") == []
    assert find(s, "tokenfactory_gpus", pool="") != []


def test_forget_factory_leaves_others():
    e = exporter.PrometheusExporter()
    e.publish("ns", "r1", "m", figures())
    e.publish("ns", "r2", "m", figures())
    e.record_scaling_decision("ns", "r1", "h200", "up")
    e.forget("ns", "r1")
    s = parse(e.exposition())
    assert find(s, "tokenfactory_gpus", factory="r1") == []
    assert find(s, "tokenfactory_metrics_up", factory="r1") == []
    assert find(s, "tokenfactory_scaling_decisions_total") == []
    assert len(find(s, "tokenfactory_gpus", factory="r2")) == 3
    e.forget("ns", "r2")
    assert [n for n, _ in parse(e.exposition())] == ["tokenfactory_build_info"]


def test_http_server_serves_registry():
    e = exporter.PrometheusExporter()
    port = e.start(0, addr="127.0.0.1")
    try:
        e.publish("ns", "r1", "m", figures())
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert find(parse(body), "tokenfactory_gpus", pool="h200") == [16.0]
        assert "python_gc" not in body  # own registry, not the global one
    finally:
        e.stop()


def test_fake_exporter_records():
    f = exporter.FakeExporter()
    assert isinstance(f, exporter.MetricsExporter)
    assert isinstance(exporter.PrometheusExporter(), exporter.MetricsExporter)
    f.publish("ns", "r1", "m", figures())
    assert f.value("tokenfactory_gpus", pool="gb300") == 4.0
    assert f.value("tokenfactory_tokens_per_second", pool="h200", token_type="prompt") == 2880.0
    assert f.value("tokenfactory_metrics_up", factory="r1") == 1.0
    f.record_scaling_decision("ns", "r1", "h200", "up", 3)
    assert f.decisions() == {("ns", "r1", "h200", "up"): 3}
    f.forget("ns", "r1")
    assert f.samples() == [] and f.decisions() == {}
    assert [c[0] for c in f.calls] == ["publish", "decision", "forget"]
    with pytest.raises(ValueError):
        f.record_scaling_decision("ns", "r1", "h200", "up", -1)


# ------------------------------------------------------------------ Prometheus naming (issue 13)


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def types(text):
    return {fam.name: fam.type for fam in text_string_to_metric_families(text)}


def test_pool_series_and_factory_totals_have_distinct_names():
    """sum() over a per-pool metric counts every dollar once (the old names carried the total too)."""
    e = exporter.PrometheusExporter()
    e.publish("ns", "r1", "m", figures())
    s = parse(e.exposition())
    pools = find(s, "tokenfactory_pool_cost_dollars_per_hour")
    assert sorted(pools) == pytest.approx(sorted([16 * 1.41, 4 * 2.65]))
    [total] = find(s, "tokenfactory_factory_cost_dollars_per_hour")
    assert sum(pools) == pytest.approx(total)
    for name in exporter.POOL_GAUGES:  # no per-pool name holds a factory row
        assert not find(s, name, pool=""), name
    for (n, ls) in s:
        if n.startswith("tokenfactory_factory_"):
            assert {k for k, _ in ls} <= {"namespace", "factory", "model", "kind", "state"}, n
    assert find(s, "tokenfactory_pool_tokens_per_second", pool="h200", kind="prompt") == [2880.0]
    assert find(s, "tokenfactory_factory_tokens_per_second", kind="generation") == [1440.0 + 24000.0]
    assert find(s, "tokenfactory_factory_replicas", state="desired") == [3.0]


def test_base_units():
    e = exporter.PrometheusExporter()
    e.publish("ns", "r1", "m", figures())
    s = parse(e.exposition())
    assert find(s, "tokenfactory_pool_power_watts", pool="h200") == [pytest.approx(16 * 1667.0)]
    [tpj] = find(s, "tokenfactory_pool_tokens_per_joule", pool="h200")
    assert tpj * 1e6 == pytest.approx(54000, rel=1e-3)  # the sheet's 54K tok/s per MW
    names = {n for n, _ in s if not exporter.FAMILIES[n].replaced_by}
    assert not [n for n in names if "kilowatt" in n or "megawatt" in n], names


def test_rates_are_gauges_and_cumulative_amounts_are_counters():
    e = exporter.PrometheusExporter(clock=Clock())
    e.publish("ns", "r1", "m", figures())
    e.record_scaling_decision("ns", "r1", "h200", "up")
    t = types(e.exposition())
    for name, typ in t.items():
        assert typ == ("counter" if name in ("tokenfactory_spend_dollars", "tokenfactory_tokens",
                                             "tokenfactory_scaling_decisions") else "gauge"), name
    assert "tokenfactory_pool_tokens_per_second" in t and "tokenfactory_spend_dollars" in t


def test_counters_integrate_spend_and_tokens_per_pool():
    clock = Clock()
    e = exporter.PrometheusExporter(clock=clock)
    e.publish("ns", "r1", "m", figures())  # first publish: counters start at 0
    s = parse(e.exposition())
    assert find(s, "tokenfactory_spend_dollars_total", pool="h200") == [0.0]
    assert find(s, "tokenfactory_tokens_total", pool="h200", kind="generation") == [0.0]
    assert find(s, "tokenfactory_spend_dollars_total", pool="") == []  # per pool only: sum() for the factory
    clock.t += 60
    e.publish("ns", "r1", "m", figures())
    clock.t += 30
    e.publish("ns", "r1", "m", figures(gen_h200=720.0))
    s = parse(e.exposition())
    [h200] = find(s, "tokenfactory_spend_dollars_total", pool="h200")
    assert h200 == pytest.approx(16 * 1.41 * 90 / 3600)
    [gb] = find(s, "tokenfactory_spend_dollars_total", pool="gb300", gpu_type="gb300")
    assert gb == pytest.approx(4 * 2.65 * 90 / 3600)
    assert find(s, "tokenfactory_tokens_total", pool="h200", kind="generation") == [pytest.approx(1440 * 60 + 720 * 30)]
    assert find(s, "tokenfactory_tokens_total", pool="h200", kind="prompt") == [pytest.approx(2880 * 90)]
    assert find(s, "tokenfactory_tokens_total", pool="gb300", kind="prompt") == [0.0]
    # metrics down: GPUs still cost money, tokens do not advance
    clock.t += 10
    e.publish("ns", "r1", "m", exporter.FactoryFigures.from_cost(factory_cost(), metrics_up=False))
    s = parse(e.exposition())
    assert find(s, "tokenfactory_spend_dollars_total", pool="h200") == [pytest.approx(16 * 1.41 * 100 / 3600)]
    assert find(s, "tokenfactory_tokens_total", pool="h200", kind="generation") == [pytest.approx(1440 * 60 + 720 * 30)]


def test_counters_skip_long_gaps_and_go_with_their_pool():
    clock = Clock()
    f = exporter.FakeExporter(clock=clock, max_gap_seconds=300)
    f.publish("ns", "r1", "m", figures())
    clock.t += 301  # a gap the operator knows nothing about: not integrated
    f.publish("ns", "r1", "m", figures())
    assert f.value("tokenfactory_spend_dollars_total", pool="h200") == 0.0
    clock.t += 100
    f.publish("ns", "r1", "m", figures())
    assert f.value("tokenfactory_spend_dollars_total", pool="h200") == pytest.approx(16 * 1.41 * 100 / 3600)
    f.forget_pool("ns", "r1", "h200")
    assert f.value("tokenfactory_spend_dollars_total", pool="h200") is None
    assert f.value("tokenfactory_spend_dollars_total", pool="gb300") is not None
    f.forget("ns", "r1")
    assert f.samples() == []


def test_build_info():
    from tokenfactory import __version__

    s = parse(exporter.PrometheusExporter().exposition())
    [(name, labels)] = list(s)
    assert name == "tokenfactory_build_info" and dict(labels)["version"] == __version__
    assert s[(name, labels)] == 1.0


def test_deprecated_aliases_are_marked_and_can_be_dropped():
    e = exporter.PrometheusExporter()
    e.publish("ns", "r1", "m", figures())
    text = e.exposition()
    for old in exporter.DEPRECATED_GAUGES:
        assert f"# HELP {old} DEPRECATED" in text, old
    s = parse(text)
    # same figures under the old names (pool rows and the pool="" total), old units
    assert find(s, "tokenfactory_cost_per_hour_dollars", pool="") == find(s, "tokenfactory_factory_cost_dollars_per_hour")
    assert find(s, "tokenfactory_power_kilowatts", pool="h200") == [pytest.approx(16 * 1.667)]
    quiet = exporter.PrometheusExporter(deprecated_aliases=False)
    quiet.publish("ns", "r1", "m", figures())
    assert not set(exporter.DEPRECATED_GAUGES) & {n for n, _ in parse(quiet.exposition())}
