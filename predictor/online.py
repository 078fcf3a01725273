"""Online calibration: keep each quantile's coverage honest as outcomes arrive (adaptive conformal).

Factors fit on the training trace's validation days are right for that trace. On another trace (or
after a shift) the p90 can cover far less than 90 %. A live controller sees every outcome a few
minutes later, so each (horizon h, quantile q) factor is nudged when its forecast matures
(Gibbs & Candes, "Adaptive conformal inference under distribution shift", 2021, on a log factor):

    log f[h, q] += gamma * (miss - (1 - q)),    miss = 1 if the true peak exceeded the forecast

Over any window the miss rate is driven to 1 - q; nothing of the model is retrained. The forecast of
origin t for horizon h (minute t+h-1) matures at origin t+h. :class:`OnlineCalibrated` does this at run
time around any forecaster (it remembers the forecasts it issued); :func:`online_forecasts` replays
the same rule over a batch of consecutive origins for evaluation (tests check the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from predictor.calibration import Calibration, monotone
from predictor.features import History, HistoryRows, rows_of

DEFAULT_GAMMA = 0.01


def online_forecasts(
    raw: np.ndarray,
    y: np.ndarray,
    valid: np.ndarray,
    base: Calibration,
    quantiles: tuple[float, ...],
    gamma: float = DEFAULT_GAMMA,
) -> np.ndarray:
    """Calibrated forecasts ``[N, H, Q]`` for N consecutive origins (one minute apart), each using only
    outcomes that had matured by its origin. raw ``[N, H, Q]``; y, valid ``[N, H]``."""
    n, h_n, _ = raw.shape
    q = np.asarray(quantiles, dtype=np.float64)
    log_adj = np.zeros((h_n, q.size))
    out = np.empty_like(raw)
    for k in range(n):
        for h in range(1, h_n + 1):  # forecast of origin k-h for horizon h matures now
            j = k - h
            if j >= 0 and valid[j, h - 1]:
                log_adj[h - 1] += gamma * ((y[j, h - 1] > out[j, h - 1]).astype(np.float64) - (1.0 - q))
        out[k] = monotone(raw[k] * base.factors * np.exp(log_adj))
    return out


@dataclass
class OnlineCalibrated:
    """Wraps a forecaster (its ``raw_rows`` and ``calibration``) with online factor updates.

    Call :meth:`forecast` once per step (every minute) with the controller's history; forecasts
    issued earlier are scored against the peaks that history now shows.
    """

    inner: object
    gamma: float = DEFAULT_GAMMA
    name: str = ""
    _log_adj: np.ndarray = field(init=False)
    _issued: dict[int, np.ndarray] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.horizon: int = self.inner.horizon  # type: ignore[attr-defined]
        self.quantiles: tuple[float, ...] = self.inner.quantiles  # type: ignore[attr-defined]
        self.name = self.name or f"{self.inner.name} online"  # type: ignore[attr-defined]
        self._log_adj = np.zeros((self.horizon, len(self.quantiles)))

    @property
    def factors(self) -> np.ndarray:
        base = self.inner.calibration  # type: ignore[attr-defined]
        f = np.ones_like(self._log_adj) if base is None else base.factors
        return f * np.exp(self._log_adj)

    def forecast(self, history: History) -> np.ndarray:
        origin = int(round(history.origin_epoch_s / 60.0))
        q = np.asarray(self.quantiles)
        n = history.peak.size
        for t, issued in sorted(self._issued.items()):
            for h in range(1, self.horizon + 1):
                if t + h == origin:  # minute t+h-1 has just completed: index n-1 of the history
                    y = history.peak[n - 1] if n else np.nan
                    if not np.isnan(y):
                        self._log_adj[h - 1] += self.gamma * ((y > issued[h - 1]).astype(np.float64) - (1.0 - q))
        raw = self.inner.raw_rows(rows_of(history))[0]  # type: ignore[attr-defined]
        pred = monotone(raw * self.factors)
        self._issued[origin] = pred
        for t in [t for t in self._issued if t <= origin - self.horizon]:
            del self._issued[t]
        return pred

    def forecast_rows(self, rows: HistoryRows) -> np.ndarray:
        raise NotImplementedError("online calibration is sequential: use online_forecasts for a batch")
