"""Provisioning planner (DESIGN.md §3): how many instances of which (type, market) over the next H steps.

Pure: frozen dataclasses in, a ``Plan`` out; no I/O, no clock. One signature, three implementations:

- ``mark_greedy``: MArk's heuristic (Zhang et al., USENIX ATC'19) as its published code does it
  (``modules/proactive_controller.py`` in marcoszh/MArk-Project): walk the forecast; over each
  under-provisioned span add one instance of the type with the lowest cost per request over that
  span (price × span + launch overhead, launch overhead = boot seconds × price, divided by the
  requests it would actually serve there), repeat until covered; over an over-provisioned span
  remove the instance with the highest cost per request; running instances are already in the plan
  (zero overhead). Scale-in happens only for instances that none of the last k plans needed. MArk
  plans on-demand instances only and leaves Lambda to absorb what instances miss.
- ``milp`` (ours): a mixed-integer program over the horizon; HiGHS (through highspy) solves its LP
  relaxation and ``fleet_dp`` the integer plan around it (``exact=True``: branch and bound). See ``milp``.
- ``oracle``: ``milp`` fed with the true future and zero boot lag: the lower bound for the simulator.

Every plan is priced by the same function (``evaluate``), so plans from different planners compare
on one cost model: instance-steps × price (instances bill from launch, including boot), Lambda
requests × its per-request price for demand that serving instances leave uncovered (up to Lambda's
concurrency), and a penalty per request nobody can serve.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import highspy
import numpy as np
from scipy.sparse import coo_matrix, csc_matrix

from orchestrator.policy import fleet_dp

ON_DEMAND = "on-demand"
SPOT = "spot"
UNSERVED_USD_PER_REQUEST = 1e-3  # a request nobody serves costs more than any way of serving it
# A safety net for HiGHS (the LP takes milliseconds; branch and bound in ``exact`` mode, seconds):
# where it has not finished by then, the best plan found so far is used (never dearer than MArk's).
MIP_TIME_LIMIT_S = 5.0


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

    @property
    def max_rps(self) -> float:
        return self.concurrency_limit * 1000.0 / max(self.latency_ms, 1e-9)


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

    def __post_init__(self) -> None:
        if not self.demand_rps:
            raise ValueError("demand_rps must have at least one step")
        if any(d < 0 or not math.isfinite(d) for d in self.demand_rps):
            raise ValueError("demand_rps must be finite and >= 0")
        if self.step_seconds <= 0:
            raise ValueError(f"step_seconds must be > 0, got {self.step_seconds}")
        keys = [p.key for p in self.pools]
        if len(set(keys)) != len(keys):
            raise ValueError("pools must be unique per (instance_type, market)")
        for p in self.pools:
            if p.market not in (ON_DEMAND, SPOT):
                raise ValueError(f"pool {p.key}: market must be {ON_DEMAND!r} or {SPOT!r}")
            if p.capacity_rps <= 0 or p.usd_per_hour <= 0 or p.boot_seconds < 0:
                raise ValueError(f"pool {p.key}: capacity and price must be > 0, boot >= 0")
        known = set(keys)
        for f in self.fleet:
            if f.key not in known:
                raise ValueError(f"fleet instance {f.instance_id} is of pool {f.key}, which is not in pools")
        if not 0 <= self.spot_cover <= 1:
            raise ValueError(f"spot_cover must be in [0, 1], got {self.spot_cover}")

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

    def existing_booting_ready(self, pool: PoolOption, t: int) -> int:
        """Instances of ``pool`` launched before now, still booting, that serve by step ``t``."""
        limit = t * self.step_seconds
        return sum(1 for f in self._usable_fleet.get(pool.key, ()) if 0 < f.ready_in_s <= limit)

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


# ---- one cost model for every planner ------------------------------------------------------------


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


# ---- MILP ----------------------------------------------------------------------------------------


def milp(inp: PlanInput, time_limit_s: float = MIP_TIME_LIMIT_S, *, exact: bool = False) -> Plan:
    """The optimised plan for the cost model of ``evaluate`` (ours).

    The model: integer variables per pool and step: launches l, alive instances from launches a, kept
    existing running instances k; continuous per step: Lambda rate λ and unserved rate u. Constraints:
    a[t] ≤ a[t-1] + l[t] (terminate any time), a[t] ≥ launches of the last max(boot, 60 s) steps
    (a launch is billed from launch and held through its boot and EC2's minimum), k non-increasing
    from the running count, serving = k + booted existing + a − still-booting launches;
    Σ capacity × serving + λ + u ≥ demand; λ ≤ Lambda's concurrency / latency; for every spot pool,
    serving capacity without it + Lambda's ceiling ≥ spot_cover × demand. Objective: instance-steps ×
    price + λ × step × Lambda's price + u × penalty — so a short spike goes to Lambda when a launch
    (billed through its boot and the minimum) costs more, and the optimiser decides, not a threshold.

    How it is solved: HiGHS solves the LP relaxation (milliseconds); ``fleet_dp`` then finds, exactly,
    the cheapest integer plan among a few candidate counts per pool and step around the LP's values
    (a dynamic program over time, since the only link between steps is the boot of a launch). Branch
    and bound on this model spent 0.1-1 s in root cuts on the cases that matter (lumpy GPU capacity,
    a binding spot risk budget) and still stopped at a 1 % gap; the program takes milliseconds and on
    those cases finds cheaper plans. Where MArk's plan over every pool is cheaper and within the risk
    budget, it is returned, so the plan is never dearer than MArk's. benchmarks/planner_speed.py
    measures the distance to the exact optimum.

    ``exact``: branch and bound over every pool no other replicates for less, to a 1e-7 gap (seconds
    instead of milliseconds), from MArk's plan as the start: the oracle, and the benchmark's yardstick.
    """
    if exact:
        return _exact(inp, time_limit_s)
    P = len(inp.pools)
    dominated = dominated_pools(inp)
    sub, sub_pools, no_launch = _without_dominated(inp, dominated)
    relaxed = np.zeros((P, 3 * inp.horizon))
    relaxed[sub_pools] = _program(sub, no_launch, time_limit_s, integer=False)
    used = {i for i in range(P) if i not in dominated and relaxed[i].sum() > 1e-6}
    for market in (ON_DEMAND, SPOT):  # integer rounding may need a small unit the LP does not use
        small = [i for i, p in enumerate(inp.pools) if p.market == market and i not in dominated]
        if small:
            used.add(min(small, key=lambda i: (inp.pools[i].capacity_rps, inp.pools[i].usd_per_hour, i)))
    fleet_keys = {f.key for f in inp.fleet}
    pools = sorted(used | {i for i, p in enumerate(inp.pools) if p.key in fleet_keys})
    dt = inp.step_seconds
    need = [inp.spot_cover * d - inp.lambda_fn.max_rps if inp.spot_cover > 0 else 0.0 for d in inp.demand_rps]
    counts = fleet_dp.best_fleet(
        [_dp_pool(inp, i, relaxed[i]) for i in pools],
        inp.demand_rps,
        inp.lambda_fn.max_rps,
        dt * inp.lambda_fn.usd_per_request,
        dt * UNSERVED_USD_PER_REQUEST,
        need,
    )
    plan = evaluate(inp, _schedule_from_serving(inp, dict(zip(pools, counts, strict=True))), "milp")
    return _never_dearer_than_mark(inp, plan)


def _never_dearer_than_mark(inp: PlanInput, plan: Plan) -> Plan:
    if any(p.market == ON_DEMAND for p in inp.pools):
        mark = mark_greedy(inp)
        if mark.cost.total_usd < plan.cost.total_usd - 1e-12 and all(mark.spot_risk_ok):
            return replace(mark, planner="milp")
    return plan


def _dp_pool(inp: PlanInput, i: int, relaxed: np.ndarray) -> fleet_dp.DPPool:
    """Pool ``i`` for the program, with the LP relaxation's serving count per step."""
    p, H, arr = inp.pools[i], inp.horizon, inp.arrays
    launch, alive, keep = relaxed[:H], relaxed[H : 2 * H], relaxed[2 * H :]
    booting = window_sum(launch[None, :], arr.lag[i : i + 1])[0]
    return fleet_dp.DPPool(
        usd_per_step=float(arr.usd_per_step[i]),
        capacity_rps=p.capacity_rps,
        spot=p.market == SPOT,
        lag=int(arr.lag[i]),
        running=int(arr.running[i]),
        ready_booting=tuple(arr.ready[i].tolist()),
        lp_serving=tuple(np.maximum(0.0, keep + alive - booting).tolist()),
    )


def _schedule_from_serving(inp: PlanInput, serving: dict[int, list[int]]) -> Schedule:
    """Launches, kept and alive instances that realise the given serving counts (existing booting ones
    excluded): existing running instances serve first and, once let go, are gone; a rise is launched
    one boot ahead; a launch stays alive through its boot and EC2's minimum billing."""
    H = inp.horizon
    keep, launches, alive_new = [], [], []
    for i, p in enumerate(inp.pools):
        want = serving.get(i, [0] * H)
        lag, hold = inp.lag_steps(p), inp.hold_steps(p)
        k_row, kept = [], len(inp.existing_running(p))
        for t in range(H):
            kept = min(kept, want[t])
            k_row.append(kept)
        new = [want[t] - k_row[t] for t in range(H)]
        l_row = [0] * H
        for t in range(H):
            rise = new[t] - (new[t - 1] if t else 0)
            if rise > 0:
                l_row[max(0, t - lag)] += rise
        a_row = []
        for t in range(H):
            booting_new = sum(l_row[max(0, t - lag + 1) : t + 1]) if lag > 0 else 0
            held = sum(l_row[max(0, t - hold + 1) : t + 1])
            a_row.append(min(sum(l_row[: t + 1]), max(new[t] + booting_new, held)))
        for t in range(H - 1, 0, -1):  # alive can only grow by launches
            a_row[t - 1] = max(a_row[t - 1], a_row[t] - l_row[t])
        keep.append(tuple(k_row))
        launches.append(tuple(l_row))
        alive_new.append(tuple(a_row))
    return Schedule(tuple(keep), tuple(launches), tuple(alive_new))


def _without_dominated(inp: PlanInput, dominated: set[int]) -> tuple[PlanInput, list[int], set[int]]:
    """The problem over the pools that are not dominated or hold instances now: (that input, its pools'
    indices in ``inp``, its pools that are dominated: kept only to keep or terminate what runs there).
    The program shrinks by half or more, and HiGHS and the build with it."""
    fleet_keys = {f.key for f in inp.fleet}
    sub_pools = [i for i, p in enumerate(inp.pools) if i not in dominated or p.key in fleet_keys]
    sub = replace(inp, pools=tuple(inp.pools[i] for i in sub_pools))
    return sub, sub_pools, {j for j, i in enumerate(sub_pools) if i in dominated}


def _exact(inp: PlanInput, time_limit_s: float) -> Plan:
    """Branch and bound over every pool no other replicates for less (every spot pool), to a 1e-7 gap."""
    inp = replace(inp, max_spot_pools=len(inp.pools))
    P, H = len(inp.pools), inp.horizon
    sub, sub_pools, no_launch = _without_dominated(inp, dominated_pools(inp))
    launchable = [j for j, p in enumerate(sub.pools) if p.market == ON_DEMAND and j not in no_launch]
    start = _greedy_schedule(sub, _greedy_counts(sub, launchable)) if launchable else None
    x = np.rint(_program(sub, no_launch, time_limit_s, integer=True, start=start)).astype(int)
    rows = {i: j for j, i in enumerate(sub_pools)}

    def part(lo: int, hi: int) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(v) for v in x[rows[i], lo:hi]) if i in rows else (0,) * H for i in range(P))

    schedule = Schedule(keep=part(2 * H, 3 * H), launches=part(0, H), alive_new=part(H, 2 * H))
    return _never_dearer_than_mark(inp, evaluate(inp, schedule, "milp"))


@functools.lru_cache(maxsize=64)
def _band(H: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The (t, s) pairs with t - width < s <= t: the launches of the last ``width`` steps at step t."""
    t, s = np.nonzero(np.tri(H, dtype=bool) & ~np.tri(H, k=-width, dtype=bool))
    return t, s


@functools.lru_cache(maxsize=64)
def _pool_block(H: int, hold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pool's own rows, in its columns [l(0..H-1), a(0..H-1), k(0..H-1)]: (row, col, value, low,
    high). Rows 0..H-1: a[t] - a[t-1] - l[t] <= 0 (alive grows only by launches); H..2H-1: a[t] - the
    launches of the last ``hold`` steps >= 0 (a launch is held through boot and minimum billing);
    2H..3H-2: k[t] - k[t-1] <= 0 (existing instances, once let go, are gone)."""
    t = np.arange(H)
    ht, hs = _band(H, hold)
    rows = np.concatenate([t, t, t[1:], H + t, H + ht, 2 * H + t[1:] - 1, 2 * H + t[1:] - 1])
    cols = np.concatenate([H + t, t, H + t[1:] - 1, H + t, hs, 2 * H + t[1:], 2 * H + t[1:] - 1])
    vals = np.concatenate([np.ones(H), -np.ones(H), -np.ones(H - 1), np.ones(H), -np.ones(ht.size),
                           np.ones(H - 1), -np.ones(H - 1)])  # fmt: skip
    low = np.concatenate([np.full(H, -np.inf), np.zeros(H), np.full(H - 1, -np.inf)])
    high = np.concatenate([np.zeros(H), np.full(H, np.inf), np.zeros(H - 1)])
    return rows, cols, vals, low, high


@functools.lru_cache(maxsize=64)
def _serving_pattern(H: int, lag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """serving[t] = k[t] + a[t] - the launches of the last ``lag`` steps, as (step, pool column, value)."""
    t = np.arange(H)
    bt, bs = _band(H, lag)
    return (
        np.concatenate([t, t, bt]),
        np.concatenate([2 * H + t, H + t, bs]),
        np.concatenate([np.ones(2 * H), -np.ones(bt.size)]),
    )


def _program(
    inp: PlanInput,
    no_launch: set[int],
    time_limit_s: float,
    integer: bool,
    start: Schedule | None = None,
) -> np.ndarray:
    """Build and solve the program; returns per pool the row [l(0..H-1), a(0..H-1), k(0..H-1)] (fractional
    when ``integer`` is False: the LP relaxation). Built from index arrays: building it entry by entry in
    Python took longer than HiGHS takes to solve the relaxation."""
    H, P, dt, arr = inp.horizon, len(inp.pools), inp.step_seconds, inp.arrays
    nv = 3 * H  # l, a, k per step
    lam0, u0, s0, r0 = (P * nv + j * H for j in range(4))  # + λ, u, the largest spot pool S, risk shortfall r
    n = P * nv + 4 * H
    steps = np.arange(H)

    c = np.zeros(n)
    lb = np.zeros(n)
    ub = np.full(n, np.inf)
    pool_c, pool_ub = c[: P * nv].reshape(P, 3, H), ub[: P * nv].reshape(P, 3, H)
    pool_c[:, 1:, :] = arr.usd_per_step[:, None, None]
    cap_bound = np.ceil(max(inp.demand_rps) / arr.cap) + 1 + arr.booting + arr.running
    launchable = np.array([i not in no_launch for i in range(P)], dtype=bool)
    pool_ub[:, :2, :] = np.where(launchable, cap_bound, 0.0)[:, None, None]
    pool_ub[:, 2, :] = arr.running[:, None]
    c[lam0 : lam0 + H] = dt * inp.lambda_fn.usd_per_request
    c[u0 : u0 + H] = dt * UNSERVED_USD_PER_REQUEST
    # Falling short of the risk budget is allowed only where nothing can prevent it (e.g. before any
    # launch can boot), at a price above any way of meeting it.
    c[r0 : r0 + H] = dt * UNSERVED_USD_PER_REQUEST
    ub[lam0 : lam0 + H] = inp.lambda_fn.max_rps
    integrality = np.zeros(n)
    integrality[: P * nv] = 1 if integer else 0

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    lo: list[np.ndarray] = []
    hi: list[np.ndarray] = []
    n_rows = 0

    def add(r: np.ndarray, col: np.ndarray, v: np.ndarray) -> None:
        rows.append(n_rows + r)
        cols.append(col)
        vals.append(v)

    for i in range(P):
        r, col, v, low, high = _pool_block(H, int(arr.hold[i]))
        add(r, i * nv + col, v)
        lo.append(low)
        hi.append(high)
        n_rows += low.size
    serving = [_serving_pattern(H, int(arr.lag[i])) for i in range(P)]
    ready_cap = arr.cap @ arr.ready  # per step: capacity of existing booting instances by then
    # Demand: Σ capacity × serving + λ + u >= demand.
    for i, (st, sc, sv) in enumerate(serving):
        add(st, i * nv + sc, arr.cap[i] * sv)
    add(steps, lam0 + steps, np.ones(H))
    add(steps, u0 + steps, np.ones(H))
    lo.append(arr.demand - ready_cap)
    hi.append(np.full(H, np.inf))
    n_rows += H
    # Spot risk budget where it can bind: S[t] >= every spot pool's serving capacity, and total capacity
    # - S[t] + r[t] >= need. Same feasible set as one "total minus pool j" row per pool, fewer nonzeros.
    need = inp.spot_cover * arr.demand - inp.lambda_fn.max_rps if inp.spot_cover > 0 else np.zeros(H)
    binding = np.flatnonzero(need > 0) if arr.spot.any() else np.zeros(0, dtype=np.int64)
    row_of = np.full(H, -1)
    row_of[binding] = np.arange(binding.size)
    m = binding.size
    if m:
        for j in np.flatnonzero(arr.spot):
            st, sc, sv = serving[j]
            keep_terms = row_of[st] >= 0
            add(row_of[st[keep_terms]], j * nv + sc[keep_terms], -arr.cap[j] * sv[keep_terms])
            add(np.arange(m), s0 + binding, np.ones(m))
            lo.append(arr.cap[j] * arr.ready[j, binding])
            hi.append(np.full(m, np.inf))
            n_rows += m
        for i, (st, sc, sv) in enumerate(serving):
            keep_terms = row_of[st] >= 0
            add(row_of[st[keep_terms]], i * nv + sc[keep_terms], arr.cap[i] * sv[keep_terms])
        add(np.arange(m), s0 + binding, -np.ones(m))
        add(np.arange(m), r0 + binding, np.ones(m))
        lo.append(need[binding] - ready_cap[binding])
        hi.append(np.full(m, np.inf))
        n_rows += m

    A = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_rows, n)).tocsc()
    x0 = None
    if start is not None:
        x0 = np.zeros(n)
        x0_pool = x0[: P * nv].reshape(P, 3, H)
        x0_pool[:, 0], x0_pool[:, 1], x0_pool[:, 2] = start.launches, start.alive_new, start.keep
        # The continuous columns follow from the integer ones: fill each row's slack at its cheapest.
        caps = serving_counts(inp, start) * arr.cap[:, None]
        gap = np.maximum(0.0, arr.demand - caps.sum(axis=0))
        x0[lam0 : lam0 + H] = np.minimum(gap, inp.lambda_fn.max_rps)
        x0[u0 : u0 + H] = gap - x0[lam0 : lam0 + H]
        x0[s0 : s0 + H] = caps[arr.spot].max(axis=0) if arr.spot.any() else 0.0
        x0[r0 : r0 + H] = np.maximum(0.0, need - (caps.sum(axis=0) - x0[s0 : s0 + H]))
    x = _highs(c, A, np.concatenate(lo), np.concatenate(hi), lb, ub, integrality, x0, time_limit_s)
    return x[: P * nv].reshape(P, nv)


def _highs(
    c: np.ndarray,
    A: csc_matrix,
    lo: np.ndarray,
    hi: np.ndarray,
    lb: np.ndarray,
    ub: np.ndarray,
    integrality: np.ndarray,
    x0: np.ndarray | None,
    time_limit_s: float,
) -> np.ndarray:
    """Solve with HiGHS directly (highspy): scipy's wrapper cannot take a starting solution. The start
    (a feasible schedule) means the answer is never worse than it, whatever the time limit cuts off."""
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("mip_rel_gap", 1e-7)
    h.setOptionValue("time_limit", float(time_limit_s))
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = A.shape[1], A.shape[0]
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = c, lb, np.where(np.isinf(ub), highspy.kHighsInf, ub)
    lp.row_lower_ = np.where(np.isinf(lo), -highspy.kHighsInf, lo)
    lp.row_upper_ = np.where(np.isinf(hi), highspy.kHighsInf, hi)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = A.indptr, A.indices, A.data
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = A.shape[1], A.shape[0]
    if integrality.any():  # an LP (the relaxation) leaves it unset: listing 1,000 columns costs a millisecond
        kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
        lp.integrality_ = [kinds[int(v)] for v in integrality]
    h.passModel(lp)
    if x0 is not None:
        sol = highspy.HighsSolution()
        sol.col_value = list(x0)
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    sol = h.getSolution()
    if not sol.value_valid:
        raise RuntimeError(f"the MILP planner found no plan: {h.modelStatusToString(h.getModelStatus())}")
    return np.asarray(sol.col_value)


def dominated_pools(inp: PlanInput) -> set[int]:
    """Pools no optimal plan needs to launch into: another pool of the same market boots no later and
    covers the same capacity for no more money with copies of itself (ceil(cap_q / cap_p) × price_p ≤
    price_q). Same-size types at the same price per capacity (c5.large, c5.xlarge, ... under a
    per-core profile) collapse to one, which removes the symmetric choices that make the MILP slow.
    Spot pools are pruned only while the risk budget cannot bind (moving capacity between spot pools
    changes which pool is the largest)."""
    need = max(inp.spot_cover * d - inp.lambda_fn.max_rps for d in inp.demand_rps) if inp.spot_cover else -1.0
    out: set[int] = set()
    if need > 0:
        # The risk budget binds: keep the max_spot_pools cheapest spot pools per capacity (ties: faster
        # boot, then name). Spreading over spot pools is what meets the budget cheaply, but each pool
        # the LP spreads into widens the fleet program's grid; benchmarks/planner_speed.py measured
        # 4 pools: p90 3.4 % above the exact optimum, 8: 1.3 %, 12: the same as 8 and slower.
        spot = sorted(
            (i for i, p in enumerate(inp.pools) if p.market == SPOT),
            key=lambda i: (inp.pools[i].usd_per_hour / inp.pools[i].capacity_rps, inp.pools[i].boot_seconds, i),
        )
        out.update(spot[inp.max_spot_pools :])
    for q, pq in enumerate(inp.pools):
        if pq.market == SPOT and need > 0:
            continue
        for p, pp in enumerate(inp.pools):
            if p == q or p in out or pp.market != pq.market or pp.boot_seconds > pq.boot_seconds:
                continue
            copies = math.ceil(pq.capacity_rps / pp.capacity_rps - 1e-9)
            cost_p, cost_q = copies * pp.usd_per_hour, pq.usd_per_hour
            if cost_p < cost_q - 1e-12 or (
                abs(cost_p - cost_q) <= 1e-12 and (pp.boot_seconds, p) < (pq.boot_seconds, q)
            ):
                out.add(q)
                break
    return out


def oracle(inp: PlanInput, true_demand_rps: Sequence[float]) -> Plan:
    """``milp`` with the true future and zero boot lag: a lower bound on any real planner's cost."""
    instant = tuple(replace(p, boot_seconds=0.0) for p in inp.pools)
    fleet = tuple(replace(f, ready_in_s=0.0) for f in inp.fleet)
    plan = milp(replace(inp, demand_rps=tuple(true_demand_rps), pools=instant, fleet=fleet), 60.0, exact=True)
    return replace(plan, planner="oracle")


# ---- MArk's greedy -------------------------------------------------------------------------------


def mark_greedy(inp: PlanInput) -> Plan:
    """MArk's proactive heuristic (see the module docstring). On-demand pools only, as MArk."""
    candidates = [i for i, p in enumerate(inp.pools) if p.market == ON_DEMAND]
    if not candidates:
        raise ValueError("mark_greedy needs at least one on-demand pool")
    return evaluate(inp, _greedy_schedule(inp, _greedy_counts(inp, candidates)), "mark_greedy")


def _greedy_counts(inp: PlanInput, candidates: list[int]) -> list[list[int]]:
    """MArk's walk over the forecast: instances per step and pool, adding only into ``candidates``."""
    H, dt = inp.horizon, inp.step_seconds
    P = len(inp.pools)
    # The plan: instances per pool per step, starting from what exists (running and booting).
    start = [len(inp.existing_running(p)) + inp.existing_booting(p) for p in inp.pools]
    plan = [list(start) for _ in range(H)]

    def residual() -> list[float]:
        return [inp.demand_rps[t] - sum(plan[t][i] * inp.pools[i].capacity_rps for i in range(P)) for t in range(H)]

    def cost_per_request(i: int, t0: int, t1: int, res: list[float], launch: bool) -> float:
        p = inp.pools[i]
        span_s = max((t1 - t0) * dt, inp.min_billed_seconds)
        total = p.usd_per_hour / 3600.0 * (span_s + (p.boot_seconds if launch else 0.0))
        served = sum(min(max(r, 0.0), p.capacity_rps) for r in res[t0:t1]) * dt
        return total / served if served > 0 else math.inf

    t = 0
    while t < H:
        res = residual()
        if res[t] > 0:  # under-provisioned from t: fill the span
            t1 = t
            while t1 < H and res[t1] > 0:
                t1 += 1
            while True:
                res = residual()
                span = [s for s in range(t, t1) if res[s] > 0]
                if not span:
                    break
                s0, s1 = span[0], span[-1] + 1
                best = min(candidates, key=lambda i: (cost_per_request(i, s0, s1, res, True), i))
                for s in range(s0, s1):
                    plan[s][best] += 1
            t = t1
        else:  # over-provisioned from t: remove the dearest instance whose capacity the surplus covers
            t1 = t
            while t1 < H and res[t1] <= 0:
                t1 += 1
            while True:
                res = residual()
                surplus = min(-r for r in res[t:t1])
                removable = [i for i in range(P) if plan[t][i] > 0 and inp.pools[i].capacity_rps <= surplus + 1e-9]
                if not removable:
                    break
                worst = max(removable, key=lambda i: (inp.pools[i].usd_per_hour / inp.pools[i].capacity_rps, -i))
                for s in range(t, t1):
                    plan[s][worst] -= 1
            t = t1
    return plan


def _greedy_schedule(inp: PlanInput, plan: list[list[int]]) -> Schedule:
    """Turn MArk's per-step counts into launches and terminations on the shared cost model.

    Existing running instances are kept while the plan needs them at this or any later step (no
    terminate-then-relaunch), and now at least as many as any of the last k plans needed (MArk's
    scale-in hysteresis). An instance the plan needs from step t is launched at max(0, t − boot lag)
    (MArk launches ahead by the launch overhead); new instances stay alive through their boot and
    EC2's minimum billing, and are kept rather than relaunched when the plan dips and rises again.
    """
    H = inp.horizon
    keep, launches, alive_new = [], [], []
    for i, p in enumerate(inp.pools):
        running = len(inp.existing_running(p))
        booting = inp.existing_booting(p)
        recent = [n - booting for need in inp.recent_needs for (ty, mk, n) in need if (ty, mk) == p.key]
        suffix_need = [max(plan[s][i] for s in range(t, H)) - booting for t in range(H)]
        k_row = [min(running, max(0, suffix_need[t])) for t in range(H)]
        k_row[0] = min(running, max([k_row[0], *recent]))
        lag, hold = inp.lag_steps(p), inp.hold_steps(p)
        need_new = [max(0, plan[t][i] - booting - k_row[t]) for t in range(H)]
        l_row = [0] * H
        for t in range(H):
            launch_at = max(0, t - lag)
            have = sum(l_row[: launch_at + 1])
            if need_new[t] > have:
                l_row[launch_at] += need_new[t] - have
        a_row = []
        for t in range(H):
            booting_new = sum(l_row[max(0, t - lag + 1) : t + 1]) if lag > 0 else 0
            held = sum(l_row[max(0, t - hold + 1) : t + 1])
            a_row.append(min(sum(l_row[: t + 1]), max(need_new[t] + booting_new, held)))
        for t in range(H - 1, 0, -1):  # alive can only grow by launches: keep instead of relaunching
            a_row[t - 1] = max(a_row[t - 1], a_row[t] - l_row[t])
        keep.append(tuple(k_row))
        launches.append(tuple(l_row))
        alive_new.append(tuple(a_row))
    return Schedule(tuple(keep), tuple(launches), tuple(alive_new))
