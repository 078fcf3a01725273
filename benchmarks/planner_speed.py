"""Planner solve time: ``milp`` vs ``mark_greedy`` on 12 types x 2 markets x 15 steps, same run.

    .venv/bin/python benchmarks/planner_speed.py [--cases 200] [--exact 40]

Cases are seeded random demand curves (diurnal + spikes) over the catalog's instance types and a
random current fleet, with two sets of capacities: MobileNetV2's capacity at SLO (200 ms, 98 %)
from the capacity table (per-core CPU profiles, GPU estimates, host CPU per request), and a
synthetic set proportional to vCPUs (GPUs at a fixed 1,500 req/s). Prints p50/p99 solve time of each
planner, their ratio, how often milp's plan was cheaper, and, on the first ``--exact`` cases, how far
milp's plan is from the exact optimum (HiGHS branch and bound over every pool that no other replicates
for less, to a 1e-7 gap: ``milp(exact=True)``).
Target: milp p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.economics.capacity import capacity_report  # noqa: E402
from orchestrator.economics.catalog import load_catalog  # noqa: E402
from orchestrator.policy.planning import (  # noqa: E402
    ON_DEMAND,
    SPOT,
    FleetInstance,
    LambdaOption,
    PlanInput,
    PoolOption,
    mark_greedy,
    milp,
)

STEPS, STEP_S = 15, 60.0


def synthetic_pools() -> tuple[PoolOption, ...]:
    cat = load_catalog()
    out = []
    for name in cat.known_types():
        it = cat.instance(name)
        cap = 1500.0 * (it.gpu.count if it.gpu else 0) or 60.0 * it.vcpu / 2
        for market in (ON_DEMAND, SPOT):
            out.append(PoolOption(name, market, cat.price_usd_per_hour(name, market), cat.boot_seconds(name), cap))
    return tuple(out)


def case(rng: np.random.Generator, ps: tuple[PoolOption, ...]) -> PlanInput:
    base = rng.uniform(50, 3000)
    t = np.arange(STEPS)
    demand = base * (1 + 0.3 * np.sin(2 * np.pi * (t + rng.uniform(0, STEPS)) / STEPS))
    if rng.random() < 0.5:
        s = rng.integers(0, STEPS - 2)
        demand[s : s + rng.integers(1, 3)] *= rng.uniform(1.5, 4)
    fleet = []
    for j in range(rng.integers(0, 8)):
        p = ps[rng.integers(0, len(ps))]
        fleet.append(FleetInstance(f"i-{j}", p.instance_type, p.market, float(rng.choice([0.0, 0.0, 30.0]))))
    lam = LambdaOption(usd_per_request=1.2e-6, concurrency_limit=int(rng.choice([100, 1000])), latency_ms=40.0)
    return PlanInput(tuple(float(d) for d in demand), STEP_S, ps, tuple(fleet), lam)


def exact(inp: PlanInput) -> float:
    """Cost of the exact optimum (milp without its solve-time restrictions)."""
    return milp(inp, time_limit_s=60.0, exact=True).cost.total_usd


def run(name: str, ps: tuple[PoolOption, ...], n_cases: int, n_exact: int) -> bool:
    rng = np.random.default_rng(7)
    cases = [case(rng, ps) for _ in range(n_cases)]
    milp(cases[0])  # warm-up (imports, first HiGHS call)
    times: dict[str, list[float]] = {"milp": [], "mark_greedy": []}
    cheaper = 0
    ratios, gaps = [], []
    for k, inp in enumerate(cases):
        t0 = time.perf_counter()
        a = milp(inp)
        t1 = time.perf_counter()
        b = mark_greedy(inp)
        t2 = time.perf_counter()
        times["milp"].append((t1 - t0) * 1e3)
        times["mark_greedy"].append((t2 - t1) * 1e3)
        cheaper += a.cost.total_usd < b.cost.total_usd - 1e-9
        ratios.append(a.cost.total_usd / b.cost.total_usd)
        if k < n_exact:
            gaps.append(a.cost.total_usd / exact(inp) - 1.0)
    print(f"\n{name}: {len(ps) // 2} types x 2 markets x {STEPS} steps, {len(cases)} seeded cases")
    for planner_name, xs in times.items():
        q = statistics.quantiles(xs, n=100, method="inclusive")
        print(f"  {planner_name:12s} p50 {statistics.median(xs):7.2f} ms   p99 {q[98]:7.2f} ms   max {max(xs):7.2f} ms")
    p99_m = statistics.quantiles(times["milp"], n=100, method="inclusive")[98]
    p99_g = statistics.quantiles(times["mark_greedy"], n=100, method="inclusive")[98]
    verdict = "met" if p99_m <= 50 else "MISSED"
    print(f"  milp / mark_greedy p99 ratio: {p99_m / p99_g:.1f}x   target milp p99 <= 50 ms: {verdict}")
    print(f"  milp plan strictly cheaper than mark_greedy's in {cheaper}/{len(cases)} cases")
    pct = np.percentile(ratios, [10, 50, 90])
    print(f"  plan cost milp / mark_greedy (same cost model): p10 {pct[0]:.2f}  median {pct[1]:.2f}  p90 {pct[2]:.2f}")
    if gaps:
        g = np.array(gaps) * 100
        print(
            f"  milp above the exact optimum, first {len(g)} cases: median {np.median(g):.2f} %  "
            f"p90 {np.percentile(g, 90):.2f} %  max {g.max():.2f} %  (exact in {(g < 1e-4).sum()}/{len(g)})"
        )
    return p99_m <= 50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--exact", type=int, default=40, help="compare with the exact optimum on this many cases")
    args = ap.parse_args()
    cat = load_catalog()
    print("planner solve time (milp: HiGHS via highspy, 1 thread)")
    run(
        "mobilenet_v2 capacities at SLO (200 ms, 98 %)",
        capacity_report("mobilenet_v2", cat, 200.0, 0.98).pools(),
        args.cases,
        args.exact,
    )
    run("synthetic capacities (vCPU-proportional)", synthetic_pools(), args.cases, args.exact)


if __name__ == "__main__":
    main()
