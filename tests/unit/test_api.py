from __future__ import annotations

import copy

import pytest

from tokenfactory import api, gpusheet


def minimal(**pool):
    return {"model": {"name": "deepseek-ai/DeepSeek-R1"}, "pools": [{"name": "h200", "gpuType": "h200", **pool}]}


def problems(spec) -> list[str]:
    with pytest.raises(api.SpecError) as info:
        api.parse_spec(spec)
    return info.value.problems


def test_sheet_holds_the_seed_figures():
    h200, gb300 = gpusheet.lookup("h200"), gpusheet.lookup("GB300")
    assert (h200.price_per_gpu_hour, h200.tokens_per_second_per_gpu, h200.kilowatts_per_gpu) == (1.41, 90, 1.667)
    assert (gb300.price_per_gpu_hour, gb300.tokens_per_second_per_gpu, gb300.kilowatts_per_gpu) == (2.65, 6000, 2.143)
    # the kW figures are the published tok/s per MW turned around: 90 / 54K and 6,000 / 2.8M
    assert h200.kilowatts_per_gpu == pytest.approx(1000 * 90 / 54_000, abs=1e-3)
    assert gb300.kilowatts_per_gpu == pytest.approx(1000 * 6000 / 2_800_000, abs=1e-3)


def test_defaults_fill_from_sheet_and_spec_wins():
    spec = api.parse_spec(minimal())
    (pool,) = spec.resolve_pools()
    assert pool.price_per_gpu_hour == 1.41 and pool.sources["pricePerGpuHour"] == "sheet"
    assert pool.gpus_per_replica == 8 and pool.min_replicas == 1 and pool.max_replicas == 10
    assert spec.scaling.mode == "Auto" and spec.metrics.token_accounting == "output"
    assert api.parse_duration(spec.scaling.interval) == 30
    (pool,) = api.parse_spec(minimal(pricePerGpuHour=2.0, tokensPerSecondPerGpu=120)).resolve_pools()
    assert pool.price_per_gpu_hour == 2.0 and pool.sources["pricePerGpuHour"] == "spec"
    assert pool.tokens_per_second_per_gpu == 120 and pool.kilowatts_per_gpu == 1.667


def test_onprem_price_is_amortised_capex_plus_power():
    (pool,) = api.parse_spec(minimal(capexPerGpu=35040, amortizationYears=4, dollarsPerKwh=0.1, pue=1.2)).resolve_pools()
    # 35,040 / (4 x 8760) = 1.00 $/h, plus 1.667 kW x 1.2 x $0.10 = 0.20 $/h
    assert pool.price_per_gpu_hour == pytest.approx(1.0 + 1.667 * 1.2 * 0.1)
    assert pool.sources["pricePerGpuHour"] == "onPrem"


def test_unknown_gpu_type_without_price_names_the_field():
    (msg,) = problems({"model": {"name": "m"}, "pools": [{"name": "a", "gpuType": "mi355x"}]})
    assert msg.startswith("spec.pools[0].pricePerGpuHour:")
    assert "mi355x" in msg and "h200" in msg and "kilowattsPerGpu" in msg
    ok = {"model": {"name": "m"}, "pools": [{"name": "a", "gpuType": "mi355x", "pricePerGpuHour": 2.1,
                                             "kilowattsPerGpu": 1.4, "tokensPerSecondPerGpu": 100}]}
    assert api.parse_spec(ok).resolve_pools()[0].price_per_gpu_hour == 2.1


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda s: s.update(pools=[]), "spec.pools: List should have at least 1 item"),
        (lambda s: s["pools"][0].update(minReplicas=5, maxReplicas=2), "spec.pools[0]: minReplicas (5) must be less than or equal to maxReplicas (2)"),
        (lambda s: s["pools"][0].update(pricePerGpuHour=-1), "spec.pools[0].pricePerGpuHour: Input should be greater than 0"),
        (lambda s: s["pools"].append(copy.deepcopy(s["pools"][0])), "pool names must be unique"),
        (lambda s: s.update(scaling={"mode": "Sometimes"}), "spec.scaling.mode: must be one of 'Auto', 'Recommend' or 'Off'"),
        (lambda s: s["pools"][0].update(gpusPerReplica="eight"), "spec.pools[0].gpusPerReplica: Input should be a valid integer"),
        (lambda s: s["pools"][0].update(name="H200_pool"), "spec.pools[0].name: String should match pattern"),
        (lambda s: s.update(metrics={"window": "two minutes"}), "spec.metrics.window: String should match pattern"),
        (lambda s: s["pools"][0].update(pricePerGpuHour=1.0, capexPerGpu=30000, amortizationYears=4, dollarsPerKwh=0.1), "not both"),
        (lambda s: s["pools"][0].update(capexPerGpu=30000), "on-prem pricing needs capexPerGpu, amortizationYears and dollarsPerKwh together"),
        (lambda s: s["pools"][0].update(replicas=3), "spec.pools[0].replicas: unknown field"),
        (lambda s: s["model"].pop("name"), "spec.model.name: Field required"),
        (lambda s: s["engine"].update(resources={"limits": {"nvidia.com/gpu": 8}}), "nvidia.com/gpu is set from pools[].gpusPerReplica"),
    ],
)
def test_bad_input_is_rejected_with_the_field_path(mutate, expected):
    spec = minimal()
    spec["engine"] = {}
    mutate(spec)
    assert any(expected in p for p in problems(spec)), problems(spec)


def test_parse_object_checks_envelope(two_pool_example):
    tf = api.parse_object(two_pool_example)
    assert tf.name == "deepseek-r1" and [p.name for p in tf.spec.pools] == ["gb300", "h200"]
    bad = dict(two_pool_example, apiVersion="tokenfactory.dev/v1", metadata={"name": "Bad_Name"})
    msgs = problems_obj(bad)
    assert any(m.startswith("apiVersion: must be tokenfactory.dev/v1alpha1") for m in msgs)
    assert any(m.startswith("metadata.name:") for m in msgs)


def problems_obj(obj):
    with pytest.raises(api.SpecError) as info:
        api.parse_object(obj)
    return info.value.problems


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25)])
def test_durations(text, seconds):
    assert api.parse_duration(text) == seconds


def test_bad_duration():
    with pytest.raises(ValueError, match="not a duration"):
        api.parse_duration("5 minutes")
