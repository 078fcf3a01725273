"""Multiplicative split-conformal calibration per (horizon, quantile), fit on validation days.

For each horizon h and quantile q, the factor c[h, q] is the conformal q-quantile of ``y / yhat[h, q]``
over the validation origins (the ``ceil((n+1) q)``-th smallest of n ratios, the finite-sample rule), so that
``c * yhat`` covers q of validation peaks. The same rule turns a point forecaster (the same value
for every quantile) into a quantile forecaster: its factors are the empirical quantiles of the
multiplicative residual. Scaling quantiles independently can cross them; :func:`monotone` sorts
them back (rearrangement), which never makes any pinball loss worse.

Robust on sparse traffic: factors multiply ``floored(raw)``, the raw forecast raised to
``RATE_FLOOR_RPS`` (1 req/s, the smallest non-zero per-second peak a trace can show), never a
forecast of 0 (a mostly idle service's last value, seasonal naive, even its LSTM): where the raw value
is 0, a multiplicative factor cannot fix a miss and the fit (or an online rule) drives it without bound
(factors of 1e4-1e9 were seen on a sparse trace with a 1e-6 floor). On the floor the factor acts as an
additive term in req/s. Every factor, fit or adapted online, also stays within ``FACTOR_BOUNDS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RATE_FLOOR_RPS = 1.0  # req/s: one request in the peak second, the smallest non-zero peak
FACTOR_BOUNDS = (0.01, 100.0)  # every calibration factor, fit or online, stays within these


def floored(raw: np.ndarray) -> np.ndarray:
    """``raw`` req/s raised to ``RATE_FLOOR_RPS``: what calibration factors multiply."""
    return np.maximum(raw, RATE_FLOOR_RPS)


def monotone(pred: np.ndarray) -> np.ndarray:
    """Quantiles non-decreasing along the last axis (p50 <= p90 <= p99) and non-negative."""
    return np.maximum.accumulate(np.maximum(pred, 0.0), axis=-1)


@dataclass(frozen=True)
class Calibration:
    """Factors ``[H, Q]`` multiplying raw quantile forecasts."""

    factors: np.ndarray

    @staticmethod
    def identity(horizon: int, n_quantiles: int) -> Calibration:
        return Calibration(np.ones((horizon, n_quantiles)))

    @staticmethod
    def fit(raw: np.ndarray, y: np.ndarray, valid: np.ndarray, quantiles: tuple[float, ...]) -> Calibration:
        """raw ``[N, H, Q]``, y and valid ``[N, H]``."""
        _, h_n, q_n = raw.shape
        f = np.ones((h_n, q_n))
        for h in range(h_n):
            ok = valid[:, h]
            for j, q in enumerate(quantiles):
                r = np.sort(y[ok, h] / floored(raw[ok, h, j]))
                if r.size == 0:
                    continue
                k = min(r.size, math.ceil((r.size + 1) * q))  # the k-th smallest ratio
                f[h, j] = float(r[k - 1])
        return Calibration(np.clip(f, *FACTOR_BOUNDS))

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated quantiles: ``monotone(floored(raw) * factors)``, raw ``[..., H, Q]`` req/s."""
        return monotone(floored(raw) * self.factors)

    def to_json(self) -> list[list[float]]:
        return [[round(float(v), 6) for v in row] for row in self.factors]

    @staticmethod
    def from_json(rows: list[list[float]]) -> Calibration:
        return Calibration(np.asarray(rows, dtype=np.float64))
