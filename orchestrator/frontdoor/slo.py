"""Sliding-window SLO attainment: the share of requests answered within RTmax, per window."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowStats:
    window_s: float
    requests: int
    within_slo: int
    p50_ms: float | None
    p99_ms: float | None

    @property
    def attainment(self) -> float | None:
        return self.within_slo / self.requests if self.requests else None


class SloTracker:
    """Keeps (finish time, latency) for the longest window; cheap enough per request at 10k req/s."""

    def __init__(self, rt_max_ms: float, windows_s: tuple[float, ...] = (10.0, 60.0)) -> None:
        self.rt_max_ms = rt_max_ms
        self.windows_s = windows_s
        self._events: deque[tuple[float, float, bool]] = deque()
        self.total = 0
        self.total_within = 0

    def record(self, finished_at_s: float, latency_ms: float, ok: bool = True) -> None:
        """``ok=False`` (a 5xx: rejected, failed) never counts as within the SLO, however fast."""
        within = ok and latency_ms <= self.rt_max_ms
        self._events.append((finished_at_s, latency_ms, within))
        self.total += 1
        self.total_within += within
        horizon = finished_at_s - max(self.windows_s)
        while self._events and self._events[0][0] < horizon:
            self._events.popleft()

    def window(self, now_s: float, window_s: float) -> WindowStats:
        recent = [(ms, ok) for t, ms, ok in self._events if t >= now_s - window_s]
        if not recent:
            return WindowStats(window_s, 0, 0, None, None)
        lat = sorted(ms for ms, _ in recent)
        within = sum(ok for _, ok in recent)
        return WindowStats(window_s, len(lat), within, lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))])

    @property
    def attainment(self) -> float | None:
        return self.total_within / self.total if self.total else None
