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
    csv:FILE                              header 'seconds,tokens_per_second' or
                                          'seconds,requests_per_second,prompt_tokens,output_tokens';
                                          linear between rows, held before the first / after the last

Rates accept a k/M suffix (20k = 20000).
"""

from __future__ import annotations

import bisect
import csv
import math
import random
from dataclasses import dataclass
from typing import Protocol

DEFAULT_PROMPT_TOKENS = 1000.0
DEFAULT_OUTPUT_TOKENS = 500.0


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


class TraceSyntaxError(ValueError):
    pass


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
) -> Trace:
    """Parse the ``--trace`` syntax (see the module docstring)."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise TraceSyntaxError(f"trace {spec!r}: want KIND:ARGS, e.g. constant:5000")
    kind = kind.strip().lower()
    if output_tokens <= 0:
        raise TraceSyntaxError("output tokens per request must be > 0")
    kw = dict(prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    if kind == "csv":
        return load_csv(rest, prompt_tokens, output_tokens)
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
            base, peak = head.split(",")
            extra = [x for x in tail.split(",") if x] if tail else []
            every = _secs(extra[0]) if extra else 600.0
            duration = _secs(extra[1]) if len(extra) > 1 else 60.0
            prob = float(extra[2]) if len(extra) > 2 else 0.5
            if every <= 0 or duration > every or not 0 <= prob <= 1:
                raise TraceSyntaxError("bursty: want EVERY > 0, DURATION <= EVERY, 0 <= P <= 1")
            return Bursty(_rate(base), _rate(peak), every, duration, prob, seed, **kw)
    except ValueError as e:
        if isinstance(e, TraceSyntaxError):
            raise TraceSyntaxError(f"trace {spec!r}: {e}") from None
        raise TraceSyntaxError(f"trace {spec!r}: wrong number of arguments (see --help)") from None
    raise TraceSyntaxError(f"trace {spec!r}: unknown kind {kind!r} (constant, step, ramp, diurnal, bursty, csv)")
