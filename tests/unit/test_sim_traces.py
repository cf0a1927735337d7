"""Trace files (detected by content), request-level replay and --rate-scale."""

import json
import math

import numpy as np
import pytest

from tokenfactory.sim import traces as tr
from tokenfactory.sim.fleet import EngineSpec, Fleet

AZURE = tr.AZURE_CODE_TRACE


def write_azure(path, rows):
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{t},{p},{o}\n" for t, p, o in rows))
    return str(path)


def write_mooncake(path, rows):
    path.write_text("".join(json.dumps({"timestamp": t, "input_length": p, "output_length": o, "hash_ids": [1, 2]})
                            + "\n" for t, p, o in rows))
    return str(path)


def test_formats_detected_by_content(tmp_path):
    rate = tmp_path / "a.txt"
    rate.write_text("seconds,tokens_per_second\n0,100\n10,300\n")
    az = write_azure(tmp_path / "b.txt", [("2023-11-16 18:17:03.9799600", 4808, 10),
                                          ("2023-11-16 18:17:05.4799600", 100, 20)])
    mc = write_mooncake(tmp_path / "c.txt", [(0, 6955, 52), (2500, 100, 8), (1000, 50, 4)])
    assert [tr.detect_format(str(p)) for p in (rate, az, mc)] == ["rate-csv", "azure-csv", "mooncake-jsonl"]
    t = tr.parse_trace(str(rate))  # a plain path, no csv: prefix
    assert t(5).output_tokens_per_second == 200
    a = tr.parse_trace(str(az))
    assert isinstance(a, tr.RequestTrace)
    assert a.times.tolist() == pytest.approx([0.0, 1.5])
    assert a.prompt.tolist() == [4808, 100] and a.output.tolist() == [10, 20]
    m = tr.parse_trace(f"csv:{mc}")  # the csv: prefix detects too
    assert m.times.tolist() == pytest.approx([0.0, 1.0, 2.5])  # sorted, ms -> s
    assert m.prompt.tolist() == [6955, 50, 100] and m.output.tolist() == [52, 4, 8]
    times, prompt, out = m.requests(0.5, 2.5)
    assert times.tolist() == [1.0] and prompt.tolist() == [50]
    # the rate view: output tokens per second of the 60 s bin, mean sizes
    d = m(10.0)
    assert d.output_tokens_per_second == pytest.approx(64 / 60) and d.output_tokens == pytest.approx(64 / 3)


def test_bad_trace_files_name_the_problem(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("time,rate\n0,1\n")
    with pytest.raises(tr.TraceSyntaxError, match="unknown trace format"):
        tr.parse_trace(str(bad))
    mc = tmp_path / "m.jsonl"
    mc.write_text('{"timestamp": 0, "input_length": 5}\n')
    with pytest.raises(tr.TraceSyntaxError, match="output_length"):
        tr.parse_trace(str(mc))
    az = tmp_path / "a.csv"
    az.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,abc,3\n")
    with pytest.raises(tr.TraceSyntaxError, match=r"a.csv:2: ContextTokens"):
        tr.parse_trace(str(az))
    with pytest.raises(tr.TraceSyntaxError, match="rate scale"):
        tr.parse_trace("constant:5", rate_scale=0)


def test_rate_scale_replicates_and_thins_deterministically(tmp_path):
    rng = np.random.default_rng(0)
    n = 2000
    times = np.sort(rng.random(n) * 1000)
    base = tr.RequestTrace(times, rng.integers(10, 5000, n).astype(float), rng.integers(1, 500, n).astype(float))
    for scale in (0.3, 1.0, 2.5, 4.0):
        s = base.rate_scaled(scale, seed=1)
        assert len(s.times) == pytest.approx(scale * n, rel=0.05)
        assert np.all(np.diff(s.times) >= 0)
        assert s.times[-1] <= times[-1] + 1000 / n * 20
        # same size distribution
        assert s.prompt.mean() == pytest.approx(base.prompt.mean(), rel=0.05)
        assert s.output.mean() == pytest.approx(base.output.mean(), rel=0.05)
        assert set(s.prompt.tolist()) <= set(base.prompt.tolist())
    a, b = base.rate_scaled(2.5, seed=1), base.rate_scaled(2.5, seed=1)
    assert np.array_equal(a.times, b.times) and np.array_equal(a.prompt, b.prompt)
    assert not np.array_equal(a.times, base.rate_scaled(2.5, seed=2).times)
    # a rate trace: the rate is scaled, the sizes kept
    r = tr.parse_trace("constant:1000", rate_scale=3, prompt_tokens=200)
    assert r(0).output_tokens_per_second == 3000 and r(0).prompt_tokens == 200


def test_request_trace_replays_requests_exactly():
    times = np.array([0.5, 1.5, 2.5, 30.0])
    t = tr.RequestTrace(times, np.array([100.0, 200.0, 300.0, 400.0]), np.array([5.0, 6.0, 7.0, 8.0]))
    f = Fleet(t, seed=0)
    f.add_engine(EngineSpec(name="h0", pool="h200", gpu_type="h200", gpus=8, startup_seconds=0), 0.0)
    f.run(60, 1.0)
    e = f.truth()["engines"][0]
    assert e["requests_success_total"] == 4
    assert e["prompt_tokens_total"] == 1000
    assert e["generation_tokens_total"] == pytest.approx(26)
    # looped: played again after its period (30 s rounded up to the 60 s bin)
    lt = t.looped()
    times2, _, _ = lt.requests(55.0, 125.0)
    assert times2.tolist() == [60.5, 61.5, 62.5, 90.0, 120.5, 121.5, 122.5]


def test_the_real_azure_code_trace_loads():
    t = tr.load_trace(AZURE)
    assert len(t.times) == 8819
    assert t.mean_prompt_tokens == pytest.approx(2048, rel=0.01)
    assert t.mean_output_tokens == pytest.approx(28, rel=0.05)
    assert 3300 < t.times[-1] < 3500  # 57 minutes
    s = tr.load_trace(AZURE, rate_scale=10, seed=0, repeat=True)
    assert len(s.times) == pytest.approx(88190, rel=0.02)
    assert s(100_000).output_tokens_per_second > 0  # looped
    assert math.isclose(s.mean_output_tokens, t.mean_output_tokens, rel_tol=0.05)
