"""The demo's report figures come from the GPU sheet and cost.py, not from copies of them."""

from __future__ import annotations

import dataclasses

import pytest

from tokenfactory import cost, demo_report, gpusheet


def test_seed_figures_follow_the_sheet(monkeypatch):
    before = demo_report.seed_cost_per_mtok("h200")
    sheet = gpusheet.lookup("h200")
    assert before == cost.cost_per_million_tokens(sheet.price_per_gpu_hour, sheet.tokens_per_second_per_gpu)
    real = gpusheet.lookup
    cheaper = dataclasses.replace(sheet, price_per_gpu_hour=sheet.price_per_gpu_hour / 2)
    monkeypatch.setattr(gpusheet, "lookup", lambda t: cheaper if t == "h200" else real(t))
    assert demo_report.seed_cost_per_mtok("h200") == pytest.approx(before / 2)
    text = demo_report.seed_comparison()
    assert f"H200 ${cheaper.price_per_gpu_hour:.2f}/GPU-h" in text
    ratio = demo_report.seed_cost_per_mtok("h200") / demo_report.seed_cost_per_mtok("gb300")
    assert f"({ratio:.0f}x" in text


def test_unknown_gpu_type_is_named():
    with pytest.raises(KeyError, match="'mi355x' is not in the GPU sheet"):
        demo_report.seed_cost_per_mtok("mi355x")


def test_summary_cost_is_dollars_over_tokens():
    pool = {"gpuType": "gb300", "dollarsPerHour": 10.6, "tokensPerSecond": 20_000.0, "readyReplicas": 1,
            "desiredReplicas": 1}
    samples = [{"t": float(t), "demand": 20_000.0, "factory": {"dollarsPerHour": 10.6, "tokensPerSecond": 20_000.0},
                "pools": {"gb300": pool}} for t in (0, 60, 120)]
    s = demo_report.summarize(samples, {}, 120.0)
    # 120 s at $10.60/h over 20,000 tok/s: the live formula's value
    want = cost.cost_per_million_tokens(10.6, 20_000.0)
    assert s["costPerMillionTokens"] == pytest.approx(want, rel=1e-5)
    assert s["pools"]["gb300"]["costPerMillionTokens"] == pytest.approx(want, rel=1e-5)
    idle = [{**x, "factory": {"dollarsPerHour": 10.6, "tokensPerSecond": 0.0},
             "pools": {"gb300": {**pool, "tokensPerSecond": 0.0}}} for x in samples]
    assert demo_report.summarize(idle, {}, 120.0)["costPerMillionTokens"] is None
