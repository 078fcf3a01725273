"""predictor/: trace loading, features, baselines and calibration on synthetic series of known structure.

Everything here is numpy only and fast; the LSTM (torch) is in test_predictor_lstm.py.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from predictor.baselines import EWMA, LastValue, PeakHold, SeasonalNaive
from predictor.calibration import Calibration, monotone
from predictor.evaluate import score
from predictor.features import (
    DAY,
    HISTORY_MINUTES,
    HORIZON,
    QUANTILES,
    SEQ_CHANNELS,
    STATIC_FEATURES,
    WINDOW,
    History,
    build_features,
    minute_series,
    minute_series_from_seconds,
    rows_at,
    rows_of,
    targets_at,
)
from predictor.split import time_split
from predictor.traces import Trace, TraceError, load_trace, mark_gaps


def synthetic(kind: str, days: float = 2.0, base: float = 50.0, seed: int = 0) -> np.ndarray:
    """Per-second Poisson counts around a known rate: 'sine' (daily), 'step' (x3 at mid-trace), 'spike'."""
    n = int(days * 86400)
    t = np.arange(n)
    if kind == "sine":
        rate = base * (1 + 0.5 * np.sin(2 * np.pi * t / 86400))
    elif kind == "step":
        rate = np.where(t < n // 2, base, 3 * base)
    elif kind == "spike":
        rate = np.full(n, base)
        rate[n // 2 : n // 2 + 120] = 8 * base
    elif kind == "flat":
        rate = np.full(n, base)
    else:
        raise ValueError(kind)
    return np.random.default_rng(seed).poisson(rate).astype(np.float64)


def minutes_of(peaks: np.ndarray) -> np.ndarray:
    """A per-second series whose minute m has a peak of exactly peaks[m] (and a mean just below)."""
    sec = np.repeat(np.asarray(peaks, dtype=np.float64) * 0.9, 60).reshape(-1, 60)
    sec[:, 30] = peaks
    return sec.ravel()


# ---------------------------------------------------------------- traces


def test_per_second_file_one_or_many_lines(tmp_path: Path) -> None:
    p = tmp_path / "w.txt"
    p.write_text("1 2 3\n4 5\n")
    tr = load_trace(p, detect_gaps=False)
    assert tr.per_second.tolist() == [1, 2, 3, 4, 5]
    assert not tr.peak_estimated and tr.start_epoch_s is None


def test_malformed_per_second_names_file_line_and_token(tmp_path: Path) -> None:
    p = tmp_path / "w.txt"
    p.write_text("1 2 3\n4 x5 6\n")
    with pytest.raises(TraceError, match=r"w\.txt: line 2, token 2 \(second 4\): 'x5'"):
        load_trace(p)
    p.write_text("1 -2 3")
    with pytest.raises(TraceError, match="negative count -2"):
        load_trace(p)
    p.write_text("   ")
    with pytest.raises(TraceError, match="empty"):
        load_trace(p)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_trace(tmp_path / "absent.txt")


def test_archive_is_read_in_memory(tmp_path: Path) -> None:
    data = b"3 4 5 6"
    p = tmp_path / "workload.tbz2"
    with tarfile.open(p, "w:bz2") as tar:
        info = tarfile.TarInfo("dataset/workload.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tr = load_trace(p, detect_gaps=False)
    assert tr.per_second.tolist() == [3, 4, 5, 6]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["workload.tbz2"]  # nothing extracted


def test_per_minute_csv_is_flagged_estimated(tmp_path: Path) -> None:
    p = tmp_path / "per_minute.csv"
    p.write_text("requests_per_minute\n600\n1200\n")
    tr = load_trace(p)
    assert tr.peak_estimated and tr.seconds == 120
    ms = minute_series(tr)
    assert ms.mean.tolist() == [10.0, 20.0]
    assert ms.peak[0] == pytest.approx(10 + 2.4 * np.sqrt(10))  # estimated, not measured
    assert "ESTIMATED" in tr.describe()
    p.write_text("requests_per_minute\n600\nlots\n")
    with pytest.raises(TraceError, match=r"per_minute\.csv: line 3: 'lots' is not a number"):
        load_trace(p)


def test_event_csv_binned_per_second(tmp_path: Path) -> None:
    p = tmp_path / "events.csv"
    p.write_text(
        "timestamp,count,other\n2021-08-01T00:00:00.2Z,2,a\n2021-08-01T00:00:00.9Z,1,b\n2021-08-01T00:00:03Z,5,c\n"
    )
    tr = load_trace(p, detect_gaps=False, format="events")  # irregular times + a count: auto refuses to guess
    assert tr.per_second.tolist() == [3, 0, 0, 5]
    assert tr.start_epoch_s == pytest.approx(1627776000.0)
    p.write_text("ts\n100.5\n100.7\n102.1\n")  # epoch seconds, one request per row
    assert load_trace(p, detect_gaps=False).per_second.tolist() == [2, 0, 1]
    p.write_text("timestamp,count\n2021-08-01T00:00:00Z,1\nyesterday,2\n")
    with pytest.raises(TraceError, match=r"events\.csv: line 3: 'yesterday' is neither epoch seconds nor an ISO"):
        load_trace(p)
    p.write_text("timestamp,count\n2021-08-01T00:00:00Z,-1\n")
    with pytest.raises(TraceError, match="line 2: count must be finite and >= 0"):
        load_trace(p)


def test_gap_marking_is_explicit() -> None:
    x = np.full(4 * 3600, 50.0)
    x[3600:5400] = 0  # 30 min of zeros amid 50 req/s: a collection gap
    x[7200:7220] = 0  # 20 s of zeros at 50 req/s: 1000 requests missing, also a gap
    x[9000:9003] = 0  # 3 s: too short to call
    y, gaps = mark_gaps(x)
    assert gaps == 1820 and np.isnan(y[3600:5400]).all() and np.isnan(y[7200:7220]).all()
    assert not np.isnan(y[9000:9003]).any()
    quiet = np.zeros(4 * 3600)
    quiet[::600] = 1  # one request every 10 min: zero runs are real lulls, not gaps
    assert mark_gaps(quiet)[1] == 0


def test_gap_minutes_are_masked_from_targets() -> None:
    x = np.full(3 * 3600, 50.0)
    x[3630:5400] = np.nan  # starts mid-minute 60: that minute is partly observed
    ms = minute_series_from_seconds(x)
    assert ms.full[59] and not ms.full[60] and not ms.full[61]
    assert ms.peak[60] == 50.0 and np.isnan(ms.peak[61])
    y, valid = targets_at(ms, np.array([58]))
    assert valid[0].tolist() == [True, True] + [False] * (HORIZON - 2)


def test_scaled_trace() -> None:
    tr = Trace(np.array([1.0, np.nan, 3.0]), "x")
    assert np.array_equal(tr.scaled(10).per_second, np.array([10.0, np.nan, 30.0]), equal_nan=True)
    with pytest.raises(ValueError, match="positive"):
        tr.scaled(0)


# ---------------------------------------------------------------- features


def test_feature_shapes_and_run_time_equals_batch() -> None:
    ms = minute_series_from_seconds(synthetic("sine"), epoch0=1_000_000.0)
    origins = np.array([5, 70, 1441, 1600, 2000])  # short histories too (padded)
    f = build_features(rows_at(ms, origins))
    assert f.seq.shape == (5, WINDOW, len(SEQ_CHANNELS)) and f.static.shape == (5, len(STATIC_FEATURES))
    assert np.isfinite(f.seq).all() and np.isfinite(f.static).all()
    for i, t in enumerate(origins):
        one = build_features(rows_of(History.from_series(ms, int(t))))
        np.testing.assert_allclose(one.seq[0], f.seq[i], rtol=1e-6)
        np.testing.assert_allclose(one.static[0], f.static[i], rtol=1e-6)
        assert one.level[0] == pytest.approx(f.level[i])


def test_features_carry_no_clock() -> None:
    """Issue 14: no minute-of-hour, time-of-day or day-of-week input, so a model cannot learn one service's
    clock (Twitter's bursts near :32) as a law: the same traffic at another clock gives the same inputs."""
    sec = synthetic("spike", days=2.0)
    origins = np.array([1600, 2000, 2500])
    ref = build_features(rows_at(minute_series_from_seconds(sec, epoch0=0.0), origins))
    for shift_s in (32 * 60.0, 7 * 3600.0, 3.5 * 86400.0):
        f = build_features(rows_at(minute_series_from_seconds(sec, epoch0=shift_s), origins))
        np.testing.assert_array_equal(f.seq, ref.seq)
        np.testing.assert_array_equal(f.static, ref.static)
    names = " ".join(SEQ_CHANNELS + STATIC_FEATURES)
    assert not any(word in names for word in ("minute_of_hour", "tod", "dow"))


def test_old_model_folder_is_refused_with_a_retrain_message(tmp_path: Path) -> None:
    import json

    from predictor.runtime import SHIPPED_MODEL_DIR, read_spec

    spec = json.loads((SHIPPED_MODEL_DIR / "forecaster.json").read_text())
    spec["format_version"] = 1  # folders written before issue 14 (minute-of-hour and clock features)
    spec["seq_channels"] = [*spec["seq_channels"], "tod_sin", "tod_cos", "minute_of_hour_sin", "minute_of_hour_cos"]
    (tmp_path / "forecaster.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="retrain"):
        read_spec(tmp_path)
    assert read_spec(SHIPPED_MODEL_DIR)["format_version"] == spec["format_version"] + 1


def test_history_from_per_second_equals_from_series() -> None:
    sec = synthetic("spike", days=1.2)
    ms = minute_series_from_seconds(sec)
    t = ms.minutes
    a = build_features(rows_of(History.from_per_second(sec[: t * 60], origin_epoch_s=60.0 * t)))
    b = build_features(rows_of(History.from_series(ms, t)))
    np.testing.assert_allclose(a.seq, b.seq, rtol=1e-6)
    np.testing.assert_allclose(a.static, b.static, rtol=1e-6)


def test_features_are_scale_free() -> None:
    sec = synthetic("step", days=2.0)
    a = build_features(rows_at(minute_series_from_seconds(sec), np.array([2000, 2500])))
    b = build_features(rows_at(minute_series_from_seconds(sec * 10), np.array([2000, 2500])))
    np.testing.assert_allclose(a.seq, b.seq, rtol=1e-5)
    np.testing.assert_allclose(a.static, b.static, rtol=1e-5)
    np.testing.assert_allclose(b.level, 10 * a.level)


def test_missing_minutes_filled_and_flagged() -> None:
    sec = synthetic("flat", days=1.5)
    sec[(2000 - 10) * 60 : (2000 - 5) * 60] = np.nan  # minutes 1990..1994 unobserved
    f = build_features(rows_at(minute_series_from_seconds(sec), np.array([2000])))
    missing = f.seq[0, :, SEQ_CHANNELS.index("missing")]
    assert missing.tolist() == [0] * 50 + [1] * 5 + [0] * 5
    peak = f.seq[0, :, 0]
    assert (peak[50:55] == peak[49]).all()  # forward-filled from minute 1989


def test_level_is_mean_rate_of_last_hour() -> None:
    sec = synthetic("step", days=2.0)
    ms = minute_series_from_seconds(sec)
    t = DAY + DAY // 2 + 120  # two hours into the x3 half
    f = build_features(rows_at(ms, np.array([t])))
    assert f.level[0] == pytest.approx(np.mean(sec[(t - 60) * 60 : t * 60]))


# ---------------------------------------------------------------- baselines (hand-computed)


def _rows(peaks: np.ndarray, t: int):  # type: ignore[no-untyped-def]
    return rows_at(minute_series_from_seconds(minutes_of(peaks)), np.array([t]))


def test_last_value_is_last_minutes_peak() -> None:
    peaks = np.full(200, 10.0)
    peaks[150:] = 30.0  # step up
    p = LastValue().point(_rows(peaks, 160))
    assert p.shape == (1, HORIZON) and (p == 30.0).all()
    assert (LastValue().point(_rows(peaks, 150)) == 10.0).all()


def test_ewma_recursion() -> None:
    peaks = np.full(200, 10.0)
    peaks[157:160] = [20.0, 40.0, 80.0]
    s = 10.0
    for v in (20.0, 40.0, 80.0):
        s = 0.5 * v + 0.5 * s
    assert s == 53.75  # 15, 27.5, 53.75
    assert EWMA(alpha=0.5).point(_rows(peaks, 160))[0, 0] == pytest.approx(53.75)


def test_seasonal_naive_is_same_minute_yesterday() -> None:
    peaks = np.full(DAY + 400, 10.0)
    peaks[200] = 99.0  # a spike yesterday at minute 200
    t = DAY + 195  # targets t..t+14 include minute 200 + DAY at h = 6
    p = SeasonalNaive().point(_rows(peaks, t))[0]
    assert p[5] == 99.0 and np.delete(p, 5).max() == 10.0
    # no yesterday yet: falls back to the last value
    assert (SeasonalNaive().point(_rows(peaks, 300))[0] == 10.0).all()


def test_peak_hold_is_max_of_last_5_minutes_times_1_2() -> None:
    peaks = np.full(200, 10.0)
    peaks[194] = 50.0  # six minutes before origin 200: outside the window
    peaks[195] = 20.0  # five minutes before: inside
    assert PeakHold().point(_rows(peaks, 200))[0, 0] == pytest.approx(24.0)
    assert PeakHold().point(_rows(peaks, 199))[0, 0] == pytest.approx(60.0)


def test_point_baseline_quantiles_from_calibration() -> None:
    ms = minute_series_from_seconds(synthetic("sine", days=2))
    origins = np.arange(1500, 2400)
    rows = rows_at(ms, origins)
    y, valid = targets_at(ms, origins)
    fc = LastValue()
    raw = fc.raw_rows(rows)
    assert raw.shape == (origins.size, HORIZON, len(QUANTILES)) and (raw[..., 0] == raw[..., 2]).all()
    fc.calibration = Calibration.fit(raw, y, valid, QUANTILES)
    pred = fc.forecast_rows(rows)
    assert (np.diff(pred, axis=-1) >= 0).all()
    cov = [(y[valid] <= pred[..., j][valid]).mean() for j in range(3)]
    # fit and scored on the same origins: at least q covered (more where integer peaks tie the factor)
    assert 0.5 <= cov[0] <= 0.6 and 0.9 <= cov[1] <= 0.93 and cov[2] >= 0.99
    one = fc.forecast(History.from_series(ms, 2000))
    np.testing.assert_allclose(one, pred[2000 - 1500])


def test_calibration_factor_is_conformal_quantile_of_ratio() -> None:
    y = np.arange(1, 101, dtype=np.float64)[:, None]  # ratios y / 1 = 1..100
    raw = np.ones((100, 1, 2))
    cal = Calibration.fit(raw, y, np.ones_like(y, bool), (0.5, 0.9))
    # the ceil(101 q)-th smallest ratio: 51st for p50, 91st for p90
    assert cal.factors.tolist() == [[51.0, 91.0]]
    assert monotone(np.array([[3.0, 2.0, 5.0]])).tolist() == [[3.0, 3.0, 5.0]]


def test_score_hand_computed() -> None:
    y = np.array([[10.0], [20.0]])
    pred = np.array([[[10.0, 12.0, 15.0]], [[10.0, 15.0, 30.0]]])
    s = score(pred, y, np.ones_like(y, bool))[0]
    # p50: |0|, 0.5*10 -> mean 2.5 / mean peak 15; p90: over by 2 at q .9 -> 0.1*2, under 5 -> 0.9*5
    assert s.pinball[0] == pytest.approx(2.5 / 15)
    assert s.pinball[1] == pytest.approx((0.1 * 2 + 0.9 * 5) / 2 / 15)
    assert s.coverage[1] == 0.5 and s.under90 == 0.5 and s.coverage[2] == 1.0
    assert s.mape50 == pytest.approx(0.25)


def test_time_split_keeps_targets_inside_their_part() -> None:
    ms = minute_series_from_seconds(synthetic("flat", days=10, base=5))
    sp = time_split(ms, 4, 3)
    assert sp.train[0] == HISTORY_MINUTES
    assert sp.train[-1] + HORIZON - 1 < sp.val_start <= sp.val[0]
    assert sp.val[-1] + HORIZON - 1 < sp.test_start == ms.minutes - 4 * DAY
    assert sp.test[-1] + HORIZON == ms.minutes
    with pytest.raises(ValueError, match="trace too short"):
        time_split(minute_series_from_seconds(synthetic("flat", days=5)), 4, 3)


def test_online_calibration_run_time_equals_batch_replay() -> None:
    from predictor.online import OnlineCalibrated, online_forecasts

    ms = minute_series_from_seconds(synthetic("step", days=2, base=20))
    origins = np.arange(1500, 1700)
    fc = LastValue(calibration=Calibration(np.full((HORIZON, 3), 0.8)))  # deliberately too low
    raw = fc.raw_rows(rows_at(ms, origins))
    y, valid = targets_at(ms, origins)
    batch = online_forecasts(raw, y, valid, fc.calibration, QUANTILES, gamma=0.05)
    live = OnlineCalibrated(fc, gamma=0.05)
    for i, t in enumerate(origins):
        np.testing.assert_allclose(live.forecast(History.from_series(ms, int(t))), batch[i], rtol=1e-9)
    assert (live.factors[:, 1] > 0.8).all()  # p90 factors pushed up by the misses
    cov = (y[100:][valid[100:]] <= batch[100:, :, 1][valid[100:]]).mean()
    assert cov > 0.8


def test_controller_forecaster_is_the_shipped_lstm_calibrated_online() -> None:
    from predictor.online import OnlineCalibrated
    from predictor.runtime import OnnxForecaster, load_controller_forecaster

    fc = load_controller_forecaster()
    assert isinstance(fc, OnlineCalibrated) and isinstance(fc.inner, OnnxForecaster)
    ms = minute_series_from_seconds(synthetic("step", days=2, base=20))
    start = fc.factors.copy()
    outs = [fc.forecast(History.from_series(ms, t)) for t in range(1500, 1560)]
    for out in outs:
        assert out.shape == (HORIZON, 3) and np.isfinite(out).all()
        assert (np.diff(out, axis=1) >= 0).all()  # p50 <= p90 <= p99
    assert not np.allclose(fc.factors, start)  # matured forecasts moved the factors
