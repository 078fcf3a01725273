"""The fleet program: exact over its candidate grid (checked against enumeration), and it finds the
integer plans the LP relaxation points away from."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.policy.planning import (
    ON_DEMAND,
    SPOT,
    fleet_dp,
    mark_greedy,
    milp,
)
from orchestrator.policy.planning.fleet_dp import DPPool
from tests import fakes


def plan_cost(
    pools: list[DPPool],
    counts: list[list[int]],
    demand: list[float],
    lam_max: float,
    lam_usd: float,
    pen: float,
    need: list[float],
) -> float:
    """A trajectory priced step by step, written out plainly: instances, launches billed through boot
    (impossible before a launch can boot), Lambda up to its ceiling, the penalty beyond it and for the
    risk budget's shortfall."""
    usd, before = 0.0, [p.running for p in pools]
    for t in range(len(demand)):
        cap = worst = 0.0
        for j, p in enumerate(pools):
            n = counts[j][t]
            if n > before[j]:
                usd += math.inf if t < p.lag else (n - before[j]) * p.usd_per_step * p.lag
            usd += n * p.usd_per_step
            c = (n + p.ready_booting[t]) * p.capacity_rps
            cap += c
            worst = max(worst, c) if p.spot else worst
            before[j] = n
        gap = max(demand[t] - cap, 0.0)
        lam = min(gap, lam_max)
        usd += lam * lam_usd + (gap - lam) * pen + (max(need[t] - (cap - worst), 0.0) * pen if need[t] > 0 else 0.0)
    return usd


def brute_force(pools: list[DPPool], demand: list[float], *prices: float | list[float]) -> float:
    """The cheapest of every trajectory over the program's own candidate sets."""
    H, d = len(demand), len(pools)
    need = prices[-1]
    assert isinstance(need, list)
    grids = [[fleet_dp.candidates(pools, j, t, demand[t], need[t]) for j in range(d)] for t in range(H)]
    return min(
        plan_cost(pools, [[path[t][j] for t in range(H)] for j in range(d)], demand, *prices)  # type: ignore[arg-type]
        for path in itertools.product(*(itertools.product(*g) for g in grids))
    )


@st.composite
def small_programs(draw: st.DrawFn) -> tuple:  # type: ignore[type-arg]
    H = draw(st.integers(1, 3))
    pools = []
    for _ in range(draw(st.integers(1, 2))):
        lag = draw(st.integers(0, 2))
        pools.append(
            DPPool(
                usd_per_step=draw(st.floats(0.001, 0.05)),
                capacity_rps=draw(st.floats(50.0, 2000.0)),
                spot=draw(st.booleans()),
                lag=lag,
                running=draw(st.integers(0, 2)),
                ready_booting=tuple(sorted(draw(st.lists(st.integers(0, 1), min_size=H, max_size=H)))),
                lp_serving=tuple(draw(st.lists(st.floats(0.0, 4.0), min_size=H, max_size=H))),
            )
        )
    demand = draw(st.lists(st.floats(0.0, 3000.0), min_size=H, max_size=H))
    need = [d * 0.98 - draw(st.sampled_from([200.0, 5000.0])) for d in demand]
    return pools, demand, draw(st.floats(0.0, 1500.0)), 7.2e-5, 0.06, need


@settings(max_examples=40, deadline=None)
@given(small_programs())
def test_program_is_exact_over_its_candidate_grid(prog: tuple) -> None:  # type: ignore[type-arg]
    pools, demand, lam_max, lam_usd, pen, need = prog
    prices = (lam_max, lam_usd, pen, need)
    got = plan_cost(pools, fleet_dp.best_fleet(pools, demand, *prices), demand, *prices)
    assert math.isfinite(got)
    assert got == pytest.approx(brute_force(pools, demand, *prices), rel=1e-9)


def test_small_cpus_beat_a_fraction_of_a_gpu() -> None:
    # 200-400 req/s: the LP takes a fifth of a GPU, but a whole GPU ($0.21/h) costs more than the
    # 2-4 small CPU instances ($0.034/h each) that whole numbers need; the LP barely uses the CPUs.
    gpu = fakes.pool("g4dn.xlarge", SPOT, 1794.8)  # catalog: 0.2104 $/h spot, 120 s boot
    cpu = fakes.pool("c5.large", SPOT, 115.5)  # 0.034 $/h spot, 60 s boot
    cpu_od = fakes.pool("c5.large", ON_DEMAND, 115.5)
    demand = tuple(300 + 90 * math.sin(t / 3) for t in range(15))
    inp = fakes.plan_input(demand, pools=(gpu, cpu, cpu_od), spot_cover=0.0)
    plan, best = milp(inp), milp(inp, exact=True)
    assert all(ty == "c5.large" for step in plan.serving_per_step[1:] for ty, _, _ in step), plan.serving_per_step
    assert plan.cost.total_usd <= best.cost.total_usd * 1.001


def test_grid_stays_bounded_when_the_fleet_spans_every_pool() -> None:
    # Twenty pools with two candidates each would be a million cells per step; the grid is cut to
    # MAX_CELLS, keeping in the least-used pools the count nearest the LP's.
    pools = [DPPool(0.01, 100.0 + j, False, 1, 1, (0,), (0.2 + 0.03 * j,)) for j in range(20)]
    grid = fleet_dp._trim([[0, 1] for _ in pools], pools, 0)
    assert math.prod(len(c) for c in grid) <= fleet_dp.MAX_CELLS
    assert [c for c in grid if len(c) == 1] == [[0]] * sum(len(c) == 1 for c in grid)  # 0.2-0.47 rounds to 0
    assert sum(len(c) == 2 for c in grid) == int(math.log2(fleet_dp.MAX_CELLS))


def test_milp_plans_a_fleet_spread_over_twenty_pools() -> None:
    pools = tuple(
        fakes.pool(f"t{j}", ON_DEMAND, 100.0 + 5 * j, usd_per_hour=0.1 + 0.01 * j, boot_seconds=60.0) for j in range(20)
    )
    inp = fakes.plan_input(
        (900.0,) * 10,
        pools=pools,
        fleet=fakes.fleet(*pools),
        lambda_fn=fakes.lambda_option(concurrency_limit=10),
        spot_cover=0.0,
    )
    plan = milp(inp)
    assert max(plan.unserved_rps) == 0.0
    assert plan.cost.total_usd <= mark_greedy(inp).cost.total_usd + 1e-12
    assert len(plan.terminations) >= 10  # 900 req/s needs about 8 of the 20 running instances
