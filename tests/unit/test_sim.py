import argparse
import json
import math
import urllib.request
from dataclasses import replace

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokenfactory.sim import cli as sim_cli
from tokenfactory.sim import traces as tr
from tokenfactory.sim.cluster import specs_from_pods
from tokenfactory.sim.exposition import render
from tokenfactory.sim import kernel
from tokenfactory.sim.fleet import NFINE, TTFT_BUCKETS, EngineSpec, Fleet, fine_index, fine_quantile, mixture_quantile
from tokenfactory.sim.profiles import profile_for, steady_state
from tokenfactory.sim.server import RealtimeRunner, SimServer

H200_ENGINE_CAP = 90 * 8  # tok/s of one 8-GPU H200 engine per the sheet
GB300_ENGINE_CAP = 6000 * 4


def h200(name="h0", **kw):
    base = dict(name=name, pool="h200", gpu_type="h200", gpus=8, startup_seconds=0.0)
    base.update(kw)
    return EngineSpec(**base)


def fleet_with(rate, *specs, **kw):
    kw.setdefault("seed", 1)
    f = Fleet(tr.Constant(rate), **kw)
    for s in specs:
        f.add_engine(s, 0.0)
    return f


def families(fleet):
    return {fam.name: fam for fam in text_string_to_metric_families(render(fleet).decode())}


def pool_truth(fleet, pool):
    return next(p for p in fleet.truth()["pools"] if p["pool"] == pool)


# ---------------------------------------------------------------- exposition


def test_metrics_parse_with_vllm_names_types_and_labels():
    f = fleet_with(500, h200("h0"), h200("h1"))
    f.run(30, 1.0)
    fams = families(f)
    want = {
        "vllm:prompt_tokens": "counter",
        "vllm:generation_tokens": "counter",
        "vllm:request_success": "counter",
        "vllm:num_preemptions": "counter",
        "vllm:num_requests_running": "gauge",
        "vllm:num_requests_waiting": "gauge",
        "vllm:kv_cache_usage_perc": "gauge",
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
    }
    assert {n: fam.type for n, fam in fams.items()} == want
    sample = next(s for s in fams["vllm:generation_tokens"].samples if s.labels["pod"] == "h0")
    assert sample.name == "vllm:generation_tokens_total"
    assert set(sample.labels) == {"model_name", "engine", "namespace", "pod", "factory", "pool", "gpu_type"}
    assert sample.labels["engine"] == "0" and sample.labels["gpu_type"] == "h200"
    assert sample.labels["model_name"] == "deepseek-ai/DeepSeek-R1"
    les = [s.labels["le"] for s in fams["vllm:time_to_first_token_seconds"].samples
           if s.name.endswith("_bucket") and s.labels["pod"] == "h0"]
    assert [float(x) for x in les[:-1]] == list(TTFT_BUCKETS) and les[-1] == "+Inf"
    reasons = {s.labels["finished_reason"] for s in fams["vllm:request_success"].samples}
    assert reasons == {"stop"}


def test_counters_match_truth_and_conserve_tokens():
    f = fleet_with(1000, h200("h0"), h200("h1"))  # 1000 demanded vs 1440 capacity
    f.run(300, 1.0)
    fams = families(f)
    gen = {s.labels["pod"]: s.value for s in fams["vllm:generation_tokens"].samples}
    truth = {e["name"]: e for e in f.truth()["engines"]}
    for pod, v in gen.items():
        assert v == math.floor(truth[pod]["generation_tokens_total"])
    # under capacity: what is demanded is delivered (Poisson arrivals; requests in flight at the end)
    in_flight = sum(e["requests_running"] for e in truth.values())
    assert in_flight > 0
    assert sum(gen.values()) == pytest.approx(1000 * 300, rel=0.1)
    assert sum(gen.values()) <= (1000 * 300 / 500 + 4 * math.sqrt(600)) * 500
    p = pool_truth(f, "h200")
    assert p["generation_tokens_per_second"] > 0
    assert f.window_stats(100).generation_tokens / 200 == pytest.approx(1000, rel=0.1)
    # prompt tokens: 1000 per request, counted at the first token
    succ = sum(s.value for s in fams["vllm:request_success"].samples)
    ttft_count = sum(s.value for s in fams["vllm:time_to_first_token_seconds"].samples if s.name.endswith("_count"))
    prompt = sum(s.value for s in fams["vllm:prompt_tokens"].samples)
    assert prompt == pytest.approx(1000 * ttft_count, rel=0.05)  # sizes jitter +-50% around the mean
    # every request got its first token before it completed; the in-flight ones are the difference
    e2e_count = sum(s.value for s in fams["vllm:e2e_request_latency_seconds"].samples if s.name.endswith("_count"))
    assert succ == e2e_count
    assert 0 < ttft_count - succ <= in_flight
    # every generated token after a request's first is one ITL observation
    itl_count = sum(s.value for s in fams["vllm:inter_token_latency_seconds"].samples if s.name.endswith("_count"))
    assert itl_count == pytest.approx(sum(gen.values()) - ttft_count, abs=len(gen) + 1)


def test_counters_monotonic_across_scrapes():
    f = fleet_with(3000, h200("h0"))  # overloaded
    prev = {}
    for k in range(10):
        f.run(f.now + 7, 1.0)
        for fam in text_string_to_metric_families(render(f).decode()):
            for s in fam.samples:
                if fam.type in ("counter", "histogram") and not s.name.endswith("_sum"):
                    key = (s.name, tuple(sorted(s.labels.items())))
                    assert s.value >= prev.get(key, 0.0)
                    prev[key] = s.value


def histogram_quantile(q, buckets):
    """Prometheus' algorithm on [(le, cumulative count)] sorted by le (incl. +Inf)."""
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return math.nan


def bucket_deltas(before, after, name):
    def collect(fams):
        out = {}
        for s in fams[name].samples:
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                out[le] = out.get(le, 0.0) + s.value
        return out

    b, a = collect(before), collect(after)
    return sorted((le, a[le] - b.get(le, 0.0)) for le in a)


@pytest.mark.parametrize("rate", [400.0, 1100.0, 1700.0])
def test_histogram_p95_close_to_true_p95(rate):
    f = fleet_with(rate, h200("h0"), h200("h1"), window_seconds=60)
    f.run(600, 1.0)
    before = families(f)
    f.run(660, 1.0)
    after = families(f)
    p = pool_truth(f, "h200")
    for name, key in (
        ("vllm:time_to_first_token_seconds", "ttft_p95_seconds"),
        ("vllm:inter_token_latency_seconds", "itl_p95_seconds"),
        ("vllm:e2e_request_latency_seconds", "e2e_p95_seconds"),
    ):
        deltas = bucket_deltas(before, after, name)
        est = histogram_quantile(0.95, deltas)
        true = p[key]
        # Prometheus interpolates linearly inside a bucket: the estimate must lie in the bucket
        # that holds the true p95 (whole counts: one observation of slack at the edges)
        bounds = [0.0] + [le for le, _ in deltas]
        i = next(k for k in range(1, len(bounds)) if true <= bounds[k])
        total = deltas[-1][1]
        below = dict(deltas)
        assert below.get(bounds[i], total) >= 0.95 * total - 1, (name, true)
        if bounds[i - 1] > 0:
            assert below[bounds[i - 1]] <= 0.95 * total + 1, (name, true)
        assert bounds[i - 1] * 0.999 <= est <= bounds[i] * 1.001, (name, est, true, bounds[i - 1], bounds[i])


def window_p95(f, since):
    ws = f.window_stats(since)
    return ws.ttft_p95_seconds, ws.itl_p95_seconds, ws


def test_latency_rises_with_load_and_a_queue_forms_before_saturation():
    out = {}
    most_waiting = {}
    for rate in (150.0, 700.0, 1300.0, 1400.0, 2000.0):
        f = fleet_with(rate, h200("h0"), h200("h1"), seed=4)
        most_waiting[rate] = 0
        for t in range(10, 610, 10):
            f.run(t, 1.0)
            most_waiting[rate] = max(most_waiting[rate], pool_truth(f, "h200")["requests_waiting"])
        out[rate] = (pool_truth(f, "h200"), f.window_stats(300), f)
    rates = sorted(out)
    for lo, hi in zip(rates, rates[1:]):
        assert out[hi][1].itl_p95_seconds >= 0.98 * out[lo][1].itl_p95_seconds
        assert out[hi][1].ttft_p95_seconds >= out[lo][1].ttft_p95_seconds
    prof = out[150.0][2].profile("h200")
    base_itl = prof.step_base_seconds + prof.step_per_seq_seconds
    assert out[150.0][1].itl_p95_seconds < 3 * base_itl + 0.05
    # a queue forms before 100% utilisation: at 90% (1300 of 1440 tok/s) requests wait for a slot
    assert most_waiting[150.0] == 0 and most_waiting[1300.0] > 0
    assert out[1300.0][1].ttft_p95_seconds > 2 * out[150.0][1].ttft_p95_seconds
    # overload: a queue grows, TTFT explodes, throughput capped near the nominal capacity
    over, ws, _ = out[2000.0]
    assert over["requests_waiting"] > 100
    assert ws.ttft_p95_seconds > 10 * out[700.0][1].ttft_p95_seconds
    assert over["generation_tokens_per_second"] == pytest.approx(2 * H200_ENGINE_CAP, rel=0.1)
    assert out[700.0][0]["requests_waiting"] < 5


def test_itl_grows_with_the_batch():
    """One engine at growing concurrency (closed loop: the queue keeps it full)."""
    itl = {}
    for seqs in (1, 8, 32):
        prof = replace(profile_for("h200"), max_num_seqs=seqs)
        f = Fleet(tr.Constant(5000.0, prompt_tokens=10, output_tokens=2000), profiles={"h200": prof}, seed=1,
                  size_jitter=0.0)
        f.add_engine(h200("h0"), 0.0)
        f.run(120, 1.0)
        ws = f.window_stats(60)
        itl[seqs] = ws.itl_p95_seconds
        assert f.truth()["engines"][0]["requests_running"] == seqs
        # ITL = the decode step time at that batch (prompts of 10 tokens barely count)
        want = prof.step_base_seconds + prof.step_per_seq_seconds * seqs
        assert ws.itl_p95_seconds == pytest.approx(want, rel=0.1)
    assert itl[1] < itl[8] < itl[32]


def test_kv_cache_full_preempts_and_recomputes():
    prof = replace(profile_for("h200"), kv_cache_tokens_per_gpu=20_000 / 8, max_num_seqs=64)
    f = Fleet(tr.Constant(2000.0, prompt_tokens=2000, output_tokens=1000), profiles={"h200": prof}, seed=2)
    f.add_engine(h200("h0"), 0.0)
    f.run(300, 1.0)
    e = f.truth()["engines"][0]
    assert e["preemptions_total"] > 0
    assert e["kv_cache_usage"] <= 1.0 and e["kv_cache_tokens"] == 20_000
    # KV, not max_num_seqs, bounds the batch: at most 20,000 / 2,000 sequences run at once
    assert e["requests_running"] <= 10
    fams = families(f)
    pre = [s.value for s in fams["vllm:num_preemptions"].samples]
    assert pre == [math.floor(e["preemptions_total"])]
    # preempted requests are recomputed and complete: every request is counted once
    assert e["requests_success_total"] > 0
    ttft_count = sum(s.value for s in fams["vllm:time_to_first_token_seconds"].samples if s.name.endswith("_count"))
    assert ttft_count <= e["requests_success_total"] + e["requests_running"] + e["requests_waiting"]


def test_bounded_queue_drops_requests():
    f = fleet_with(2 * H200_ENGINE_CAP, h200("h0"))
    f.run(2000, 1.0)
    e = f.truth()["engines"][0]
    # the queue grows at ~1.44 req/s until the 1000-request bound, then the newest are dropped
    assert e["requests_waiting"] == pytest.approx(1000, abs=10)
    arrived = 2000 * 2 * H200_ENGINE_CAP / 500
    done = e["requests_success_total"] + e["requests_running"] + e["requests_waiting"]
    assert e["requests_dropped_total"] == pytest.approx(arrived - done, rel=0.1)
    assert e["requests_dropped_total"] > 0


def test_startup_delay_respected():
    f = Fleet(tr.Constant(300.0))
    f.add_engine(h200("h0", startup_seconds=100.0), 0.0)
    f.run(100, 1.0)
    t = f.truth()
    assert t["engines"][0]["state"] == "serving"  # from 100 s on
    f2 = Fleet(tr.Constant(300.0))
    f2.add_engine(h200("h0", startup_seconds=100.0), 0.0)
    f2.run(99, 1.0)
    t = f2.truth()
    assert t["engines"][0]["state"] == "starting"
    assert t["engines"][0]["generation_tokens_total"] == 0
    assert t["pools"][0]["replicas_starting"] == 1 and t["pools"][0]["gpus"] == 8
    assert t["factories"][0]["requests_dropped_unrouted_total"] == pytest.approx(99 * 300 / 500, rel=0.35)
    assert "vllm:generation_tokens" not in {n for n, fam in families(f2).items() if fam.samples}
    f2.run(400, 1.0)
    t = f2.truth()
    assert t["engines"][0]["state"] == "serving"
    assert t["engines"][0]["generation_tokens_total"] == pytest.approx(300 * 300, rel=0.2)


def test_sheet_startup_is_default():
    f = Fleet(tr.Constant(100.0))
    e = f.add_engine(EngineSpec(name="x", gpu_type="gb300", gpus=4), 10.0)
    assert e.serving_from == 310.0  # sheet startupSeconds 300


def test_capacity_anchor_and_factor():
    """Saturated engines make the sheet's tok/s per GPU x GPUs x capacity factor (the anchor)."""
    f = fleet_with(20_000, h200("a", pool="a"), h200("b", pool="b", capacity_factor=0.5),
                   EngineSpec(name="g", pool="g", gpu_type="gb300", gpus=4, startup_seconds=0))
    f.run(600, 1.0)
    ws = {p: f.window_stats(300, pool=p) for p in ("a", "b", "g")}
    assert ws["a"].generation_tokens / 300 == pytest.approx(H200_ENGINE_CAP, rel=0.08)
    assert ws["b"].generation_tokens / 300 == pytest.approx(H200_ENGINE_CAP / 2, rel=0.08)
    # the GB300 engine gets a third of 40 req/s (Service routing): 6,667 tok/s, well under its 24,000
    assert ws["g"].generation_tokens / 300 == pytest.approx(20_000 / 3, rel=0.1)


def test_service_routing_splits_evenly_whatever_the_capacity():
    f = fleet_with(12_000, h200("h0"), EngineSpec(name="g0", pool="gb300", gpu_type="gb300", gpus=4, startup_seconds=0))
    f.run(300, 1.0)
    h, g = pool_truth(f, "h200"), pool_truth(f, "gb300")
    # kube-proxy: half of the requests each; the H200 engine (720 tok/s) drowns, the GB300 idles
    received = {x["pool"]: x["requests_success_total"] + x["requests_running"] + x["requests_waiting"]
                + x["requests_dropped_total"] for x in f.truth()["engines"]}
    assert received["h200"] == pytest.approx(received["gb300"], rel=0.1)
    assert h["requests_waiting"] > 100 and g["requests_waiting"] == 0
    assert g["ttft_p95_seconds"] * 10 < h["ttft_p95_seconds"]


def test_httproute_weights_split_over_pools_then_evenly():
    specs = [h200("h0"), h200("h1"), EngineSpec(name="g0", pool="gb300", gpu_type="gb300", gpus=4, startup_seconds=0)]
    f = Fleet(tr.Constant(6000.0), routing="HTTPRoute", weights={"gb300": 3, "h200": 1}, seed=3)
    for s in specs:
        f.add_engine(s, 0.0)
    f.run(600, 1.0)
    eng = {e["name"]: e for e in f.truth()["engines"]}
    got = {n: e["requests_success_total"] + e["requests_running"] + e["requests_waiting"] for n, e in eng.items()}
    total = sum(got.values())
    assert got["g0"] / total == pytest.approx(0.75, abs=0.03)
    assert got["h0"] == pytest.approx(got["h1"], rel=0.15)
    # a weighted pool with no ready pod: its share is dropped (the gateway has no endpoint)
    f2 = Fleet(tr.Constant(6000.0), routing="HTTPRoute", weights={"gb300": 1, "h200": 1}, seed=3)
    f2.add_engine(h200("h0"), 0.0)
    f2.add_engine(EngineSpec(name="g0", pool="gb300", gpu_type="gb300", gpus=4, startup_seconds=1e9), 0.0)
    f2.run(100, 1.0)
    fac = f2.truth()["factories"][0]
    assert fac["requests_dropped_unrouted_total"] == pytest.approx(6000 / 500 * 100 / 2, rel=0.15)
    with pytest.raises(ValueError, match="weights"):
        Fleet(routing="HTTPRoute", weights={"h200": 1.5})
    with pytest.raises(ValueError, match="routing"):
        Fleet(routing="smart")


def test_inference_pool_sends_requests_to_the_least_loaded():
    specs = [h200("h0"), EngineSpec(name="g0", pool="gb300", gpu_type="gb300", gpus=4, startup_seconds=0)]
    out = {}
    for mode in ("Service", "InferencePool"):
        f = Fleet(tr.Constant(12_000.0), routing=mode, seed=5)
        for s in specs:
            f.add_engine(s, 0.0)
        f.run(300, 1.0)
        out[mode] = {p["pool"]: p for p in f.truth()["pools"]}, f.window_stats(150)
    pools, ws = out["InferencePool"]
    # the GB300 engine (512 sequences) takes most; the H200 one only what keeps its relative load equal
    assert pools["gb300"]["generation_tokens_per_second"] > 10 * pools["h200"]["generation_tokens_per_second"]
    assert pools["h200"]["requests_waiting"] < 10
    assert ws.ttft_p95_seconds < out["Service"][1].ttft_p95_seconds / 10


def test_removed_engine_requests_are_rerouted():
    f = fleet_with(2000, h200("h0"), h200("h1"))
    f.run(60, 1.0)
    e1 = next(e for e in f.truth()["engines"] if e["name"] == "h1")
    moved = e1["requests_waiting"] + e1["requests_running"]
    assert moved > 0
    gen_before = pool_truth(f, "h200")["generation_tokens_total"]
    f.set_engines([h200("h0")], 60.0)
    carry = f.factories[("default", "sim")].carry
    assert sum(len(a) for a, _ in carry) == moved
    assert [e["name"] for e in f.truth()["engines"]] == ["h0"]
    f.run(61, 1.0)
    assert not f.factories[("default", "sim")].carry
    # the pool's cumulative truth survives the engine
    assert pool_truth(f, "h200")["generation_tokens_total"] >= gen_before


def run_fingerprint(seed, routing="Service"):
    f = Fleet(tr.Bursty(500, 3000, 120, 30, 0.7, seed=3), start_time=0.0, seed=seed, routing=routing)
    for i in range(3):
        f.add_engine(h200(f"h{i}"), 0.0)
    f.run(900, 2.0)
    return json.dumps(f.truth(), sort_keys=True), render(f)


def test_deterministic_per_seed():
    assert run_fingerprint(1) == run_fingerprint(1)
    assert run_fingerprint(1) != run_fingerprint(2)
    assert run_fingerprint(1, "InferencePool") == run_fingerprint(1, "InferencePool")


def test_fine_histogram_quantiles():
    assert fine_quantile(np.zeros(NFINE)) is None
    vals = np.geomspace(0.01, 10.0, 10_000)
    counts = np.bincount(fine_index(vals), minlength=NFINE)
    assert fine_quantile(counts, 0.95) == pytest.approx(float(np.quantile(vals, 0.95)), rel=0.02)
    assert fine_quantile(counts, 0.5) == pytest.approx(float(np.quantile(vals, 0.5)), rel=0.02)
    assert mixture_quantile([(1.0, 1.0)]) == pytest.approx(1.0, rel=0.02)
    assert mixture_quantile([]) is None


def test_steady_state_anchor_matches_the_sheet():
    for gpu, per_gpu in (("h200", 90.0), ("gb300", 6000.0)):
        prof = profile_for(gpu)
        ss = steady_state(prof, prof.max_num_seqs)
        assert ss.output_tokens_per_second_per_gpu == pytest.approx(per_gpu, rel=1e-9)
        lo = steady_state(prof, max(1, prof.max_num_seqs // 4))
        assert lo.itl_seconds < ss.itl_seconds and lo.output_tokens_per_second < ss.output_tokens_per_second


@pytest.mark.skipif(not kernel.JIT, reason="numba not installed: only the Python path exists")
def test_compiled_and_python_kernels_agree(monkeypatch):
    jitted = run_fingerprint(7, "InferencePool")
    monkeypatch.setattr(kernel, "run_ticks", kernel.run_ticks.py_func)
    monkeypatch.setattr(kernel, "_route", kernel._route.py_func)
    monkeypatch.setattr(kernel, "_observe", kernel._observe.py_func)
    monkeypatch.setattr(kernel, "_group", kernel._group.py_func)
    assert run_fingerprint(7, "InferencePool") == jitted


# ---------------------------------------------------------------- traces


def test_trace_parsing():
    assert tr.parse_trace("constant:5k")(10).output_tokens_per_second == 5000
    s = tr.parse_trace("step:2000,20000@120,500@300")
    assert [s(t).output_tokens_per_second for t in (0, 119.9, 120, 299, 300)] == [2000, 2000, 20000, 20000, 500]
    r = tr.parse_trace("ramp:1000,2000@10,20")
    assert [r(t).output_tokens_per_second for t in (0, 10, 15, 20, 99)] == [1000, 1000, 1500, 2000, 2000]
    d = tr.parse_trace("diurnal:1000,500@100,25")
    assert d(25).output_tokens_per_second == pytest.approx(1500)
    assert d(75).output_tokens_per_second == pytest.approx(500)
    assert tr.parse_trace("diurnal:100,500")(0).output_tokens_per_second >= 0
    dem = tr.parse_trace("constant:1000", prompt_tokens=2000, output_tokens=250)(0)
    assert dem.requests_per_second == 4 and dem.prompt_tokens_per_second == 8000


def test_bursty_is_seeded_and_pure():
    a = tr.parse_trace("bursty:100,5000@60,10,1.0", seed=1)
    b = tr.parse_trace("bursty:100,5000@60,10,1.0", seed=1)
    c = tr.parse_trace("bursty:100,5000@60,10,1.0", seed=2)
    sa = [a(t).output_tokens_per_second for t in range(0, 600)]
    assert sa == [b(t).output_tokens_per_second for t in range(0, 600)]
    assert sa != [c(t).output_tokens_per_second for t in range(0, 600)]
    assert sa.count(5000) == 100  # one 10 s burst per 60 s window
    assert set(sa) == {100, 5000}


def test_csv_traces(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("seconds,tokens_per_second\n0,100\n10,200\n")
    t = tr.parse_trace(f"csv:{p}")
    assert t(5).output_tokens_per_second == 150 and t(50).output_tokens_per_second == 200
    q = tmp_path / "r.csv"
    q.write_text("seconds,requests_per_second,prompt_tokens,output_tokens\n0,2,800,400\n")
    d = tr.parse_trace(f"csv:{q}")(3)
    assert d.output_tokens_per_second == 800 and d.prompt_tokens == 800 and d.prompt_tokens_per_second == 1600
    bad = tmp_path / "b.csv"
    bad.write_text("time,rate\n0,1\n")
    with pytest.raises(tr.TraceSyntaxError, match="seconds"):
        tr.parse_trace(f"csv:{bad}")


@pytest.mark.parametrize("spec", ["constant", "constant:-5", "step:100", "ramp:1,2@5,3", "nope:1", "bursty:1,2@10,20", "diurnal:1"])
def test_trace_errors(spec):
    with pytest.raises(tr.TraceSyntaxError):
        tr.parse_trace(spec)


# ---------------------------------------------------------------- cluster mode (pure part)


def pod(name, ready=True, gpus="8", pool="h200", gpu="h200", factory="r1", deleting=False):
    meta = {
        "name": name,
        "namespace": "team",
        "labels": {"tokenfactory.dev/factory": factory, "tokenfactory.dev/pool": pool, "tokenfactory.dev/gpu-type": gpu},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                   "lastTransitionTime": "2026-01-01T00:00:10Z"}]},
    }


def test_specs_from_pods():
    pods = [pod("a"), pod("b", ready=False), pod("c", deleting=True), pod("d", gpus="4", pool="gb", gpu="GB300"),
            pod("e", factory="other")]
    specs = specs_from_pods(pods, factory="r1", startup_seconds=5, capacity_factors={"gb": 0.5})
    assert [(s.pod, s.pool, s.gpu_type, s.gpus, s.capacity_factor) for s in specs] == [
        ("a", "h200", "h200", 8, 1.0),
        ("d", "gb", "gb300", 4, 0.5),
    ]
    assert specs[0].name == "team/a" and specs[0].namespace == "team" and specs[0].factory == "r1"
    assert specs[0].ready_at == 1767225610.0 and specs[0].startup_seconds == 5
    assert len(specs_from_pods(pods)) == 3  # all factories


# ---------------------------------------------------------------- HTTP + runner + CLI


def test_server_endpoints_with_fake_clock():
    clock = [1000.0]
    f = Fleet(tr.Constant(700.0), start_time=1000.0)
    runner = RealtimeRunner(f, tick=1.0, clock=lambda: clock[0])
    runner.set_engines([h200("h0")])
    srv = SimServer(runner, "127.0.0.1", 0)
    srv.start()
    try:
        clock[0] = 1300.0
        runner.step_now()
        base = f"http://127.0.0.1:{srv.port}"
        assert urllib.request.urlopen(base + "/healthz", timeout=5).read() == b"ok\n"
        truth = json.loads(urllib.request.urlopen(base + "/truth", timeout=5).read())
        assert truth["now"] == 1300.0
        gen = truth["pools"][0]["generation_tokens_total"]
        assert gen == pytest.approx(700 * 300, rel=0.15)  # requests of 500 tokens take ~20 s: some in flight
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        fams = {fam.name: fam for fam in text_string_to_metric_families(body)}
        assert fams["vllm:generation_tokens"].samples[0].value == math.floor(gen)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/nope", timeout=5)
    finally:
        srv.stop()


def _sim_args(argv):
    p = argparse.ArgumentParser()
    sim_cli.register(p.add_subparsers())
    return p.parse_args(["sim", *argv])


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["--trace", "bogus:1"], "--trace"),
        (["--time-scale", "0"], "--time-scale"),
        (["--engine", "h200:h200"], "--engine"),
        (["--capacity-factor", "x"], "--capacity-factor"),
        (["--engines", "/nonexistent.yaml"], "--engines"),
    ],
)
def test_cli_bad_input_exit_2(argv, flag, capsys):
    args = _sim_args(["--port", "0", "--duration", "0.1", *argv])
    assert args.func(args) == 2
    assert flag in capsys.readouterr().err


def test_cli_offline_engines_file(tmp_path):
    y = tmp_path / "e.yaml"
    y.write_text("factory: demo\nengines:\n  - {pool: h200, gpu_type: h200, gpus: 8, replicas: 2}\n"
                 "  - {pool: gb300, gpu_type: gb300, gpus: 4, replicas: 1, capacity_factor: 0.8}\n")
    args = _sim_args(["--engines", str(y), "--time-scale", "10"])
    specs = sim_cli.offline_specs(args, {}, 10.0)
    assert [(s.name, s.factory, s.gpus, s.capacity_factor, s.startup_seconds) for s in specs] == [
        ("demo-h200-0", "demo", 8, 1.0, 30.0),
        ("demo-h200-1", "demo", 8, 1.0, 30.0),
        ("demo-gb300-0", "demo", 4, 0.8, 30.0),
    ]


def test_pod_poller_with_fake_client_feeds_runner():
    class FakePod:
        def __init__(self, d):
            self.d = d

        def to_dict(self):
            return self.d

    class FakeClient:
        def __init__(self):
            self.pods = [pod("a"), pod("b", pool="gb", gpu="gb300", gpus="4")]
            self.calls = []

        def list(self, res, namespace=None, labels=None):
            self.calls.append((res.__name__, namespace, labels))
            return [FakePod(p) for p in self.pods]

    from tokenfactory.sim.cluster import PodPoller

    clock = [1767225700.0]
    f = Fleet(tr.Constant(100.0), start_time=clock[0])
    runner = RealtimeRunner(f, clock=lambda: clock[0])
    client = FakeClient()
    poller = PodPoller(runner.set_engines, namespace="team", factory="r1", client=client, startup_seconds=0)
    poller.poll_once()
    assert sorted(f.engines) == ["team/a", "team/b"]
    assert client.calls[0][:2] == ("Pod", "team")
    first = f.engines["team/a"]
    poller.poll_once()  # same pods: engines kept, not restarted
    assert f.engines["team/a"] is first
    client.pods = [pod("a")]
    poller.poll_once()
    assert sorted(f.engines) == ["team/a"]


async def test_fleet_metrics_source_reads_truth():
    from tokenfactory.metrics_source import MetricsSource, MetricsUnavailable
    from tokenfactory.sim.source import FleetMetricsSource

    f = fleet_with(1000, h200("h0"), h200("h1"), h200("late", startup_seconds=1e6))
    src = FleetMetricsSource(f)
    assert isinstance(src, MetricsSource)
    f.run(300, 1.0)
    fm = await src.pool_metrics("default", "sim", 60)
    p = fm.pools["h200"]
    assert p.generation_tokens_per_second == pytest.approx(1000, rel=0.2)
    assert p.prompt_tokens_per_second == pytest.approx(2000, rel=0.2)
    assert p.engines_reporting == 2  # the starting engine reports nothing
    assert p.ttft_p95_seconds == pool_truth(f, "h200")["ttft_p95_seconds"]
    with pytest.raises(MetricsUnavailable):
        await src.pool_metrics("default", "other", 60)


def test_lazy_counters_expose_gauges_only_until_the_first_token():
    def names(fleet, lazy):
        return {s.name for fam in text_string_to_metric_families(render(fleet, lazy_counters=lazy).decode())
                for s in fam.samples}

    idle = Fleet(tr.Constant(0.0), start_time=0.0)
    idle.add_engine(h200("h0", startup_seconds=0), 0.0)
    idle.run(30, 1.0)
    lazy = names(idle, True)
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"} <= lazy
    assert not any(n.startswith(("vllm:generation_tokens", "vllm:prompt_tokens", "vllm:time_to_first_token",
                                 "vllm:request_success")) for n in lazy)
    assert "vllm:generation_tokens_total" in names(idle, False)  # the default exposes zeros
    busy = Fleet(tr.Constant(500.0), start_time=0.0)
    busy.add_engine(h200("h0", startup_seconds=0), 0.0)
    busy.run(30, 1.0)
    assert "vllm:generation_tokens_total" in names(busy, True)
