"""Simulator speed: simulated requests per wall-clock second on one day of the Twitter trace.

    .venv/bin/python benchmarks/simulator_speed.py [--scale 1] [--repeat 3] [--profile]

The last full day of ``../shared/traces/twitter-2021-08/workload.txt`` (about 5.5 M requests at
x1), MobileNetV2, RTmax 200 ms, SLmin 98 %, served by a static fleet of c5.large on-demand
instances sized for the day's peak second at the type's capacity at SLO (the simplest policy: no
forecast, no planner, so the figure is the serving model's own cost), Lambda enabled as the burst
absorber. Every request is dispatched, queued, batched by the worker's rule and answered, exactly
as in ``mark simulate``. Prints the best of ``--repeat`` runs: simulated requests per second of
wall time and its ratio to the target of 250,000 (a day of 5.5 M requests in <= 22 s).
``--profile`` runs once under cProfile and prints the top functions by own time.

Needs ``../shared`` beside the checkout; says so and exits 0 without it.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.controller.actions import Launch  # noqa: E402
from orchestrator.controller.state import Observation, Tick  # noqa: E402
from orchestrator.economics.latency_profiles import profile_for  # noqa: E402
from orchestrator.policy.batching import capacity_at_slo  # noqa: E402
from orchestrator.sim.runner import SimSetup, simulate  # noqa: E402
from orchestrator.types import Market, Slo  # noqa: E402
from orchestrator.workload.window import trace_window  # noqa: E402
from predictor.traces import load_trace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TWITTER = ROOT.parent / "shared" / "traces" / "twitter-2021-08" / "workload.txt"
TARGET_RPS = 250_000
TYPE = "c5.large"


class StaticFleet:
    """Launches ``count`` instances at the first step, then nothing (the benchmark's trivial policy)."""

    name = "static"
    interval_s = 60.0
    future_s = 0
    uses_lambda = True
    price_source = "ec2"
    boot_seconds: dict[str, float] = {}

    def __init__(self, count: int) -> None:
        self.count = count

    def initial_state(self) -> Any:
        return 0

    def step(self, state: Any, observation: Observation) -> Tick:
        actions = (Launch(TYPE, Market.ON_DEMAND, self.count, token="static"),) if state == 0 else ()
        return Tick(tick=state, at_s=observation.now_s, actions=actions, state=state + 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the trace's rates (default 1)")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported (default 3)")
    ap.add_argument("--profile", action="store_true", help="one run under cProfile: top functions by own time")
    args = ap.parse_args()
    if not TWITTER.is_file():
        print(f"skipped: {TWITTER.relative_to(ROOT.parent)} is absent (a fresh clone has no traces); nothing measured")
        return 0
    window = trace_window(load_trace(TWITTER), days=1, scale=args.scale)
    counts = window.counts
    setup = SimSetup(
        model="mobilenet_v2", slo=Slo(rt_max_ms=200, sl_min=0.98), instance_types=(TYPE,), epoch0_s=window.epoch0_s
    )
    model = setup.worker_models()[TYPE]
    cap = capacity_at_slo(
        profile_for(setup.model, TYPE, setup.catalog).service,
        batch_size=model.max_batch,
        batch_timeout_ms=model.batch_timeout_ms,
        rt_max_ms=setup.slo.rt_max_ms,
        sl_min=setup.slo.sl_min,
        epsilon_ms=setup.slo.epsilon_ms,
    )
    fleet = max(1, math.ceil(int(counts.max()) / cap))
    print(f"trace: {window.label}; {int(counts.sum()):,} requests, peak {int(counts.max())}/s")
    print(f"policy: static fleet of {fleet} x {TYPE} (capacity at SLO {cap:.0f} req/s each, b={model.max_batch}, "
          f"W={model.batch_timeout_ms:g} ms), Lambda enabled")  # fmt: skip
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        r = simulate(counts, StaticFleet(fleet), setup)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        print(f"(under the profiler: {r.arrivals / r.wall_seconds:,.0f} req/s)")
        return 0
    best = math.inf
    for k in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        r = simulate(counts, StaticFleet(fleet), setup)
        wall = time.perf_counter() - t0
        best = min(best, wall)
        print(
            f"run {k + 1}: {wall:.2f} s wall, {r.arrivals / wall:,.0f} req/s; SLO {100 * r.slo_attainment:.2f} %, "
            f"p50/p99 {r.latency_p50_ms:.1f}/{r.latency_p99_ms:.1f} ms, Lambda {100 * r.lambda_share:.2f} %, "
            f"${r.usd_per_million:.3f} per 1M"
        )
    rps = r.arrivals / best
    print(f"simulated requests per wall-clock second: {rps:,.0f} (best of {args.repeat}; whole run, setup included)")
    print(f"ratio to the target {TARGET_RPS:,}: {rps / TARGET_RPS:.2f} ({'met' if rps >= TARGET_RPS else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
