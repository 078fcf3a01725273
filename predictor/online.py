"""Online calibration: keep each quantile's coverage honest as outcomes arrive (adaptive conformal).

Factors fit on the training trace's validation days are right for that trace. On another trace (or
after a shift) the p90 can cover far less than 90 %. A live controller sees every outcome a few
minutes later, so each (horizon h, quantile q) factor is nudged when its forecast matures
(Gibbs & Candes, "Adaptive conformal inference under distribution shift", NeurIPS 2021, on a log factor):

    log f[h, q] += gamma * (miss - (1 - q)),    miss = 1 if the true peak exceeded the forecast

so a miss raises the factor by ``gamma * q`` in log space and a hit lowers it by ``gamma * (1 - q)``.
Over any window the miss rate is driven to 1 - q; nothing of the model is retrained. The forecast of
origin t for horizon h (minute t+h-1) matures at origin t+h.

Bounded (a projected version of the rule): the effective factor (fit x adjustment) is kept within
``calibration.FACTOR_BOUNDS`` by clipping ``log f`` after each update, so a run of misses it cannot fix
does not wind the factor up without bound, and it multiplies the raw forecast raised to
``calibration.RATE_FLOOR_RPS`` (1 req/s), so a raw forecast of 0 (a sparse service's idle minutes)
still gets a forecast the rule can move: on a sparse trace (70 % empty minutes) every factor stays
within the bounds and p90 covers 87-93 % (tests/unit/test_online_calibration.py).

The state of the rule is an explicit immutable value, :class:`CalibrationState` (log factor
adjustments and the forecasts not yet matured), so a controller step can be pure:
:func:`calibrated_forecast` takes a state and returns the forecast and a new state, and the state
round-trips through JSON for persistence. :func:`update_log_adj` is the rule itself, used both by
:func:`calibrated_forecast` (one step at run time) and :func:`online_forecasts` (a batch of consecutive
origins replayed for evaluation; tests check the two agree). :class:`OnlineCalibrated` is a stateful
convenience wrapper for callers that want ``forecast(history)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from predictor.calibration import FACTOR_BOUNDS, Calibration, floored, monotone
from predictor.features import History, HistoryRows, rows_of

DEFAULT_GAMMA = 0.01
# A controller that starts with history (a restart, or a simulation of a deployment live before its
# window) first replays the forecaster over this many minutes of it, so its online state (calibration
# factors, the combined forecaster's weights) has adapted to this traffic before its first real forecast:
# at gamma 0.01 a factor needs hours to move from the training trace's values to another trace's.
WARM_UP_MINUTES = 1440
STATE_FORMAT_VERSION = 1


class RawQuantileForecaster(Protocol):
    """What online calibration needs of the forecaster it wraps (every ``CalibratedQuantiles`` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def horizon(self) -> int: ...

    @property
    def quantiles(self) -> tuple[float, ...]: ...

    @property
    def calibration(self) -> Calibration | None: ...

    def raw_rows(self, rows: HistoryRows) -> np.ndarray:
        """``[N, H, Q]`` req/s before calibration."""
        ...


def _frozen(a: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A read-only float64 copy of ``a`` (never a view of the caller's array), checked against ``shape``."""
    out = np.array(a, dtype=np.float64, copy=True)
    if out.shape != shape:
        raise ValueError(f"{what}: shape {out.shape}, expected {shape}")
    out.flags.writeable = False
    return out


def _json_rows(a: np.ndarray) -> list[list[float | None]]:
    """Rows of floats for JSON (``repr`` round-trips every finite float64 exactly); NaN becomes null."""
    return [[None if math.isnan(v) else float(v) for v in row] for row in a.tolist()]


def _from_json_rows(rows: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class CalibrationState:
    """The online-calibration state of one forecaster: an immutable value (arrays are read-only copies).

    - ``log_adj`` ``[H, Q]``: the log of the factor each calibrated quantile is multiplied by, on top of
      the forecaster's own (fit) calibration factors; zero at the start.
    - ``issued``: the forecasts issued and not yet fully matured, as ``(origin_minute, forecast)`` pairs
      in increasing origin order; ``origin_minute`` is the forecast origin in epoch minutes
      (``round(History.origin_epoch_s / 60)``), ``forecast`` ``[H, Q]`` req/s (per-second peak rate).

    ``H`` is the horizon in one-minute steps, ``Q`` the number of quantiles.
    """

    log_adj: np.ndarray
    issued: tuple[tuple[int, np.ndarray], ...] = ()

    def __post_init__(self) -> None:
        la = np.asarray(self.log_adj)
        if la.ndim != 2:
            raise ValueError(f"log_adj: shape {la.shape}, expected [H, Q]")
        shape = (int(la.shape[0]), int(la.shape[1]))
        object.__setattr__(self, "log_adj", _frozen(la, shape, "log_adj"))
        issued = tuple(
            sorted(((int(t), _frozen(f, shape, f"issued[{t}]")) for t, f in self.issued), key=lambda p: p[0])
        )
        origins = [t for t, _ in issued]
        if len(set(origins)) != len(origins):
            raise ValueError(f"issued: repeated origin minutes in {origins}")
        object.__setattr__(self, "issued", issued)

    @staticmethod
    def initial(horizon: int, n_quantiles: int) -> CalibrationState:
        """No adjustment (``log_adj`` zeros ``[horizon, n_quantiles]``) and nothing issued."""
        return CalibrationState(np.zeros((horizon, n_quantiles)))

    @property
    def horizon(self) -> int:
        return int(self.log_adj.shape[0])

    @property
    def n_quantiles(self) -> int:
        return int(self.log_adj.shape[1])

    def issued_at(self, origin_minute: int) -> np.ndarray | None:
        """The forecast ``[H, Q]`` issued at this origin (epoch minutes), if still held."""
        for t, f in self.issued:
            if t == origin_minute:
                return f
        return None

    def factors(self, base: Calibration | None) -> np.ndarray:
        """The factors ``[H, Q]`` now applied to raw forecasts: ``base.factors * exp(log_adj)`` (base None = 1)."""
        return online_factors(base, self.log_adj)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; ``from_json(json.loads(json.dumps(s.to_json())))`` equals ``s`` exactly
        (floats are written in full precision; a NaN forecast value is written as null)."""
        return {
            "format_version": STATE_FORMAT_VERSION,
            "units": "origin_minute: epoch minutes (POSIX seconds / 60); forecast: req/s [H, Q]; log_adj: [H, Q]",
            "log_adj": _json_rows(self.log_adj),
            "issued": [{"origin_minute": t, "forecast": _json_rows(f)} for t, f in self.issued],
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> CalibrationState:
        """The state written by :meth:`to_json`."""
        if obj.get("format_version") != STATE_FORMAT_VERSION:
            raise ValueError(
                f"calibration state format_version {obj.get('format_version')} is not {STATE_FORMAT_VERSION}"
            )
        return CalibrationState(
            _from_json_rows(obj["log_adj"]),
            tuple((int(e["origin_minute"]), _from_json_rows(e["forecast"])) for e in obj["issued"]),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CalibrationState):
            return NotImplemented
        return (
            np.array_equal(self.log_adj, other.log_adj)
            and len(self.issued) == len(other.issued)
            and all(
                t == u and np.array_equal(f, g, equal_nan=True)
                for (t, f), (u, g) in zip(self.issued, other.issued, strict=True)
            )
        )

    __hash__ = None  # type: ignore[assignment]


def update_log_adj(
    log_adj: np.ndarray,
    matured: np.ndarray,
    outcome: np.ndarray,
    quantiles: tuple[float, ...] | np.ndarray,
    gamma: float,
) -> np.ndarray:
    """One step of the Gibbs & Candes (2021) rule; returns a new ``[H, Q]`` array (inputs untouched).

    ``matured`` ``[H, Q]`` req/s: row h-1 is the forecast for horizon h issued h minutes ago, whose target
    minute has just completed; ``outcome`` ``[H]`` req/s: that minute's true peak, NaN where there is
    nothing to score (no such forecast, or the minute unobserved), which leaves the row unchanged.
    Elsewhere ``log_adj[h-1, j] + gamma * (miss - (1 - q_j))`` with ``miss = outcome > matured``.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    seen = ~np.isnan(outcome)
    miss = (outcome[:, None] > matured).astype(np.float64)
    return log_adj + np.where(seen[:, None], gamma * (miss - (1.0 - q)), 0.0)


def online_factors(base: Calibration | None, log_adj: np.ndarray) -> np.ndarray:
    """``[H, Q]`` factors: the fit ones (1 where ``base`` is None) times ``exp(log_adj)``."""
    adj = np.exp(log_adj)
    return adj if base is None else base.factors * adj


def bounded_log_adj(base: Calibration | None, log_adj: np.ndarray) -> np.ndarray:
    """``log_adj`` clipped so that every factor ``online_factors(base, log_adj)`` lies within
    ``FACTOR_BOUNDS`` (the projection step of the bounded rule)."""
    log_base = np.zeros_like(log_adj) if base is None else np.log(base.factors)
    lo, hi = np.log(FACTOR_BOUNDS[0]), np.log(FACTOR_BOUNDS[1])
    return np.clip(log_adj, lo - log_base, hi - log_base)


def calibration_step(
    raw: np.ndarray,
    last_peak: float,
    origin_minute: int,
    state: CalibrationState,
    quantiles: tuple[float, ...],
    base: Calibration | None,
    gamma: float = DEFAULT_GAMMA,
) -> tuple[np.ndarray, CalibrationState]:
    """The bounded rule's step on arrays, pure: ``(forecast [H, Q] req/s, new state)``.

    ``raw`` ``[H, Q]`` req/s: this origin's forecast before calibration; ``last_peak`` req/s: the true
    peak of the minute that just ended (NaN: unobserved, nothing scored); ``origin_minute`` in epoch
    minutes. The forecasts in ``state`` issued h minutes ago are scored (horizon h matures now), the
    log factors updated by :func:`update_log_adj` and clipped by :func:`bounded_log_adj`, and the forecast
    is ``monotone(floored(raw) * online_factors(base, log_adj))``, recorded in the new state."""
    h_n = state.horizon
    issued = dict(state.issued)
    matured = np.full((h_n, state.n_quantiles), np.nan)
    outcome = np.full(h_n, np.nan)
    for h in range(1, h_n + 1):  # the forecast of origin t for horizon h matures at t + h
        f = issued.get(origin_minute - h)
        if f is not None:
            matured[h - 1] = f[h - 1]
            outcome[h - 1] = last_peak
    log_adj = bounded_log_adj(base, update_log_adj(state.log_adj, matured, outcome, quantiles, gamma))
    pred = monotone(floored(raw) * online_factors(base, log_adj))
    issued[origin_minute] = pred
    kept = tuple((t, f) for t, f in issued.items() if t > origin_minute - h_n)
    return pred, CalibrationState(log_adj, kept)


def calibrated_forecast(
    inner: RawQuantileForecaster, history: History, state: CalibrationState, gamma: float = DEFAULT_GAMMA
) -> tuple[np.ndarray, CalibrationState]:
    """One controller step, pure: ``(forecast [H, Q] req/s, new state)``; ``state`` is not changed.

    The forecasts in ``state`` whose target minute is the last minute of ``history`` (issued h minutes
    before this origin, for horizon h) are scored against ``history.peak[-1]`` and the log factors are
    updated by :func:`update_log_adj` (Gibbs & Candes 2021) and kept within bounds; then the forecast is
    ``inner``'s raw quantiles (floored) times ``inner.calibration`` times ``exp(log_adj)``, sorted
    (:func:`monotone`); :func:`calibration_step` on arrays. The new
    state records it under this origin (epoch minutes) and drops forecasts issued ``H`` or more minutes
    ago (fully matured). Call once per minute, in order: the last minute of ``history`` is taken to be
    the minute before its origin.
    """
    h_n = state.horizon
    if (inner.horizon, len(inner.quantiles)) != (h_n, state.n_quantiles):
        raise ValueError(f"state is [{h_n}, {state.n_quantiles}], forecaster [{inner.horizon}, {len(inner.quantiles)}]")
    origin = int(round(history.origin_epoch_s / 60.0))
    y = float(history.peak[-1]) if history.peak.size else math.nan
    raw = inner.raw_rows(rows_of(history))[0]
    return calibration_step(raw, y, origin, state, tuple(inner.quantiles), inner.calibration, gamma)


def online_forecasts(
    raw: np.ndarray,
    y: np.ndarray,
    valid: np.ndarray,
    base: Calibration | None,
    quantiles: tuple[float, ...],
    gamma: float = DEFAULT_GAMMA,
) -> np.ndarray:
    """Calibrated forecasts ``[N, H, Q]`` req/s for N consecutive origins (one minute apart), starting from
    :meth:`CalibrationState.initial`, each using only outcomes that had matured by its origin: the same
    rule as a sequence of :func:`calibrated_forecast` steps, replayed in batch for evaluation.
    raw ``[N, H, Q]`` req/s before calibration; y ``[N, H]`` true peaks req/s, valid ``[N, H]`` bool."""
    n, h_n, _ = raw.shape
    hs = np.arange(h_n)  # row h-1 = horizon h
    log_adj = np.zeros((h_n, len(quantiles)))
    y_seen = np.where(valid, y, np.nan)
    out = np.full_like(raw, np.nan)
    for k in range(n):
        j = k - 1 - hs  # the forecast of origin k-h for horizon h matures now
        ok = j >= 0
        jj = np.where(ok, j, 0)
        outcome = np.where(ok, y_seen[jj, hs], np.nan)
        log_adj = bounded_log_adj(base, update_log_adj(log_adj, out[jj, hs], outcome, quantiles, gamma))
        out[k] = monotone(floored(raw[k]) * online_factors(base, log_adj))
    return out


class OnlineCalibrated:
    """A stateful convenience around :func:`calibrated_forecast`: wraps a forecaster (its ``raw_rows``
    and ``calibration``) and holds its :class:`CalibrationState` in :attr:`state`.

    Call :meth:`forecast` once per step (every minute) with the controller's history; forecasts
    issued earlier are scored against the peaks that history now shows. A controller that persists
    the state passes it in (``state=CalibrationState.from_json(...)``) and saves ``self.state.to_json()``.
    """

    def __init__(
        self,
        inner: RawQuantileForecaster,
        gamma: float = DEFAULT_GAMMA,
        name: str = "",
        state: CalibrationState | None = None,
    ) -> None:
        self.inner = inner
        self.gamma = gamma
        self.horizon: int = inner.horizon
        self.quantiles: tuple[float, ...] = inner.quantiles
        self.name = name or f"{inner.name} online"
        self.state = state if state is not None else CalibrationState.initial(self.horizon, len(self.quantiles))
        if (self.state.horizon, self.state.n_quantiles) != (self.horizon, len(self.quantiles)):
            raise ValueError(
                f"state is [{self.state.horizon}, {self.state.n_quantiles}], forecaster [{self.horizon}, "
                f"{len(self.quantiles)}]"
            )

    @property
    def factors(self) -> np.ndarray:
        """``[H, Q]`` factors now applied to the inner forecaster's raw quantiles."""
        return self.state.factors(self.inner.calibration)

    def forecast(self, history: History) -> np.ndarray:
        """``[H, Q]`` req/s; advances :attr:`state`."""
        pred, self.state = calibrated_forecast(self.inner, history, self.state, self.gamma)
        return pred

    def forecast_rows(self, rows: HistoryRows) -> np.ndarray:
        raise NotImplementedError("online calibration is sequential: use online_forecasts for a batch")
