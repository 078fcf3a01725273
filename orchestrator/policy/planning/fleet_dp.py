"""Integer fleets from the planner's LP relaxation: an exact dynamic program over a neighbourhood.

The MILP's LP relaxation says, per pool and step, how many instances should serve (fractionally).
Branch and bound turns that into integers, but on this model HiGHS spends 0.1-1 s in root cuts when
capacities are lumpy (GPUs) and the spot risk budget binds. This module finds the cheapest integer
plan among a small set of candidate counts per pool and step (``candidates``: floor - 1 .. ceil + 1 of
the LP's value, none, what runs now, and what this pool alone would need for the rest), exactly, by
dynamic programming over time:

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


def candidates(pools: Sequence[DPPool], j: int, t: int, demand: float, risk_need: float = 0.0) -> list[int]:
    """Serving counts worth trying for pool ``j`` at step ``t``: around the LP's value, none, what runs
    now, and the counts that would cover alone what the others' whole instances leave, of demand and of
    the spot risk budget (the LP's fractional remainder may be met best by a pool the LP hardly uses,
    e.g. small CPUs for 0.2 GPU, or several small spot pools rather than one large one)."""
    pool = pools[j]
    s = pool.lp_serving[t]
    lo, hi = math.floor(s + 1e-6), math.ceil(s - 1e-6)
    others = [(math.floor(q.lp_serving[t] + 1e-6) + q.ready_booting[t]) * q.capacity_rps for q in pools]
    others[j] = 0.0
    own = pool.ready_booting[t] * pool.capacity_rps
    vals = {0, lo - 1, lo, hi, hi + 1, pool.running}
    shortfalls = [demand - sum(others) - own]
    if risk_need > 0:
        worst = max((c for q, c in zip(pools, others, strict=True) if q.spot), default=0.0)
        shortfalls.append(risk_need - (sum(others) - worst) - own)
    for short in shortfalls:
        alone = math.ceil(max(0.0, short) / pool.capacity_rps - 1e-9)
        vals |= {alone - 1, alone}
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
    grids = [
        _trim([candidates(pools, j, t, demand_rps[t], risk_need_rps[t]) for j in range(d)], pools, t) for t in range(H)
    ]
    values: list[np.ndarray] = []
    moves: list[list[np.ndarray]] = []  # per step and pool: [before, after] cost, kept for the walk back
    prev_vals = [[p.running] for p in pools]  # before step 0: what runs now
    prev = np.zeros((1,) * d)
    for t in range(H):
        moves.append([_move_cost(p, prev_vals[i], grids[t][i], t) for i, p in enumerate(pools)])
        moved = prev
        # Axes that shrink most first: the arrays in between stay smaller (about 10 % less work).
        for i in sorted(range(d), key=lambda i: (len(grids[t][i]) / len(prev_vals[i]), i)):
            moved = _minplus_axis(moved, i, moves[t][i])
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
        total = values[t - 1] + _outer_sum([moves[t][i][:, idx[i]] for i in range(d)])
        idx = np.unravel_index(int(np.argmin(total)), total.shape)
        chosen.append(idx)
    chosen.reverse()
    return [[grids[t][i][chosen[t][i]] for t in range(H)] for i in range(d)]


def _outer_sum(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """out[i0, i1, ...] = vectors[0][i0] + vectors[1][i1] + ...: built outward one axis at a time, so
    the work is about twice the output's size rather than once per vector."""
    out = np.zeros(())
    for v in vectors:
        out = out[..., None] + v
    return out


def _trim(cands: list[list[int]], pools: Sequence[DPPool], t: int) -> list[list[int]]:
    """Keep the grid under MAX_CELLS: drop the outermost candidates of the pools the LP uses least, down
    to two per pool, then (many pools: a fleet spread over every type) down to the one nearest the LP."""
    order = sorted(range(len(pools)), key=lambda i: pools[i].lp_serving[t] * pools[i].capacity_rps)
    while math.prod(len(c) for c in cands) > MAX_CELLS:
        i = next((i for i in order if len(cands[i]) > 2), None)
        if i is None:
            i = next((i for i in order if len(cands[i]) > 1), None)
        if i is None:
            break
        s = pools[i].lp_serving[t]
        cands[i].remove(max(cands[i], key=lambda v: (abs(v - s), v)))
    return cands


def _move_cost(p: DPPool, before: Sequence[int], after: Sequence[int], t: int) -> np.ndarray:
    """[k_before, k_after]: launching the rise lag steps ahead (billed through boot); falls are free."""
    rise = np.subtract.outer(np.asarray(after, dtype=float), np.asarray(before, dtype=float)).T
    if t < p.lag:  # a launch made now cannot serve yet
        return np.where(rise > 0, np.inf, 0.0)
    return np.maximum(rise, 0.0) * (p.usd_per_step * p.lag)


def _minplus_axis(values: np.ndarray, axis: int, cost: np.ndarray) -> np.ndarray:
    """out[.., a, ..] = min over b of values[.., b, ..] + cost[b, a] along ``axis``: one pass per
    before-value, so each temporary is the size of the output (it stays in cache; a single broadcast
    over every (b, a) pair was measured slower)."""
    shape = list(values.shape)
    shape[axis] = cost.shape[1]
    out = np.full(shape, np.inf)
    index: list[slice] = [slice(None)] * values.ndim
    along = [1] * values.ndim
    along[axis] = cost.shape[1]
    for b in range(cost.shape[0]):
        index[axis] = slice(b, b + 1)
        np.minimum(out, values[tuple(index)] + cost[b].reshape(along), out=out)
    return out


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
    """Cost of every state on the grid. Sums over pools are built outward one axis at a time, so the
    work is about twice the grid's size rather than once per pool."""
    counts = [np.asarray(g, dtype=float) for g in grid]
    caps = [(n + p.ready_booting[t]) * p.capacity_rps for p, n in zip(pools, counts, strict=True)]
    usd = _outer_sum([n * p.usd_per_step for p, n in zip(pools, counts, strict=True)])
    cap = _outer_sum(caps)
    gap = np.maximum(demand - cap, 0.0)
    lam = np.minimum(gap, lam_max)
    usd = usd + lam * lam_usd + (gap - lam) * pen_usd
    if need > 0 and any(p.spot for p in pools):
        worst_spot = np.zeros(())
        for p, c in zip(pools, caps, strict=True):
            worst_spot = np.maximum(worst_spot[..., None], c) if p.spot else worst_spot[..., None]
        usd = usd + np.maximum(need - (cap - worst_spot), 0.0) * pen_usd
    elif need > 0:
        usd = usd + np.maximum(need - cap, 0.0) * pen_usd
    return usd
