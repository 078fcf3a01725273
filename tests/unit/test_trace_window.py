"""The simulator's trace window: which seconds, whole arrivals, scale kept on average."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.workload.window import DAY_S, WindowError, trace_window
from predictor.traces import Trace


def trace(seconds: int, clock: float | None = None) -> Trace:
    per_second = np.arange(seconds, dtype=np.float64) % 7
    per_second[5] = np.nan  # a collection gap
    return Trace(per_second, "t", clock)


def test_the_last_full_day_by_default_and_gaps_carry_no_arrivals() -> None:
    t = trace(2 * DAY_S + 500)
    w = trace_window(t)
    assert (w.offset_s, w.seconds) == (DAY_S, DAY_S) and w.label == f"s {DAY_S}-{2 * DAY_S}"
    assert np.array_equal(w.counts, (np.arange(DAY_S, 2 * DAY_S) % 7).astype(np.int64))
    assert trace_window(t, days=2).counts[5] == 0


def test_start_end_as_seconds_or_iso_times_with_a_clock() -> None:
    t = trace(3 * DAY_S, clock=1_627_776_000.0)  # 2021-08-01 00:00 UTC
    w = trace_window(t, start="2021-08-02T06:00:00", end="2021-08-02T07:00:00")
    assert (w.offset_s, w.seconds, w.epoch0_s) == (DAY_S + 6 * 3600, 3600, 1_627_776_000.0 + DAY_S + 6 * 3600)
    assert w.label == "2021-08-02 06:00 to 2021-08-02 07:00 UTC"
    assert trace_window(t, start="100", end="200").seconds == 100


def test_a_fractional_scale_keeps_the_mean_in_whole_requests() -> None:
    t = Trace(np.full(DAY_S, 2.0), "t")
    w = trace_window(t, scale=1.2, seed=3)
    assert set(np.unique(w.counts)) == {2, 3} and abs(w.counts.mean() - 2.4) < 0.01
    assert np.array_equal(w.counts, trace_window(t, scale=1.2, seed=3).counts)  # seeded
    assert np.all(trace_window(t, scale=20).counts == 40)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": 3}, "--days 3: the trace holds 2.01 days"),
        ({"days": 1, "start": "0"}, "not both"),
        ({"start": "10", "end": "5"}, "outside the trace"),
        ({"start": "2021-08-01"}, "ISO times need a trace with a clock, and this one has none"),
        ({"start": "abc"}, "--start 'abc': give whole seconds from the trace's start"),
        ({"scale": 0.0}, "--scale must be a number > 0"),
    ],
)
def test_bad_windows_say_what_the_trace_has(kwargs: dict, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        trace_window(trace(2 * DAY_S + 500), **kwargs)
