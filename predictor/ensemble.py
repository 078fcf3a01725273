"""The combined forecaster: an online mixture of every member forecaster, weighted per horizon and
quantile by its recent pinball loss, so that on any trace it stays close to the best member.

Why: the LSTM trained on Twitter is the best forecaster there, and worse than simple ones on traffic
it has never seen (a user's web trace: 20-50 % worse than EWMA and last value). Which member is best
depends on the trace, the horizon and the quantile, and can change over time; the controller cannot
know it in advance, but it sees every outcome a few minutes later.

The rule, for each horizon h and quantile q separately, with M members:

1. Each member is calibrated online on its own (the bounded Gibbs & Candes rule of
   :mod:`predictor.online`), so each is a calibrated quantile forecaster ``f_m[h, q]``.
2. The combination is the weighted mean ``sum_m w_m f_m``. The pinball loss is convex in the forecast,
   so the combination's loss is at most the weighted mean of the members' losses (Jensen).
3. When a forecast matures, each member's pinball loss (req/s, divided by the recent level: the last
   hour's mean rate, floored at 1 req/s, so ``eta`` means the same on traces of any scale) is added to
   its discounted cumulative loss ``L_m``, older losses fading by ``1 - 1/memory_minutes`` a step, and
   the weights are ``exp(-eta L_m)`` normalised: the exponentially weighted average forecaster (Hedge;
   Cesa-Bianchi & Lugosi, "Prediction, Learning, and Games", 2006, §2.1: for a convex bounded loss its
   regret to the best member over T steps is at most ``ln M / eta + eta T / 8`` in loss units) on
   fading-memory losses, so that it follows the member that has been best over about the last
   ``memory_minutes`` (6 hours) when that changes. A per-step Hedge with fixed share (Herbster & Warmuth
   1998) was tried first: a single minute's loss is so noisy that the weights never settled (the
   LSTM held 40 % of the weight at h = 10 on the Twitter validation days, where it is the best member by
   36 %, and the mixture lost 30 % to it).
No calibration is applied on top of the mixture: the members are calibrated, and a second online
calibration of the combination (tried) only added noise (on the Twitter validation days it made the
p50 8 % worse at h = 15, with coverage no closer to 90 %).

``eta`` = 2 and ``memory_minutes`` = 360 were chosen on validation days, never on test days: first on
Twitter's (days 15-18) and NASA-1995 x100's, where eta from 0.5 to 8 and memories of 6 h to 3 days all
stay within 1-6 % of the best member; then, among eta 0.5/2/8 and memories 6 h/1 d/3 d, the pair with the
smallest worst gap to the best member over the validation days of all six leave-one-trace-out folds
(Twitter, NASA x100, synthetic diurnal, weekly, flash, sparse; the worst is flash at long horizons, where a
few bursts a day decide which member is best): 6 h, worst 5.0 % (1 d: 6.0 %, 3 d: 5.3-5.5 %).

Pure: :class:`EnsembleState` is an immutable value; :func:`ensemble_step` takes one and returns the
forecast and the next; :func:`ensemble_forecasts` replays the same rule over consecutive origins in
batch for evaluation (tests check the two agree).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictor.calibration import RATE_FLOOR_RPS, Calibration, monotone
from predictor.features import History, HistoryRows, MinuteSeries, _levels, rows_at, rows_of, targets_at
from predictor.online import (
    DEFAULT_GAMMA,
    CalibrationState,
    RawQuantileForecaster,
    _frozen,
    calibration_step,
    online_forecasts,
)

DEFAULT_ETA = 2.0
DEFAULT_MEMORY_MINUTES = 360.0
STATE_FORMAT_VERSION = 1


def pinball(y: np.ndarray, pred: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Pinball loss ``[..., Q]`` (req/s) of forecasts ``pred`` ``[..., Q]`` for outcomes ``y`` ``[...]``."""
    q = np.asarray(quantiles, dtype=np.float64)
    d = np.asarray(y, dtype=np.float64)[..., None] - pred
    out: np.ndarray = np.maximum(q * d, (q - 1.0) * d)
    return out


def mixture_weights(cum_loss: np.ndarray, eta: float) -> np.ndarray:
    """``[M, H, Q]`` weights ``exp(-eta x cum_loss)``, normalised over members (axis 0)."""
    z = -eta * (cum_loss - cum_loss.min(axis=0, keepdims=True))
    w = np.exp(z)
    out: np.ndarray = w / w.sum(axis=0, keepdims=True)
    return out


def update_cum_loss(cum_loss: np.ndarray, losses: np.ndarray, level_rps: float, memory_minutes: float) -> np.ndarray:
    """One step of the discounted losses; returns a new ``[M, H, Q]`` array.

    ``losses`` ``[M, H, Q]`` req/s: each member's pinball loss on the forecasts maturing now (NaN where
    nothing matured: those entries are left as they are); divided by ``level_rps`` (floored at
    ``RATE_FLOOR_RPS``); older losses fade by ``1 - 1 / memory_minutes`` a scored step."""
    seen = ~np.isnan(losses)
    decay = 1.0 - 1.0 / memory_minutes
    scaled = np.nan_to_num(losses) / max(level_rps, RATE_FLOOR_RPS)
    out: np.ndarray = np.where(seen, decay * cum_loss + scaled, cum_loss)
    return out


@dataclass(frozen=True, eq=False)
class EnsembleState:
    """The combined forecaster's state, an immutable value.

    - ``members``: each member's online-calibration state (:class:`~predictor.online.CalibrationState`;
      its ``issued`` holds that member's calibrated forecasts not yet matured, which are what its
      weight is scored on);
    - ``cum_loss`` ``[M, H, Q]``: each member's discounted pinball loss (divided by the level)."""

    members: tuple[CalibrationState, ...]
    cum_loss: np.ndarray

    def __post_init__(self) -> None:
        cl = np.asarray(self.cum_loss)
        if cl.ndim != 3 or cl.shape[0] != len(self.members):
            raise ValueError(f"cum_loss: shape {cl.shape}, expected [{len(self.members)}, H, Q]")
        object.__setattr__(self, "cum_loss", _frozen(cl, tuple(int(v) for v in cl.shape), "cum_loss"))

    @staticmethod
    def initial(n_members: int, horizon: int, n_quantiles: int) -> EnsembleState:
        """Equal weights, nothing issued."""
        return EnsembleState(
            tuple(CalibrationState.initial(horizon, n_quantiles) for _ in range(n_members)),
            np.zeros((n_members, horizon, n_quantiles)),
        )

    def weights(self, eta: float = DEFAULT_ETA) -> np.ndarray:
        """``[M, H, Q]`` member weights (sum to 1 over members)."""
        return mixture_weights(self.cum_loss, eta)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (:meth:`from_json` restores it exactly)."""
        return {
            "format_version": STATE_FORMAT_VERSION,
            "members": [s.to_json() for s in self.members],
            "cum_loss": self.cum_loss.tolist(),
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> EnsembleState:
        if obj.get("format_version") != STATE_FORMAT_VERSION:
            raise ValueError(f"ensemble state format_version {obj.get('format_version')} is not {STATE_FORMAT_VERSION}")
        return EnsembleState(
            tuple(CalibrationState.from_json(s) for s in obj["members"]),
            np.asarray(obj["cum_loss"], dtype=np.float64),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EnsembleState):
            return NotImplemented
        return self.members == other.members and np.array_equal(self.cum_loss, other.cum_loss)

    __hash__ = None  # type: ignore[assignment]


def _matured_losses(
    members: Sequence[CalibrationState], origin_minute: int, last_peak: float, quantiles: Sequence[float]
) -> np.ndarray:
    """``[M, H, Q]`` pinball losses of the members' forecasts whose target minute just ended (NaN: none)."""
    h_n, q_n = members[0].horizon, members[0].n_quantiles
    out = np.full((len(members), h_n, q_n), np.nan)
    if math.isnan(last_peak):
        return out
    for m, st in enumerate(members):
        for h in range(1, h_n + 1):
            f = st.issued_at(origin_minute - h)
            if f is not None:
                out[m, h - 1] = pinball(np.asarray(last_peak), f[h - 1], quantiles)
    return out


def ensemble_step(
    raws: np.ndarray,
    bases: Sequence[Calibration | None],
    last_peak: float,
    level_rps: float,
    origin_minute: int,
    state: EnsembleState,
    quantiles: tuple[float, ...],
    *,
    gamma: float = DEFAULT_GAMMA,
    eta: float = DEFAULT_ETA,
    memory_minutes: float = DEFAULT_MEMORY_MINUTES,
) -> tuple[np.ndarray, EnsembleState]:
    """One step, pure: ``(forecast [H, Q] req/s, new state)``.

    ``raws`` ``[M, H, Q]`` req/s: each member's forecast at this origin before calibration; ``bases``:
    each member's fit calibration (None: none); ``last_peak`` req/s: the true peak of the minute that
    just ended (NaN: unobserved); ``level_rps``: the last hour's mean rate; ``origin_minute``: epoch
    minutes. Raises ValueError if the shapes disagree with the state."""
    if raws.shape[0] != len(state.members) or len(bases) != len(state.members):
        raise ValueError(
            f"{raws.shape[0]} member forecasts and {len(bases)} calibrations for {len(state.members)} members"
        )
    losses = _matured_losses(state.members, origin_minute, last_peak, quantiles)
    cum = update_cum_loss(state.cum_loss, losses, level_rps, memory_minutes)
    members, preds = [], []
    for raw, base, st in zip(raws, bases, state.members, strict=True):
        pred, new = calibration_step(raw, last_peak, origin_minute, st, quantiles, base, gamma)
        members.append(new)
        preds.append(pred)
    combined = monotone((mixture_weights(cum, eta) * np.stack(preds)).sum(axis=0))
    return combined, EnsembleState(tuple(members), cum)


def ensemble_forecasts(
    raws: np.ndarray,
    bases: Sequence[Calibration | None],
    y: np.ndarray,
    valid: np.ndarray,
    levels: np.ndarray,
    quantiles: tuple[float, ...],
    *,
    gamma: float = DEFAULT_GAMMA,
    eta: float = DEFAULT_ETA,
    memory_minutes: float = DEFAULT_MEMORY_MINUTES,
) -> tuple[np.ndarray, np.ndarray]:
    """The rule of :func:`ensemble_step` replayed over N consecutive origins (one minute apart) from
    :meth:`EnsembleState.initial`, for evaluation: ``(forecasts [N, H, Q] req/s, weights [N, M, H, Q]
    used at each origin)``. ``raws`` ``[M, N, H, Q]`` req/s before calibration; ``y`` ``[N, H]`` true
    peaks, ``valid`` ``[N, H]``; ``levels`` ``[N]`` req/s, the level at each origin."""
    m_n, n, h_n, q_n = raws.shape
    if len(bases) != m_n:
        raise ValueError(f"{m_n} members' forecasts and {len(bases)} calibrations")
    members = np.stack(
        [online_forecasts(raws[m], y, valid, bases[m], quantiles, gamma) for m in range(m_n)]
    )  # [M, N, H, Q]
    hs = np.arange(h_n)
    y_seen = np.where(valid, y, np.nan)
    cum = np.zeros((m_n, h_n, q_n))
    combined = np.empty((n, h_n, q_n))
    weights = np.empty((n, m_n, h_n, q_n))
    for k in range(n):
        j = k - 1 - hs  # the forecast of origin k-h for horizon h matures now
        ok = j >= 0
        jj = np.where(ok, j, 0)
        outcome = np.where(ok, y_seen[jj, hs], np.nan)  # [H]
        matured = members[:, jj, hs, :]  # [M, H, Q]
        losses = np.where(np.isnan(outcome)[None, :, None], np.nan, pinball(outcome[None, :], matured, quantiles))
        cum = update_cum_loss(cum, losses, float(levels[k]), memory_minutes)
        weights[k] = mixture_weights(cum, eta)
        combined[k] = monotone((weights[k] * members[:, k]).sum(axis=0))
    return combined, weights


def level_of(rows: HistoryRows) -> np.ndarray:
    """``[N]`` req/s: the level losses are divided by (the last hour's mean rate, floored at 1 req/s)."""
    return np.maximum(_levels(rows.mean), RATE_FLOOR_RPS)


class Ensemble:
    """The combined forecaster over ``members`` (each a forecaster with ``raw_rows`` and
    ``calibration``, as :func:`predictor.runtime.load_forecasters` gives), pure: :meth:`step` takes an
    :class:`EnsembleState` and returns the forecast and the next state."""

    def __init__(
        self,
        members: Sequence[RawQuantileForecaster],
        *,
        gamma: float = DEFAULT_GAMMA,
        eta: float = DEFAULT_ETA,
        memory_minutes: float = DEFAULT_MEMORY_MINUTES,
        name: str = "combined",
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        shapes = {(m.horizon, tuple(m.quantiles)) for m in members}
        if len(shapes) != 1:
            raise ValueError(f"members disagree on horizon and quantiles: {sorted(shapes)}")
        self.members = tuple(members)
        self.horizon, self.quantiles = members[0].horizon, tuple(members[0].quantiles)
        self.gamma, self.eta, self.memory_minutes, self.name = gamma, eta, memory_minutes, name

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def initial_state(self) -> EnsembleState:
        return EnsembleState.initial(len(self.members), self.horizon, len(self.quantiles))

    def step(self, history: History, state: EnsembleState) -> tuple[np.ndarray, EnsembleState]:
        """``(forecast [H, Q] req/s, new state)`` at the origin of ``history``; call once per minute, in
        order (the last minute of ``history`` is the one before its origin)."""
        rows = rows_of(history)
        raws = np.stack([m.raw_rows(rows)[0] for m in self.members])
        y = float(history.peak[-1]) if history.peak.size else math.nan
        origin = int(round(history.origin_epoch_s / 60.0))
        return ensemble_step(
            raws,
            [m.calibration for m in self.members],
            y,
            float(level_of(rows)[0]),
            origin,
            state,
            self.quantiles,
            gamma=self.gamma,
            eta=self.eta,
            memory_minutes=self.memory_minutes,
        )

    def replay(self, series: MinuteSeries, origins: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """:func:`ensemble_forecasts` over consecutive ``origins`` of ``series`` (members' raw forecasts
        computed ``chunk`` origins at a time, to bound memory); see there for the result."""
        if np.any(np.diff(origins) != 1):
            raise ValueError("the ensemble is sequential: it needs consecutive origins")
        raws, levels = [], []
        for i in range(0, origins.size, chunk):
            rows = rows_at(series, origins[i : i + chunk])
            raws.append(np.stack([m.raw_rows(rows) for m in self.members]))
            levels.append(level_of(rows))
        y, valid = targets_at(series, origins)
        return ensemble_forecasts(
            np.concatenate(raws, axis=1),
            [m.calibration for m in self.members],
            y,
            valid,
            np.concatenate(levels),
            self.quantiles,
            gamma=self.gamma,
            eta=self.eta,
            memory_minutes=self.memory_minutes,
        )
