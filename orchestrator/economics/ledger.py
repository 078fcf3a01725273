"""The one cost ledger (DESIGN.md "Cost ledger"), shared by the live system and the simulator.

Pure accounting over explicit timestamps: callers pass the time of every instance event and of
every snapshot (a monotonic clock in the live system, the virtual clock in the simulator), so the
same sequence of events costs the same in both. No clock reads, no I/O.

How AWS bills, as modelled here (figures from profiles/catalog.yaml):
- EC2 (Linux, On-Demand and Spot): per second, with a minimum of 60 s each time an instance starts.
  A launch that lives 30 s costs 60 s; one that lives 90 s costs 90 s. Partial seconds round up to
  the billing increment. Spot is billed at the catalog's typical spot price; an EC2-initiated spot
  interruption is billed like a stop.
- Lambda: GB-seconds = billed_ms/1000 x memory_mb/1024 at the per-architecture GB-s price, plus the
  per-request price for every invocation. Tier 1 prices, no free tier; extra ephemeral storage
  (above the 512 MB included) is not billed because our function does not configure any.
Lambda GB-ms are accumulated as exact integers (MB-ms) and priced once per snapshot, so totals do
not drift over millions of invocations.

Served requests are counted separately (``requests``) from Lambda invocations: cost per 1M
requests divides by what was answered, and an invocation that failed or was retried still costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from orchestrator.economics.catalog import ARCHITECTURES, Catalog
from orchestrator.economics.lambda_price import compute_usd

Route = Literal["instance", "lambda"]
ROUTES: tuple[str, ...] = get_args(Route)

# Timestamps come from float clocks; a difference of 90.0000000001 s should bill 90 s, not 91 s.
_SECOND_ROUNDING_SLACK = 1e-6


class LedgerError(ValueError):
    """An accounting call that cannot be right (unknown instance, time running backwards, bad unit)."""


@dataclass(frozen=True)
class CostSnapshot:
    """Cost so far at ``at_s``. Instance figures bill running instances up to ``at_s`` (60 s minimum)."""

    at_s: float
    instance_usd: float  # EC2, on-demand and spot together
    spot_usd: float  # the spot part of instance_usd
    lambda_compute_usd: float
    lambda_request_usd: float
    total_usd: float
    requests_instance: int  # requests answered by an instance
    requests_lambda: int  # requests answered by Lambda
    usd_per_million_requests: float | None  # None before the first served request
    instance_seconds: float  # billed instance-seconds (with the per-launch minimum)
    lambda_gb_seconds: float
    lambda_invocations: int
    instances_running: int

    @property
    def requests_total(self) -> int:
        return self.requests_instance + self.requests_lambda

    @property
    def requests_by_route(self) -> dict[str, int]:
        return {"instance": self.requests_instance, "lambda": self.requests_lambda}

    @property
    def lambda_usd(self) -> float:
        return self.lambda_compute_usd + self.lambda_request_usd

    @property
    def on_demand_usd(self) -> float:
        return self.instance_usd - self.spot_usd


@dataclass
class _Launch:
    """One start..stop span of one instance: EC2 applies its minimum to each such span."""

    instance_id: str
    instance_type: str
    market: str
    usd_per_hour: float
    start_s: float
    stop_s: float | None = None


class CostLedger:
    """Accumulates instance launches, Lambda invocations and served requests; prices them on snapshot."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._min_billed_s = float(catalog.ec2_billing.min_billed_seconds_per_launch.value)
        self._increment_s = float(catalog.ec2_billing.billing_increment_seconds.value)
        self._launches: list[_Launch] = []
        self._running: dict[str, _Launch] = {}
        self._stopped_at: dict[str, float] = {}  # last stop of ids not running now, for error messages
        self._last_event_s = -math.inf
        self._lambda_mb_ms: dict[str, float] = {arch: 0.0 for arch in ARCHITECTURES}
        self._lambda_invocations = 0.0
        self._requests: dict[str, int] = {route: 0 for route in ROUTES}

    # --- instances ---------------------------------------------------------------------------

    def instance_started(
        self, instance_id: str, instance_type: str, market: str, at_s: float, usd_per_hour: float | None = None
    ) -> None:
        """Start billing ``instance_id`` at ``at_s`` (when EC2 reports it running, or when launched).

        ``usd_per_hour``: the hourly price to bill this launch at, for a service priced otherwise than
        EC2 (the simulator's SageMaker baseline bills the catalog's ``sagemaker_realtime_usd_per_hour``);
        None (the default): the catalog's EC2 price for ``(instance_type, market)``. The type and
        market are validated against the catalog either way, and the 60 s minimum applies alike.
        """
        at = _finite_time(at_s, "at_s")
        catalog_price = self.catalog.price_usd_per_hour(instance_type, market)  # validates both
        if usd_per_hour is None:
            usd_per_hour = catalog_price
        elif (
            isinstance(usd_per_hour, bool)
            or not isinstance(usd_per_hour, int | float)
            or not (math.isfinite(usd_per_hour) and usd_per_hour >= 0)
        ):
            raise LedgerError(f"usd_per_hour must be a finite number >= 0 or None, got {usd_per_hour!r}")
        if not isinstance(instance_id, str) or not instance_id:
            raise LedgerError(f"instance_id must be a non-empty string, got {instance_id!r}")
        running = self._running.get(instance_id)
        if running is not None:
            raise LedgerError(f"instance {instance_id!r} is already running (started at t={running.start_s:g} s)")
        launch = _Launch(instance_id, instance_type, market, float(usd_per_hour), at)
        self._launches.append(launch)
        self._running[instance_id] = launch
        self._stopped_at.pop(instance_id, None)
        self._last_event_s = max(self._last_event_s, at)

    def instance_stopped(self, instance_id: str, at_s: float) -> None:
        """Stop billing ``instance_id`` at ``at_s`` (terminated, stopped, or interrupted)."""
        at = _finite_time(at_s, "at_s")
        launch = self._running.get(instance_id)
        if launch is None:
            if instance_id in self._stopped_at:
                raise LedgerError(
                    f"instance {instance_id!r} is not running: already stopped at t={self._stopped_at[instance_id]:g} s"
                )
            raise LedgerError(f"instance {instance_id!r} is not running: it was never started in this ledger")
        if at < launch.start_s:
            raise LedgerError(
                f"instance {instance_id!r} cannot stop at t={at:g} s, before it started at t={launch.start_s:g} s"
            )
        launch.stop_s = at
        del self._running[instance_id]
        self._stopped_at[instance_id] = at
        self._last_event_s = max(self._last_event_s, at)

    def running_instances(self) -> dict[str, tuple[str, str, float]]:
        """instance_id -> (type, market, started at) of every instance being billed now."""
        return {i: (ln.instance_type, ln.market, ln.start_s) for i, ln in self._running.items()}

    def billed_seconds(self, run_s: float) -> float:
        """EC2's rule for one launch that has run ``run_s`` seconds: whole increments, 60 s minimum."""
        steps = math.ceil(max(0.0, run_s - _SECOND_ROUNDING_SLACK) / self._increment_s)
        return max(self._min_billed_s, steps * self._increment_s)

    # --- Lambda and requests -----------------------------------------------------------------

    def lambda_invocation(
        self, billed_duration_ms: int, memory_mb: int, architecture: str = "x86_64", weight: float = 1.0
    ) -> None:
        """Bill one invocation: Lambda's 'Billed Duration' (whole ms) at the function's memory size.

        ``weight``: how many invocations this one stands for (a replay compressed by a time factor f
        sends one request for 1/f of the workload it replays, as its instances bill virtual seconds).
        """
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not (math.isfinite(weight) and weight > 0)
        ):
            raise LedgerError(f"weight must be a finite number > 0, got {weight!r}")
        if isinstance(billed_duration_ms, bool) or not isinstance(billed_duration_ms, int) or billed_duration_ms < 1:
            raise LedgerError(
                "billed_duration_ms must be a whole number of milliseconds >= 1 (Lambda rounds up to 1 ms), "
                f"got {billed_duration_ms!r}"
            )
        mem = self.catalog.lambda_.memory_mb
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or not mem.min <= memory_mb <= mem.max:
            raise LedgerError(f"memory_mb must be a whole number of MB in {mem.min}..{mem.max}, got {memory_mb!r}")
        if architecture not in ARCHITECTURES:
            raise LedgerError(
                f"architecture must be one of {', '.join(map(repr, ARCHITECTURES))}, got {architecture!r}"
            )
        self._lambda_mb_ms[architecture] += billed_duration_ms * memory_mb * weight
        self._lambda_invocations += weight

    def requests(self, route: str, n: int = 1) -> None:
        """Count ``n`` requests answered via ``route`` ('instance' or 'lambda')."""
        if route not in ROUTES:
            raise LedgerError(f"route must be one of {', '.join(map(repr, ROUTES))}, got {route!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise LedgerError(f"n must be a whole number >= 0, got {n!r}")
        self._requests[route] += n

    # --- totals ------------------------------------------------------------------------------

    def snapshot(self, now_s: float) -> CostSnapshot:
        """Everything billed up to ``now_s``; running instances are billed as if stopped at ``now_s``."""
        now = _finite_time(now_s, "now_s")
        if now < self._last_event_s:
            raise LedgerError(
                f"now_s={now:g} is earlier than the last recorded instance event (t={self._last_event_s:g} s)"
            )
        instance_terms: list[float] = []
        spot_terms: list[float] = []
        billed_s: list[float] = []
        for ln in self._launches:
            end = ln.stop_s if ln.stop_s is not None else now
            secs = self.billed_seconds(end - ln.start_s)
            usd = secs * ln.usd_per_hour / 3600.0
            billed_s.append(secs)
            instance_terms.append(usd)
            if ln.market == "spot":
                spot_terms.append(usd)
        lam = self.catalog.lambda_
        compute = math.fsum(compute_usd(lam, 1.0, mb_ms, arch) for arch, mb_ms in self._lambda_mb_ms.items())
        request_usd = self._lambda_invocations * lam.usd_per_request
        instance_usd = math.fsum(instance_terms)
        total = math.fsum((instance_usd, compute, request_usd))
        served = sum(self._requests.values())
        return CostSnapshot(
            at_s=now,
            instance_usd=instance_usd,
            spot_usd=math.fsum(spot_terms),
            lambda_compute_usd=compute,
            lambda_request_usd=request_usd,
            total_usd=total,
            requests_instance=self._requests["instance"],
            requests_lambda=self._requests["lambda"],
            usd_per_million_requests=total / served * 1_000_000 if served else None,
            instance_seconds=math.fsum(billed_s),
            lambda_gb_seconds=math.fsum(mb_ms / 1024 / 1000 for mb_ms in self._lambda_mb_ms.values()),
            lambda_invocations=round(self._lambda_invocations),
            instances_running=len(self._running),
        )


def _finite_time(t: float, name: str) -> float:
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise LedgerError(f"{name} must be a finite number of seconds, got {t!r}")
    return float(t)
