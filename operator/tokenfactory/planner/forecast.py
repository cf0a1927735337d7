"""The demand forecast's uncertainty, measured: how far demand ``h`` seconds later landed from the
point forecast made for it, and the quantile of that error the SLO target needs.

Every interval the point forecast for ``now + horizon`` is remembered; when that time comes the
realised demand (observed + backlog) gives a relative error ``actual / forecast - 1``. The plan is
for ``forecast x (1 + e_q)``, ``e_q`` the ``q``-quantile of the errors over ``window_seconds``
(a day: the SLO target is a share of a day's intervals, so a rare jump that no plan could have
foreseen stays below the quantile, while recurring bursts do not).

Errors depend on the demand level (a burst starts from the trough and ends at the peak; the
relative noise of a measured rate shrinks as the rate grows), so they are kept by *level*: the
point forecast in bins of a factor ``bin_factor`` (log scale); the quantile is taken among the
errors made at the same level as now (a step from the trough is an error of the trough's forecasts:
it says how far demand may jump *from* there, not how uncertain the new level is). With fewer than
``1 / (1 - q)`` errors there, the robust normal approximation ``median + z_q x 1.4826 MAD`` over
them, its spread shrunk toward ``prior_std`` with the weight of ``prior_samples`` (a level not seen
yet: the prior), and from ``prior_samples`` errors on at least their own empirical quantile (the
robust band alone takes a jump that a fifth of a trough's errors show for an outlier).

The measured error of a window's rate holds two parts: how far the demand *level* moved from the
forecast, and the window-to-window noise of a rate counted over ``rate_window_seconds`` (Poisson
arrivals, request sizes: relative variance ``size_factor / N``, ``N`` the requests the window holds at
the planned level). Each pool's latency-safe load already leaves room for that window noise
(``latency.WindowNoise``), so the band keeps only the level part: the quantile's spread above the
median with ``z_q x`` that noise taken out in quadrature (normal errors: ``sqrt(s^2 - (z sigma_p)^2)``),
never below zero. Without ``tokens_per_request`` nothing is taken out.

The quantile never plans above the highest demand of the last ``peak_seconds`` (or what is asked
now, if higher) plus a band (a trend extrapolated from a jump overshoots): levels that recur (bursts) are covered, a
level never seen is not guessed at (a step to it is met when it shows, one start-up delay later). That band is
the lower of two upper estimates of how far demand goes above the peak: the robust band of the errors of every
level, and the quantile of the errors made at the peak's own level (the same rule as for any level). The first
alone holds the jumps between levels: on bursty demand (a trough at 4,300 tok/s, bursts to 41,500) it is +30%
and more, so the plan for the trough, capped at the recurring peak, asked 54,000 tok/s, above what the
cheapest pool carries at its maximum, and bought the costliest pool's replicas for it; the peak's own forecasts
all came in lower (the bursts end), so its own band is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class ForecastConfig:
    window_seconds: float = 24 * 3600.0
    max_errors: int = 5000
    peak_seconds: float = 7200.0
    bin_factor: float = 2.0
    prior_std: float = 0.05
    prior_samples: float = 10.0
    rate_window_seconds: float = 30.0  # the window the observed rate is counted over (spec.metrics.window)
    size_factor: float = 2.0  # 1 + CV^2 of request sizes (as latency.WindowNoise)


@dataclass(frozen=True)
class ForecastState:
    pending: tuple[tuple[float, float, int], ...] = ()  # (due time, point forecast, level bin)
    errors: tuple[tuple[float, int, float], ...] = ()  # (time realised, level bin, actual / forecast - 1)
    recent: tuple[tuple[float, float], ...] = ()  # (time, realised demand) over peak_seconds


@dataclass(frozen=True)
class Band:
    """The planned demand's quantile: ``min(point x (1 + error), max(peak, now) x (1 + noise))``."""

    quantile: float
    error: float
    samples: int  # errors behind it (at this level, or all)
    measured: bool  # False: still mostly the prior
    position: int  # level bin of the point forecast (log scale)
    noise: float = 0.0  # the cap's band: min(robust band of all errors, quantile at the peak's level)
    peak: float = 0.0  # highest demand of the last peak_seconds
    window_noise: float = 0.0  # z_q x the rate window's own relative noise, taken out of error and noise

    def cap(self, now: float) -> float:
        """The most the quantile may plan for: the recent peak or what is asked now (if higher) plus the
        cap's band."""
        return max(self.peak, now) * (1.0 + max(0.0, self.noise))

    def planned(self, point: float, now: float) -> float:
        """The demand to plan for: the quantile, at most :meth:`cap`, and never less than what is asked now."""
        return max(0.0, now, min(point * (1.0 + self.error), self.cap(now)))


def z_of(q: float) -> float:
    return NormalDist().inv_cdf(min(max(q, 1e-6), 1 - 1e-6))


@dataclass(frozen=True)
class ForecastErrors:
    config: ForecastConfig = ForecastConfig()

    def position(self, state: ForecastState, point: float) -> int:
        return math.floor(math.log(max(1.0, point)) / math.log(max(1.0001, self.config.bin_factor)))

    def observe(self, state: ForecastState, actual: float, point: float, horizon: float,
                now: float) -> ForecastState:
        """Settle the forecasts due by ``now`` against ``actual``; remember ``point`` for now + horizon."""
        cfg = self.config
        errors = [e for e in state.errors if now - e[0] < cfg.window_seconds]
        pending = []
        for due, f, pos in state.pending:
            if due <= now:
                if f > 0 and math.isfinite(actual):
                    errors.append((now, pos, actual / f - 1.0))
            else:
                pending.append((due, f, pos))
        recent = tuple((t, d) for t, d in state.recent if now - t < cfg.peak_seconds) + ((now, actual),)
        state = ForecastState(pending=(), errors=tuple(errors[-cfg.max_errors:]), recent=recent)
        pending.append((now + max(0.0, horizon), point, self.position(state, point)))
        return ForecastState(pending=tuple(pending), errors=state.errors, recent=recent)

    def band(self, state: ForecastState, q: float, point: float, tokens_per_request: float | None = None) -> Band:
        """The ``q`` quantile of the forecast error at ``point``'s level; with ``tokens_per_request``, the
        rate window's own noise at ``point`` is taken out (see the module docstring)."""
        cfg = self.config
        pos = self.position(state, point)
        here = [e for _, p, e in state.errors if p == pos]
        errs = here  # a level's own errors: a jump seen from another level says nothing about this one
        wn = self.window_noise(q, point, tokens_per_request)
        err = self._quantile(errs, q, wn)
        peak = max((d for _, d in state.recent), default=0.0)
        noise = self._peak_band(state, q, peak, wn, tokens_per_request)
        return Band(quantile=q, error=err, samples=len(errs), measured=len(errs) >= cfg.prior_samples,
                    position=pos, noise=noise, peak=peak, window_noise=wn)

    def _peak_band(self, state: ForecastState, q: float, peak: float, window_noise: float,
                   tokens_per_request: float | None) -> float:
        """The cap's band: the lower of two upper estimates of how far demand may go above the recent
        peak: the robust band of the errors of every level (which includes the jumps between levels,
        so it is wide on bursty demand), and the ``q`` quantile of the errors of the forecasts made at
        the peak's own level (as for any level: empirical with enough of them, else robust and shrunk
        toward the prior). A jump from the trough to the peak is an error of the trough's forecasts,
        not uncertainty of the peak: a peak that recurs but never grows gets a band near 0 from its
        own record, however wide the jumps make the band of every level."""
        every = self._robust([e for _, _, e in state.errors], q, window_noise)
        if not peak > 0:
            return every
        pos = self.position(state, peak)
        at_peak = [e for _, p, e in state.errors if p == pos]
        return min(every, self._quantile(at_peak, q, self.window_noise(q, peak, tokens_per_request)))

    def _quantile(self, errs: list[float], q: float, window_noise: float) -> float:
        """The ``q`` quantile of one level's errors: empirical with at least ``1 / (1 - q)`` of them, else
        the robust band shrunk toward the prior; the window noise taken out."""
        med = _empirical(errs, 0.5) if errs else 0.0
        empirical = _less(med, _empirical(errs, q) - med, window_noise) if errs else 0.0
        if len(errs) >= 1.0 / max(1e-9, 1.0 - q):
            return empirical
        robust = self._robust(errs, q, window_noise)
        return max(robust, empirical) if len(errs) >= self.config.prior_samples else robust

    def window_noise(self, q: float, point: float, tokens_per_request: float | None) -> float:
        """z_q x the relative noise of a rate counted over ``rate_window_seconds`` at ``point`` tok/s."""
        if tokens_per_request is None or not tokens_per_request > 0 or not point > 0:
            return 0.0
        n = point * self.config.rate_window_seconds / tokens_per_request
        return max(0.0, z_of(q)) * math.sqrt(self.config.size_factor / max(1e-9, n))

    def _robust(self, errs: list[float], q: float, window_noise: float = 0.0) -> float:
        """median + z_q x 1.4826 MAD, the spread shrunk toward the prior (normal errors: the q-quantile),
        less the rate window's noise (in quadrature). The prior is the level's own spread: only the
        measured part carries window noise."""
        n, k = len(errs), self.config.prior_samples
        med = _empirical(errs, 0.5) if errs else 0.0
        mad = 1.4826 * _empirical([abs(e - med) for e in errs], 0.5) if errs else 0.0
        z = z_of(q)
        measured = _less(0.0, z * mad, window_noise)
        std = math.sqrt((n * measured ** 2 + k * (z * self.config.prior_std) ** 2) / (n + k))
        return med * n / (n + k) + std


def _less(med: float, spread: float, window_noise: float) -> float:
    """``med + spread`` with ``window_noise`` taken out of a positive spread in quadrature."""
    if spread <= 0 or window_noise <= 0:
        return med + spread
    return med + math.sqrt(max(0.0, spread ** 2 - window_noise ** 2))


def _empirical(values: list[float], q: float) -> float:
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)
