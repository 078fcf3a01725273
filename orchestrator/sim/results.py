"""What one simulated run produces (``mark simulate`` tables, JSON, CSV and plots read only this).

Per-minute series are aligned: index m covers simulated seconds [60 m, 60 m + 60). Money in USD,
latencies in ms, rates in requests per second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class MinuteSeries:
    """Per simulated minute."""

    arrivals: tuple[int, ...]  # requests that arrived in the minute
    peak_rps: tuple[float, ...]  # the minute's highest per-second arrival count
    forecast_rps: tuple[tuple[float, ...], ...]  # per minute: the forecast quantiles for it made one step
    # ahead (empty tuple where the controller made none)
    quantiles: tuple[float, ...]  # the forecast's quantiles, e.g. (0.5, 0.9, 0.99)
    fleet: dict[str, tuple[int, ...]]  # "type/market" -> instances serving (running, not draining) per minute
    booting: tuple[int, ...]  # instances launched and not yet serving
    lambda_requests: tuple[int, ...]
    latency_p50_ms: tuple[float, ...]  # NaN for a minute without answers
    latency_p99_ms: tuple[float, ...]
    on_time: tuple[int, ...]  # answered within RTmax, by arrival minute
    cost_usd: tuple[float, ...]  # cumulative cost at the end of the minute (instances + Lambda)


@dataclass(frozen=True)
class SimResult:
    """One policy on one trace window. Every arrival ends in exactly one of on_time, late, rejected."""

    policy: str
    seconds: int  # simulated
    arrivals: int
    on_time: int  # answered within RTmax
    late: int  # answered after RTmax
    rejected: int  # answered 503 (queue bound) or 429 (Lambda throttled), never silently dropped
    lambda_requests: int
    latency_p50_ms: float
    latency_p99_ms: float
    instance_usd: float
    lambda_usd: float
    instance_hours: dict[str, float]  # "type/market" -> billed hours
    launches: int
    interruptions: int  # spot notices received
    wall_seconds: float  # how long the simulation took
    series: MinuteSeries
    ticks: tuple[dict[str, Any], ...] = field(default=(), repr=False)  # the decision log (Tick.record())
    notes: tuple[str, ...] = ()  # what the policy did that a reader should know (e.g. fell back)

    @property
    def total_usd(self) -> float:
        return self.instance_usd + self.lambda_usd

    @property
    def usd_per_million(self) -> float:
        return self.total_usd / self.arrivals * 1e6 if self.arrivals else float("nan")

    @property
    def slo_attainment(self) -> float:
        """Share of arrivals answered within RTmax (late and rejected count against it)."""
        return self.on_time / self.arrivals if self.arrivals else float("nan")

    @property
    def lambda_share(self) -> float:
        return self.lambda_requests / self.arrivals if self.arrivals else 0.0

    def summary(self) -> dict[str, Any]:
        """The headline figures, JSON-able (no series, no decision log)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("series", "ticks")}
        out.update(
            total_usd=self.total_usd,
            usd_per_million=self.usd_per_million,
            slo_attainment=self.slo_attainment,
            lambda_share=self.lambda_share,
        )
        return out
