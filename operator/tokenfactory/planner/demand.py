"""Demand estimate: observed token rate + queue backlog, smoothed (Holt) and forecast."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tokenfactory.planner.types import Observations


@dataclass(frozen=True)
class DemandState:
    """Holt's linear-trend state (tokens/s and tokens/s per second) plus the last raw inputs."""

    level: float | None = None
    trend: float = 0.0
    time: float | None = None
    observed: float = 0.0
    backlog: float = 0.0
    queued_tokens: float = 0.0  # waiting requests x tokens per request
    drained_tokens: float = 0.0  # of those, what the spare capacity serving now drains within the start-up delay
    tokens_per_request: float = 0.0


@dataclass(frozen=True)
class DemandEstimator:
    """Demand = observed token rate + queue backlog, smoothed with Holt's linear trend (smoothing
    constants are per ``reference_interval_seconds`` and adapt to irregular intervals), forecast
    over a horizon (the pools' start-up delay) with a damped, non-negative trend so scale-ups
    anticipate start-up while falling demand is left to the scale-down stabilization.

    Backlog: waiting requests x tokens per request (measured, ``Observations.tokens_per_request``;
    ``tokens_per_request`` here only when no figure is given). When the spare capacity serving now
    (ready capacity - delivered rate) is known, what it drains before a new replica could start
    (``startup_seconds``) needs no new replica and is left out; only the rest counts, as a rate that
    drains it in ``backlog_drain_seconds`` once new replicas serve.
    """

    level_smoothing: float = 0.5
    trend_smoothing: float = 0.1
    trend_damping: float = 0.9
    reference_interval_seconds: float = 30.0
    backlog_drain_seconds: float = 60.0
    tokens_per_request: float = 1000.0

    def backlog(self, obs: Observations, spare_tokens_per_second: float | None = None,
                startup_seconds: float = 0.0) -> tuple[float, float, float, float]:
        """(backlog tok/s, queued tokens, of which drained before start-up, tokens per request used)."""
        tpr = obs.tokens_per_request if obs.tokens_per_request is not None else self.tokens_per_request
        tpr = max(0.0, tpr) if math.isfinite(tpr) else self.tokens_per_request
        queued = max(0.0, obs.requests_waiting) * tpr
        drained = 0.0
        if spare_tokens_per_second is not None and math.isfinite(spare_tokens_per_second):
            drained = min(queued, max(0.0, spare_tokens_per_second) * max(0.0, startup_seconds))
        return (queued - drained) / max(1e-9, self.backlog_drain_seconds), queued, drained, tpr

    def raw(self, obs: Observations, spare_tokens_per_second: float | None = None,
            startup_seconds: float = 0.0) -> tuple[float, float]:
        """(observed tok/s, backlog tok/s) from one observation."""
        return max(0.0, obs.tokens_per_second), self.backlog(obs, spare_tokens_per_second, startup_seconds)[0]

    def observe(self, state: DemandState, obs: Observations, now: float,
                spare_tokens_per_second: float | None = None, startup_seconds: float = 0.0) -> DemandState:
        observed = max(0.0, obs.tokens_per_second)
        backlog, queued, drained, tpr = self.backlog(obs, spare_tokens_per_second, startup_seconds)
        if state.time is not None and now > state.time and queued < state.queued_tokens:
            # tokens served from a shrinking queue are old demand, not new arrivals
            observed = max(0.0, observed - (state.queued_tokens - queued) / (now - state.time))
        extra = dict(observed=observed, backlog=backlog, queued_tokens=queued, drained_tokens=drained,
                     tokens_per_request=tpr)
        x = observed + backlog
        if state.level is None or state.time is None:
            return DemandState(level=x, trend=0.0, time=now, **extra)
        dt = now - state.time
        if dt <= 0:
            level = self.level_smoothing * x + (1 - self.level_smoothing) * state.level
            return DemandState(level=level, trend=state.trend, time=state.time, **extra)
        steps = dt / self.reference_interval_seconds
        a = 1 - (1 - self.level_smoothing) ** steps
        b = 1 - (1 - self.trend_smoothing) ** steps
        predicted = state.level + state.trend * dt
        level = max(0.0, a * x + (1 - a) * predicted)
        trend = b * (level - state.level) / dt + (1 - b) * state.trend
        return DemandState(level=level, trend=trend, time=now, **extra)

    def forecast(self, state: DemandState, horizon_seconds: float) -> float:
        """Level plus the damped upward trend over ``horizon_seconds``, and never less than what is
        observed right now (observed + backlog): smoothing must not delay a scale-up while demand
        climbs (the level lags a ramp by about trend x smoothing time); falling demand is left to the
        scale-down stabilization, which already looks at the window's highest recommendation."""
        if state.level is None:
            return 0.0
        steps = max(0.0, horizon_seconds) / self.reference_interval_seconds
        phi = self.trend_damping
        damped = steps if phi >= 1 else phi * (1 - phi ** steps) / (1 - phi)
        up = max(0.0, state.trend) * self.reference_interval_seconds * damped
        return max(state.level + up, state.observed + state.backlog)
