"""predictor/synthetic.py: the four synthetic trace families have the shapes their docstring promises."""

from __future__ import annotations

import numpy as np
import pytest

from predictor import synthetic
from predictor.features import DAY, minute_series
from predictor.traces import Trace


@pytest.mark.parametrize("family", list(synthetic.FAMILIES))
def test_deterministic_by_seed_and_whole_minutes(family: str) -> None:
    a, b, c = synthetic.make(family, 2, seed=3), synthetic.make(family, 2, seed=3), synthetic.make(family, 2, seed=4)
    assert isinstance(a, Trace) and a.seconds == 2 * 86400 and a.start_epoch_s is None and a.gap_seconds == 0
    np.testing.assert_array_equal(a.per_second, b.per_second)
    assert not np.array_equal(a.per_second, c.per_second)
    x = a.per_second
    assert np.isfinite(x).all() and (x >= 0).all() and np.array_equal(x, np.round(x))  # whole requests
    assert ":" not in a.source and family in a.source


def test_sparse_has_70_percent_empty_minutes_and_bursts_of_5_to_60() -> None:
    per_minute = synthetic.sparse(days=7, seed=0).per_second.reshape(-1, 60).sum(axis=1)
    empty = float(np.mean(per_minute == 0))
    assert 0.66 < empty < 0.74
    on = per_minute[per_minute > 0]
    assert on.min() >= 5 and on.max() <= 60 and 25 < on.mean() < 40  # uniform 5..60: mean 32.5
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, (per_minute > 0).astype(int), 0]) != 0))[::2]
    assert runs.mean() > 2.0  # on minutes come in runs (stay on with probability 0.6: mean run 2.5)


def test_diurnal_repeats_every_day() -> None:
    ms = minute_series(synthetic.diurnal(days=6, seed=1))
    m = ms.mean - ms.mean.mean()

    def corr(lag: int) -> float:
        return float(np.corrcoef(m[:-lag], m[lag:])[0, 1])

    assert corr(DAY) > 0.7 and corr(DAY // 2) < -0.5  # one cycle a day, opposite phase half a day later
    spectrum = np.abs(np.fft.rfft(m))
    assert int(np.argmax(spectrum[1:])) + 1 == 6  # the strongest period is 6 days / 6 = one day
    assert 60 < float(np.mean(synthetic.diurnal(days=2, seed=1).per_second)) < 100


def test_weekly_weekend_is_lower_and_flash_has_bursts() -> None:
    daily = synthetic.weekly(days=14, seed=2).per_second.reshape(14, -1).mean(axis=1)
    low = np.sort(daily)[:4]  # the two weekends
    assert low.max() < 0.6 * np.median(daily) and 50 < daily.mean() < 200
    ms = minute_series(synthetic.flash(days=7, seed=0))
    base = float(np.median(ms.mean))
    assert 20 < base < 80
    burst_minutes = ms.mean > 5 * base
    assert 10 < int(burst_minutes.sum()) < 0.2 * ms.minutes  # some flash crowds, mostly base load
    assert float(ms.peak.max()) > 20 * base


def test_parse_spec() -> None:
    assert synthetic.parse_spec("flash") == ("flash", synthetic.DEFAULT_DAYS)
    assert synthetic.parse_spec("sparse:14") == ("sparse", 14.0)
    for bad in ("bogus", "flash:x", "flash:-1"):
        with pytest.raises(ValueError):
            synthetic.parse_spec(bad)
    with pytest.raises(ValueError):
        synthetic.make("bogus")
