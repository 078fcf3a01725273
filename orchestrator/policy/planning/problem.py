"""The planning problem and its one cost model (DESIGN.md §3): what every planner reads and returns.

``PlanInput`` (forecast demand per step, pools with capacity at SLO, the fleet now, Lambda), the
``Schedule`` a planner decides, and ``evaluate``, which prices any schedule the same way: instance-steps
x price (instances bill from launch, including boot), Lambda requests x its per-request price for the
demand that serving instances leave uncovered (up to Lambda's concurrency), and a penalty per request
nobody can serve. Plans from different planners therefore compare on one cost model.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from orchestrator.types import Market

ON_DEMAND: str = Market.ON_DEMAND.value  # pools carry the market as its plain string
SPOT: str = Market.SPOT.value
UNSERVED_USD_PER_REQUEST = 1e-3  # a request nobody serves costs more than any way of serving it


@dataclass(frozen=True)
class PoolOption:
    """A (type, market) pool the planner may use, with the model's capacity at SLO on that type."""

    instance_type: str
    market: str  # "on-demand" | "spot"
    usd_per_hour: float
    boot_seconds: float
    capacity_rps: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.instance_type, self.market)


@dataclass(frozen=True)
class FleetInstance:
    """An instance that exists now. ``ready_in_s`` is 0 when it serves already (else still booting)."""

    instance_id: str
    instance_type: str
    market: str
    ready_in_s: float = 0.0
    launched_at_s: float = 0.0
    interrupted: bool = False  # a spot notice arrived: terminate it first, never count on it

    @property
    def key(self) -> tuple[str, str]:
        return (self.instance_type, self.market)


@dataclass(frozen=True)
class LambdaOption:
    usd_per_request: float  # request price + GB-seconds of one invocation
    concurrency_limit: int
    latency_ms: float  # warm latency: concurrency needed = rate × latency (Little's law)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.usd_per_request) and self.usd_per_request >= 0):
            raise ValueError(f"lambda_fn.usd_per_request must be finite and >= 0, got {self.usd_per_request}")
        if isinstance(self.concurrency_limit, bool) or not isinstance(self.concurrency_limit, numbers.Integral):
            raise ValueError(f"lambda_fn.concurrency_limit must be an integer, got {self.concurrency_limit!r}")
        if self.concurrency_limit < 0:
            raise ValueError(f"lambda_fn.concurrency_limit must be >= 0, got {self.concurrency_limit}")
        if not (math.isfinite(self.latency_ms) and self.latency_ms > 0):
            raise ValueError(f"lambda_fn.latency_ms must be finite and > 0, got {self.latency_ms}")

    @property
    def max_rps(self) -> float:
        return self.concurrency_limit * 1000.0 / self.latency_ms


@dataclass(frozen=True)
class PoolArrays:
    """``PlanInput``'s pools as arrays, row i = ``pools[i]`` (``PlanInput.arrays``)."""

    cap: np.ndarray  # capacity at SLO, req/s
    usd_per_step: np.ndarray  # price of one instance for one step
    lag: np.ndarray  # steps from launch to serving
    hold: np.ndarray  # steps a launch stays alive at least
    running: np.ndarray  # existing running instances (interrupted ones left out)
    booting: np.ndarray  # existing booting instances
    ready: np.ndarray  # (pools, steps): existing booting instances serving by step t
    spot: np.ndarray  # bool
    demand: np.ndarray  # (steps,)


def window_sum(x: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Per row i and column t: the sum of x[i, t - width[i] + 1 .. t] (0 where width is 0). With x the
    launches and width the boot lag, this is the launches still booting at t."""
    P, H = x.shape
    cs = np.zeros((P, H + 1), dtype=x.dtype)
    np.cumsum(x, axis=1, out=cs[:, 1:])
    start = np.maximum(0, np.arange(1, H + 1)[None, :] - width[:, None])
    return cs[:, 1:] - np.take_along_axis(cs, start, axis=1)


@dataclass(frozen=True)
class PlanInput:
    demand_rps: tuple[float, ...]  # per step: the forecast quantile of the peak rate the plan must cover
    step_seconds: float
    pools: tuple[PoolOption, ...]
    fleet: tuple[FleetInstance, ...]
    lambda_fn: LambdaOption
    min_billed_seconds: float = 60.0  # EC2 bills at least this much per launch
    # After losing the largest spot pool, instances left + Lambda's concurrency must still cover this
    # share of demand (0 disables the risk budget).
    spot_cover: float = 0.98
    recent_needs: tuple[tuple[tuple[str, str, int], ...], ...] = ()  # mark_greedy: last k plans' step-0 fleet
    prewarm_steps: int = 2  # Lambda pre-warm looks this many steps ahead
    max_spot_pools: int = 8  # milp: spot pools it may launch into when the risk budget binds
    # mark_greedy: seconds of an instance's price a launch costs on top of its span (None: the pool's
    # boot_seconds, as MArk published; MArk's public code charges a flat 180 s), and the markets it
    # launches into (MArk as published: on-demand; MArk's public code: spot).
    launch_overhead_s: float | None = None
    greedy_markets: tuple[str, ...] = (ON_DEMAND,)

    def __post_init__(self) -> None:
        if not self.demand_rps:
            raise ValueError("demand_rps must have at least one step")
        if any(d < 0 or not math.isfinite(d) for d in self.demand_rps):
            raise ValueError("demand_rps must be finite and >= 0")
        if not (math.isfinite(self.step_seconds) and self.step_seconds > 0):
            raise ValueError(f"step_seconds must be finite and > 0, got {self.step_seconds}")
        if not (math.isfinite(self.min_billed_seconds) and self.min_billed_seconds >= 0):
            raise ValueError(f"min_billed_seconds must be finite and >= 0, got {self.min_billed_seconds}")
        if self.prewarm_steps < 0 or self.max_spot_pools < 1:
            raise ValueError(
                f"prewarm_steps must be >= 0 and max_spot_pools >= 1, got {self.prewarm_steps}, {self.max_spot_pools}"
            )
        keys = [p.key for p in self.pools]
        if len(set(keys)) != len(keys):
            raise ValueError("pools must be unique per (instance_type, market)")
        for p in self.pools:
            if p.market not in (ON_DEMAND, SPOT):
                raise ValueError(f"pool {p.key}: market must be {ON_DEMAND!r} or {SPOT!r}")
            numbers = (p.capacity_rps, p.usd_per_hour, p.boot_seconds)
            if (
                not all(math.isfinite(x) for x in numbers)
                or min(p.capacity_rps, p.usd_per_hour) <= 0
                or p.boot_seconds < 0
            ):
                raise ValueError(
                    f"pool {p.key}: capacity and price must be finite and > 0, boot >= 0 "
                    f"(got capacity {p.capacity_rps}, price {p.usd_per_hour}, boot {p.boot_seconds})"
                )
        known = set(keys)
        ids = [f.instance_id for f in self.fleet]
        if len(set(ids)) != len(ids):
            raise ValueError(
                f"fleet instance ids must be unique, repeated: {sorted({i for i in ids if ids.count(i) > 1})}"
            )
        for f in self.fleet:
            if f.key not in known:
                raise ValueError(f"fleet instance {f.instance_id} is of pool {f.key}, which is not in pools")
            if not (math.isfinite(f.ready_in_s) and math.isfinite(f.launched_at_s)):
                raise ValueError(f"fleet instance {f.instance_id}: ready_in_s and launched_at_s must be finite")
        if not 0 <= self.spot_cover <= 1:
            raise ValueError(f"spot_cover must be in [0, 1], got {self.spot_cover}")
        if self.launch_overhead_s is not None and not (
            math.isfinite(self.launch_overhead_s) and self.launch_overhead_s >= 0
        ):
            raise ValueError(f"launch_overhead_s must be None or finite and >= 0, got {self.launch_overhead_s}")
        if not self.greedy_markets or any(m not in (ON_DEMAND, SPOT) for m in self.greedy_markets):
            raise ValueError(
                f"greedy_markets must be one or more of {ON_DEMAND!r}, {SPOT!r}, got {self.greedy_markets}"
            )

    @property
    def horizon(self) -> int:
        return len(self.demand_rps)

    def lag_steps(self, pool: PoolOption) -> int:
        """Steps from a launch until it serves: a launch at step s serves from step s + lag."""
        return math.ceil(pool.boot_seconds / self.step_seconds - 1e-9)

    def hold_steps(self, pool: PoolOption) -> int:
        """Steps a launch stays alive at least: its boot, and EC2's minimum billing."""
        return max(self.lag_steps(pool), math.ceil(self.min_billed_seconds / self.step_seconds - 1e-9), 1)

    @cached_property
    def risk_need_rps(self) -> np.ndarray:
        """Per step: serving capacity that must remain after losing the largest spot pool (Lambda's
        ceiling already counted; <= 0 where the risk budget cannot bind, all 0 when it is off)."""
        if self.spot_cover <= 0:
            return np.zeros(self.horizon)
        return self.spot_cover * np.asarray(self.demand_rps, dtype=float) - self.lambda_fn.max_rps

    @cached_property
    def _usable_fleet(self) -> dict[tuple[str, str], list[FleetInstance]]:
        """The fleet by pool, interrupted instances left out (never counted on). Computed once: the
        planners ask per pool and step."""
        out: dict[tuple[str, str], list[FleetInstance]] = {}
        for f in self.fleet:
            if not f.interrupted:
                out.setdefault(f.key, []).append(f)
        return out

    @cached_property
    def arrays(self) -> PoolArrays:
        """The pools and the fleet as arrays (row i = ``pools[i]``): the planners' inner loops run in numpy."""
        H, dt = self.horizon, self.step_seconds
        ready = np.zeros((len(self.pools), H), dtype=np.int64)
        steps = np.arange(H) * dt
        for i, p in enumerate(self.pools):
            booting = np.array([f.ready_in_s for f in self._usable_fleet.get(p.key, ()) if f.ready_in_s > 0])
            ready[i] = np.searchsorted(np.sort(booting), steps, side="right") if booting.size else 0
        return PoolArrays(
            cap=np.array([p.capacity_rps for p in self.pools], dtype=float),
            usd_per_step=np.array([p.usd_per_hour * dt / 3600.0 for p in self.pools], dtype=float),
            lag=np.array([self.lag_steps(p) for p in self.pools], dtype=np.int64),
            hold=np.array([self.hold_steps(p) for p in self.pools], dtype=np.int64),
            running=np.array([len(self.existing_running(p)) for p in self.pools], dtype=np.int64),
            booting=np.array([self.existing_booting(p) for p in self.pools], dtype=np.int64),
            ready=ready,
            spot=np.array([p.market == SPOT for p in self.pools], dtype=bool),
            demand=np.array(self.demand_rps, dtype=float),
        )

    def existing_running(self, pool: PoolOption) -> list[FleetInstance]:
        return [f for f in self._usable_fleet.get(pool.key, ()) if f.ready_in_s <= 0]

    def existing_booting(self, pool: PoolOption) -> int:
        return sum(1 for f in self._usable_fleet.get(pool.key, ()) if f.ready_in_s > 0)


@dataclass(frozen=True)
class Schedule:
    """Per pool (in ``PlanInput.pools`` order) and step: existing running instances kept, launches, and
    instances from launches within the horizon still alive. Existing booting ones are always kept."""

    keep: tuple[tuple[int, ...], ...]
    launches: tuple[tuple[int, ...], ...]
    alive_new: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class CostSplit:
    instances_usd: float
    lambda_usd: float
    unserved_penalty_usd: float

    @property
    def total_usd(self) -> float:
        return self.instances_usd + self.lambda_usd + self.unserved_penalty_usd


@dataclass(frozen=True)
class Plan:
    planner: str
    launches: tuple[tuple[str, str, int], ...]  # now: (type, market, count)
    terminations: tuple[str, ...]  # now: instance ids
    serving_per_step: tuple[tuple[tuple[str, str, int], ...], ...]  # planned serving fleet per step
    lambda_rps: tuple[float, ...]  # demand the plan leaves to Lambda, per step
    unserved_rps: tuple[float, ...]  # demand nobody can serve (0 unless the input is infeasible)
    cost: CostSplit
    lambda_prewarm: int  # warm Lambda environments to hold for the next steps
    spot_risk_ok: tuple[bool, ...]  # per step: losing the largest spot pool still leaves spot_cover
    schedule: Schedule = field(repr=False)


def serving_counts(inp: PlanInput, s: Schedule) -> np.ndarray:
    """(pools, steps): instances serving per step: kept existing ones, existing booting ones ready by
    then, and launches that are alive and past their boot."""
    arr = inp.arrays
    launches = np.asarray(s.launches, dtype=np.int64).reshape(len(inp.pools), inp.horizon)
    keep = np.asarray(s.keep, dtype=np.int64).reshape(launches.shape)
    alive = np.asarray(s.alive_new, dtype=np.int64).reshape(launches.shape)
    return keep + arr.ready + alive - window_sum(launches, arr.lag)


def spot_risk_ok(inp: PlanInput, serving: np.ndarray) -> np.ndarray:
    """Per step: after losing the largest spot pool, instances left + Lambda's ceiling still cover
    ``spot_cover`` of demand."""
    arr = inp.arrays
    if inp.spot_cover <= 0:
        return np.ones(inp.horizon, dtype=bool)
    caps = serving * arr.cap[:, None]
    worst = caps[arr.spot].max(axis=0) if arr.spot.any() else np.zeros(inp.horizon)
    return caps.sum(axis=0) - worst + inp.lambda_fn.max_rps >= inp.spot_cover * arr.demand - 1e-6


def evaluate(inp: PlanInput, s: Schedule, planner: str) -> Plan:
    """Price a schedule and derive the decisions for now. The MILP minimises exactly this cost."""
    arr, dt = inp.arrays, inp.step_seconds
    serving = serving_counts(inp, s)
    gap = np.maximum(0.0, arr.demand - arr.cap @ serving)
    lam = np.minimum(gap, inp.lambda_fn.max_rps)
    alive = np.asarray(s.keep) + arr.booting[:, None] + np.asarray(s.alive_new)
    inst_usd = float((arr.usd_per_step[:, None] * alive).sum())
    lam_usd = float(lam.sum() * dt * inp.lambda_fn.usd_per_request)
    pen_usd = float((gap - lam).sum() * dt * UNSERVED_USD_PER_REQUEST)
    names = [(p.instance_type, p.market) for p in inp.pools]
    serving_steps = tuple(
        tuple((ty, mk, n) for (ty, mk), n in zip(names, col, strict=True) if n) for col in serving.T.tolist()
    )
    launches = tuple(
        (p.instance_type, p.market, s.launches[i][0]) for i, p in enumerate(inp.pools) if s.launches[i][0] > 0
    )
    lam_rps = tuple(float(x) for x in lam)
    horizon_steps = range(min(inp.horizon, max(1, inp.prewarm_steps)))
    prewarm = max((math.ceil(lam_rps[t] * inp.lambda_fn.latency_ms / 1000.0 - 1e-9) for t in horizon_steps), default=0)
    return Plan(
        planner,
        launches,
        _terminations_now(inp, s),
        serving_steps,
        lam_rps,
        tuple(float(x) for x in gap - lam),
        CostSplit(inst_usd, lam_usd, pen_usd),
        min(prewarm, inp.lambda_fn.concurrency_limit),
        tuple(bool(x) for x in spot_risk_ok(inp, serving)),
        s,
    )


def _terminations_now(inp: PlanInput, s: Schedule) -> tuple[str, ...]:
    """Instances to terminate now: every interrupted one, and running ones the plan does not keep
    (oldest first: they are past EC2's minimum billing)."""
    out = [f.instance_id for f in inp.fleet if f.interrupted]
    for i, pool in enumerate(inp.pools):
        running = sorted(inp.existing_running(pool), key=lambda f: (f.launched_at_s, f.instance_id))
        out += [f.instance_id for f in running[: max(0, len(running) - s.keep[i][0])]]
    return tuple(out)
