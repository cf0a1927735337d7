"""Demand traces: pure functions of simulated time ``t`` (seconds since the start) -> :class:`Demand`.

A rate is in *output* (generation) tokens per second; each request has ``prompt_tokens`` and
``output_tokens`` (default 1000 / 500), so requests/s = rate / output_tokens and prompt tokens/s =
requests/s x prompt_tokens.

Trace syntax (``--trace``)::

    constant:RATE                         e.g. constant:5000
    step:RATE0,RATE1@T1[,RATE2@T2...]     RATE0 until T1 s, then RATE1 (until T2), ...   step:2000,20000@120
    ramp:FROM,TO@T0,T1                    FROM until T0, linear to TO at T1, then TO      ramp:1000,20000@60,660
    diurnal:MEAN,AMPLITUDE[@PERIOD[,PEAK]]  MEAN + AMPLITUDE x cos(2 pi (t - PEAK) / PERIOD), >= 0;
                                          PERIOD default 86400 s, PEAK default 50400 s (14:00)
    bursty:BASE,PEAK[@EVERY,DURATION[,P]] BASE, and with probability P (default 0.5) one burst at PEAK
                                          of DURATION s (default 60) somewhere in each EVERY s
                                          (default 600) window; placed by a RNG seeded with --seed
    csv:FILE | FILE                       a file, format detected by its content:
                                          - rate CSV, header 'seconds,tokens_per_second' or
                                            'seconds,requests_per_second,prompt_tokens,output_tokens';
                                            linear between rows, held before the first / after the last
                                          - Azure LLM inference CSV 'TIMESTAMP,ContextTokens,GeneratedTokens'
                                            (one row per request, replayed as is)
                                          - Mooncake JSONL, one {"timestamp": ms, "input_length": N,
                                            "output_length": M, ...} per line (replayed as is)

Rates accept a k/M suffix (20k = 20000). ``--rate-scale X`` multiplies a rate trace's rate, and replays
X times the requests per second of a request trace (each request kept floor(X) times, once more with
probability frac(X), copies placed between it and the next request; seeded, same sizes).
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import os
import random
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

DEFAULT_PROMPT_TOKENS = 1000.0
DEFAULT_OUTPUT_TOKENS = 500.0

# A real request trace shipped with the package (CC-BY 4.0, see sim/data/README.md)
AZURE_CODE_TRACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "azure-llm-code-2023.csv")


@dataclass(frozen=True)
class Demand:
    output_tokens_per_second: float
    prompt_tokens: float = DEFAULT_PROMPT_TOKENS  # per request
    output_tokens: float = DEFAULT_OUTPUT_TOKENS  # per request

    @property
    def requests_per_second(self) -> float:
        return self.output_tokens_per_second / self.output_tokens

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.requests_per_second * self.prompt_tokens


class Trace(Protocol):
    def __call__(self, t: float) -> Demand: ...


@dataclass(frozen=True)
class Constant:
    rate: float
    prompt_tokens: float = DEFAULT_PROMPT_TOKENS
    output_tokens: float = DEFAULT_OUTPUT_TOKENS

    def __call__(self, t: float) -> Demand:
        return Demand(self.rate, self.prompt_tokens, self.output_tokens)


@dataclass(frozen=True)
class Step:
    initial: float
    steps: tuple[tuple[float, float], ...]  # (at seconds, rate), sorted
    prompt_tokens: float = DEFAULT_PROMPT_TOKENS
    output_tokens: float = DEFAULT_OUTPUT_TOKENS

    def __call__(self, t: float) -> Demand:
        rate = self.initial
        for at, r in self.steps:
            if t >= at:
                rate = r
        return Demand(rate, self.prompt_tokens, self.output_tokens)


@dataclass(frozen=True)
class Ramp:
    start_rate: float
    end_rate: float
    t0: float
    t1: float
    prompt_tokens: float = DEFAULT_PROMPT_TOKENS
    output_tokens: float = DEFAULT_OUTPUT_TOKENS

    def __call__(self, t: float) -> Demand:
        if t <= self.t0:
            r = self.start_rate
        elif t >= self.t1:
            r = self.end_rate
        else:
            r = self.start_rate + (self.end_rate - self.start_rate) * (t - self.t0) / (self.t1 - self.t0)
        return Demand(r, self.prompt_tokens, self.output_tokens)


@dataclass(frozen=True)
class Diurnal:
    mean: float
    amplitude: float
    period: float = 86400.0
    peak_at: float = 50400.0
    prompt_tokens: float = DEFAULT_PROMPT_TOKENS
    output_tokens: float = DEFAULT_OUTPUT_TOKENS

    def __call__(self, t: float) -> Demand:
        r = self.mean + self.amplitude * math.cos(2 * math.pi * (t - self.peak_at) / self.period)
        return Demand(max(0.0, r), self.prompt_tokens, self.output_tokens)


@dataclass(frozen=True)
class Bursty:
    base: float
    peak: float
    every: float = 600.0
    duration: float = 60.0
    probability: float = 0.5
    seed: int = 0
    prompt_tokens: float = DEFAULT_PROMPT_TOKENS
    output_tokens: float = DEFAULT_OUTPUT_TOKENS

    def burst_window(self, k: int) -> tuple[float, float] | None:
        """(start, end) of the burst in window ``k``, or None (pure: seeded per window)."""
        rng = random.Random(f"{self.seed}:{k}")
        happens = rng.random() < self.probability
        start = k * self.every + rng.uniform(0.0, max(0.0, self.every - self.duration))
        return (start, start + self.duration) if happens else None

    def __call__(self, t: float) -> Demand:
        w = self.burst_window(int(math.floor(t / self.every)))
        r = self.peak if w is not None and w[0] <= t < w[1] else self.base
        return Demand(r, self.prompt_tokens, self.output_tokens)


@dataclass(frozen=True)
class Table:
    """Piecewise-linear demand from rows (seconds, output tok/s, prompt tokens, output tokens)."""

    rows: tuple[tuple[float, float, float, float], ...]

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("a table trace needs at least one row")

    def __call__(self, t: float) -> Demand:
        times = [r[0] for r in self.rows]
        i = bisect.bisect_right(times, t)
        if i == 0:
            _, r, p, o = self.rows[0]
        elif i == len(self.rows):
            _, r, p, o = self.rows[-1]
        else:
            (t0, r0, p0, o0), (t1, r1, p1, o1) = self.rows[i - 1], self.rows[i]
            f = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
            r, p, o = r0 + (r1 - r0) * f, p0 + (p1 - p0) * f, o0 + (o1 - o0) * f
        return Demand(r, p, o)


@dataclass(frozen=True)
class TimeScaled:
    """``trace`` played ``scale`` times faster: demand(t) = trace(t x scale)."""

    trace: Trace
    scale: float

    def __call__(self, t: float) -> Demand:
        return self.trace(t * self.scale)

    @property
    def requests(self):
        """The wrapped request trace's ``requests``, played ``scale`` times faster (None for a rate trace)."""
        inner = getattr(self.trace, "requests", None)
        if inner is None:
            return None
        s = self.scale

        def requests(t0: float, t1: float):
            times, prompt, output = inner(t0 * s, t1 * s)
            return times / s, prompt, output

        return requests


class TraceSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class RateScaled:
    """``trace`` with ``scale`` times its rate (same request sizes)."""

    trace: Trace
    scale: float

    def __call__(self, t: float) -> Demand:
        d = self.trace(t)
        return Demand(d.output_tokens_per_second * self.scale, d.prompt_tokens, d.output_tokens)


@dataclass(frozen=True, eq=False)
class RequestTrace:
    """Requests replayed as given: arrival ``times`` (seconds from the trace's start, sorted),
    ``prompt`` and ``output`` tokens per request (numpy arrays). ``repeat``: play it again from the
    start after ``period`` seconds (default: its span rounded up to ``bin_seconds``), for ever.

    ``requests(t0, t1)`` gives the arrivals in ``[t0, t1)``; calling the trace gives the
    :class:`Demand` (rates, mean sizes) of the ``bin_seconds`` bin holding ``t``, for code that
    reads a rate (policies, forecasts, the oracle)."""

    times: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    name: str = "requests"
    bin_seconds: float = 60.0
    repeat: bool = False
    period: float | None = None
    _bins: tuple = field(default=(), repr=False)

    def __post_init__(self) -> None:
        n = len(self.times)
        if n == 0:
            raise TraceSyntaxError(f"{self.name}: no requests")
        if len(self.prompt) != n or len(self.output) != n:
            raise TraceSyntaxError(f"{self.name}: times, prompt and output differ in length")
        span = float(self.times[-1]) + 1e-9
        period = self.period if self.period is not None else math.ceil(span / self.bin_seconds) * self.bin_seconds
        period = max(period, self.bin_seconds)
        object.__setattr__(self, "period", period)
        nb = int(math.ceil(period / self.bin_seconds))
        idx = np.minimum((self.times // self.bin_seconds).astype(np.int64), nb - 1)
        cnt = np.bincount(idx, minlength=nb).astype(float)
        out = np.bincount(idx, weights=self.output, minlength=nb)
        prm = np.bincount(idx, weights=self.prompt, minlength=nb)
        mean_out = float(self.output.mean())
        mean_prm = float(self.prompt.mean())
        with np.errstate(invalid="ignore", divide="ignore"):
            o = np.where(cnt > 0, out / cnt, mean_out)
            p = np.where(cnt > 0, prm / cnt, mean_prm)
        object.__setattr__(self, "_bins", (out / self.bin_seconds, p, o))

    @property
    def span(self) -> float:
        """The repeat period in seconds: ``period`` as resolved by ``__post_init__`` (never None)."""
        assert self.period is not None
        return float(self.period)

    @property
    def mean_prompt_tokens(self) -> float:
        return float(self.prompt.mean())

    @property
    def mean_output_tokens(self) -> float:
        return float(self.output.mean())

    def __call__(self, t: float) -> Demand:
        rate, p, o = self._bins
        if self.repeat:
            t = t % self.span
        i = int(t // self.bin_seconds)
        if i < 0 or i >= len(rate):
            return Demand(0.0, self.mean_prompt_tokens, self.mean_output_tokens)
        return Demand(float(rate[i]), float(p[i]), float(o[i]))

    def requests(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, prompt, output) of the requests arriving in ``[t0, t1)``, times in trace seconds."""
        if t1 <= t0:
            e = np.empty(0)
            return e, e, e
        if not self.repeat:
            i, j = np.searchsorted(self.times, [t0, t1], side="left")
            return self.times[i:j], self.prompt[i:j], self.output[i:j]
        parts = []
        period = self.span
        k = math.floor(t0 / period)
        while k * period < t1:
            base = k * period
            i, j = np.searchsorted(self.times, [t0 - base, t1 - base], side="left")
            if j > i:
                parts.append((self.times[i:j] + base, self.prompt[i:j], self.output[i:j]))
            k += 1
        if not parts:
            e = np.empty(0)
            return e, e, e
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate(x) for x in zip(*parts))  # type: ignore[return-value]

    def rate_scaled(self, scale: float, seed: int = 0) -> RequestTrace:
        """``scale`` times the requests per second, same size distribution: each request kept
        ``floor(scale)`` times and once more with probability ``frac(scale)``; the copies after the
        first are placed uniformly between the request and the next one (seeded)."""
        if not (scale > 0 and math.isfinite(scale)):
            raise TraceSyntaxError(f"rate scale must be > 0, got {scale}")
        rng = np.random.default_rng([seed, 7919])
        n = len(self.times)
        whole, frac = int(math.floor(scale)), scale - math.floor(scale)
        copies = np.full(n, whole, dtype=np.int64)
        if frac > 0:
            copies += rng.random(n) < frac
        gaps = np.diff(self.times, append=self.times[-1] + (self.times[-1] - self.times[0]) / max(1, n - 1))
        src = np.repeat(np.arange(n), copies)
        first = np.zeros(len(src), dtype=bool)
        starts = np.cumsum(copies) - copies
        first[starts[copies > 0]] = True
        offset = np.where(first, 0.0, rng.random(len(src)) * gaps[src])
        t = self.times[src] + offset
        order = np.argsort(t, kind="stable")
        return RequestTrace(t[order], self.prompt[src][order], self.output[src][order], f"{self.name} x{scale:g}",
                            self.bin_seconds, self.repeat, self.period)

    def looped(self, period: float | None = None) -> RequestTrace:
        """The same trace, repeated every ``period`` seconds (default: its span)."""
        return RequestTrace(self.times, self.prompt, self.output, self.name, self.bin_seconds, True,
                            period if period is not None else self.period)


def _request_arrays(path: str, times: list, prompt: list, output: list, what: str) -> RequestTrace:
    if not times:
        raise TraceSyntaxError(f"{path}: no requests")
    t = np.asarray(times, dtype=float)
    p = np.asarray(prompt, dtype=float)
    o = np.asarray(output, dtype=float)
    order = np.argsort(t, kind="stable")
    t, p, o = t[order], p[order], o[order]
    t = t - t[0]
    return RequestTrace(t, p, np.maximum(o, 1.0), name=f"{what}:{os.path.basename(path)}")


def load_azure_csv(path: str) -> RequestTrace:
    """Azure LLM inference trace CSV: ``TIMESTAMP,ContextTokens,GeneratedTokens``, one row per request."""
    stamps, prompt, output = [], [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for n, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            try:
                stamps.append(row["TIMESTAMP"])
                p, o = float(row["ContextTokens"]), float(row["GeneratedTokens"])
            except KeyError as e:
                raise TraceSyntaxError(f"{path}:{n}: missing column {e}") from None
            except ValueError:
                raise TraceSyntaxError(f"{path}:{n}: ContextTokens and GeneratedTokens must be numbers") from None
            if not (p >= 0 and o >= 0 and math.isfinite(p) and math.isfinite(o)):
                raise TraceSyntaxError(f"{path}:{n}: token counts must be >= 0")
            prompt.append(p)
            output.append(o)
    try:
        ts = np.array(stamps, dtype="datetime64[ns]")
    except ValueError as e:
        raise TraceSyntaxError(f"{path}: TIMESTAMP must be 'YYYY-MM-DD HH:MM:SS[.fffffff]': {e}") from None
    secs = (ts - ts.min()).astype(np.int64) / 1e9 if len(ts) else []
    return _request_arrays(path, list(secs), prompt, output, "azure")


def load_mooncake_jsonl(path: str) -> RequestTrace:
    """Mooncake JSONL: one ``{"timestamp": ms, "input_length": N, "output_length": M}`` per line."""
    times, prompt, output = [], [], []
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
                t, p, o = float(d["timestamp"]) / 1000.0, float(d["input_length"]), float(d["output_length"])
            except json.JSONDecodeError as e:
                raise TraceSyntaxError(f"{path}:{n}: not JSON: {e}") from None
            except KeyError as e:
                raise TraceSyntaxError(f"{path}:{n}: missing field {e} (want timestamp, input_length, output_length)") from None
            except (TypeError, ValueError):
                raise TraceSyntaxError(f"{path}:{n}: timestamp, input_length and output_length must be numbers") from None
            if not (t >= 0 and p >= 0 and o >= 0):
                raise TraceSyntaxError(f"{path}:{n}: timestamp and lengths must be >= 0")
            times.append(t)
            prompt.append(p)
            output.append(o)
    return _request_arrays(path, times, prompt, output, "mooncake")


def detect_format(path: str) -> str:
    """``rate-csv``, ``azure-csv`` or ``mooncake-jsonl``, from the file's first non-empty line."""
    with open(path, newline="") as f:
        first = ""
        for line in f:
            if line.strip():
                first = line.strip()
                break
    if first.startswith("{"):
        return "mooncake-jsonl"
    cols = {c.strip() for c in first.split(",")}
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= cols:
        return "azure-csv"
    if "seconds" in cols:
        return "rate-csv"
    raise TraceSyntaxError(
        f"{path}: unknown trace format (first line {first[:80]!r}); want a rate CSV "
        "(seconds,tokens_per_second or seconds,requests_per_second,prompt_tokens,output_tokens), an Azure CSV "
        "(TIMESTAMP,ContextTokens,GeneratedTokens) or a Mooncake JSONL ({\"timestamp\", \"input_length\", \"output_length\"})"
    )


def load_trace(
    path: str,
    *,
    rate_scale: float = 1.0,
    seed: int = 0,
    prompt_tokens: float = DEFAULT_PROMPT_TOKENS,
    output_tokens: float = DEFAULT_OUTPUT_TOKENS,
    repeat: bool = False,
) -> Trace:
    """Load a trace file, format detected by content (:func:`detect_format`); ``rate_scale`` as
    ``--rate-scale``; ``repeat`` loops a request trace (for runs longer than it)."""
    if not (rate_scale > 0 and math.isfinite(rate_scale)):
        raise TraceSyntaxError(f"rate scale must be > 0, got {rate_scale}")
    fmt = detect_format(path)
    if fmt == "rate-csv":
        t = load_csv(path, prompt_tokens, output_tokens)
        return RateScaled(t, rate_scale) if rate_scale != 1.0 else t
    rt = load_azure_csv(path) if fmt == "azure-csv" else load_mooncake_jsonl(path)
    if rate_scale != 1.0:
        rt = rt.rate_scaled(rate_scale, seed)
    return rt.looped() if repeat else rt


def _rate(text: str) -> float:
    s = text.strip()
    mult = 1.0
    if s[-1:] in ("k", "K"):
        mult, s = 1e3, s[:-1]
    elif s[-1:] == "M":
        mult, s = 1e6, s[:-1]
    try:
        v = float(s) * mult
    except ValueError:
        raise TraceSyntaxError(f"not a rate: {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise TraceSyntaxError(f"rate must be a finite number >= 0: {text!r}")
    return v


def _secs(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise TraceSyntaxError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise TraceSyntaxError(f"seconds must be >= 0: {text!r}")
    return v


def load_csv(path: str, prompt_tokens: float = DEFAULT_PROMPT_TOKENS, output_tokens: float = DEFAULT_OUTPUT_TOKENS) -> Table:
    """Read a CSV trace (I/O here; the resulting :class:`Table` is pure)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        rows = []
        for n, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            try:
                t = _secs(row["seconds"])
                if "tokens_per_second" in cols:
                    rows.append((t, _rate(row["tokens_per_second"]), prompt_tokens, output_tokens))
                elif {"requests_per_second", "prompt_tokens", "output_tokens"} <= set(cols):
                    rps, p, o = _rate(row["requests_per_second"]), _rate(row["prompt_tokens"]), _rate(row["output_tokens"])
                    if o <= 0:
                        raise TraceSyntaxError("output_tokens must be > 0")
                    rows.append((t, rps * o, p, o))
                else:
                    raise TraceSyntaxError(
                        f"{path}: columns must be seconds,tokens_per_second or "
                        f"seconds,requests_per_second,prompt_tokens,output_tokens (got {','.join(cols)})"
                    )
            except KeyError as e:
                raise TraceSyntaxError(f"{path}:{n}: missing column {e}") from None
            except TraceSyntaxError as e:
                raise TraceSyntaxError(f"{path}:{n}: {e}") from None
    rows.sort(key=lambda r: r[0])
    if not rows:
        raise TraceSyntaxError(f"{path}: no rows")
    return Table(tuple(rows))


def parse_trace(
    spec: str,
    *,
    seed: int = 0,
    prompt_tokens: float = DEFAULT_PROMPT_TOKENS,
    output_tokens: float = DEFAULT_OUTPUT_TOKENS,
    rate_scale: float = 1.0,
    repeat: bool = False,
) -> Trace:
    """Parse the ``--trace`` syntax (see the module docstring); ``rate_scale`` as ``--rate-scale``."""
    if not (rate_scale > 0 and math.isfinite(rate_scale)):
        raise TraceSyntaxError(f"rate scale must be > 0, got {rate_scale}")
    if output_tokens <= 0:
        raise TraceSyntaxError("output tokens per request must be > 0")
    kind, sep, rest = spec.partition(":")
    if kind.strip().lower() not in KINDS and os.path.exists(spec):
        return load_trace(spec, rate_scale=rate_scale, seed=seed, prompt_tokens=prompt_tokens,
                          output_tokens=output_tokens, repeat=repeat)
    if not sep or not rest:
        raise TraceSyntaxError(f"trace {spec!r}: want KIND:ARGS (e.g. constant:5000) or an existing file")
    kind = kind.strip().lower()
    if kind == "csv":
        return load_trace(rest, rate_scale=rate_scale, seed=seed, prompt_tokens=prompt_tokens,
                          output_tokens=output_tokens, repeat=repeat)
    t = _parse_kind(spec, kind, rest, seed, prompt_tokens, output_tokens)
    return RateScaled(t, rate_scale) if rate_scale != 1.0 else t


KINDS = ("constant", "step", "ramp", "diurnal", "bursty", "csv")


def _parse_kind(spec: str, kind: str, rest: str, seed: int, prompt_tokens: float, output_tokens: float) -> Trace:
    kw = dict(prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    head, _, tail = rest.partition("@")
    try:
        if kind == "constant":
            return Constant(_rate(rest), **kw)
        if kind == "step":
            parts = rest.split(",")
            initial = _rate(parts[0])
            steps = []
            for p in parts[1:]:
                r, at_sep, at = p.partition("@")
                if not at_sep:
                    raise TraceSyntaxError(f"step {p!r}: want RATE@SECONDS")
                steps.append((_secs(at), _rate(r)))
            if not steps:
                raise TraceSyntaxError("step needs at least one RATE@SECONDS")
            return Step(initial, tuple(sorted(steps)), **kw)
        if kind == "ramp":
            a, b = head.split(",")
            t0, t1 = tail.split(",")
            t0v, t1v = _secs(t0), _secs(t1)
            if t1v <= t0v:
                raise TraceSyntaxError("ramp: T1 must be after T0")
            return Ramp(_rate(a), _rate(b), t0v, t1v, **kw)
        if kind == "diurnal":
            mean, amp = head.split(",")
            extra = [x for x in tail.split(",") if x] if tail else []
            period = _secs(extra[0]) if extra else 86400.0
            if period <= 0:
                raise TraceSyntaxError("diurnal: PERIOD must be > 0")
            peak = _secs(extra[1]) if len(extra) > 1 else 50400.0
            return Diurnal(_rate(mean), _rate(amp), period, peak, **kw)
        if kind == "bursty":
            base_rate, peak_rate = head.split(",")
            extra = [x for x in tail.split(",") if x] if tail else []
            every = _secs(extra[0]) if extra else 600.0
            duration = _secs(extra[1]) if len(extra) > 1 else 60.0
            prob = float(extra[2]) if len(extra) > 2 else 0.5
            if every <= 0 or duration > every or not 0 <= prob <= 1:
                raise TraceSyntaxError("bursty: want EVERY > 0, DURATION <= EVERY, 0 <= P <= 1")
            return Bursty(_rate(base_rate), _rate(peak_rate), every, duration, prob, seed, **kw)
    except ValueError as e:
        if isinstance(e, TraceSyntaxError):
            raise TraceSyntaxError(f"trace {spec!r}: {e}") from None
        raise TraceSyntaxError(f"trace {spec!r}: wrong number of arguments (see --help)") from None
    raise TraceSyntaxError(f"trace {spec!r}: unknown kind {kind!r} (constant, step, ramp, diurnal, bursty, csv)")
