"""A window of a trace for the simulator: which seconds, at what scale, as whole arrivals per second.

Collection gaps (NaN seconds, ``predictor.traces.mark_gaps``) carry no arrivals. A scale that is not a
whole number is applied by seeded stochastic rounding (a second of 2.4 expected arrivals gets 2 or 3,
3 with probability 0.4), so the scaled trace keeps its mean and stays whole requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from predictor.features import HISTORY_MINUTES
from predictor.online import WARM_UP_MINUTES
from predictor.traces import Trace

DAY_S = 86_400
# what the controller is given before the window: the forecaster's look-back (25 h) for each of the
# WARM_UP_MINUTES (a day) it replays first to adapt its online state (controller/forecasting.py)
HISTORY_S = 60 * (HISTORY_MINUTES + WARM_UP_MINUTES)


class WindowError(ValueError):
    """A window the trace cannot give; the message says what the trace has."""


@dataclass(frozen=True)
class TraceWindow:
    """``counts[i]``: arrivals in second i of the window; ``epoch0_s``: the calendar time of second 0
    (POSIX seconds; the trace's own phase when it has no clock); ``label``: e.g. the dates covered."""

    counts: np.ndarray
    epoch0_s: float
    offset_s: int  # second 0's index in the whole trace
    label: str
    history: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    # arrivals per second before the window (up to HISTORY_S), scaled the same way

    @property
    def seconds(self) -> int:
        return int(self.counts.size)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _parse_bound(text: str, trace: Trace, flag: str) -> int:
    """A second of the trace: whole seconds from its start, or an ISO 8601 time when it has a clock."""
    try:
        return int(text)
    except ValueError:
        pass
    if trace.start_epoch_s is None:
        raise WindowError(
            f"{flag} {text!r}: give whole seconds from the trace's start (e.g. 86400); ISO times need a trace "
            "with a clock, and this one has none"
        )
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise WindowError(f"{flag} {text!r}: not a number of seconds nor an ISO 8601 time") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return round(at.timestamp() - trace.start_epoch_s)


def trace_window(
    trace: Trace,
    *,
    days: float | None = None,
    start: str | None = None,
    end: str | None = None,
    scale: float = 1.0,
    seed: int = 0,
) -> TraceWindow:
    """The last ``days`` full days of ``trace`` (default 1), or ``start``..``end`` (seconds from the
    trace's start or ISO times), scaled.

    Raises:
        WindowError: both or neither forms, a window outside the trace or empty, a bad scale.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise WindowError(f"--scale must be a number > 0, got {scale}")
    n = trace.seconds
    if days is not None and (start is not None or end is not None):
        raise WindowError("give --days or --start/--end, not both")
    if start is None and end is None:
        d = 1.0 if days is None else days
        if not (math.isfinite(d) and d > 0):
            raise WindowError(f"--days must be > 0, got {d}")
        whole = n // DAY_S * DAY_S  # full days from the trace's start (its phase), the last ones
        length = round(d * DAY_S)
        if length > whole:
            raise WindowError(f"--days {d:g}: the trace holds {n / DAY_S:.2f} days ({whole // DAY_S} full)")
        lo, hi = whole - length, whole
    else:
        lo = _parse_bound(start, trace, "--start") if start is not None else 0
        hi = _parse_bound(end, trace, "--end") if end is not None else n
        if not 0 <= lo < hi <= n:
            raise WindowError(f"window {lo}..{hi} s is outside the trace (0..{n} s) or empty")
    h0 = max(0, lo - HISTORY_S)
    rates = np.nan_to_num(trace.per_second[h0:hi], nan=0.0) * scale
    whole_part = np.floor(rates)
    extra = np.random.default_rng(seed).random(rates.size) < rates - whole_part
    scaled = (whole_part + extra).astype(np.int64)
    counts, history = scaled[lo - h0 :], scaled[: lo - h0]
    epoch0 = trace.epoch0 + lo
    label = f"{_when(epoch0)} to {_when(epoch0 + (hi - lo))} UTC" if trace.start_epoch_s is not None else f"s {lo}-{hi}"
    return TraceWindow(counts, epoch0, lo, label + (f", x{scale:g}" if scale != 1 else ""), history)
