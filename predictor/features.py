"""Per-minute aggregates and the scale-free features every learned forecaster reads.

The step is one minute (the controller's Δ). Minute ``m`` covers seconds ``[60m, 60m+60)``. A forecast
made at origin ``t`` (just after minute ``t-1`` ends) sees minutes ``< t`` and predicts the per-second
peak of minutes ``t .. t+H-1`` (horizon h = 1..H).

Scale-free: every rate is divided by a recent *level* L, the mean rate over the last hour (mean of the
observed per-minute means), and the models predict ``peak / L``. A trace 10x larger gives the same
inputs and therefore a 10x larger forecast. Only the per-second noise differs (a peak over 60 Poisson
seconds sits relatively closer to the mean at higher rates); the inputs carry the recent peak/mean
ratio, so a model can see that.

No clock features (issue 14): the inputs carry no minute of the hour, time of day or day of week.
A model trained on Twitter alone with minute-of-hour channels learnt Twitter's clock-driven bursts
(near minute :32 of each hour) as a law of traffic and forecast them on traces that have none (its
p90 exceeded twice the true peak at 92-96 % of target minutes :33-:36 at h = 5 on other traces).
Time of day and day of week go too, for the same reason and one more: the count files carry no clock
(:class:`predictor.traces.Trace` then takes second 0 as 00:00 UTC of a Thursday), so an absolute phase
means a different hour on every trace and would be learnt as one service's schedule. What is periodic
in a service reaches the model through features relative to the trace's *own* history instead: the
peaks of each target minute one day, two hours and one hour earlier (``TARGET_LAGS``), yesterday's
peaks over the window and yesterday's level, all as ratios to the current level. A service with a
burst at :32 shows it in its own lag-60 peaks; a service without one shows none.

Missing minutes (collection gaps, NaN seconds) are filled inside the 60-minute window from the last
observed minute (first observed for a leading run) and flagged in a channel, the same way at run
time and in the batch builder used for training and evaluation (tests check they agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from predictor.traces import Trace

HORIZON = 15
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
WINDOW = 60  # minutes of history in the sequence input
DAY = 1440  # minutes
HISTORY_MINUTES = DAY + WINDOW  # the most any forecaster looks back (yesterday's level window)
LEVEL_FLOOR = 1.0 / 60.0  # req/s: one request a minute; keeps ratios finite on an idle service
POISSON_PEAK_Z = 2.4  # E[max of 60 Poisson(mu) seconds] ~ mu + 2.4 sqrt(mu) for mu in the tens

TARGET_LAGS = (DAY, 120, 60)  # minutes: peaks of each target minute one day, two hours and one hour earlier
SEQ_CHANNELS = (
    "peak_ratio",
    "mean_ratio",
    "missing",
    "yesterday_peak_ratio",
)
STATIC_FEATURES = tuple(f"lag{lag}_target_peak_ratio_h{h}" for lag in TARGET_LAGS for h in range(1, HORIZON + 1)) + (
    "yesterday_level_ratio",
    "yesterday_missing_share",
    "last10s_mean_ratio",
    "last10s_max_ratio",
)


@dataclass(frozen=True)
class MinuteSeries:
    """Per-minute peak and mean of the per-second rate (NaN where no second was observed).

    ``full`` marks minutes with all 60 seconds observed: only those are valid targets, since a
    partly observed minute's peak is a lower bound. ``last10_*`` summarise each minute's last 10 s.
    """

    peak: np.ndarray
    mean: np.ndarray
    full: np.ndarray
    last10_mean: np.ndarray
    last10_max: np.ndarray
    epoch0: float
    peak_estimated: bool = False

    @property
    def minutes(self) -> int:
        return int(self.peak.size)


def minute_series(trace: Trace) -> MinuteSeries:
    """Aggregate a trace to minutes (a trailing partial minute is dropped)."""
    return minute_series_from_seconds(trace.per_second, trace.epoch0, trace.peak_estimated)


def minute_series_from_seconds(
    per_second: np.ndarray, epoch0: float = 0.0, peak_estimated: bool = False
) -> MinuteSeries:
    n = per_second.size // 60
    x = np.asarray(per_second[: n * 60], dtype=np.float64).reshape(n, 60)
    observed = ~np.isnan(x)
    nobs = observed.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        filled0 = np.where(observed, x, 0.0)
        mean = np.where(nobs > 0, filled0.sum(axis=1) / np.maximum(nobs, 1), np.nan)
        peak = np.where(nobs > 0, np.where(observed, x, -np.inf).max(axis=1), np.nan)
        tail, tail_obs = filled0[:, -10:], observed[:, -10:]
        k = tail_obs.sum(axis=1)
        last10_mean = np.where(k > 0, tail.sum(axis=1) / np.maximum(k, 1), np.nan)
        last10_max = np.where(k > 0, np.where(tail_obs, x[:, -10:], -np.inf).max(axis=1), np.nan)
    if peak_estimated:  # seconds were spread evenly from per-minute sums: the peak is an estimate
        peak = mean + POISSON_PEAK_Z * np.sqrt(mean)
        last10_max = last10_mean + POISSON_PEAK_Z * np.sqrt(last10_mean)
    return MinuteSeries(peak, mean, nobs == 60, last10_mean, last10_max, float(epoch0), peak_estimated)


@dataclass(frozen=True)
class History:
    """What the controller holds at a forecast: per-minute peak/mean (oldest first, NaN = unobserved),
    the last minute's last-10-s mean and max, and the clock of the forecast origin (POSIX seconds)."""

    peak: np.ndarray
    mean: np.ndarray
    last10_mean: float
    last10_max: float
    origin_epoch_s: float

    @staticmethod
    def from_series(series: MinuteSeries, t: int) -> History:
        """The history a controller would have at origin ``t`` of a trace."""
        lo = max(0, t - HISTORY_MINUTES)
        return History(
            series.peak[lo:t],
            series.mean[lo:t],
            float(series.last10_mean[t - 1]) if t > 0 else float("nan"),
            float(series.last10_max[t - 1]) if t > 0 else float("nan"),
            series.epoch0 + 60.0 * t,
        )

    @staticmethod
    def from_per_second(per_second: np.ndarray, origin_epoch_s: float) -> History:
        """From raw per-second counts ending at the origin (length a multiple of 60 is expected)."""
        s = np.asarray(per_second, dtype=np.float64)
        s = s[s.size % 60 :]
        ms = minute_series_from_seconds(s[-HISTORY_MINUTES * 60 :])
        n = ms.minutes
        return History(
            ms.peak,
            ms.mean,
            float(ms.last10_mean[-1]) if n else float("nan"),
            float(ms.last10_max[-1]) if n else float("nan"),
            origin_epoch_s,
        )


@dataclass(frozen=True)
class Features:
    """A batch of model inputs: ``seq[N, WINDOW, C]`` (C = len(SEQ_CHANNELS)), ``static[N, S]``
    (S = len(STATIC_FEATURES)), ``level[N]`` (req/s)."""

    seq: np.ndarray
    static: np.ndarray
    level: np.ndarray

    def __len__(self) -> int:
        return int(self.level.size)


def _windows(a: np.ndarray, origins: np.ndarray, back: int) -> np.ndarray:
    """Rows ``a[t-back : t]`` for each origin, NaN before the start of ``a``."""
    padded = np.concatenate((np.full(back, np.nan), a))
    idx = origins[:, None] + np.arange(back)[None, :]  # padded index of a[t-back+j] is t+j
    return padded[idx]


def _nanmean_rows(w: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(w)
    k = ok.sum(axis=1)
    return np.where(k > 0, np.where(ok, w, 0.0).sum(axis=1) / np.maximum(k, 1), np.nan)


def _fill_rows(w: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Forward-fill NaN along each row; a leading run takes the row's first value; all-NaN -> fallback."""
    ok = ~np.isnan(w)
    n, m = w.shape
    idx = np.where(ok, np.arange(m)[None, :], -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    first = np.where(ok.any(axis=1), ok.argmax(axis=1), 0)
    idx = np.where(idx < 0, first[:, None], idx)
    out = w[np.arange(n)[:, None], idx]
    return np.where(np.isnan(out), fallback[:, None], out)


def _levels(mean_hist: np.ndarray) -> np.ndarray:
    """L: mean of the last hour's observed minute means, else of all history given, floored."""
    level = _nanmean_rows(mean_hist[:, -WINDOW:])
    level = np.where(np.isnan(level), _nanmean_rows(mean_hist), level)
    return np.maximum(np.nan_to_num(level, nan=LEVEL_FLOOR), LEVEL_FLOOR)


@dataclass(frozen=True)
class HistoryRows:
    """A batch of histories right-aligned at their origins: ``peak``/``mean`` ``[N, HISTORY_MINUTES]``
    (oldest first, NaN before the trace began or where unobserved), last-10-s stats and origin clocks."""

    peak: np.ndarray
    mean: np.ndarray
    last10_mean: np.ndarray
    last10_max: np.ndarray
    origin_epoch_s: np.ndarray

    def __len__(self) -> int:
        return int(self.peak.shape[0])

    def last_peak(self) -> np.ndarray:
        """Peak of the last observed minute in the window (level if none was)."""
        return _fill_rows(self.peak[:, -WINDOW:], _levels(self.mean))[:, -1]


def rows_at(series: MinuteSeries, origins: np.ndarray) -> HistoryRows:
    """Histories at many origins of one trace (training and evaluation)."""
    origins = np.asarray(origins, dtype=np.int64)
    prev = np.maximum(origins - 1, 0)
    return HistoryRows(
        _windows(series.peak, origins, HISTORY_MINUTES),
        _windows(series.mean, origins, HISTORY_MINUTES),
        np.where(origins > 0, series.last10_mean[prev], np.nan),
        np.where(origins > 0, series.last10_max[prev], np.nan),
        series.epoch0 + 60.0 * origins.astype(np.float64),
    )


def rows_of(history: History) -> HistoryRows:
    """One run-time history as a batch of one."""
    pk = np.full(HISTORY_MINUTES, np.nan)
    mn = np.full(HISTORY_MINUTES, np.nan)
    k = min(HISTORY_MINUTES, history.peak.size)
    if k:
        pk[-k:] = history.peak[-k:]
        mn[-k:] = history.mean[-k:]
    return HistoryRows(
        pk[None, :],
        mn[None, :],
        np.array([history.last10_mean]),
        np.array([history.last10_max]),
        np.array([history.origin_epoch_s], dtype=np.float64),
    )


def build_features(rows: HistoryRows) -> Features:
    """The learned models' inputs (see the module docstring for the why of each)."""
    n = len(rows)
    level = _levels(rows.mean)
    lv = level[:, None]
    pk, mn = rows.peak[:, -WINDOW:], rows.mean[:, -WINDOW:]
    missing = np.isnan(pk)
    peak_r = _fill_rows(pk, level) / lv
    mean_r = _fill_rows(mn, level) / lv
    # yesterday (minute - DAY) of each window minute, and of each target minute t+h-1
    yest_win = rows.peak[:, :WINDOW]
    yest_r = np.where(np.isnan(yest_win), peak_r, yest_win / lv)
    recent_peak_r = peak_r.mean(axis=1, keepdims=True)
    lagged = []
    for lag in TARGET_LAGS:  # minute t+h-1-lag sits in column HISTORY_MINUTES - lag + h - 1
        tgt = rows.peak[:, HISTORY_MINUTES - lag : HISTORY_MINUTES - lag + HORIZON]
        lagged.append(np.where(np.isnan(tgt), recent_peak_r, tgt / lv))
    yest_tgt = rows.peak[:, WINDOW : WINDOW + HORIZON]
    yest_level = _nanmean_rows(rows.mean[:, :WINDOW])
    yest_level_r = np.where(np.isnan(yest_level), 1.0, yest_level / level)
    yest_missing = np.isnan(yest_tgt).mean(axis=1)
    l10m = np.where(np.isnan(rows.last10_mean), mean_r[:, -1], rows.last10_mean / level)
    l10x = np.where(np.isnan(rows.last10_max), peak_r[:, -1], rows.last10_max / level)
    seq = np.stack((peak_r, mean_r, missing.astype(np.float64), yest_r), axis=-1)
    static = np.concatenate((*lagged, np.stack((yest_level_r, yest_missing, l10m, l10x), axis=1)), axis=1)
    assert static.shape[1] == len(STATIC_FEATURES) and seq.shape[2] == len(SEQ_CHANNELS) or n == 0
    return Features(seq.astype(np.float32), static.astype(np.float32), level)


def targets_at(series: MinuteSeries, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True peaks ``[N, H]`` of minutes ``t..t+H-1`` and their validity (fully observed, inside the trace)."""
    idx = np.asarray(origins, dtype=np.int64)[:, None] + np.arange(HORIZON)[None, :]
    inside = idx < series.minutes
    safe = np.minimum(idx, series.minutes - 1)
    y = np.where(inside, series.peak[safe], np.nan)
    valid = inside & series.full[safe] & ~np.isnan(y)
    return y, valid
