"""Shared test doubles and builders (DESIGN.md §6): one way to make a pool, a fleet, a plan input, a
latency profile or a clock, so each test states only what matters to it.

Prices and boot times default to ``profiles/catalog.yaml``'s (a builder never invents a figure the
catalog has). ``ManualClock`` is the project's own (``orchestrator/clock.py``), the clock the
simulator will run on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from functools import cache
from typing import Any

from orchestrator.clock import Clock, ManualClock
from orchestrator.cloud.base import (
    CapacityError,
    Cloud,
    FunctionError,
    FunctionResult,
    FunctionStats,
    Instance,
    InstanceNotFound,
    InterruptionNotice,
)
from orchestrator.economics.catalog import Catalog, load_catalog
from orchestrator.policy.planning import ON_DEMAND, FleetInstance, LambdaOption, PlanInput, PoolOption
from orchestrator.types import InstanceState, Market

# Latency profiles as (batch size, p50 ms, p99 ms) rows, shaped like the measured ones, for the
# batching policy and its simulation: the SLO of those tests is SL of requests within RTmax - EPS.
EPS = 5.0
SL = 0.98
Batches = tuple[tuple[int, float, float], ...]

# Digits-like: microseconds per batch, so at RTmax 200 ms the SLO binds only at saturation.
DIGITS: Batches = ((1, 0.012, 0.025), (2, 0.012, 0.023), (4, 0.013, 0.022), (8, 0.015, 0.03), (16, 0.018, 0.035))
DIGITS += ((32, 0.025, 0.05), (64, 0.04, 0.08))
# MobileNetV2 on one onnxruntime thread (profiles/latency/mobilenet_v2/amd-epyc-2c-t1.json, rounded):
# batching barely pays (b/T(b) 0.125 -> 0.135 per ms).
MOBILENET: Batches = ((1, 8.0, 9.8), (2, 14.8, 18.6), (4, 30.4, 35.1), (8, 62.0, 66.9), (16, 123.0, 155.0))
# GPU-like: a big fixed cost per batch, so batching pays a lot (the T4 MobileNetV2 estimate's shape).
GPU: Batches = tuple((b, 1.1 + 0.51 * b, 1.25 * (1.1 + 0.51 * b)) for b in (1, 2, 4, 8, 16, 32, 64))
GPU_HEAVY: Batches = tuple((b, 20 + 2.0 * b, 1.2 * (20 + 2.0 * b)) for b in (1, 2, 4, 8, 16, 32, 64))


__all__ = [
    "DIGITS",
    "EPS",
    "FakeCloud",
    "FakeFunction",
    "GPU",
    "GPU_HEAVY",
    "MOBILENET",
    "SL",
    "Batches",
    "ManualClock",
    "catalog",
    "fleet",
    "lambda_option",
    "plan_input",
    "pool",
]


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


# --- a fake cloud and Lambda function for the live loop (orchestrator/controller/loop.py) -------------


class FakeCloud(Cloud):
    """An in-memory ``Cloud`` on a clock the test moves: a launch appears at once as pending and turns
    running ``boot_s`` later (when :meth:`settle` is called, as the local cloud's watcher would);
    ``capacity`` bounds live instances (``CapacityError`` past it); ``fail_terminate`` makes the next
    terminate raise that error; ``calls`` records every verb."""

    def __init__(self, clock: Clock | None = None, *, boot_s: float = 60.0, capacity: int = 100) -> None:
        self.clock: Clock = clock if clock is not None else ManualClock()
        self.boot_s = boot_s
        self.capacity = capacity
        self.fail_terminate: Exception | None = None
        self.fail_instances: Exception | None = None
        self.calls: list[tuple[str, object]] = []
        self._instances: dict[str, Instance] = {}
        self._notices: list[InterruptionNotice] = []
        self._n = 0

    def now(self) -> float:
        return float(self.clock.now())

    def add(self, instance_type: str = "c5.large", market: Market = Market.ON_DEMAND, *, running: bool = True) -> str:
        """An instance already there (not launched through the loop)."""
        self._n += 1
        iid = f"i-fake{self._n}"
        state = InstanceState.RUNNING if running else InstanceState.PENDING
        now = self.now()
        self._instances[iid] = Instance(iid, instance_type, market, state, now, ready_at=now if running else None)
        return iid

    async def launch(self, instance_type: str, market: Market, count: int = 1) -> list[Instance]:
        self.calls.append(("launch", (instance_type, market, count)))
        alive = sum(1 for i in self._instances.values() if i.state != InstanceState.TERMINATED)
        if alive + count > self.capacity:
            raise CapacityError(f"the fake cloud holds {self.capacity} instances; {alive} alive, {count} more asked")
        out = []
        for _ in range(count):
            iid = self.add(instance_type, market, running=False)
            out.append(self._instances[iid])
        return out

    async def terminate(self, instance_ids: list[str]) -> None:
        self.calls.append(("terminate", tuple(instance_ids)))
        if self.fail_terminate is not None:
            err, self.fail_terminate = self.fail_terminate, None
            raise err
        for iid in instance_ids:
            if iid not in self._instances:
                raise InstanceNotFound(f"unknown instance {iid!r}")
            i = self._instances[iid]
            self._instances[iid] = dataclasses.replace(i, state=InstanceState.TERMINATED, terminated_at=self.now())

    def settle(self) -> None:
        """Booted instances turn running (``boot_s`` after their launch)."""
        now = self.now()
        for iid, i in self._instances.items():
            if i.state == InstanceState.PENDING and now >= i.launched_at + self.boot_s:
                self._instances[iid] = dataclasses.replace(i, state=InstanceState.RUNNING, ready_at=now)

    def die(self, instance_id: str) -> None:
        """The instance's process exits (before or after it ran)."""
        i = self._instances[instance_id]
        self._instances[instance_id] = dataclasses.replace(i, state=InstanceState.TERMINATED, terminated_at=self.now())

    def notice(self, instance_id: str) -> None:
        self._notices.append(InterruptionNotice(instance_id, self.now(), self.now() + 120.0))

    def instances(self) -> list[Instance]:
        if self.fail_instances is not None:
            raise self.fail_instances
        return list(self._instances.values())

    def interruption_notices(self) -> list[InterruptionNotice]:
        return list(self._notices)

    async def close(self) -> None:
        self.calls.append(("close", None))


class FakeFunction:
    """A ``FunctionBackend`` that only counts: ``prewarm`` adds idle environments; ``busy`` is set by tests."""

    def __init__(self, limit: int = 10) -> None:
        self.limit = limit
        self.idle = 0
        self.busy = 0
        self.prewarm_calls: list[int] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def invoke(self, model: str, body: bytes, headers: dict[str, str]) -> FunctionResult:
        raise FunctionError("the fake function serves nothing")

    async def prewarm(self, count: int) -> int:
        self.prewarm_calls.append(count)
        n = max(0, min(count, self.limit - self.idle - self.busy))
        self.idle += n
        return n

    def stats(self) -> FunctionStats:
        envs = self.idle + self.busy
        return FunctionStats(envs, self.busy, self.idle, 0, 0, 0, 0, 0, 0.0, 2048)

    def warm_idle(self) -> int:
        return self.idle

    def concurrency_left(self) -> int:
        return self.limit - self.busy

    def concurrency_limit(self) -> int:
        return self.limit

    def predicted_latency_ms(self, model: str, cold: bool) -> float:
        return 100.0 if cold else 5.0


class KnownFuture:
    """A forecast source for loopback runs: each coming step's peak of the replayed per-second ``rates``
    (req/s; second 0 at ``epoch0``), every quantile alike, so a test controls what the planner sees."""

    name = "known-future"
    quantiles = (0.5, 0.9, 0.99)

    def __init__(self, rates: list[float], epoch0: float) -> None:
        self.rates, self.epoch0 = rates, epoch0

    def initial_state(self) -> None:
        return None

    def forecast(self, inputs: Any, state: Any) -> tuple[Any, Any]:
        import numpy as np

        t = int(round(inputs.epoch_s - self.epoch0))
        d = inputs.interval_s
        rows = []
        for k in range(inputs.steps):
            lo, hi = max(0, t + int(k * d)), max(0, t + int((k + 1) * d))
            window = self.rates[lo:hi]
            rows.append([max(window) if window else self.rates[-1]] * 3)
        return np.array(rows), state
