"""Integer fleets from the planner's LP relaxation: an exact dynamic program over a neighbourhood.

The MILP's LP relaxation says, per pool and step, how many instances should serve (fractionally).
Branch and bound turns that into integers, but on this model HiGHS spends 0.1-1 s in root cuts when
capacities are lumpy (GPUs) and the spot risk budget binds. This module finds the cheapest integer
plan among a small set of candidate counts per pool and step around the LP's values (floor - 1 ..
ceil + 1, none, and what runs now), exactly, by dynamic programming over time:

- state at step t: the serving count of every candidate pool (a grid, the product of the candidates);
- cost of a state: its instance-steps, Lambda for the demand it leaves (up to Lambda's ceiling), the
  unserved penalty beyond that, and the same penalty for falling short of the spot risk budget,
  exactly as the MILP prices them;
- cost of a move between steps: separable per pool, a rise of n instances of pool i at step t means n
  launches at t - lag_i, each billed through its boot (lag_i steps x price); a fall is a termination
  (free). A rise earlier than a launch can boot is impossible. Separability makes the move a
  min-plus transform along one axis at a time, so a step costs d x K^(d+1) operations, not K^(2d).

Pure: numpy in, serving counts out; ``planner.milp`` turns them into a schedule and prices it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_CELLS = 10_000  # grid cells per step: beyond this the least-used pools lose candidates


@dataclass(frozen=True)
class DPPool:
    """One candidate pool as the program sees it: serving counts exclude existing booting instances,
    which serve from ``ready_booting[t]`` on whatever is decided and are billed anyway."""

    usd_per_step: float
    capacity_rps: float
    spot: bool
    lag: int  # steps from launch to serving
    running: int  # existing running instances: serving at most this many before any launch boots
    ready_booting: tuple[int, ...]  # existing booting instances serving by step t
    lp_serving: tuple[float, ...]  # the LP relaxation's serving count per step (excluding ready_booting)


def candidates(pools: Sequence[DPPool], j: int, t: int, demand: float) -> list[int]:
    """Serving counts worth trying for pool ``j`` at step ``t``: around the LP's value, none, what runs
    now, and the count that would cover alone what the others' whole instances leave (the LP's
    fractional remainder may be met best by a pool the LP hardly uses, e.g. small CPUs for 0.2 GPU)."""
    pool = pools[j]
    s = pool.lp_serving[t]
    lo, hi = math.floor(s + 1e-6), math.ceil(s - 1e-6)
    others = sum(
        (math.floor(q.lp_serving[t] + 1e-6) + q.ready_booting[t]) * q.capacity_rps for q in pools if q is not pool
    )
    left = max(0.0, demand - others - pool.ready_booting[t] * pool.capacity_rps)
    alone = math.ceil(left / pool.capacity_rps - 1e-9)
    vals = {0, lo - 1, lo, hi, hi + 1, pool.running, alone - 1, alone}
    cap = pool.running if t < pool.lag else math.inf  # nothing launched now serves before its boot
    return sorted(v for v in vals if 0 <= v <= cap)


def best_fleet(
    pools: Sequence[DPPool],
    demand_rps: Sequence[float],
    lambda_max_rps: float,
    lambda_usd_per_rps_step: float,
    penalty_usd_per_rps_step: float,
    risk_need_rps: Sequence[float],
) -> list[list[int]]:
    """Serving counts ``[pool][step]`` of the cheapest plan over the candidate grid (see module doc).

    ``risk_need_rps[t]``: serving capacity that must remain after losing the largest spot pool (Lambda's
    ceiling already subtracted; <= 0 where the budget cannot bind). A second pass around the plan found
    was measured (benchmarks/planner_speed.py cases): 0.02 % cheaper in total, +10-20 ms at p99; not done."""
    H, d = len(demand_rps), len(pools)
    grids = [_trim([candidates(pools, j, t, demand_rps[t]) for j in range(d)], pools, t) for t in range(H)]
    values: list[np.ndarray] = []
    prev_vals = [[p.running] for p in pools]  # before step 0: what runs now
    prev = np.zeros((1,) * d)
    for t in range(H):
        moved = prev
        for i, p in enumerate(pools):
            moved = _minplus_axis(moved, i, _move_cost(p, prev_vals[i], grids[t][i], t))
        values.append(
            moved
            + _state_cost(
                pools,
                grids[t],
                t,
                demand_rps[t],
                lambda_max_rps,
                lambda_usd_per_rps_step,
                penalty_usd_per_rps_step,
                risk_need_rps[t],
            )
        )
        prev, prev_vals = values[-1], grids[t]
    # Walk back from the cheapest final state.
    idx = np.unravel_index(int(np.argmin(values[-1])), values[-1].shape)
    chosen = [idx]
    for t in range(H - 1, 0, -1):
        total = values[t - 1].copy()
        for i, p in enumerate(pools):
            cost = _move_cost(p, grids[t - 1][i], grids[t][i], t)[:, idx[i]]
            total += cost.reshape([-1 if j == i else 1 for j in range(d)])
        idx = np.unravel_index(int(np.argmin(total)), total.shape)
        chosen.append(idx)
    chosen.reverse()
    return [[grids[t][i][chosen[t][i]] for t in range(H)] for i in range(d)]


def _trim(cands: list[list[int]], pools: Sequence[DPPool], t: int) -> list[list[int]]:
    """Keep the grid under MAX_CELLS: drop the outermost candidates of the pools the LP uses least."""
    order = sorted(range(len(pools)), key=lambda i: pools[i].lp_serving[t] * pools[i].capacity_rps)
    while math.prod(len(c) for c in cands) > MAX_CELLS:
        i = next((i for i in order if len(cands[i]) > 2), None)
        if i is None:
            break
        s = pools[i].lp_serving[t]
        cands[i].remove(max(cands[i], key=lambda v: (abs(v - s), v)))
    return cands


def _move_cost(p: DPPool, before: Sequence[int], after: Sequence[int], t: int) -> np.ndarray:
    """[k_before, k_after]: launching the rise lag steps ahead (billed through boot); falls are free."""
    rise = np.subtract.outer(np.asarray(after), np.asarray(before)).T
    cost = np.where(rise > 0, rise * p.usd_per_step * p.lag, 0.0)
    if t < p.lag:
        cost = np.where(rise > 0, np.inf, cost)
    return cost


def _minplus_axis(values: np.ndarray, axis: int, cost: np.ndarray) -> np.ndarray:
    v = np.moveaxis(values, axis, -1)
    out = (v[..., :, None] + cost).min(axis=-2)
    return np.moveaxis(out, -1, axis)


def _state_cost(
    pools: Sequence[DPPool],
    grid: list[list[int]],
    t: int,
    demand: float,
    lam_max: float,
    lam_usd: float,
    pen_usd: float,
    need: float,
) -> np.ndarray:
    d = len(pools)
    shape = [len(g) for g in grid]
    usd = np.zeros(shape)
    cap = np.zeros(shape)
    worst_spot = np.zeros(shape)
    for i, p in enumerate(pools):
        n = np.asarray(grid[i], dtype=float).reshape([-1 if j == i else 1 for j in range(d)])
        usd = usd + n * p.usd_per_step
        c = (n + p.ready_booting[t]) * p.capacity_rps
        cap = cap + c
        if p.spot:
            worst_spot = np.maximum(worst_spot, c)
    gap = np.maximum(demand - cap, 0.0)
    lam = np.minimum(gap, lam_max)
    usd = usd + lam * lam_usd + (gap - lam) * pen_usd
    if need > 0:
        usd = usd + np.maximum(need - (cap - worst_spot), 0.0) * pen_usd
    return usd
