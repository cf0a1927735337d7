import asyncio
import json
import math

import httpx
import pytest

from tokenfactory import metrics_source as ms


def test_promql_builders():
    q = ms.promql_queries("team-a", "r1", 60)
    assert q["generation_tokens_per_second"] == (
        'sum by (pool) (rate(vllm:generation_tokens_total{namespace="team-a",factory="r1"}[60s]))'
    )
    assert q["prompt_tokens_per_second"].startswith("sum by (pool) (rate(vllm:prompt_tokens_total{")
    assert q["ttft_p95_seconds"] == (
        "histogram_quantile(0.95, sum by (pool, le) (rate(vllm:time_to_first_token_seconds_bucket"
        '{namespace="team-a",factory="r1"}[60s])))'
    )
    assert "vllm:inter_token_latency_seconds_bucket" in q["itl_p95_seconds"]
    assert q["requests_waiting"] == 'sum by (pool) (vllm:num_requests_waiting{namespace="team-a",factory="r1"})'
    assert q["kv_cache_usage"].startswith("avg by (pool) (vllm:kv_cache_usage_perc{")
    assert q["engines_reporting"].startswith("count by (pool) (")
    assert q["requests_per_second"] == (
        'sum by (pool) (rate(vllm:request_success_total{namespace="team-a",factory="r1"}[60s]))'
    )


def test_promql_escapes_and_window():
    assert ms.selector('a"b', "c\\d") == '{namespace="a\\"b",factory="c\\\\d"}'
    assert ms.range_literal(29.2) == "[30s]"
    with pytest.raises(ValueError):
        ms.range_literal(0)


def vec(*samples, rt="vector"):
    return {
        "status": "success",
        "data": {
            "resultType": rt,
            "result": [{"metric": {"pool": p}, "value": [ts, v]} for p, ts, v in samples],
        },
    }


def answer_for(query: str, values: dict[str, dict]) -> dict:
    for key, q in ms.promql_queries("ns", "f", 60).items():
        if q == query:
            return values.get(key, vec())
    raise AssertionError(f"unexpected query {query}")


def make_source(handler, timeout=2.0):
    return ms.PrometheusSource("http://prom:9090", timeout=timeout, transport=httpx.MockTransport(handler))


GOOD = {
    "generation_tokens_per_second": vec(("h200", 100.0, "1440"), ("gb300", 100.0, "24000")),
    "prompt_tokens_per_second": vec(("h200", 100.0, "2880"), ("gb300", 100.0, "48000")),
    "ttft_p95_seconds": vec(("h200", 100.0, "0.62"), ("gb300", 100.0, "NaN")),
    "itl_p95_seconds": vec(("h200", 100.0, "0.045"), ("gb300", 100.0, "+Inf")),
    "requests_waiting": vec(("h200", 100.0, "3"), ("gb300", 100.0, "0")),
    "requests_running": vec(("h200", 100.0, "40"), ("gb300", 100.0, "300")),
    "kv_cache_usage": vec(("h200", 100.0, "0.8"), ("gb300", 100.0, "0.4")),
    "engines_reporting": vec(("h200", 100.0, "2"), ("gb300", 100.0, "1")),
    "requests_per_second": vec(("h200", 100.0, "2.88"), ("gb300", 100.0, "48")),
}


async def test_prometheus_source_parses_pools():
    seen = []

    def handler(request: httpx.Request):
        assert request.url.path == "/api/v1/query"
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=answer_for(request.url.params["query"], GOOD))

    src = make_source(handler)
    fm = await src.pool_metrics("ns", "f", 60, now=100.0)
    await src.aclose()
    assert set(fm.pools) == {"h200", "gb300"}
    h = fm.pools["h200"]
    assert h.generation_tokens_per_second == 1440.0
    assert h.prompt_tokens_per_second == 2880.0
    assert h.ttft_p95_seconds == 0.62
    assert h.itl_p95_seconds == 0.045
    assert h.requests_waiting == 3 and h.requests_running == 40
    assert h.kv_cache_usage == 0.8
    assert h.engines_reporting == 2
    assert h.sampled_at == 100.0
    g = fm.pools["gb300"]
    assert g.ttft_p95_seconds is None  # NaN: no request finished in the window
    assert math.isinf(g.itl_p95_seconds)
    assert fm.generation_tokens_per_second == 25440.0
    assert h.requests_per_second == 2.88 and fm.pools["gb300"].requests_per_second == 48.0
    # 25,440 generation tokens/s over 50.88 requests/s = 500 per request; with prompt tokens 1,500
    assert fm.tokens_per_request() == pytest.approx(500.0)
    assert fm.tokens_per_request("total") == pytest.approx(1500.0)
    assert len(seen) == 9 and all(p["time"] == "100.000" for p in seen)


async def test_request_rate_missing_or_zero_gives_no_tokens_per_request():
    values = {k: v for k, v in GOOD.items() if k != "requests_per_second"}
    src = make_source(lambda r: httpx.Response(200, json=answer_for(r.url.params["query"], values)))
    fm = await src.pool_metrics("ns", "f", 60, now=100.0)
    await src.aclose()
    assert fm.pools["h200"].requests_per_second is None
    assert fm.tokens_per_request() is None
    # only the pools that report completions count; none completing -> None
    values["requests_per_second"] = vec(("h200", 100.0, "2.88"))
    src = make_source(lambda r: httpx.Response(200, json=answer_for(r.url.params["query"], values)))
    fm = await src.pool_metrics("ns", "f", 60, now=100.0)
    await src.aclose()
    assert fm.tokens_per_request() == pytest.approx(1440.0 / 2.88)
    values["requests_per_second"] = vec(("h200", 100.0, "0"), ("gb300", 100.0, "0"))
    src = make_source(lambda r: httpx.Response(200, json=answer_for(r.url.params["query"], values)))
    fm = await src.pool_metrics("ns", "f", 60, now=100.0)
    await src.aclose()
    assert fm.pools["gb300"].requests_per_second == 0.0
    assert fm.tokens_per_request() is None


async def test_request_rate_is_validated_like_any_rate():
    for bad in ("NaN", "-1", "+Inf"):
        values = {**GOOD, "requests_per_second": vec(("h200", 100.0, bad))}
        await fails_with(lambda r, v=values: httpx.Response(200, json=answer_for(r.url.params["query"], v)),
                         ms.BAD_RESPONSE)


async def fails_with(handler, reason, timeout=2.0):
    src = make_source(handler, timeout)
    with pytest.raises(ms.MetricsUnavailable) as ei:
        await src.pool_metrics("ns", "f", 60)
    await src.aclose()
    assert ei.value.reason == reason, ei.value
    return ei.value


async def test_no_series():
    await fails_with(lambda r: httpx.Response(200, json=vec()), ms.NO_SERIES)


async def test_status_error():
    body = {"status": "error", "errorType": "bad_data", "error": "parse error"}
    e = await fails_with(lambda r: httpx.Response(400, json=body), ms.PROMETHEUS_ERROR)
    assert "parse error" in str(e)


async def test_http_500_not_json():
    await fails_with(lambda r: httpx.Response(500, text="oops"), ms.PROMETHEUS_ERROR)


async def test_malformed_json():
    await fails_with(lambda r: httpx.Response(200, text="{not json"), ms.BAD_RESPONSE)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"status": "success"},
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        {"status": "success", "data": {"resultType": "vector", "result": {}}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"pool": "a"}}]}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"pool": "a"}, "value": [1, 2]}]}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"pool": "a"}, "value": [1, "x"]}]}},
        vec(("a", 1, "1"), ("a", 1, "2")),
        vec(("a", 1, "NaN")),
        vec(("a", 1, "-3")),
        {"status": "weird", "data": {}},
    ],
)
async def test_garbage_is_bad_response(body):
    await fails_with(lambda r: httpx.Response(200, json=body), ms.BAD_RESPONSE)


async def test_unreachable():
    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    await fails_with(handler, ms.PROMETHEUS_UNREACHABLE)


async def test_timeout():
    def handler(request):
        raise httpx.ReadTimeout("slow", request=request)

    await fails_with(handler, ms.TIMEOUT)


async def test_slow_server_times_out():
    async def handler(request):
        await asyncio.sleep(5)
        return httpx.Response(200, json=vec())

    await fails_with(handler, ms.TIMEOUT, timeout=0.1)


async def test_real_unreachable_port():
    src = ms.PrometheusSource("http://127.0.0.1:9", timeout=1.0)
    with pytest.raises(ms.MetricsUnavailable) as ei:
        await src.pool_metrics("ns", "f", 60)
    await src.aclose()
    assert ei.value.reason in (ms.PROMETHEUS_UNREACHABLE, ms.TIMEOUT)


async def test_fake_source():
    fake = ms.FakeMetricsSource()
    assert isinstance(fake, ms.MetricsSource)
    with pytest.raises(ms.MetricsUnavailable) as ei:
        await fake.pool_metrics("ns", "f", 60)
    assert ei.value.reason == ms.NO_SERIES
    fake.set_pool("ns", "f", "h200", generation_tokens_per_second=900.0, ttft_p95_seconds=0.4)
    fm = await fake.pool_metrics("ns", "f", 60, now=5.0)
    assert fm.pools["h200"].generation_tokens_per_second == 900.0
    assert fm.pools["h200"].sampled_at == 5.0
    fake.fail(ms.TIMEOUT, "ns", "f")
    with pytest.raises(ms.MetricsUnavailable) as ei:
        await fake.pool_metrics("ns", "f", 60)
    assert ei.value.reason == ms.TIMEOUT
    fake.recover()
    assert (await fake.pool_metrics("ns", "f", 60)).pools["h200"].ttft_p95_seconds == 0.4
    fake.remove_pool("ns", "f", "h200")
    with pytest.raises(ms.MetricsUnavailable):
        await fake.pool_metrics("ns", "f", 60)
    assert len(fake.calls) == 5


def test_parse_vector_direct():
    assert ms.parse_vector(vec(("p", 1.5, "2.5"))) == [("p", 1.5, 2.5)]
    assert json.dumps(vec())  # sanity


async def test_engines_up_without_token_counters_is_idle_not_missing():
    """An idle, healthy fleet: gauges present (engines report), no token counters yet: demand 0, not NoSeries."""
    idle = {
        "requests_waiting": vec(("h200", 100.0, "0"), ("gb300", 100.0, "0")),
        "requests_running": vec(("h200", 100.0, "0"), ("gb300", 100.0, "0")),
        "kv_cache_usage": vec(("h200", 100.0, "0"), ("gb300", 100.0, "0")),
        "engines_reporting": vec(("h200", 101.0, "2"), ("gb300", 100.0, "1")),
    }
    src = make_source(lambda r: httpx.Response(200, json=answer_for(r.url.params["query"], idle)))
    fm = await src.pool_metrics("ns", "f", 60, now=101.0)
    await src.aclose()
    assert set(fm.pools) == {"h200", "gb300"} and fm.sampled_at == 101.0
    assert fm.pools["h200"].engines_reporting == 2 and fm.pools["h200"].generation_tokens_per_second == 0.0
    assert fm.generation_tokens_per_second == 0.0 and fm.prompt_tokens_per_second == 0.0
    assert fm.idle and fm.engines_reporting == 3 and fm.tokens_per_request() is None
    assert fm.pools["gb300"].ttft_p95_seconds is None


async def test_a_pool_without_counters_joins_the_pools_with_counters():
    values = {**GOOD, "engines_reporting": vec(("h200", 100.0, "2"), ("gb300", 100.0, "1"), ("b200", 100.0, "1"))}
    src = make_source(lambda r: httpx.Response(200, json=answer_for(r.url.params["query"], values)))
    fm = await src.pool_metrics("ns", "f", 60, now=100.0)
    await src.aclose()
    assert set(fm.pools) == {"h200", "gb300", "b200"} and not fm.idle
    assert fm.pools["b200"].generation_tokens_per_second == 0.0 and fm.pools["b200"].engines_reporting == 1


async def test_gauges_of_other_factories_only_is_still_no_series():
    """No engine of this factory reports (only unlabelled or zero-count answers): NoSeries, the caller holds."""
    values = {"engines_reporting": vec(("", 100.0, "4"), ("h200", 100.0, "0"))}
    e = await fails_with(lambda r: httpx.Response(200, json=answer_for(r.url.params["query"], values)), ms.NO_SERIES)
    assert "no vLLM engine reports" in e.message


async def test_bearer_token_file_is_read_on_every_query_and_headers_are_sent(tmp_path):
    token = tmp_path / "token"
    token.write_text("first\n")
    seen = []

    def handler(request: httpx.Request):
        seen.append((request.headers.get("authorization"), request.headers.get("x-scope-orgid")))
        return httpx.Response(200, json=answer_for(request.url.params["query"], GOOD))

    auth = ms.PrometheusAuth(bearer_token_file=str(token), headers=(("X-Scope-OrgID", "tenant-a"),))
    src = ms.PrometheusSource("http://prom:9090", transport=httpx.MockTransport(handler), auth=auth)
    await src.pool_metrics("ns", "f", 60)
    token.write_text("rotated")
    await src.pool_metrics("ns", "f", 60)
    token.unlink()
    with pytest.raises(ms.MetricsUnavailable) as ei:
        await src.pool_metrics("ns", "f", 60)
    await src.aclose()
    assert ei.value.reason == ms.PROMETHEUS_ERROR and "credentials file" in ei.value.message
    n = len(ms.promql_queries("ns", "f", 60))
    assert seen[:n] == [("Bearer first", "tenant-a")] * n and seen[n:] == [("Bearer rotated", "tenant-a")] * n


async def test_basic_auth_and_401_names_no_secret(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")

    def handler(request: httpx.Request):
        ok = request.headers.get("authorization") == "Basic dTpodW50ZXIy"  # base64("u:hunter2")
        return httpx.Response(200 if ok else 401, json=answer_for(request.url.params["query"], GOOD) if ok else {})

    src = ms.PrometheusSource("http://prom:9090", transport=httpx.MockTransport(handler),
                              auth=ms.PrometheusAuth(username="u", password_file=str(pw)))
    assert (await src.pool_metrics("ns", "f", 60)).pools["h200"].generation_tokens_per_second == 1440
    pw.write_text("wrong")
    with pytest.raises(ms.MetricsUnavailable) as ei:
        await src.pool_metrics("ns", "f", 60)
    await src.aclose()
    assert "HTTP 401" in ei.value.message and "credentials refused" in ei.value.message
    assert "wrong" not in ei.value.message and "hunter2" not in ei.value.message


def test_auth_env_round_trip_and_checks(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    auth = ms.PrometheusAuth(username="u", password_file=str(f), insecure_skip_verify=True,
                             headers=(("X-Scope-OrgID", "t1"), ("X-Other", "a: b")))
    assert ms.PrometheusAuth.from_env(auth.to_env()) == auth
    assert ms.PrometheusAuth.from_env({}).empty
    auth.check()
    for bad, needle in [
        (ms.PrometheusAuth(bearer_token_file=str(f), username="u", password_file=str(f)), "exclusive"),
        (ms.PrometheusAuth(username="u"), "both a username and a password file"),
        (ms.PrometheusAuth(cert_file=str(f)), "both the certificate and the key"),
        (ms.PrometheusAuth(bearer_token_file=str(tmp_path / "missing")), "bearer token file"),
        (ms.PrometheusAuth(ca_file=str(f)), "TLS settings"),
    ]:
        with pytest.raises(ms.AuthConfigError) as ei:
            bad.check()
        assert needle in str(ei.value)
    for header in ("no-colon", ": v", "Authorization: Bearer x", "Bad Name: v"):
        with pytest.raises(ms.AuthConfigError):
            ms.parse_header(header)


def test_run_flags_override_environment(tmp_path):
    import argparse

    from tokenfactory import cli, commands

    f = tmp_path / "tok"
    f.write_text("t")
    args = cli.build_parser().parse_args(["run", "--prometheus-bearer-token-file", str(f),
                                          "--prometheus-header", "X-Scope-OrgID: t2"])
    assert isinstance(args, argparse.Namespace)
    auth = commands.prometheus_auth(args, env={"TOKENFACTORY_PROMETHEUS_HEADERS": "X-A: 1",
                                               "TOKENFACTORY_PROMETHEUS_INSECURE_SKIP_VERIFY": "true"})
    assert auth.bearer_token_file == str(f) and auth.insecure_skip_verify
    assert auth.headers == (("X-A", "1"), ("X-Scope-OrgID", "t2"))
    bad = cli.build_parser().parse_args(["run", "--prometheus-username", "u"])
    with pytest.raises(commands.CommandError) as ei:
        commands.prometheus_auth(bad, env={})
    assert "password file" in ei.value.message
