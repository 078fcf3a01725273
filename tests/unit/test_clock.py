"""Clocks: manual time moves only when told; scaled time runs 1/time_factor as fast as the wall."""

from __future__ import annotations

import time

import pytest

from orchestrator.clock import ManualClock, ScaledClock, WallClock


def test_manual_clock_moves_only_forward_and_only_when_told() -> None:
    c = ManualClock(10.0)
    assert c.now() == 10.0 == c.now()
    assert c.advance(2.5) == 12.5 and c.now() == 12.5
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="moves forward"):
            c.advance(bad)
    assert c.now() == 12.5


def test_scaled_clock_runs_faster_than_the_wall_by_the_time_factor() -> None:
    c = ScaledClock(0.01)  # 100 virtual seconds per real second
    t0, w0 = c.now(), time.monotonic()
    time.sleep(0.05)
    virtual, wall = c.now() - t0, time.monotonic() - w0
    assert virtual == pytest.approx(wall / 0.01, rel=0.05)
    assert c.wall_seconds(100.0) == pytest.approx(1.0)
    w = WallClock()
    a = w.now()
    time.sleep(0.01)
    assert w.now() - a == pytest.approx(0.01, abs=0.05) and w.now() >= a
    with pytest.raises(ValueError, match="time_factor must be > 0"):
        ScaledClock(0.0)
