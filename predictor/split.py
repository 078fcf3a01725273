"""Time-based split of forecast origins: train, then validation days, then the last (test) days.

No origin's targets cross into a later part (train targets end before validation starts, validation
targets before test starts), so nothing of the held-out days is seen while fitting. Test origins may
*read* earlier days as history: a live controller would have them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from predictor.features import DAY, HISTORY_MINUTES, HORIZON, MinuteSeries


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_start: int  # minute index
    test_start: int

    def val_origins_consecutive(self) -> np.ndarray:
        """Every origin from the validation start up to the first test origin (a warm-up run)."""
        return np.arange(self.val_start, self.test_start)

    def describe(self) -> str:
        def span(a: np.ndarray) -> str:
            return f"{a.size} origins, minutes {a[0]}..{a[-1]}" if a.size else "none"

        return f"train {span(self.train)}; validation {span(self.val)}; test {span(self.test)}"


def time_split(series: MinuteSeries, test_days: float = 4.0, val_days: float = 3.0, first: int | None = None) -> Split:
    """Origins per part; ``first`` defaults to one day + one hour (yesterday features complete)."""
    m = series.minutes
    test_start = m - int(round(test_days * DAY))
    val_start = test_start - int(round(val_days * DAY))
    first = HISTORY_MINUTES if first is None else first
    if val_start <= first:
        raise ValueError(
            f"trace too short: {m / DAY:.1f} days cannot hold {val_days} validation + {test_days} test days "
            f"after a {first / DAY:.2f}-day warm-up"
        )
    last = m - HORIZON  # origins whose H targets all lie inside the trace
    return Split(
        train=np.arange(first, val_start - HORIZON + 1),
        val=np.arange(val_start, test_start - HORIZON + 1),
        test=np.arange(test_start, last + 1),
        val_start=val_start,
        test_start=test_start,
    )
