"""predictor/online.py: the online-calibration state as an explicit immutable value and the pure step.

The rule (Gibbs & Candes 2021, on log factors) is checked with exact numbers: quantiles and gamma are
dyadic fractions, so every update is exact in floating point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from predictor.baselines import LastValue
from predictor.calibration import Calibration
from predictor.features import (
    HORIZON,
    QUANTILES,
    History,
    HistoryRows,
    MinuteSeries,
    minute_series_from_seconds,
    rows_at,
    targets_at,
)
from predictor.online import (
    CalibrationState,
    OnlineCalibrated,
    calibrated_forecast,
    calibration_step,
    online_forecasts,
    update_log_adj,
)

EPOCH0 = 60.0 * 28_000_000  # a whole epoch minute in 2023


@dataclass
class Fixed:
    """A forecaster whose raw quantiles are always ``raw`` ``[H, Q]`` (no calibration of its own)."""

    raw: np.ndarray
    quantiles: tuple[float, ...]
    name: str = "fixed"
    calibration: Calibration | None = None

    @property
    def horizon(self) -> int:
        return int(self.raw.shape[0])

    def raw_rows(self, rows: HistoryRows) -> np.ndarray:
        return np.repeat(self.raw[None], len(rows), axis=0)


def history(origin_minute: int, last_peak: float) -> History:
    """A history whose last minute (the one before the origin) peaked at ``last_peak`` req/s."""
    peak = np.array([5.0, last_peak])
    return History(peak, peak * 0.9, float("nan"), float("nan"), 60.0 * origin_minute)


def series_with_gaps() -> MinuteSeries:
    """Two days of Poisson counts, the rate tripled at mid-trace, with some minutes wholly unobserved."""
    n = 2 * 86400
    rate = np.where(np.arange(n) < n // 2, 20.0, 60.0)
    sec = np.random.default_rng(3).poisson(rate).astype(np.float64)
    for m in (1520, 1521, 1600, 1655):
        sec[60 * m : 60 * (m + 1)] = np.nan
    return minute_series_from_seconds(sec, epoch0=EPOCH0)


def test_a_miss_raises_the_log_factor_by_gamma_q_and_a_hit_lowers_it_by_gamma_one_minus_q() -> None:
    q = (0.5, 0.75, 0.875)
    gamma = 0.125
    fc = Fixed(np.array([[8.0, 10.0, 12.0], [8.0, 10.0, 12.0]]), q)
    s0 = CalibrationState.initial(2, 3)
    t = 28_000_100
    p0, s1 = calibrated_forecast(fc, history(t, 9.0), s0, gamma)
    np.testing.assert_array_equal(p0, [[8.0, 10.0, 12.0], [8.0, 10.0, 12.0]])
    np.testing.assert_array_equal(s1.log_adj, np.zeros((2, 3)))  # nothing had been issued
    assert [o for o, _ in s1.issued] == [t]
    # minute t has peaked at 11: above p50 and p75 (misses), below p99 (a hit); horizon 1 only
    _, s2 = calibrated_forecast(fc, history(t + 1, 11.0), s1, gamma)
    np.testing.assert_array_equal(s2.log_adj[0], [0.125 * 0.5, 0.125 * 0.75, -0.125 * 0.125])
    np.testing.assert_array_equal(s2.log_adj[0], [0.0625, 0.09375, -0.015625])
    np.testing.assert_array_equal(s2.log_adj[1], [0.0, 0.0, 0.0])  # the horizon-2 forecast has not matured
    assert [o for o, _ in s2.issued] == [t, t + 1]
    # minute t+1 peaked at 100: horizon 2 of origin t and horizon 1 of origin t+1 both missed everywhere
    p2, s3 = calibrated_forecast(fc, history(t + 2, 100.0), s2, gamma)
    np.testing.assert_array_equal(s3.log_adj[0], [0.0625 + 0.0625, 0.09375 + 0.09375, -0.015625 + 0.109375])
    np.testing.assert_array_equal(s3.log_adj[1], [0.0625, 0.09375, 0.109375])
    np.testing.assert_array_equal(p2, np.array([[8.0, 10.0, 12.0]] * 2) * np.exp(s3.log_adj))
    assert [o for o, _ in s3.issued] == [t + 1, t + 2]  # origin t fully matured and dropped
    # the same numbers from the rule itself; NaN outcome (unobserved, or nothing issued) leaves a row alone
    got = update_log_adj(np.zeros((2, 3)), np.array([[8.0, 10.0, 12.0]] * 2), np.array([11.0, np.nan]), q, gamma)
    np.testing.assert_array_equal(got, [[0.0625, 0.09375, -0.015625], [0.0, 0.0, 0.0]])
    _, s4 = calibrated_forecast(fc, history(t + 3, float("nan")), s3, gamma)
    np.testing.assert_array_equal(s4.log_adj, s3.log_adj)


def test_calibrated_forecast_never_changes_its_input_state() -> None:
    ms = series_with_gaps()
    fc = LastValue(calibration=Calibration(np.full((HORIZON, 3), 0.8)))
    state = CalibrationState.initial(HORIZON, 3)
    for t in range(1500, 1530):
        _, state = calibrated_forecast(fc, History.from_series(ms, t), state, 0.05)
    log_adj = state.log_adj.copy()
    issued = [(o, f.copy()) for o, f in state.issued]
    assert len(issued) == HORIZON and log_adj.any()
    pred, new = calibrated_forecast(fc, History.from_series(ms, 1530), state, 0.05)
    assert new is not state and not np.array_equal(new.log_adj, state.log_adj)
    np.testing.assert_array_equal(state.log_adj, log_adj)
    assert [o for o, _ in state.issued] == [o for o, _ in issued]
    for (_, f), (_, g) in zip(state.issued, issued, strict=True):
        np.testing.assert_array_equal(f, g)
    for s in (state, new):
        assert not s.log_adj.flags.writeable and not any(f.flags.writeable for _, f in s.issued)
        with pytest.raises(ValueError, match="read-only"):
            s.log_adj[0, 0] = 1.0
        with pytest.raises(ValueError, match="read-only"):
            s.issued[-1][1][0, 0] = 1.0
    with pytest.raises(AttributeError):
        state.log_adj = np.zeros((HORIZON, 3))  # type: ignore[misc]
    # the state holds copies: neither the returned forecast nor an array passed in is shared
    pred[:] = -1.0
    recorded = new.issued_at(int(EPOCH0 // 60) + 1530)
    assert recorded is not None and (recorded >= 0).all()
    mine = np.zeros((HORIZON, 3))
    s = CalibrationState(mine)
    mine[0, 0] = 7.0
    assert s.log_adj[0, 0] == 0.0


def test_pure_steps_equal_the_batch_replay_and_survive_a_json_round_trip() -> None:
    ms = series_with_gaps()
    origins = np.arange(1500, 1700)
    fc = LastValue(calibration=Calibration(np.full((HORIZON, 3), 0.8)))  # deliberately too low
    raw = fc.raw_rows(rows_at(ms, origins))
    y, valid = targets_at(ms, origins)
    assert not valid.all()  # the gaps are scored by neither path
    batch = online_forecasts(raw, y, valid, fc.calibration, QUANTILES, gamma=0.05)
    state = CalibrationState.initial(HORIZON, 3)
    wrapper = OnlineCalibrated(fc, gamma=0.05)
    for i, t in enumerate(origins):
        if i == 100:  # a controller restarting from its persisted state carries on exactly
            state = CalibrationState.from_json(json.loads(json.dumps(state.to_json())))
        pred, state = calibrated_forecast(fc, History.from_series(ms, int(t)), state, 0.05)
        np.testing.assert_allclose(pred, batch[i], rtol=1e-12)
        np.testing.assert_array_equal(wrapper.forecast(History.from_series(ms, int(t))), pred)
    assert wrapper.state == state  # the wrapper delegates to the pure step
    assert [o for o, _ in state.issued] == [int(EPOCH0 // 60) + int(t) for t in origins[-HORIZON:]]
    np.testing.assert_array_equal(wrapper.factors, 0.8 * np.exp(state.log_adj))
    assert (wrapper.factors[:, 1] > 0.8).all()  # p90 factors pushed up by the misses


def test_state_json_round_trip_is_exact() -> None:
    rng = np.random.default_rng(0)
    state = CalibrationState(
        rng.normal(size=(HORIZON, 3)) / 3.0,
        ((28_000_007, rng.uniform(0, 1e4, (HORIZON, 3))), (28_000_006, np.full((HORIZON, 3), np.nan))),
    )
    assert [o for o, _ in state.issued] == [28_000_006, 28_000_007]  # kept in origin order
    text = json.dumps(state.to_json(), allow_nan=False)  # strict JSON: NaN is written as null
    back = CalibrationState.from_json(json.loads(text))
    assert back == state and back is not state
    np.testing.assert_array_equal(back.log_adj, state.log_adj)  # bit for bit
    assert np.isnan(back.issued[0][1]).all()
    assert not back.log_adj.flags.writeable and not back.issued[0][1].flags.writeable
    assert CalibrationState.from_json(CalibrationState.initial(HORIZON, 3).to_json()) == CalibrationState.initial(
        HORIZON, 3
    )
    assert back != CalibrationState(state.log_adj + 1e-15, state.issued)
    with pytest.raises(ValueError, match="format_version"):
        CalibrationState.from_json({**state.to_json(), "format_version": 99})
    with pytest.raises(ValueError, match="shape"):
        CalibrationState(np.zeros((HORIZON, 3)), ((1, np.zeros((HORIZON, 2))),))
    with pytest.raises(ValueError, match="repeated"):
        CalibrationState(np.zeros((2, 3)), ((1, np.zeros((2, 3))), (1, np.ones((2, 3)))))


def sparse_seconds(days: int, seed: int) -> np.ndarray:
    """A mostly idle service: 70 % of minutes empty, the others a burst of 5-60 requests within a few
    seconds of the minute (per-second counts)."""
    rng = np.random.default_rng(seed)
    minutes = days * 1440
    sec = np.zeros(minutes * 60)
    for m in np.flatnonzero(rng.random(minutes) < 0.3):
        n, width = int(rng.integers(5, 61)), int(rng.integers(1, 11))
        start = 60 * int(m) + int(rng.integers(0, 60 - width + 1))
        np.add.at(sec, start + rng.integers(0, width, n), 1.0)
    return sec


@pytest.mark.parametrize("member", ["last value", "seasonal naive", "EWMA"])
def test_a_sparse_trace_keeps_every_factor_bounded_and_p90_covering_87_to_93_percent(member: str) -> None:
    """Before the floor and the bounds, a raw forecast of 0 (most minutes here) let ``log f`` grow
    without bound (factors of 1e4-1e5 for last value and seasonal naive on such a trace)."""
    from predictor.baselines import EWMA, SeasonalNaive
    from predictor.calibration import FACTOR_BOUNDS

    series = minute_series_from_seconds(sparse_seconds(6, seed=7), epoch0=EPOCH0)
    assert 0.65 < float(np.mean(series.peak == 0)) < 0.75
    fc = {"last value": LastValue(), "seasonal naive": SeasonalNaive(), "EWMA": EWMA(alpha=0.3)}[member]
    origins = np.arange(1500, series.minutes - HORIZON)
    raw = fc.raw_rows(rows_at(series, origins))
    y, valid = targets_at(series, origins)
    state, worst = CalibrationState.initial(HORIZON, len(QUANTILES)), 1.0
    preds = []
    for k, t in enumerate(origins):
        pred, state = calibration_step(raw[k], float(series.peak[t - 1]), int(t), state, QUANTILES, None, 0.01)
        preds.append(pred)
        worst = max(worst, float(np.max(state.factors(None))), 1.0 / float(np.min(state.factors(None))))
    assert worst <= FACTOR_BOUNDS[1] and 1.0 / worst >= FACTOR_BOUNDS[0]
    batch = online_forecasts(raw, y, valid, None, QUANTILES, 0.01)
    np.testing.assert_allclose(np.stack(preds), batch, rtol=1e-12)
    scored = slice(1440, None)  # after a day of adapting
    covered = (y[scored] <= batch[scored, :, 1])[valid[scored]]
    assert 0.87 <= float(covered.mean()) <= 0.93
    assert float(np.max(batch)) < 100.0 * float(np.nanmax(series.peak))
