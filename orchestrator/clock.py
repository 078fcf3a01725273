"""Clocks (DESIGN.md §6): the one notion of "now" that mechanisms take, so that a controller step, the
local cloud and the simulator can run on wall time, on scaled time or on a clock a test moves.

Times are seconds as floats; only differences mean anything (monotonic, not calendar time).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since an arbitrary origin, never decreasing."""
        ...


class WallClock:
    """Real time (``time.monotonic``): the live system."""

    def now(self) -> float:
        return time.monotonic()


class ScaledClock:
    """Seconds since start, running ``1 / time_factor`` times faster than the wall clock: the local
    cloud's virtual time, so a day of trace replays in minutes while boot times and billing are still
    counted in the seconds the cloud would see.

    Raises:
        ValueError: ``time_factor`` is not > 0.
    """

    def __init__(self, time_factor: float = 1.0) -> None:
        if not time_factor > 0:
            raise ValueError(f"time_factor must be > 0, got {time_factor}")
        self.time_factor = time_factor
        self._t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._t0) / self.time_factor

    def wall_seconds(self, virtual_seconds: float) -> float:
        """How long ``virtual_seconds`` take in real time."""
        return virtual_seconds * self.time_factor


class ManualClock:
    """A clock that moves only when told (tests, the simulator).

    Raises:
        ValueError: ``advance`` by a negative or non-finite amount.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if not (seconds >= 0 and seconds != float("inf")):
            raise ValueError(f"a clock only moves forward by a finite amount, got {seconds}")
        self._now += seconds
        return self._now
