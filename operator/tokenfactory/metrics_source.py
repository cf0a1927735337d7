"""Where the operator reads live vLLM figures from: a Prometheus (or a fake).

``PrometheusSource`` uses httpx's ``AsyncClient`` against Prometheus' HTTP API
(``/api/v1/query``, instant queries). Why httpx: the operator runs inside kopf's asyncio loop, so
the client must be async (a blocking call would stall every handler); all it needs is a handful of
instant queries per factory and reconcile, which is one small GET each — no Prometheus client
library (and its dependencies) is needed for that; and httpx gives explicit connect/read timeouts
plus ``MockTransport`` for unit tests without a server. Every answer is validated strictly:
anything unexpected becomes :class:`MetricsUnavailable` with a short machine reason, never a
half-trusted number.

The PromQL builders are pure functions (:func:`promql_queries`), tested on their own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import ssl
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from tokenfactory.ports import MetricsSource  # noqa: F401 - re-exported: the Protocol the sources implement

log = logging.getLogger("tokenfactory.metrics")

# Machine reasons carried by MetricsUnavailable
PROMETHEUS_UNREACHABLE = "PrometheusUnreachable"
PROMETHEUS_ERROR = "PrometheusError"
BAD_RESPONSE = "BadResponse"
NO_SERIES = "NoSeries"
TIMEOUT = "Timeout"
PROMETHEUS_URL_NOT_ALLOWED = "PrometheusURLNotAllowed"
POOL_NOT_REPORTING = "PoolNotReporting"  # a pool with ready replicas whose engines report no token series
REASONS = (PROMETHEUS_UNREACHABLE, PROMETHEUS_ERROR, BAD_RESPONSE, NO_SERIES, TIMEOUT, PROMETHEUS_URL_NOT_ALLOWED,
           POOL_NOT_REPORTING)

# Prometheus' own errorType values (api/v1); anything else a server answers is reported as "error".
# Only these classified words ever reach status and Events: never a response body or a raw exception
# text from the target (a per-factory URL is user input; see ``url_allowed``).
_PROMETHEUS_ERROR_TYPES = frozenset({"timeout", "canceled", "execution", "bad_data", "internal", "unavailable",
                                     "not_found", "not_acceptable"})


class MetricsUnavailable(Exception):
    """The figures could not be read; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str = ""):
        self.reason = reason
        self.message = message or reason
        super().__init__(f"{reason}: {self.message}")


@dataclass(frozen=True)
class PoolMetrics:
    """Measured figures for one pool over the window (rates are per second).

    ``*_p95_seconds`` are ``None`` when no request completed in the window (Prometheus answers
    NaN then) and may be ``inf`` when the p95 lies beyond the largest histogram bucket.
    ``requests_per_second`` (completed requests, ``vllm:request_success_total``) is ``None`` when
    the pool reports no such series.
    """

    pool: str
    prompt_tokens_per_second: float = 0.0
    generation_tokens_per_second: float = 0.0
    ttft_p95_seconds: float | None = None
    itl_p95_seconds: float | None = None
    requests_waiting: float = 0.0
    requests_running: float = 0.0
    kv_cache_usage: float | None = None
    engines_reporting: int = 0
    sampled_at: float = 0.0
    requests_per_second: float | None = None
    reports_tokens: bool = True  # False: the engines report (gauges) but no generation-token series exists


@dataclass(frozen=True)
class FactoryMetrics:
    namespace: str
    factory: str
    window_seconds: float
    sampled_at: float
    pools: Mapping[str, PoolMetrics] = field(default_factory=dict)
    # series left out because a sample was NaN, infinite or negative: "pod P (pool Q): vllm:x = NaN" (issue 15)
    dropped: tuple[str, ...] = ()

    @property
    def prompt_tokens_per_second(self) -> float:
        return sum(p.prompt_tokens_per_second for p in self.pools.values())

    @property
    def generation_tokens_per_second(self) -> float:
        return sum(p.generation_tokens_per_second for p in self.pools.values())

    @property
    def engines_reporting(self) -> int:
        return sum(p.engines_reporting for p in self.pools.values())

    @property
    def idle(self) -> bool:
        """Engines report but deliver no tokens: demand is zero (not a metrics gap)."""
        return self.prompt_tokens_per_second == 0 and self.generation_tokens_per_second == 0

    def tokens_per_request(self, token_accounting: str = "output") -> float | None:
        """Mean tokens per completed request over the window: generation (plus prompt, for "total"
        accounting) token rate / request-success rate, over the pools that report both. ``None`` when
        no request completed (or no pool reports the success counter)."""
        tokens = requests = 0.0
        for p in self.pools.values():
            if p.requests_per_second is None or not p.requests_per_second > 0:
                continue
            requests += p.requests_per_second
            tokens += p.generation_tokens_per_second
            if token_accounting == "total":
                tokens += p.prompt_tokens_per_second
        if not (requests > 0 and tokens > 0):
            return None
        return tokens / requests


# --------------------------------------------------------------------------------------------
# PromQL (pure)
# --------------------------------------------------------------------------------------------


def escape_label_value(value: str) -> str:
    """Escape a label value for a PromQL string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def selector(namespace: str, factory: str) -> str:
    return f'{{namespace="{escape_label_value(namespace)}",factory="{escape_label_value(factory)}"}}'


def range_literal(window_seconds: float) -> str:
    w = int(math.ceil(float(window_seconds)))
    if w <= 0:
        raise ValueError(f"window_seconds must be > 0, got {window_seconds!r}")
    return f"[{w}s]"


# Per-series filter applied before aggregating: a NaN, infinite or negative sample from one pod is left out
# (and named by :func:`nonfinite_query`) instead of poisoning its pool's sum (issue 15).
FINITE = " >= 0 < +Inf"


def rate_query(metric: str, namespace: str, factory: str, window_seconds: float) -> str:
    return f"sum by (pool) (rate({metric}{selector(namespace, factory)}{range_literal(window_seconds)}){FINITE})"


def quantile_query(histogram: str, namespace: str, factory: str, window_seconds: float, q: float = 0.95) -> str:
    return (
        f"histogram_quantile({q}, sum by (pool, le) "
        f"(rate({histogram}_bucket{selector(namespace, factory)}{range_literal(window_seconds)}){FINITE}))"
    )


def gauge_query(metric: str, namespace: str, factory: str, agg: str = "sum") -> str:
    if agg == "count":  # an engine that reports counts, whatever its value
        return f"{agg} by (pool) ({metric}{selector(namespace, factory)})"
    return f"{agg} by (pool) ({metric}{selector(namespace, factory)}{FINITE})"


# Raw series whose latest sample :data:`FINITE` leaves out, each tagged with its name (set operators match
# label sets without the metric name, so the name goes into a ``series`` label first).
CHECKED_SERIES = ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
                  "vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:request_success_total")


def nonfinite_query(namespace: str, factory: str) -> str:
    """The series of the factory whose current value is NaN, +-Inf or negative, with pod and pool labels."""
    return nonfinite_series(selector(namespace, factory))


def nonfinite_series(sel: str) -> str:
    """The checked series matching the label selector ``sel`` whose current value is NaN, +-Inf or negative,
    each labelled ``series`` with its metric name (shared by the per-factory and the batched reader)."""
    return " or ".join(f'label_replace(({m}{sel} unless ({m}{sel}{FINITE})), "series", "{m}", "", "")'
                       for m in CHECKED_SERIES)


def promql_queries(namespace: str, factory: str, window_seconds: float) -> dict[str, str]:
    """The instant queries behind :class:`PoolMetrics`, keyed by field name."""
    return {
        "generation_tokens_per_second": rate_query("vllm:generation_tokens_total", namespace, factory, window_seconds),
        "prompt_tokens_per_second": rate_query("vllm:prompt_tokens_total", namespace, factory, window_seconds),
        "requests_per_second": rate_query("vllm:request_success_total", namespace, factory, window_seconds),
        "ttft_p95_seconds": quantile_query("vllm:time_to_first_token_seconds", namespace, factory, window_seconds),
        "itl_p95_seconds": quantile_query("vllm:inter_token_latency_seconds", namespace, factory, window_seconds),
        "requests_waiting": gauge_query("vllm:num_requests_waiting", namespace, factory),
        "requests_running": gauge_query("vllm:num_requests_running", namespace, factory),
        "kv_cache_usage": gauge_query("vllm:kv_cache_usage_perc", namespace, factory, "avg"),
        "engines_reporting": gauge_query("vllm:num_requests_running", namespace, factory, "count"),
    }


# Fields where NaN means "no observation" (None) and +Inf is a legitimate answer.
_QUANTILE_FIELDS = {"ttft_p95_seconds", "itl_p95_seconds"}


def parse_vector(payload: object, query: str = "") -> list[tuple[str, float, float]]:
    """Validate a ``/api/v1/query`` answer; return ``[(pool, timestamp, value)]``.

    Raises :class:`MetricsUnavailable` (``PrometheusError`` for ``status: error``, ``BadResponse``
    for anything not shaped like an instant vector).
    """
    if not isinstance(payload, dict):
        raise MetricsUnavailable(BAD_RESPONSE, f"answer is not a JSON object ({query})")
    status = payload.get("status")
    if status == "error":
        error_type = payload.get("errorType")
        kind = error_type if isinstance(error_type, str) and error_type in _PROMETHEUS_ERROR_TYPES else "error"
        raise MetricsUnavailable(PROMETHEUS_ERROR, f"Prometheus answered status error ({kind}) ({query})")
    if status != "success":
        raise MetricsUnavailable(BAD_RESPONSE, f"unexpected status field ({query})")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise MetricsUnavailable(BAD_RESPONSE, f"no data object ({query})")
    if data.get("resultType") != "vector":
        raise MetricsUnavailable(BAD_RESPONSE, f"resultType is not 'vector' ({query})")
    result = data.get("result")
    if not isinstance(result, list):
        raise MetricsUnavailable(BAD_RESPONSE, f"result is not a list ({query})")
    out: list[tuple[str, float, float]] = []
    seen: set[str] = set()
    for item in result:
        if not isinstance(item, dict):
            raise MetricsUnavailable(BAD_RESPONSE, f"sample is not an object ({query})")
        metric = item.get("metric")
        value = item.get("value")
        if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
            raise MetricsUnavailable(BAD_RESPONSE, f"malformed sample ({query})")
        pool = metric.get("pool", "")
        if not isinstance(pool, str):
            raise MetricsUnavailable(BAD_RESPONSE, f"pool label is not a string ({query})")
        ts, raw = value
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not isinstance(raw, str):
            raise MetricsUnavailable(BAD_RESPONSE, f"malformed sample value ({query})")
        try:
            v = float(raw)
        except ValueError:
            raise MetricsUnavailable(BAD_RESPONSE, f"sample value is not a number ({query})") from None
        if pool in seen:
            raise MetricsUnavailable(BAD_RESPONSE, f"duplicate series for pool {pool!r} ({query})")
        seen.add(pool)
        out.append((pool, float(ts), v))
    return out


def dropped_items(payload: object) -> list[tuple[Mapping[str, Any], str]]:
    """The answer of :func:`nonfinite_query` (or the batched one) as ``(labels, "pod P (pool Q): SERIES =
    VALUE")`` pairs (pod, pool and series are our own label values; anything malformed is skipped: this only
    names what was left out)."""
    out: list[tuple[Mapping[str, Any], str]] = []
    result = ((payload or {}).get("data") or {}).get("result") if isinstance(payload, dict) else None
    for item in result if isinstance(result, list) else []:
        metric = item.get("metric") if isinstance(item, dict) else None
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
            continue
        series = metric.get("series")
        if series not in CHECKED_SERIES:
            continue
        raw = value[1] if isinstance(value[1], str) else ""
        shown = {"nan": "NaN", "+inf": "+Inf", "inf": "+Inf", "-inf": "-Inf"}.get(raw.lower(), "negative")
        pod, pool = str(metric.get("pod", "?"))[:253], str(metric.get("pool", "?"))[:63]
        out.append((metric, f"pod {pod} (pool {pool}): {series} = {shown}"))
    return out


def parse_dropped(payload: object) -> tuple[str, ...]:
    """The answer of :func:`nonfinite_query` as sorted "pod P (pool Q): SERIES = VALUE" lines."""
    return tuple(sorted({line for _, line in dropped_items(payload)}))


def assemble(
    namespace: str, factory: str, window_seconds: float, answers: Mapping[str, list[tuple[str, float, float]]],
    dropped: tuple[str, ...] = (),
) -> FactoryMetrics:
    """Combine validated vectors into :class:`FactoryMetrics` (pure).

    The pools are those whose engines report: a generation-token rate, or the liveness gauge
    (``engines_reporting``, the count of ``vllm:num_requests_running`` series). A pool whose engines
    report but whose token counters are absent (nothing requested yet, or a single scrape so far) is
    idle: token rates 0, demand 0. Neither series for any pool is ``NoSeries`` (no engine reports:
    the caller holds). NaN is accepted only for quantiles (no request finished in the window); a NaN,
    infinite or negative rate or gauge of a pool is left out (that field keeps its default) and named in
    ``dropped``, the other figures stand (the queries already leave out such samples per series, so this
    only happens with a Prometheus that aggregates them anyway). Series without a ``pool`` label are
    ignored (they are not ours).
    """
    gen = [(p, ts, v) for p, ts, v in answers.get("generation_tokens_per_second", []) if p]
    alive = [(p, ts, v) for p, ts, v in answers.get("engines_reporting", []) if p and v > 0]
    if not gen and not alive:
        raise MetricsUnavailable(
            NO_SERIES, f"no vLLM engine reports for namespace={namespace} factory={factory} "
                       f"(neither vllm:num_requests_running nor vllm:generation_tokens_total)"
        )
    per_pool: dict[str, dict[str, Any]] = {}
    dropped_here: list[str] = []
    gen_pools = {p for p, _, _ in gen}
    for p, ts, _ in gen + alive:
        entry = per_pool.setdefault(p, {"sampled_at": ts})
        entry["sampled_at"] = max(float(entry["sampled_at"]), ts)
    for name, vector in answers.items():
        for pool, _ts, v in vector:
            if pool not in per_pool:
                continue
            if math.isnan(v) and name in _QUANTILE_FIELDS:
                per_pool[pool][name] = None
                continue
            if math.isnan(v) or (math.isinf(v) and name not in _QUANTILE_FIELDS) or v < 0:
                dropped_here.append(f"pool {pool}: {name} = {'NaN' if math.isnan(v) else 'negative' if v < 0 else '+Inf'}")
                if name == "generation_tokens_per_second":
                    gen_pools.discard(pool)
                continue
            per_pool[pool][name] = int(v) if name == "engines_reporting" else v
    pools = {p: PoolMetrics(pool=p, reports_tokens=p in gen_pools, **fields) for p, fields in sorted(per_pool.items())}
    sampled = max(ts for _, ts, _ in gen + alive)
    return FactoryMetrics(namespace=namespace, factory=factory, window_seconds=window_seconds, sampled_at=sampled, pools=pools,
                          dropped=tuple(dropped) + tuple(dropped_here))


# --------------------------------------------------------------------------------------------
# Prometheus over HTTP
# --------------------------------------------------------------------------------------------


# Environment variables read by :meth:`PrometheusAuth.from_env` (``tokenfactory run`` sets them from its flags).
ENV_PREFIX = "TOKENFACTORY_PROMETHEUS_"
AUTH_ENV = {
    "bearer_token_file": ENV_PREFIX + "BEARER_TOKEN_FILE",
    "username": ENV_PREFIX + "USERNAME",
    "password_file": ENV_PREFIX + "PASSWORD_FILE",
    "ca_file": ENV_PREFIX + "CA_FILE",
    "cert_file": ENV_PREFIX + "CERT_FILE",
    "key_file": ENV_PREFIX + "KEY_FILE",
    "insecure_skip_verify": ENV_PREFIX + "INSECURE_SKIP_VERIFY",
    "headers": ENV_PREFIX + "HEADERS",
}


class AuthConfigError(ValueError):
    """The Prometheus client settings are inconsistent or name files that cannot be read."""


def parse_header(text: str) -> tuple[str, str]:
    """``"X-Scope-OrgID: tenant-a"`` -> ``("X-Scope-OrgID", "tenant-a")``; raises AuthConfigError."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or any(c in name for c in " \t\r\n") or "\n" in value or "\r" in value:
        raise AuthConfigError(f"header {text!r}: want 'Name: value' (e.g. 'X-Scope-OrgID: tenant-a')")
    if name.lower() == "authorization":
        raise AuthConfigError("header Authorization: use the bearer token file or basic auth settings instead")
    return name, value


@dataclass(frozen=True)
class PrometheusAuth:
    """How the operator authenticates to Prometheus (or Mimir, Thanos, Cortex) and trusts its TLS certificate.

    Secrets are only ever read from files (mounted Secrets), never from flags: ``bearer_token_file`` is read
    on every request (a rotated token is picked up), ``password_file`` likewise. ``ca_file`` is a PEM bundle to
    trust instead of the system CAs; ``cert_file``/``key_file`` a TLS client certificate; ``headers`` extra
    request headers such as ``X-Scope-OrgID``.
    """

    bearer_token_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PrometheusAuth:
        env = os.environ if env is None else env

        def get(key: str) -> str | None:
            return env.get(AUTH_ENV[key]) or None

        headers = tuple(parse_header(line) for line in (get("headers") or "").splitlines() if line.strip())
        skip = (get("insecure_skip_verify") or "").strip().lower() in {"1", "true", "yes", "on"}
        return cls(bearer_token_file=get("bearer_token_file"), username=get("username"),
                   password_file=get("password_file"), ca_file=get("ca_file"), cert_file=get("cert_file"),
                   key_file=get("key_file"), insecure_skip_verify=skip, headers=headers)

    def to_env(self) -> dict[str, str]:
        """The environment that :meth:`from_env` turns back into this configuration."""
        out = {AUTH_ENV[k]: v for k in ("bearer_token_file", "username", "password_file", "ca_file", "cert_file",
                                         "key_file") if (v := getattr(self, k))}
        if self.insecure_skip_verify:
            out[AUTH_ENV["insecure_skip_verify"]] = "true"
        if self.headers:
            out[AUTH_ENV["headers"]] = "\n".join(f"{n}: {v}" for n, v in self.headers)
        return out

    @property
    def empty(self) -> bool:
        return self == PrometheusAuth()

    def check(self) -> None:
        """Raise AuthConfigError naming the setting when the configuration cannot work."""
        if self.bearer_token_file and (self.username or self.password_file):
            raise AuthConfigError("bearer token and basic auth are exclusive: give one")
        if bool(self.username) != bool(self.password_file):
            raise AuthConfigError("basic auth needs both a username and a password file")
        if bool(self.cert_file) != bool(self.key_file):
            raise AuthConfigError("a TLS client certificate needs both the certificate and the key file")
        for what, path in (("bearer token file", self.bearer_token_file), ("password file", self.password_file),
                           ("CA file", self.ca_file), ("client certificate", self.cert_file),
                           ("client key", self.key_file)):
            if path and not os.access(path, os.R_OK):
                raise AuthConfigError(f"{what} {path}: cannot read (missing or no permission)")
        try:
            self.ssl_context()
        except (ssl.SSLError, OSError) as err:
            raise AuthConfigError(f"TLS settings: {err}") from None

    def ssl_context(self) -> ssl.SSLContext | bool:
        """``verify`` for httpx: the default when nothing is set, else a context with the CA and client cert."""
        if self.insecure_skip_verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_file or self.cert_file:
            ctx = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()
        else:
            return True
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def describe(self) -> str:
        """For logs: what is configured, never a secret."""
        parts = []
        if self.bearer_token_file:
            parts.append(f"bearer token from {self.bearer_token_file}")
        if self.username:
            parts.append(f"basic auth as {self.username}")
        if self.ca_file:
            parts.append(f"CA {self.ca_file}")
        if self.cert_file:
            parts.append(f"client cert {self.cert_file}")
        if self.insecure_skip_verify:
            parts.append("TLS verification OFF")
        if self.headers:
            parts.append("headers " + ", ".join(n for n, _ in self.headers))
        return "; ".join(parts) or "no auth"


def classify_transport_error(err: BaseException) -> str:
    """A fixed word for a failed request: what status and Events may say about it (no target text)."""
    if isinstance(err, ssl.SSLError) or "SSL" in type(err).__name__ or "CERTIFICATE" in str(err).upper():
        return "TLS error"
    if isinstance(err, httpx.ConnectError):
        return "connection failed"
    if isinstance(err, (httpx.RemoteProtocolError, httpx.LocalProtocolError)):
        return "protocol error"
    if isinstance(err, httpx.ReadError | httpx.WriteError):
        return "connection broken"
    return "request failed"


def normalise_url(url: str) -> str:
    """The form URLs are compared in: surrounding blanks and trailing slashes dropped, scheme and host lower case."""
    u = url.strip().rstrip("/")
    scheme, sep, rest = u.partition("://")
    if not sep:
        return u
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"


def url_allowed(url: str, allowed: frozenset[str] | set[str] | tuple[str, ...]) -> bool:
    """True when ``url`` is exactly one of the admin's allowed Prometheus URLs (after :func:`normalise_url`).

    Exact match only, no patterns: a pattern such as ``http://*.svc`` can be made to match
    ``http://attacker/x?.svc``."""
    return normalise_url(url) in {normalise_url(a) for a in allowed}


def _read_secret(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:  # e.g. a mounted Secret being rotated or removed
        raise MetricsUnavailable(PROMETHEUS_ERROR, f"cannot read Prometheus credentials file {path}: "
                                                   f"{e.strerror or e}") from e


class _FileAuth(httpx.Auth):
    """Bearer or basic auth whose secret is read from its file on every request (rotation-safe)."""

    def __init__(self, auth: PrometheusAuth):
        self.auth = auth

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        a = self.auth
        if a.bearer_token_file:
            request.headers["Authorization"] = f"Bearer {_read_secret(a.bearer_token_file)}"
        elif a.username and a.password_file:
            pair = f"{a.username}:{_read_secret(a.password_file)}".encode()
            request.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        yield request


class PrometheusSource:
    """Reads pool figures from a Prometheus HTTP API with instant queries (run concurrently).

    ``auth`` configures credentials, TLS and extra headers; ``None`` takes them from the environment
    (:meth:`PrometheusAuth.from_env`, set by ``tokenfactory run``'s ``--prometheus-*`` flags).
    """

    def __init__(self, url: str, timeout: float = 5.0, *, transport: httpx.AsyncBaseTransport | None = None,
                 auth: PrometheusAuth | None = None):
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.auth = auth if auth is not None else PrometheusAuth.from_env()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            a = self.auth
            self._client = httpx.AsyncClient(
                base_url=self.url, timeout=self.timeout, transport=self._transport,
                verify=a.ssl_context(), headers=dict(a.headers),
                auth=_FileAuth(a) if (a.bearer_token_file or a.username) else None,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def query(self, promql: str, now: float | None = None) -> list[tuple[str, float, float]]:
        return parse_vector(await self.query_payload(promql, now), promql)

    async def query_payload(self, promql: str, now: float | None = None) -> Any:
        """The decoded JSON answer of an instant query; transport, TLS, credential and HTTP failures are
        ``MetricsUnavailable`` with a classified reason (shared with the batched reader, metrics_batch.py)."""
        params = {"query": promql}
        if now is not None:
            params["time"] = f"{float(now):.3f}"
        try:
            resp = await self._http().get("/api/v1/query", params=params)
        except httpx.TimeoutException as e:
            raise MetricsUnavailable(TIMEOUT, f"{self.url} did not answer within {self.timeout}s") from e
        except (httpx.HTTPError, ssl.SSLError) as e:  # SSLError: e.g. our client certificate refused (TLS 1.3)
            # Classified, never the raw exception text (it carries what the target said; a URL may be user input).
            log.debug("query to %s failed: %s: %s", self.url, type(e).__name__, e)
            raise MetricsUnavailable(PROMETHEUS_UNREACHABLE, f"cannot reach {self.url} ({classify_transport_error(e)})") from e
        if resp.status_code in (401, 403):
            raise MetricsUnavailable(
                PROMETHEUS_ERROR, f"HTTP {resp.status_code} from {self.url}: credentials refused "
                                  f"({self.auth.describe()}); check the operator's --prometheus-* settings")
        try:
            payload = json.loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            if resp.status_code >= 400:
                raise MetricsUnavailable(PROMETHEUS_ERROR, f"HTTP {resp.status_code} from {self.url}") from None
            raise MetricsUnavailable(BAD_RESPONSE, f"answer from {self.url} is not JSON") from None
        if resp.status_code >= 400 and not (isinstance(payload, dict) and payload.get("status") == "error"):
            raise MetricsUnavailable(PROMETHEUS_ERROR, f"HTTP {resp.status_code} from {self.url}")
        return payload

    async def pool_metrics(
        self, namespace: str, factory: str, window_seconds: float, now: float | None = None
    ) -> FactoryMetrics:
        queries = promql_queries(namespace, factory, window_seconds)
        names = list(queries)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(self.query(queries[n], now) for n in names), self._dropped(namespace, factory, now)),
                timeout=self.timeout * 2,
            )
        except TimeoutError as e:
            raise MetricsUnavailable(TIMEOUT, f"queries to {self.url} took longer than {self.timeout * 2}s") from e
        vectors: list[list[tuple[str, float, float]]] = list(results[:-1])  # type: ignore[arg-type]
        dropped: tuple[str, ...] = results[-1]  # type: ignore[assignment]
        return assemble(namespace, factory, window_seconds, dict(zip(names, vectors)), dropped)

    async def _dropped(self, namespace: str, factory: str, now: float | None) -> tuple[str, ...]:
        """Which series the figures leave out (names only; a failure here loses no figure)."""
        try:
            payload = await self.query_payload(nonfinite_query(namespace, factory), now)
        except MetricsUnavailable:
            return ()
        return parse_dropped(payload) if isinstance(payload, dict) and payload.get("status") == "success" else ()


class SourcesByUrl:
    """One :class:`MetricsSource` per Prometheus URL, made on first use and closed together
    (``ports.MetricsSources``). ``preset`` maps URLs to ready sources (fakes in tests)."""

    def __init__(self, timeout: float = 5.0, preset: Mapping[str, Any] | None = None):
        self.timeout = float(timeout)
        self._sources: dict[str, Any] = dict(preset or {})

    def source(self, url: str) -> MetricsSource:
        if url not in self._sources:
            self._sources[url] = PrometheusSource(url, timeout=self.timeout)
        return self._sources[url]

    async def aclose(self) -> None:
        for src in self._sources.values():
            close = getattr(src, "aclose", None)
            if close is not None:
                await close()


# --------------------------------------------------------------------------------------------
# Fake
# --------------------------------------------------------------------------------------------


class FakeMetricsSource:
    """In-memory source: set figures per pool, or make it fail with a reason."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str], dict[str, PoolMetrics]] = {}
        self._fail: dict[tuple[str, str] | None, MetricsUnavailable] = {}
        self.calls: list[tuple[str, str, float, float | None]] = []

    def set_pool(self, namespace: str, factory: str, pool: str, **figures) -> None:
        self._pools.setdefault((namespace, factory), {})[pool] = PoolMetrics(pool=pool, **figures)

    def remove_pool(self, namespace: str, factory: str, pool: str) -> None:
        self._pools.get((namespace, factory), {}).pop(pool, None)

    def fail(self, reason: str = PROMETHEUS_UNREACHABLE, namespace: str | None = None, factory: str | None = None) -> None:
        """Fail every query (or only this factory's) with ``reason`` until :meth:`recover`."""
        key = None if namespace is None else (namespace, factory or "")
        self._fail[key] = MetricsUnavailable(reason, "fake failure")

    def recover(self) -> None:
        self._fail.clear()

    async def pool_metrics(
        self, namespace: str, factory: str, window_seconds: float, now: float | None = None
    ) -> FactoryMetrics:
        self.calls.append((namespace, factory, window_seconds, now))
        err = self._fail.get((namespace, factory)) or self._fail.get(None)
        if err is not None:
            raise err
        pools = self._pools.get((namespace, factory))
        if not pools:
            raise MetricsUnavailable(NO_SERIES, f"no figures set for {namespace}/{factory}")
        ts = float(now) if now is not None else 0.0
        pools = {p: (m if m.sampled_at else replace(m, sampled_at=ts)) for p, m in sorted(pools.items())}
        return FactoryMetrics(namespace=namespace, factory=factory, window_seconds=window_seconds, sampled_at=ts, pools=pools)
