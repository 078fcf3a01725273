"""Shared test doubles and builders (DESIGN.md §6): one way to make a pool, a fleet, a plan input, an
instance or a clock, so each test states only what matters to it.

Prices and boot times default to ``profiles/catalog.yaml``'s (a builder never invents a figure the
catalog has). ``ManualClock`` is the project's own (``orchestrator/clock.py``), the clock the
simulator will run on.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from orchestrator.clock import ManualClock
from orchestrator.cloud.base import Instance
from orchestrator.economics.catalog import Catalog, load_catalog
from orchestrator.policy.planning import ON_DEMAND, FleetInstance, LambdaOption, PlanInput, PoolOption
from orchestrator.types import InstanceState, Market

__all__ = ["ManualClock", "catalog", "fleet", "instance", "lambda_option", "plan_input", "pool"]


@cache
def catalog() -> Catalog:
    """The committed price catalog, read once per test session."""
    return load_catalog()


def pool(
    instance_type: str = "c5.large",
    market: str = ON_DEMAND,
    capacity_rps: float = 100.0,
    *,
    usd_per_hour: float | None = None,
    boot_seconds: float | None = None,
) -> PoolOption:
    """A planner pool; price per hour and boot seconds from the catalog unless given."""
    return PoolOption(
        instance_type,
        market,
        catalog().price_usd_per_hour(instance_type, market) if usd_per_hour is None else usd_per_hour,
        catalog().boot_seconds(instance_type) if boot_seconds is None else boot_seconds,
        capacity_rps,
    )


def lambda_option(
    usd_per_request: float = 1.2e-6, concurrency_limit: int = 1000, latency_ms: float = 40.0
) -> LambdaOption:
    """Lambda as the planner sees it (default: ~2 GB x 30 ms a request, 1,000 environments)."""
    return LambdaOption(usd_per_request, concurrency_limit, latency_ms)


def fleet(*members: PoolOption | tuple[str, str], prefix: str = "i", **kw: float | bool) -> tuple[FleetInstance, ...]:
    """Running instances, one per member (a pool or an ``(instance_type, market)`` key), ids ``i-0``, ``i-1``…;
    ``kw`` (``ready_in_s``, ``launched_at_s``, ``interrupted``) applies to all."""
    keys = [m.key if isinstance(m, PoolOption) else m for m in members]
    return tuple(FleetInstance(f"{prefix}-{j}", t, mk, **kw) for j, (t, mk) in enumerate(keys))  # type: ignore[arg-type]


def plan_input(
    demand: Iterable[float],
    step_seconds: float = 60.0,
    *,
    pools: tuple[PoolOption, ...] | None = None,
    fleet: tuple[FleetInstance, ...] = (),
    lambda_fn: LambdaOption | None = None,
    **kw: object,
) -> PlanInput:
    """A planning problem: ``demand`` req/s per step; default one c5.large on-demand pool of 100 req/s,
    no fleet, :func:`lambda_option`; ``kw`` sets any other PlanInput field (``spot_cover``, …)."""
    return PlanInput(
        tuple(float(d) for d in demand),
        step_seconds,
        pools if pools is not None else (pool(),),
        fleet,
        lambda_fn or lambda_option(),
        **kw,  # type: ignore[arg-type]
    )


def instance(
    instance_id: str = "i-1",
    instance_type: str = "c5.large",
    market: Market = Market.ON_DEMAND,
    state: InstanceState = InstanceState.RUNNING,
    *,
    endpoint: str | None = "127.0.0.1:9",
    launched_at: float = 0.0,
    ready_at: float | None = None,
) -> Instance:
    """A cloud instance as a backend reports it (running on a loopback endpoint unless said otherwise)."""
    return Instance(instance_id, instance_type, market, state, launched_at, endpoint, ready_at)
