"""``mark plan fleet``: what the provisioning planners would launch, keep and send to Lambda for a demand
forecast, from the capacity table (``mark plan capacity``) and the catalog's prices. No cloud is touched.

Registered by :func:`add_plan_fleet_parser` from ``orchestrator/cli/main.py``.
"""

from __future__ import annotations

import argparse
import math
import sys

from orchestrator.cli.args import fraction, positive_ms
from orchestrator.economics.lambda_price import usd_per_invocation
from orchestrator.policy.planning import (
    ON_DEMAND,
    PLANNERS,
    SPOT,
    FleetInstance,
    LambdaOption,
    Plan,
    PlanInput,
)


def _demand(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated req/s per step, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be one or more finite req/s >= 0, got {text!r}")
    return values


def _fleet_entry(text: str) -> tuple[str, str, int]:
    parts = text.split(":")
    count = parts[2] if len(parts) == 3 else "1"
    if len(parts) not in (2, 3) or parts[1] not in (ON_DEMAND, SPOT) or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"must be TYPE:{ON_DEMAND}|{SPOT}[:COUNT>=1], got {text!r}")
    return parts[0], parts[1], int(count)


def add_plan_fleet_parser(plan: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = plan.add_parser(
        "fleet",
        help="the fleet and Lambda share milp and MArk's greedy plan for a demand forecast (no cloud touched)",
    )
    p.add_argument("--model", required=True, help="model variant (its capacity table gives the pools)")
    p.add_argument("--demand", required=True, type=_demand, help="forecast req/s per step, e.g. 300,300,900,900,300")
    p.add_argument("--step-s", type=positive_ms, default=60.0, help="seconds per step (default 60)")
    p.add_argument(
        "--fleet", action="append", type=_fleet_entry, default=[], help="running now: TYPE:MARKET[:COUNT] (repeatable)"
    )
    p.add_argument("--planner", choices=[*PLANNERS, "both"], default="both")
    p.add_argument("--rt-max-ms", type=positive_ms, default=200.0, help="RTmax: the latency bound (ms)")
    p.add_argument("--sl-min", type=fraction, default=0.98, help="SLmin: share of requests within RTmax")
    p.add_argument("--types", nargs="+", default=None, help="only these instance types (default: the catalog's)")
    p.add_argument(
        "--spot-cover",
        type=float,
        default=0.98,
        help="risk budget: share of demand covered after losing the largest spot pool (0 = off)",
    )
    p.add_argument("--lambda-memory-mb", type=int, default=2048)
    p.add_argument("--lambda-concurrency", type=int, default=None, help="default: the catalog's account default")
    p.add_argument(
        "--lambda-ms",
        type=positive_ms,
        default=None,
        help="warm Lambda duration per request (default: estimated, see the output)",
    )
    p.set_defaults(func=cmd_plan_fleet)


def _lambda(args: argparse.Namespace, catalog, model: str) -> tuple[LambdaOption, str]:  # type: ignore[no-untyped-def]
    """Lambda's price per request and ceiling; the duration is measured-on-this-machine when not given."""
    from orchestrator.economics.capacity import request_cpu_ms
    from orchestrator.economics.latency_profiles import single_thread_batches

    lam = catalog.lambda_
    if not lam.memory_mb.min <= args.lambda_memory_mb <= lam.memory_mb.max:
        raise ValueError(f"--lambda-memory-mb must be in {lam.memory_mb.min}..{lam.memory_mb.max}")
    limit = lam.default_concurrency.value if args.lambda_concurrency is None else args.lambda_concurrency
    if limit < 0:
        raise ValueError(f"--lambda-concurrency must be >= 0, got {limit}")
    if args.lambda_ms is not None:
        ms, how = args.lambda_ms, "given"
    else:
        t1 = single_thread_batches(model)[0][1]
        cpu = request_cpu_ms(model) or 0.0
        ms = t1 + cpu
        how = f"estimated: this machine's one-thread T(1) p50 {t1:.1f} ms + host CPU per request {cpu:.2f} ms"
    usd = usd_per_invocation(lam, args.lambda_memory_mb, ms)
    return LambdaOption(usd, limit, ms), how


def cmd_plan_fleet(args: argparse.Namespace) -> int:
    from orchestrator.economics.capacity import capacity_report
    from orchestrator.economics.catalog import load_catalog

    catalog = load_catalog()
    report = capacity_report(args.model, catalog, args.rt_max_ms, args.sl_min, types=args.types)
    pools = report.pools()
    if not pools:
        reasons = "; ".join(f"{t}: {r}" for t, r in report.skipped)
        print(f"error: no instance type can serve {args.model} within the SLO ({reasons})", file=sys.stderr)
        return 2
    known = {p.key for p in pools}
    fleet: list[FleetInstance] = []
    for ty, market, n in args.fleet:
        if (ty, market) not in known:
            print(
                f"error: --fleet: {ty}:{market} is not a pool for {args.model} under this SLO; "
                f"pools: {', '.join(sorted(f'{t}:{m}' for t, m in known))}",
                file=sys.stderr,
            )
            return 2
        fleet += [FleetInstance(f"{ty}-{market}-{len(fleet) + k}", ty, market) for k in range(n)]
    lam, how = _lambda(args, catalog, args.model)
    inp = PlanInput(args.demand, args.step_s, pools, tuple(fleet), lam, spot_cover=args.spot_cover)
    names = list(PLANNERS) if args.planner == "both" else [args.planner]
    from orchestrator.runtime.simulation import silence_solver_banner

    silence_solver_banner()
    plans = {name: PLANNERS[name](inp) for name in names}
    print(
        f"{args.model}: {inp.horizon} steps of {args.step_s:g} s, {args.sl_min:.4g} of requests within "
        f"{args.rt_max_ms:g} ms; {len(pools)} pools from the capacity table; running now: {len(fleet)} instances"
    )
    print(
        f"Lambda: {args.lambda_memory_mb} MB, {lam.concurrency_limit} concurrent, {lam.latency_ms:.1f} ms a request "
        f"({how}): ${lam.usd_per_request * 1e6:.2f} per 1M, at most {lam.max_rps:.0f} req/s"
    )
    print()
    print(
        f"{'planner':12} {'total $':>9} {'instances $':>11} {'Lambda $':>9}  {'pre-warm':>8}  "
        "launch now / terminate now"
    )
    for name, plan in plans.items():
        c = plan.cost
        launches = ", ".join(f"{ty}:{mk} x{n}" for ty, mk, n in plan.launches) or "none"
        print(
            f"{name:12} {c.total_usd:9.4f} {c.instances_usd:11.4f} {c.lambda_usd:9.4f}  {plan.lambda_prewarm:8d}  "
            f"{launches} / {len(plan.terminations) or 'none'}"
        )
    if len(plans) == 2:
        print(f"milp / mark_greedy cost: {plans['milp'].cost.total_usd / plans['mark_greedy'].cost.total_usd:.2f}")
    for name, plan in plans.items():
        _print_steps(name, inp, plan)
    return 0


def _print_steps(name: str, inp: PlanInput, plan: Plan) -> None:
    caps = {p.key: p.capacity_rps for p in inp.pools}
    print(f"\n{name}: serving fleet per step")
    print(f"{'step':>4} {'demand':>8} {'capacity':>9} {'Lambda':>8} {'unserved':>8}  instances serving")
    for t, step in enumerate(plan.serving_per_step):
        cap = sum(n * caps[(ty, mk)] for ty, mk, n in step)
        fleet = ", ".join(f"{ty}:{mk} x{n}" for ty, mk, n in step) or "-"
        unserved = plan.unserved_rps[t]
        print(f"{t:4d} {inp.demand_rps[t]:8.1f} {cap:9.1f} {plan.lambda_rps[t]:8.1f} {unserved:8.1f}  {fleet}")
    if any(plan.unserved_rps):
        print(
            "unserved: no instance can serve yet and Lambda's concurrency is spent: raise --lambda-concurrency, "
            "or start with a --fleet"
        )
