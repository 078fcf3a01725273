"""The forecast stage of the control step (DESIGN.md §3 "Controller", step 2): each forecaster as a
pure function of its own state, so the step stays pure.

A :class:`ForecastSource` answers ``forecast(inputs, state) -> (forecast [steps][Q] req/s, new state)``:
quantiles of the per-second peak rate for each of the next ``steps`` controller steps of
``interval_s`` seconds. Its state lives in the controller's state (never in the object):

- :class:`OnlineEnsemble` (ours, by default): every member forecaster of the model folder, each
  calibrated online, mixed per horizon and quantile by its recent pinball loss
  (:mod:`predictor.ensemble`; the :class:`~predictor.ensemble.EnsembleState` is the state);
- :class:`OnlineLSTM` (ours with ``controller.forecaster: lstm``): the shipped LSTM with its calibration adapted online
  (:func:`predictor.online.calibrated_forecast`, Gibbs & Candes 2021; the
  :class:`~predictor.online.CalibrationState` is the state);
- :class:`StaticForecaster`: any ``predictor`` forecaster as fit (the LSTM with its static calibration
  for ``mark-paper``, the baselines);
- :class:`RunningPeakMax`: MArk's public code, 1.2 x the running all-time maximum of the per-minute
  peak (the state is that maximum);
- :class:`TrueFuture`: the oracle, the true per-step peaks from ``Observation.future_arrivals``.

The ``predictor`` forecasters work in one-minute steps; :func:`minutes_to_steps` maps them onto the
controller's interval (identity at the default 60 s). A minute-based forecaster forecasts once per
epoch minute: a second step within the same minute (or the same observation seen twice) reuses the
forecast already made, shifted by the time elapsed, so online calibration scores each minute once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from predictor.baselines import Forecaster
from predictor.ensemble import Ensemble, EnsembleState
from predictor.features import HISTORY_MINUTES, QUANTILES, History, minute_series_from_seconds
from predictor.online import (
    DEFAULT_GAMMA,
    WARM_UP_MINUTES,
    CalibrationState,
    RawQuantileForecaster,
    calibrated_forecast,
)


@dataclass(frozen=True)
class ForecastInputs:
    """What a forecaster may read at a step: the per-second history (oldest first, NaN unobserved,
    read-only; its last second ends at ``epoch_s``), the seconds new since the previous step, the
    trace's calendar time now (POSIX seconds), the true future (oracle only), and the steps wanted."""

    history: np.ndarray
    new_seconds: np.ndarray
    epoch_s: float
    future: tuple[int, ...] | None
    steps: int
    interval_s: float


class ForecastSource(Protocol):
    """A forecaster as the step runs it (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def quantiles(self) -> tuple[float, ...]: ...

    def initial_state(self) -> Any: ...

    def forecast(self, inputs: ForecastInputs, state: Any) -> tuple[np.ndarray, Any]:
        """``([steps, Q] req/s, new state)``; ``state`` is not changed."""
        ...


def minutes_to_steps(minute_forecast: np.ndarray, offset_s: float, interval_s: float, steps: int) -> np.ndarray:
    """``[steps, Q]`` from ``[H, Q]`` one-minute rows (row 0: the minute starting at the forecast's origin).

    Controller step k covers seconds ``[offset_s + k x interval_s, offset_s + (k+1) x interval_s)`` after
    the origin; its peak is the highest forecast among the minutes it overlaps (minutes past the
    forecast's horizon repeat its last row). At ``interval_s`` 60 and ``offset_s`` 0 this is the identity
    (on the first ``steps`` rows)."""
    h = minute_forecast.shape[0]
    out = np.empty((steps, minute_forecast.shape[1]))
    for k in range(steps):
        lo = int(math.floor((offset_s + k * interval_s) / 60.0 + 1e-9))
        hi = int(math.ceil((offset_s + (k + 1) * interval_s) / 60.0 - 1e-9))
        rows = minute_forecast[min(lo, h - 1) : min(max(hi, lo + 1), h)]
        out[k] = rows.max(axis=0) if rows.size else minute_forecast[-1]
    return out


@dataclass(frozen=True, eq=False)
class MinuteState:
    """A minute-based forecaster's state: its own (``inner``: a CalibrationState or None), the epoch
    minute of its last forecast, and that forecast ``[H, Q]`` (read-only)."""

    inner: Any = None
    origin_minute: int | None = None
    forecast: np.ndarray | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MinuteState):
            return NotImplemented
        same_fc = (self.forecast is None and other.forecast is None) or (
            self.forecast is not None
            and other.forecast is not None
            and np.array_equal(self.forecast, other.forecast, equal_nan=True)
        )
        return self.inner == other.inner and self.origin_minute == other.origin_minute and same_fc

    __hash__ = None  # type: ignore[assignment]


def _history_at_minute(inputs: ForecastInputs) -> tuple[History, int, float]:
    """The history up to the last whole epoch minute, that minute (epoch minutes) and the seconds since."""
    origin = int(math.floor(inputs.epoch_s / 60.0 + 1e-9))
    offset = inputs.epoch_s - 60.0 * origin
    drop = min(int(round(offset)), inputs.history.size)
    h = inputs.history[: inputs.history.size - drop] if drop else inputs.history
    return History.from_per_second(h, 60.0 * origin), origin, offset


class _MinuteForecaster:
    """Shared by the minute-based forecasters: forecast once per epoch minute, map to steps."""

    name: str
    quantiles: tuple[float, ...]

    def _inner_initial(self) -> Any:
        return None

    def _minute_forecast(self, history: History, inner: Any) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def initial_state(self) -> MinuteState:
        return MinuteState(self._inner_initial())

    def _warmed(self, inputs: ForecastInputs, origin: int, offset: float) -> Any:
        """The initial inner state replayed over the last ``WARM_UP_MINUTES`` origins before ``origin`` that
        ``inputs.new_seconds`` (the first observation's arrivals: the history the controller starts with)
        holds with their full look-back, in order; the initial state itself without such history or
        without online state (a static forecaster)."""
        inner = self._inner_initial()
        drop = min(int(round(offset)), inputs.new_seconds.size)
        seconds = inputs.new_seconds[: inputs.new_seconds.size - drop] if drop else inputs.new_seconds
        n = seconds.size // 60
        if inner is None or n <= HISTORY_MINUTES:
            return inner
        seconds = seconds[seconds.size - 60 * n :]
        series = minute_series_from_seconds(seconds, epoch0=60.0 * (origin - n))
        for t in range(max(HISTORY_MINUTES, n - WARM_UP_MINUTES), n):
            _, inner = self._minute_forecast(History.from_series(series, t), inner)
        return inner

    def forecast(self, inputs: ForecastInputs, state: Any) -> tuple[np.ndarray, Any]:
        st = state if isinstance(state, MinuteState) else self.initial_state()
        history, origin, offset = _history_at_minute(inputs)
        if st.origin_minute is None and st.forecast is None:  # the first step: warm up on the history given
            st = MinuteState(self._warmed(inputs, origin, offset))
        if st.forecast is not None and st.origin_minute == origin:
            fc = st.forecast
        else:
            fc, inner = self._minute_forecast(history, st.inner)
            fc = np.array(fc, dtype=np.float64, copy=True)
            fc.flags.writeable = False
            st = MinuteState(inner, origin, fc)
        return minutes_to_steps(fc, offset, inputs.interval_s, inputs.steps), st


class OnlineLSTM(_MinuteForecaster):
    """The forecaster ``ours`` runs: the shipped LSTM (``predictor.runtime.load_lstm``) with its
    calibration adapted online, Gibbs & Candes, "Adaptive conformal inference under distribution
    shift", NeurIPS 2021 (``predictor/online.py``); ``gamma`` is the rule's step size."""

    def __init__(self, inner: RawQuantileForecaster, gamma: float = DEFAULT_GAMMA) -> None:
        self.inner = inner
        self.gamma = gamma
        self.name = f"{inner.name} (online-calibrated)"
        self.quantiles = tuple(inner.quantiles)

    def _inner_initial(self) -> CalibrationState:
        return CalibrationState.initial(self.inner.horizon, len(self.quantiles))

    def _minute_forecast(self, history: History, inner: Any) -> tuple[np.ndarray, Any]:
        cal = inner if isinstance(inner, CalibrationState) else self._inner_initial()
        return calibrated_forecast(self.inner, history, cal, self.gamma)


class OnlineEnsemble(_MinuteForecaster):
    """The forecaster ``ours`` runs by default: :class:`predictor.ensemble.Ensemble` (every member of the
    model folder calibrated online and mixed by recent pinball loss; ``predictor.runtime.load_ensemble``)."""

    def __init__(self, ensemble: Ensemble) -> None:
        self.ensemble = ensemble
        self.name = f"{ensemble.name} ({', '.join(ensemble.member_names)})"
        self.quantiles = tuple(ensemble.quantiles)

    def _inner_initial(self) -> EnsembleState:
        return self.ensemble.initial_state()

    def _minute_forecast(self, history: History, inner: Any) -> tuple[np.ndarray, Any]:
        st = inner if isinstance(inner, EnsembleState) else self._inner_initial()
        return self.ensemble.step(history, st)


class StaticForecaster(_MinuteForecaster):
    """A ``predictor`` forecaster as it was fit (``forecast(history) -> [H, Q]``): no state of its own."""

    def __init__(self, inner: Forecaster) -> None:
        self.inner = inner
        self.name = inner.name
        self.quantiles = tuple(inner.quantiles)

    def _minute_forecast(self, history: History, inner: Any) -> tuple[np.ndarray, Any]:
        return self.inner.forecast(history), None


@dataclass(frozen=True)
class RunningPeakMax:
    """MArk's public code (marcoszh/MArk-Project, modules/proactive_controller.py): the forecast for
    every step is ``factor`` (1.2) x the highest per-minute peak seen since the start. MArk takes a
    minute's peak over twelve 5-second windows; here a minute's peak is its highest per-second count
    (the trace's resolution), so the running maximum is the highest per-second count observed so far.
    The state is that maximum (req/s, 0 at the start); every quantile gets the same value."""

    factor: float = 1.2
    name: str = "running max x1.2 (MArk release)"
    quantiles: tuple[float, ...] = QUANTILES

    def initial_state(self) -> float:
        return 0.0

    def forecast(self, inputs: ForecastInputs, state: Any) -> tuple[np.ndarray, Any]:
        peak = float(state or 0.0)
        seen = inputs.new_seconds[~np.isnan(inputs.new_seconds)]
        if seen.size:
            peak = max(peak, float(seen.max()))
        return np.full((inputs.steps, len(self.quantiles)), self.factor * peak), peak


@dataclass(frozen=True)
class TrueFuture:
    """The oracle's forecast: each step's true peak per-second count, from ``Observation.future_arrivals``
    (0 past its end: the trace is over); every quantile gets the same value. No state."""

    name: str = "true future (oracle)"
    quantiles: tuple[float, ...] = QUANTILES

    def initial_state(self) -> None:
        return None

    def forecast(self, inputs: ForecastInputs, state: Any) -> tuple[np.ndarray, Any]:
        fut = np.asarray(inputs.future or (), dtype=np.float64)
        out = np.zeros((inputs.steps, len(self.quantiles)))
        width = max(1, int(round(inputs.interval_s)))
        for k in range(inputs.steps):
            chunk = fut[k * width : (k + 1) * width]
            if chunk.size:
                out[k] = float(chunk.max())
        return out, None


__all__ = [
    "ForecastInputs",
    "ForecastSource",
    "MinuteState",
    "OnlineEnsemble",
    "OnlineLSTM",
    "RunningPeakMax",
    "StaticForecaster",
    "TrueFuture",
    "minutes_to_steps",
]
