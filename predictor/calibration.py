"""Multiplicative split-conformal calibration per (horizon, quantile), fit on validation days.

For each horizon h and quantile q, the factor c[h, q] is the conformal q-quantile of ``y / yhat[h, q]``
over the validation origins (the ``ceil((n+1) q)``-th smallest of n ratios, the finite-sample rule), so that
``c * yhat`` covers q of validation peaks. The same rule turns a point forecaster (the same value
for every quantile) into a quantile forecaster: its factors are the empirical quantiles of the
multiplicative residual. Scaling quantiles independently can cross them; :func:`monotone` sorts
them back (rearrangement), which never makes any pinball loss worse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRED_FLOOR = 1e-6


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
                r = np.sort(y[ok, h] / np.maximum(raw[ok, h, j], PRED_FLOOR))
                if r.size == 0:
                    continue
                k = min(r.size, math.ceil((r.size + 1) * q))  # the k-th smallest ratio
                f[h, j] = float(r[k - 1])
        return Calibration(f)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return monotone(raw * self.factors)

    def to_json(self) -> list[list[float]]:
        return [[round(float(v), 6) for v in row] for row in self.factors]

    @staticmethod
    def from_json(rows: list[list[float]]) -> Calibration:
        return Calibration(np.asarray(rows, dtype=np.float64))
