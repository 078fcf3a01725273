"""Linear quantile regression on the LSTM's own features: the strong simple baseline.

One linear map from the flattened features (the last hour's peak, mean and yesterday-peak ratios,
the static features, a constant; no clock: see :mod:`predictor.features`) to the ``H x Q`` peak
ratios, fit with the pinball loss (:mod:`predictor.train`, torch subgradient steps: sklearn's exact
``QuantileRegressor`` takes minutes per output on 20k rows x 45 outputs). Run time is one numpy
matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from predictor.baselines import CalibratedQuantiles
from predictor.calibration import Calibration, monotone
from predictor.features import HORIZON, QUANTILES, Features, HistoryRows, build_features


def design(f: Features) -> np.ndarray:
    """``[N, D]`` float32, D = 3 x WINDOW + len(STATIC_FEATURES) + 1: peak, mean and yesterday-peak ratio
    of each window minute, the static features, a constant 1 (last column)."""
    seq = f.seq
    n = seq.shape[0]
    parts = (seq[:, :, 0], seq[:, :, 1], seq[:, :, 3], f.static, np.ones((n, 1), np.float32))
    return np.concatenate(parts, axis=1).astype(np.float32)


@dataclass
class LinearQuantileForecaster(CalibratedQuantiles):
    """``ratio = X @ W`` then rearranged, scaled by the level and the calibration factors."""

    weights: np.ndarray  # [D, H*Q]
    calibration: Calibration | None = None
    name: str = "quantile regression"
    horizon: int = HORIZON
    quantiles: tuple[float, ...] = QUANTILES

    def raw_rows(self, rows: HistoryRows) -> np.ndarray:
        f = build_features(rows)
        ratio = (design(f) @ self.weights).reshape(len(f), self.horizon, len(self.quantiles))
        return monotone(ratio) * f.level[:, None, None]
