"""The forecaster interface and the simple baselines the LSTM must beat.

Every forecaster answers ``forecast(history) -> array[H, Q]``: per-second peak rate (req/s) for each
of the next H minutes at each quantile. ``forecast_rows`` does the same for a batch of histories
(evaluation runs thousands of origins at once; the two agree, the tests check it).

The point baselines (last value, EWMA, seasonal naive, peak-hold) predict one value per horizon. As
quantile forecasters they use multiplicative residual quantiles fit on the validation days
(:class:`~predictor.calibration.Calibration`); uncalibrated, they report their single value as every
quantile. ``PeakHold(calibrated=False)`` is MArk-style peak-hold as such: max of the last minutes x 1.2.

Peak-hold window: MArk's public code (marcoszh/MArk-Project) predicts with an LSTM over first
differences (modules/load_predictor.py) and has no peak-hold predictor to copy a window from; the
DESIGN names "peak-hold x1.2". We hold the highest per-minute peak of the last 5 minutes (our choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from predictor.calibration import Calibration
from predictor.features import HORIZON, QUANTILES, WINDOW, History, HistoryRows, _fill_rows, _levels, rows_of


class Forecaster(Protocol):
    """Quantiles of the per-second peak rate of each of the next H one-minute steps."""

    name: str
    horizon: int
    quantiles: tuple[float, ...]

    def forecast(self, history: History) -> np.ndarray:
        """``[H, Q]`` req/s."""
        ...

    def forecast_rows(self, rows: HistoryRows) -> np.ndarray:
        """``[N, H, Q]`` req/s."""
        ...


class CalibratedQuantiles:
    """``forecast`` / ``forecast_rows`` for a forecaster that computes raw quantiles (``raw_rows``) and may
    carry calibration factors: one place for what every quantile forecaster does with them."""

    calibration: Calibration | None

    def raw_rows(self, rows: HistoryRows) -> np.ndarray:
        """``[N, H, Q]`` req/s before calibration."""
        raise NotImplementedError

    def forecast_rows(self, rows: HistoryRows) -> np.ndarray:
        raw = self.raw_rows(rows)
        return raw if self.calibration is None else self.calibration.apply(raw)

    def forecast(self, history: History) -> np.ndarray:
        return self.forecast_rows(rows_of(history))[0]


@dataclass
class PointForecaster(CalibratedQuantiles):
    """A point forecast per horizon turned into quantiles by calibration factors."""

    name: str = "point"
    calibration: Calibration | None = None
    horizon: int = HORIZON
    quantiles: tuple[float, ...] = QUANTILES

    def point(self, rows: HistoryRows) -> np.ndarray:
        """``[N, H]`` req/s."""
        raise NotImplementedError

    def raw_rows(self, rows: HistoryRows) -> np.ndarray:
        p = self.point(rows)
        return np.repeat(p[:, :, None], len(self.quantiles), axis=2)


def _window_peaks(rows: HistoryRows) -> np.ndarray:
    """Last hour of per-minute peaks, gaps filled (see features)."""
    return _fill_rows(rows.peak[:, -WINDOW:], _levels(rows.mean))


@dataclass
class LastValue(PointForecaster):
    """Last minute's peak, for every horizon."""

    name: str = "last value"

    def point(self, rows: HistoryRows) -> np.ndarray:
        return np.repeat(rows.last_peak()[:, None], self.horizon, axis=1)


@dataclass
class EWMA(PointForecaster):
    """Exponentially weighted mean of the per-minute peaks over the last hour (alpha per minute)."""

    name: str = "EWMA"
    alpha: float = 0.3

    def point(self, rows: HistoryRows) -> np.ndarray:
        w = _window_peaks(rows)
        s = w[:, 0].copy()
        for j in range(1, w.shape[1]):
            s = self.alpha * w[:, j] + (1 - self.alpha) * s
        return np.repeat(s[:, None], self.horizon, axis=1)


@dataclass
class SeasonalNaive(PointForecaster):
    """Peak of the same minute yesterday (minute t+h-1-1440); last value where that is unobserved."""

    name: str = "seasonal naive"

    def point(self, rows: HistoryRows) -> np.ndarray:
        y = rows.peak[:, WINDOW : WINDOW + self.horizon]  # see features.build_features for the columns
        last = rows.last_peak()[:, None]
        return np.where(np.isnan(y), last, y)


@dataclass
class PeakHold(PointForecaster):
    """Highest per-minute peak of the last ``window`` minutes x ``factor``, for every horizon."""

    name: str = "peak-hold x1.2"
    window: int = 5
    factor: float = 1.2

    def point(self, rows: HistoryRows) -> np.ndarray:
        w = _window_peaks(rows)[:, -self.window :]
        return np.repeat((w.max(axis=1) * self.factor)[:, None], self.horizon, axis=1)


def fit_ewma_alpha(rows: HistoryRows, y: np.ndarray, valid: np.ndarray, grid: tuple[float, ...]) -> float:
    """The alpha with the lowest absolute error (p50) on the validation days."""
    best, best_err = grid[0], np.inf
    for a in grid:
        p = EWMA(alpha=a).point(rows)
        err = float(np.mean(np.abs(y[valid] - p[valid])))
        if err < best_err:
            best, best_err = a, err
    return best
