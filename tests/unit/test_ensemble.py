"""predictor/ensemble.py: the combined forecaster follows the best member, the pure step and the batch
replay agree, and its state is an immutable value with an exact JSON round trip."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from predictor.baselines import EWMA, LastValue, SeasonalNaive
from predictor.calibration import Calibration
from predictor.ensemble import (
    Ensemble,
    EnsembleState,
    ensemble_forecasts,
    mixture_weights,
    pinball,
    update_cum_loss,
)
from predictor.evaluate import evaluate_ensemble, evaluate_online
from predictor.features import HORIZON, QUANTILES, History, HistoryRows, minute_series_from_seconds

EPOCH0 = 60.0 * 28_000_000


@dataclass
class Scaled:
    """A member whose raw forecast is ``factor`` x the peak ``lag`` minutes before the last one, for every
    horizon and quantile (online calibration absorbs the factor, not the lag)."""

    factor: float
    name: str = "scaled"
    calibration: Calibration | None = None
    horizon: int = HORIZON
    quantiles: tuple[float, ...] = QUANTILES
    lag: int = 0

    def raw_rows(self, rows: HistoryRows) -> np.ndarray:
        last = rows.peak[:, -1 - self.lag]
        return np.repeat(np.repeat((self.factor * last)[:, None, None], self.horizon, 1), len(self.quantiles), 2)


def diurnal_seconds(days: int, seed: int) -> np.ndarray:
    t = np.arange(days * 86400)
    rate = 40.0 + 30.0 * np.sin(2 * np.pi * t / 86400.0)
    return np.random.default_rng(seed).poisson(rate).astype(np.float64)


def test_pinball_and_the_weights_rule() -> None:
    got = pinball(np.array(10.0), np.array([8.0, 12.0, 10.0]), (0.5, 0.9, 0.99))
    np.testing.assert_allclose(got, [1.0, 0.2, 0.0])
    cum = update_cum_loss(np.zeros((2, 1, 1)), np.array([[[2.0]], [[np.nan]]]), 2.0, 4.0)
    assert cum[:, 0, 0].tolist() == [1.0, 0.0]  # scored: loss / level; not scored: unchanged
    cum = update_cum_loss(cum, np.array([[[0.0]], [[2.0]]]), 0.5, 4.0)  # level floored at 1 req/s
    assert cum[:, 0, 0].tolist() == [0.75, 2.0]
    w = mixture_weights(np.array([[[0.0]], [[1.0]]]), eta=np.log(3.0))
    np.testing.assert_allclose(w[:, 0, 0], [0.75, 0.25])


def test_weights_move_to_the_better_member_and_the_loss_is_close_to_its() -> None:
    """Three members, one right (the last peak) and two late (the peak 2 and 3 hours before, scaled: online
    calibration undoes a scale, not a lag): after a day the weight of the right one is ~1 at every horizon
    and quantile, and the mixture's pinball is within 5 % of it."""
    series = minute_series_from_seconds(diurnal_seconds(3, seed=1), epoch0=EPOCH0)
    members = [Scaled(0.5, "half", lag=120), Scaled(1.0, "right"), Scaled(2.0, "double", lag=180)]
    ens = Ensemble(members)
    origins = np.arange(1500, series.minutes - HORIZON)
    pred, weights = ens.replay(series, origins)
    assert pred.shape == (origins.size, HORIZON, len(QUANTILES))
    assert float(weights[-1, 1].min()) > 0.95 and float(weights[0, 1].min()) == pytest.approx(1 / 3)
    warm, test = origins[:1440], origins[1440:]
    alone = evaluate_online([Scaled(1.0, "right", Calibration.identity(HORIZON, 3))], series, warm, test, 0.01)
    mixed = evaluate_ensemble(ens, series, warm, test)["combined"]
    for h in range(HORIZON):
        assert mixed[h].pinball_mean <= 1.05 * alone["right online"][h].pinball_mean
        assert 0.87 <= mixed[h].coverage[1] <= 0.93


def test_the_pure_step_and_the_batch_replay_agree_and_the_state_round_trips() -> None:
    sec = diurnal_seconds(2, seed=2)
    sec[60 * 1600 : 60 * 1603] = np.nan  # unobserved minutes are not scored
    series = minute_series_from_seconds(sec, epoch0=EPOCH0)
    members = [LastValue(calibration=Calibration.identity(HORIZON, 3)), EWMA(alpha=0.3), SeasonalNaive()]
    ens = Ensemble(members, eta=3.0, memory_minutes=120.0)
    origins = np.arange(1500, 1700)
    batch, _ = ens.replay(series, origins)
    state = ens.initial_state()
    for k, t in enumerate(origins):
        h = History.from_per_second(sec[: 60 * t], EPOCH0 + 60.0 * t)
        pred, new = ens.step(h, state)
        assert new is not state and state == EnsembleState.from_json(json.loads(json.dumps(state.to_json())))
        state = new
        if not np.isnan(series.peak[t - 1]):
            np.testing.assert_allclose(pred, batch[k], rtol=1e-9, err_msg=f"origin {t}")
    assert not np.allclose(state.weights(3.0), 1 / 3)
    with pytest.raises(ValueError, match="cum_loss"):
        EnsembleState(state.members, np.zeros((2, HORIZON, 3)))
    with pytest.raises(ValueError, match="consecutive"):
        ens.replay(series, np.array([1500, 1502]))


def test_members_must_agree_on_horizon_and_quantiles() -> None:
    with pytest.raises(ValueError, match="disagree"):
        Ensemble([Scaled(1.0), Scaled(1.0, horizon=5)])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
    with pytest.raises(ValueError, match="members"):
        ensemble_forecasts(
            np.zeros((2, 3, HORIZON, 3)),
            [None],
            np.zeros((3, HORIZON)),
            np.ones((3, HORIZON), bool),
            np.ones(3),
            QUANTILES,
        )
