import argparse
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfactory import cost, cost_cli, gpusheet


def test_seed_h200_formula_value():
    assert cost.cost_per_million_tokens(1.41, 90) == pytest.approx(4.35185, rel=1e-4)
    assert round(cost.cost_per_million_tokens(1.41, 90), 3) == 4.352


def test_seed_gb300_formula_value():
    assert round(cost.cost_per_million_tokens(2.65, 6000), 4) == 0.1227


def test_sheet_figures_give_formula_not_published():
    for gpu, expected in (("h200", 4.352), ("gb300", 0.1227)):
        e = gpusheet.lookup(gpu)
        v = cost.cost_per_million_tokens(e.price_per_gpu_hour, e.tokens_per_second_per_gpu)
        assert v == pytest.approx(expected, abs=5e-4)
        assert v != pytest.approx(e.published_cost_per_million_tokens, abs=1e-3)


def test_zero_tokens_is_absent_not_zero_or_inf():
    assert cost.cost_per_million_tokens(100.0, 0.0) is None


def test_negative_or_nan_rejected():
    with pytest.raises(cost.CostInputError):
        cost.cost_per_million_tokens(-1, 10)
    with pytest.raises(cost.CostInputError):
        cost.cost_per_million_tokens(1, float("nan"))
    with pytest.raises(cost.CostInputError):
        cost.dollars_per_hour(float("inf"), 1)


def test_on_prem_price():
    # 30,000 $ over 4 years -> 30000/35040 = 0.85616 $/h; 1.2 kW x 1.3 x 0.10 = 0.156 $/h
    p = cost.on_prem_price_per_gpu_hour(30000, 4, 1.2, 1.3, 0.10)
    assert p == pytest.approx(30000 / (4 * 8760) + 1.2 * 1.3 * 0.10)
    assert p == pytest.approx(1.01216, rel=1e-4)
    with pytest.raises(cost.CostInputError):
        cost.on_prem_price_per_gpu_hour(30000, 0, 1.2, 1.3, 0.1)


def h200_pool(**kw):
    base = dict(
        name="h200",
        gpu_type="h200",
        gpus=16,
        price_per_gpu_hour=1.41,
        kilowatts_per_gpu=1.667,
        prompt_tokens_per_second=2880.0,
        generation_tokens_per_second=1440.0,
        tokens_per_second_per_gpu_capacity=90.0,
    )
    base.update(kw)
    return cost.PoolInput(**base)


def test_pool_cost_output_accounting():
    f = cost.pool_cost(h200_pool(), "output")
    assert f.dollars_per_hour == pytest.approx(16 * 1.41)
    assert f.headline_tokens_per_second == 1440.0
    # 16 GPUs delivering 90 tok/s each = exactly the sheet figure
    assert f.tokens_per_second_per_gpu == pytest.approx(90.0)
    assert f.cost_per_million_tokens == pytest.approx(4.352, abs=5e-4)
    assert f.cost_per_million_generation_tokens == f.cost_per_million_tokens
    assert f.cost_per_million_total_tokens == pytest.approx(16 * 1.41 / (4320 * 3600) * 1e6)
    assert f.power_kilowatts == pytest.approx(16 * 1.667)
    assert f.tokens_per_second_per_megawatt == pytest.approx(1440 / (16 * 1.667 / 1000))
    assert f.tokens_per_second_per_megawatt == pytest.approx(54000, rel=1e-3)
    assert f.capacity_tokens_per_second == pytest.approx(1440.0)
    assert f.utilisation == pytest.approx(1.0)


def test_pool_cost_total_accounting_changes_headline():
    f = cost.pool_cost(h200_pool(), "total")
    assert f.headline_tokens_per_second == 4320.0
    assert f.cost_per_million_tokens == pytest.approx(f.cost_per_million_total_tokens)
    assert f.cost_per_million_tokens < cost.pool_cost(h200_pool(), "output").cost_per_million_tokens
    assert f.utilisation == pytest.approx(1.0)  # capacity is in generation tokens
    with pytest.raises(cost.CostInputError):
        cost.pool_cost(h200_pool(), "input")


def test_idle_gpus_are_charged():
    half = cost.pool_cost(h200_pool(generation_tokens_per_second=720.0))
    assert half.dollars_per_hour == pytest.approx(16 * 1.41)
    assert half.utilisation == pytest.approx(0.5)
    assert half.cost_per_million_tokens == pytest.approx(2 * 4.35185, rel=1e-4)


def test_idle_pool_has_hourly_cost_but_no_token_cost():
    f = cost.pool_cost(h200_pool(prompt_tokens_per_second=0, generation_tokens_per_second=0))
    assert f.dollars_per_hour > 0
    assert f.cost_per_million_tokens is None
    assert f.cost_per_million_total_tokens is None
    assert f.tokens_per_second_per_gpu == 0.0
    assert f.utilisation == 0.0


def test_zero_gpus():
    f = cost.pool_cost(h200_pool(gpus=0, prompt_tokens_per_second=0, generation_tokens_per_second=0))
    assert f.dollars_per_hour == 0
    assert f.tokens_per_second_per_gpu is None
    assert f.tokens_per_second_per_megawatt is None
    assert f.utilisation is None
    assert f.cost_per_million_tokens is None


def test_huge_values_stay_finite():
    f = cost.pool_cost(h200_pool(gpus=1e6, generation_tokens_per_second=1e12, price_per_gpu_hour=1e4))
    assert math.isfinite(f.cost_per_million_tokens)
    assert f.cost_per_million_tokens == pytest.approx(1e10 / (1e12 * 3600) * 1e6)


def test_factory_aggregate_sums_pools():
    gb = cost.PoolInput(
        name="gb300",
        gpu_type="gb300",
        gpus=8,
        price_per_gpu_hour=2.65,
        kilowatts_per_gpu=2.143,
        prompt_tokens_per_second=0,
        generation_tokens_per_second=48000.0,
        tokens_per_second_per_gpu_capacity=6000.0,
    )
    fc = cost.factory_cost([h200_pool(), gb])
    t = fc.total
    assert t.name == ""
    assert t.gpu_type == ""
    assert t.gpus == 24
    assert t.dollars_per_hour == pytest.approx(16 * 1.41 + 8 * 2.65)
    assert t.generation_tokens_per_second == pytest.approx(49440.0)
    assert t.cost_per_million_tokens == pytest.approx(t.dollars_per_hour / (49440 * 3600) * 1e6)
    assert t.capacity_tokens_per_second == pytest.approx(1440 + 48000)
    assert t.power_kilowatts == pytest.approx(16 * 1.667 + 8 * 2.143)
    assert t.price_per_gpu_hour == pytest.approx(t.dollars_per_hour / 24)
    assert fc.pool("gb300").cost_per_million_tokens == pytest.approx(0.1227, abs=5e-5)
    assert fc.pool("nope") is None


def test_factory_capacity_unknown_if_any_pool_unknown():
    fc = cost.factory_cost([h200_pool(), h200_pool(name="b", tokens_per_second_per_gpu_capacity=None)])
    assert fc.total.capacity_tokens_per_second is None
    assert fc.total.utilisation is None


def test_empty_factory():
    fc = cost.factory_cost([])
    assert fc.total.dollars_per_hour == 0
    assert fc.total.cost_per_million_tokens is None
    assert fc.total.price_per_gpu_hour is None


@settings(deadline=None, max_examples=60)
@given(
    gpus=st.integers(min_value=1, max_value=10_000),
    price=st.floats(min_value=0.01, max_value=100),
    tps=st.floats(min_value=0.001, max_value=1e7),
)
def test_cost_matches_formula_and_scales(gpus, price, tps):
    f = cost.pool_cost(cost.PoolInput("p", "x", gpus, price, 1.0, 0.0, tps))
    assert f.cost_per_million_tokens == pytest.approx(gpus * price / (tps * 3600) * 1e6)
    # doubling delivered tokens halves the cost per token
    f2 = cost.pool_cost(cost.PoolInput("p", "x", gpus, price, 1.0, 0.0, 2 * tps))
    assert f2.cost_per_million_tokens == pytest.approx(f.cost_per_million_tokens / 2)


def test_explain_h200_shows_formula_and_published():
    e = gpusheet.lookup("h200")
    text = "\n".join(
        cost.explain(1.41, 90, 1.667, published_cost_per_million_tokens=e.published_cost_per_million_tokens)
    )
    assert "$1.41 / (90 x 3600) x 1e6 = $4.352/Mtok" in text
    assert "$4.20" in text
    assert "used" in text and "$4.352" in text.splitlines()[-1]
    assert "53,989" in text  # 90 / 1.667 kW * 1000


def test_explain_gb300():
    text = "\n".join(cost.explain(2.65, 6000))
    assert "$0.1227/Mtok" in text
    assert "kW" not in text


def test_explain_zero_tokens():
    text = "\n".join(cost.explain(2.0, 0))
    assert "absent" in text


def _cli(argv):
    p = argparse.ArgumentParser(prog="tokenfactory")
    cost_cli.register(p.add_subparsers())
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_gpu_type_fills_from_sheet(capsys):
    assert _cli(["cost", "--gpu-type", "H200"]) == 0
    out = capsys.readouterr().out
    assert "$4.352/Mtok" in out and "$4.20/Mtok" in out


def test_cli_override_hides_published(capsys):
    assert _cli(["cost", "--gpu-type", "gb300", "--tokens-per-second-per-gpu", "3000"]) == 0
    out = capsys.readouterr().out
    assert "$0.2454/Mtok" in out
    assert "published" not in out


def test_cli_bad_number_exits_2_naming_flag(capsys):
    with pytest.raises(SystemExit) as ei:
        _cli(["cost", "--price-per-gpu-hour", "abc", "--tokens-per-second-per-gpu", "1"])
    assert ei.value.code == 2
    assert "--price-per-gpu-hour" in capsys.readouterr().err


def test_cli_negative_exits_2(capsys):
    with pytest.raises(SystemExit) as ei:
        _cli(["cost", "--price-per-gpu-hour", "1", "--tokens-per-second-per-gpu", "-5"])
    assert ei.value.code == 2
    assert "--tokens-per-second-per-gpu" in capsys.readouterr().err


def test_cli_missing_is_usage_error_unknown_type_is_invalid_input(capsys):
    assert _cli(["cost", "--price-per-gpu-hour", "1"]) == 2
    assert "--tokens-per-second-per-gpu" in capsys.readouterr().err
    assert _cli(["cost", "--gpu-type", "a100"]) == 1
    assert "--gpu-type" in capsys.readouterr().err


def test_cli_on_prem_prints_the_arithmetic(capsys):
    argv = ["cost", "--gpu-type", "h200", "--capex-per-gpu", "35040", "--amortization-years", "4",
            "--dollars-per-kwh", "0.1", "--pue", "1.5", "--kilowatts-per-gpu", "2"]
    assert _cli(argv) == 0
    out = capsys.readouterr().out
    # 35,040 / (4 x 8760) = $1/h; 2 kW x 1.5 x $0.1 = $0.30/h; $1.30/GPU-h at the sheet's 90 tok/s
    assert "$35,040 / (4 years x 8760 h) = $35,040 / 35,040 h = $1" in out
    assert "2 kW x PUE 1.5 x $0.1/kWh = $0.3" in out
    assert "on-prem price per GPU-hour   = $1 + $0.3 = $1.3" in out
    assert "$1.3 / (90 x 3600) x 1e6 = $4.012/Mtok" in out
    assert "published" not in out  # the sheet's published figure is for its cloud price
    assert _cli(argv + ["-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pricing"] == "onPrem" and data["onPrem"]["capexDollarsPerGpuHour"] == pytest.approx(1.0)
    assert data["pricePerGpuHour"] == pytest.approx(cost.on_prem_price_per_gpu_hour(35040, 4, 2, 1.5, 0.1))
    assert data["costPerMillionTokens"] == pytest.approx(data["pricePerGpuHour"] / (90 * 3600) * 1e6)


def test_cli_on_prem_matches_what_the_crd_resolves():
    from tokenfactory import api

    spec = api.parse_spec({"model": {"name": "m"}, "pools": [{"name": "a", "gpuType": "gb300", "capexPerGpu": 60000,
                           "amortizationYears": 5, "dollarsPerKwh": 0.12, "pue": 1.2}]})
    (rp,) = spec.resolve_pools()
    b = cost.on_prem_breakdown(60000, 5, rp.kilowatts_per_gpu, 1.2, 0.12)
    assert b["pricePerGpuHour"] == pytest.approx(rp.price_per_gpu_hour)
    assert b["capexDollarsPerGpuHour"] + b["energyDollarsPerGpuHour"] == pytest.approx(rp.price_per_gpu_hour)


@pytest.mark.parametrize("argv, needle", [
    (["--price-per-gpu-hour", "1", "--capex-per-gpu", "1", "--amortization-years", "1", "--dollars-per-kwh", "0.1"],
     "not both"),
    (["--gpu-type", "h200", "--capex-per-gpu", "30000"], "missing --amortization-years, --dollars-per-kwh"),
    (["--gpu-type", "h200", "--pue", "1.2"], "--pue applies to on-prem"),
    (["--capex-per-gpu", "1", "--amortization-years", "1", "--dollars-per-kwh", "0.1",
      "--tokens-per-second-per-gpu", "5"], "--kilowatts-per-gpu"),
])
def test_cli_on_prem_usage_errors(capsys, argv, needle):
    assert _cli(["cost", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_cli_pue_below_one_is_refused(capsys):
    with pytest.raises(SystemExit) as ei:
        _cli(["cost", "--gpu-type", "h200", "--capex-per-gpu", "1", "--amortization-years", "1",
              "--dollars-per-kwh", "0.1", "--pue", "0.9"])
    assert ei.value.code == 2 and "--pue must be >= 1" in capsys.readouterr().err


def test_cli_json_cloud(capsys):
    assert _cli(["cost", "--gpu-type", "gb300", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["priceSource"] == "sheet" and data["publishedCostPerMillionTokens"] == 0.12
    assert data["costPerMillionTokens"] == pytest.approx(2.65 / (6000 * 3600) * 1e6)
    assert data["tokensPerSecondPerMegawatt"] == pytest.approx(6000 / (2.143 / 1000))
