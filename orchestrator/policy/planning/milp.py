"""Provisioning planner (DESIGN.md §3): how many instances of which (type, market) over the next H steps.

Pure: frozen dataclasses in, a ``Plan`` out; no I/O, no clock. One signature, three implementations:

- ``mark_greedy``: MArk's heuristic as its published code does it (``mark_greedy.py``), the baseline;
- ``milp`` (ours): a mixed-integer program over the horizon (built and solved in ``milp_program.py``);
  HiGHS solves its LP relaxation and ``fleet_dp`` the integer plan around it (``exact=True``: branch
  and bound);
- ``oracle``: ``milp`` fed with the true future and zero boot lag: the lower bound for the simulator.

Every plan is priced by the same ``evaluate`` (``problem.py``), so planners compare on one cost
model. The package (``orchestrator.policy.planning``) is the one place to import the planning API from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from orchestrator.policy.planning import fleet_dp
from orchestrator.policy.planning.mark_greedy import greedy_counts, greedy_schedule, mark_greedy
from orchestrator.policy.planning.milp_program import solve_program
from orchestrator.policy.planning.problem import (
    ON_DEMAND,
    SPOT,
    UNSERVED_USD_PER_REQUEST,
    Plan,
    PlanInput,
    Schedule,
    evaluate,
    window_sum,
)

# A safety net for HiGHS (the LP takes milliseconds; branch and bound in ``exact`` mode, seconds):
# where it has not finished by then, the best plan found so far is used (never dearer than MArk's).
MIP_TIME_LIMIT_S = 5.0


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
    relaxed[sub_pools] = solve_program(sub, no_launch, time_limit_s, integer=False)
    used = {i for i in range(P) if i not in dominated and relaxed[i].sum() > 1e-6}
    for market in (ON_DEMAND, SPOT):  # integer rounding may need a small unit the LP does not use
        small = [i for i, p in enumerate(inp.pools) if p.market == market and i not in dominated]
        if small:
            used.add(min(small, key=lambda i: (inp.pools[i].capacity_rps, inp.pools[i].usd_per_hour, i)))
    fleet_keys = {f.key for f in inp.fleet}
    pools = sorted(used | {i for i, p in enumerate(inp.pools) if p.key in fleet_keys})
    dt = inp.step_seconds
    counts = fleet_dp.best_fleet(
        [_dp_pool(inp, i, relaxed[i]) for i in pools],
        inp.demand_rps,
        inp.lambda_fn.max_rps,
        dt * inp.lambda_fn.usd_per_request,
        dt * UNSERVED_USD_PER_REQUEST,
        inp.risk_need_rps.tolist(),
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
    start = greedy_schedule(sub, greedy_counts(sub, launchable)) if launchable else None
    x = np.rint(solve_program(sub, no_launch, time_limit_s, integer=True, start=start)).astype(int)
    rows = {i: j for j, i in enumerate(sub_pools)}

    def part(lo: int, hi: int) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(v) for v in x[rows[i], lo:hi]) if i in rows else (0,) * H for i in range(P))

    schedule = Schedule(keep=part(2 * H, 3 * H), launches=part(0, H), alive_new=part(H, 2 * H))
    return _never_dearer_than_mark(inp, evaluate(inp, schedule, "milp"))


def dominated_pools(inp: PlanInput) -> set[int]:
    """Pools no optimal plan needs to launch into: another pool of the same market boots no later and
    covers the same capacity for no more money with copies of itself (ceil(cap_q / cap_p) × price_p ≤
    price_q). Same-size types at the same price per capacity (c5.large, c5.xlarge, ... under a
    per-core profile) collapse to one, which removes the symmetric choices that make the MILP slow.
    Spot pools are pruned only while the risk budget cannot bind (moving capacity between spot pools
    changes which pool is the largest)."""
    need = float(inp.risk_need_rps.max()) if inp.spot_cover > 0 else -1.0
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
