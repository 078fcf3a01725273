"""The planner's MILP as HiGHS sees it: columns, rows and bounds from index arrays, and the solve.

Per pool and step, integer launches l, alive instances from launches a and kept existing running
instances k; per step the continuous Lambda rate λ, unserved rate u, the largest spot pool's capacity S
and a risk shortfall r. ``planner.milp`` documents the model; this module only builds and solves it.
"""

from __future__ import annotations

import functools

import highspy
import numpy as np
from scipy.sparse import coo_matrix, csc_matrix

from orchestrator.policy.planning.problem import UNSERVED_USD_PER_REQUEST, PlanInput, Schedule, serving_counts


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


def solve_program(
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
    need = inp.risk_need_rps
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
