"""MArk's proactive heuristic (Zhang et al., USENIX ATC'19) as its published code does it.

``modules/proactive_controller.py`` in marcoszh/MArk-Project: walk the forecast; over each
under-provisioned span add one instance of the type with the lowest cost per request over that span
(price x span + launch overhead, launch overhead = boot seconds x price as published, or
``PlanInput.launch_overhead_s`` x price (the public code: 180 s), divided by the requests it would
actually serve there), repeat until covered; over an over-provisioned span remove the instance
with the highest cost per request; running instances are already in the plan (zero overhead).
Scale-in happens only for instances that none of the last k plans needed. MArk as published plans
on-demand instances only and leaves Lambda to absorb what instances miss; its public code launches
spot instances (``PlanInput.greedy_markets``). The baseline ``milp`` must beat.
"""

from __future__ import annotations

import math

from orchestrator.policy.planning.problem import Plan, PlanInput, Schedule, evaluate


def mark_greedy(inp: PlanInput) -> Plan:
    """MArk's proactive heuristic (see the module docstring). Launches only into the pools of
    ``inp.greedy_markets`` (default on-demand, as MArk published)."""
    candidates = [i for i, p in enumerate(inp.pools) if p.market in inp.greedy_markets]
    if not candidates:
        raise ValueError(f"mark_greedy needs at least one pool in {', '.join(inp.greedy_markets)}")
    return evaluate(inp, greedy_schedule(inp, greedy_counts(inp, candidates)), "mark_greedy")


def greedy_counts(inp: PlanInput, candidates: list[int]) -> list[list[int]]:
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
        overhead_s = p.boot_seconds if inp.launch_overhead_s is None else inp.launch_overhead_s
        total = p.usd_per_hour / 3600.0 * (span_s + (overhead_s if launch else 0.0))
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


def greedy_schedule(inp: PlanInput, plan: list[list[int]]) -> Schedule:
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
