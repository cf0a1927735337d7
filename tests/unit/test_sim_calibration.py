"""The simulator's engines against the stored aiconfigurator points (docs/calibration.md)."""

import pytest

from tokenfactory import gpusheet
from tokenfactory.sim import profiles as pr


@pytest.mark.parametrize("gpu", ["h200", "gb300"])
def test_stored_points_have_provenance(gpu):
    data = pr.calibration_points(pr.FIT[gpu]["setup"])
    assert data["source"].startswith("aiconfigurator 0.12.0")
    assert data["isl"] == 1000 and data["osl"] == 500 and data["mode"] == "agg"
    assert data["gpus_per_engine"] == pr.SHAPES[gpu]["reference_gpus"]
    pts = [p for p in data["points"] if "error" not in p]
    assert len(pts) >= 6
    for p in pts:
        assert p["tokens_per_second_per_gpu"] > 0 and p["ttft_seconds"] > 0 and p["tpot_seconds"] > 0


@pytest.mark.parametrize("gpu", ["h200", "gb300"])
def test_shapes_are_the_fit_of_the_stored_points(gpu):
    base, per_seq, per_tok = pr.refit(gpu)
    shape = pr.SHAPES[gpu]
    assert shape["step_base_seconds"] == pytest.approx(base, rel=1e-6)
    assert shape["step_per_seq_seconds"] == pytest.approx(per_seq, rel=1e-6, abs=1e-12)
    assert shape["step_per_prefill_token_seconds"] == pytest.approx(per_tok, rel=1e-6)


@pytest.mark.parametrize("gpu", ["h200", "gb300"])
def test_simulated_engine_within_10_percent_of_measured_points(gpu):
    """Run the calibrated (unanchored) engine saturated at each measured concurrency: throughput
    per GPU and mean inter-token latency (vLLM's histogram) within 10% of aiconfigurator's throughput
    and TPOT at 3 or more operating points."""
    rows = pr.calibration_table(gpu)
    close = [r for r in rows if abs(r["error"]["tokens_per_second_per_gpu"]) <= 0.10 and abs(r["error"]["itl"]) <= 0.10]
    assert len(close) >= 3, [(r["concurrency"], r["error"]) for r in rows]
    # the curve's shape: throughput and ITL grow with concurrency, as measured
    sims = [r["sim"] for r in rows]
    assert all(b["tokens_per_second_per_gpu"] > a["tokens_per_second_per_gpu"] for a, b in zip(sims, sims[1:]))
    assert sims[-1]["itl_seconds"] > sims[0]["itl_seconds"]


@pytest.mark.parametrize("gpu", ["h200", "gb300"])
def test_anchor_to_the_sheet(gpu):
    prof = pr.profile_for(gpu)
    sheet = gpusheet.lookup(gpu).tokens_per_second_per_gpu
    ss = pr.steady_state(prof, prof.max_num_seqs)
    assert ss.output_tokens_per_second_per_gpu == pytest.approx(sheet, rel=1e-9)
    # the anchored engine, run saturated at its concurrency limit, makes the sheet's figure
    sim = pr.simulate_point(prof, prof.max_num_seqs)
    assert sim["tokens_per_second_per_gpu"] == pytest.approx(sheet, rel=0.08)
    assert sim["running"] >= 0.85 * prof.max_num_seqs  # slots freed in the last tick refill in the next
