"""``mark simulate``: what a trace would cost, and at what SLO, under each policy (ours, MArk as released
and as published, SageMaker target tracking, a static peak fleet, Lambda only, the oracle)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.cli.args import non_negative, non_negative_int, positive, positive_int
from orchestrator.cli.forecast import trace_format_args, trace_format_kwargs

SIM_MAX_INSTANCES = 1000  # without --config: the deployment config's default (8) is sized for this machine

# mark simulate --policy all: this order (the references last, so the table reads down to them)
POLICY_ORDER = (
    "ours",
    "mark-paper",
    "mark-release",
    "sagemaker",
    "sagemaker-batched",
    "static-peak",
    "lambda-only",
    "oracle",
)


def add_simulate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="replay a trace through the controller and the baselines on a virtual clock: cost and SLO per policy",
        description="Replays a request trace per request on a virtual clock (Poisson arrivals within each "
        "second, the front door's dispatch, each worker's own batch rule, boot lag, EC2 billing, Lambda with "
        "cold starts) under each policy, and prints cost per 1M requests and SLO attainment side by side.",
    )
    p.add_argument("--trace", required=True, help="any trace file the project reads (per-second counts, CSV, …)")
    trace_format_args(p)
    p.add_argument("--scale", type=positive, default=1.0, help="multiply the trace's rates")
    p.add_argument("--days", type=positive, default=None, help="the last N full days of the trace (default 1)")
    p.add_argument("--start", default=None, help="window start: seconds from the trace's start, or an ISO time")
    p.add_argument("--end", default=None, help="window end: seconds from the trace's start, or an ISO time")
    p.add_argument(
        "--policy", nargs="+", default=["all"], metavar="NAME", help=f"all, or some of: {', '.join(POLICY_ORDER)}"
    )
    p.add_argument("--config", default=None, metavar="FILE", help="deployment config (mark config example)")
    p.add_argument("--model", default=None, help="model variant (default: the config's first, else mobilenet_v2)")
    p.add_argument("--rt-max-ms", type=positive, default=None, help="RTmax (default: the config's, 200)")
    p.add_argument("--sl-min", type=float, default=None, help="SLmin (default: the config's, 0.98)")
    p.add_argument(
        "--types",
        nargs="+",
        default=None,
        metavar="TYPE",
        help="allowed instance types (default: the config's; without --config every catalog type, and at most "
        f"{SIM_MAX_INSTANCES} instances)",
    )
    p.add_argument(
        "--catalog",
        default=None,
        metavar="FILE",
        help="price catalog (same schema as profiles/catalog.yaml: prices, boot times, Lambda pricing)",
    )
    p.add_argument(
        "--profiles",
        default=None,
        metavar="DIR",
        help="latency profiles, one folder per model as profiles/latency (mark profile writes them)",
    )
    p.add_argument(
        "--forecaster",
        choices=("combined", "lstm"),
        default=None,
        help="what ours forecasts with (default: the config's, combined: every member mixed by recent loss)",
    )
    p.add_argument("--spot-hazard", type=non_negative, default=0.0, help="spot interruptions per spot instance-hour")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seeds arrivals, service times, spot hazards")
    p.add_argument("--jobs", type=positive_int, default=2, help="policies simulated at once (processes)")
    p.add_argument("--out", default=None, metavar="DIR", help="write results.json, results.csv, per-policy JSON, PNGs")
    p.set_defaults(func=cmd_simulate)


def _deployment(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from orchestrator.config import DeploymentConfig, load_config, with_overrides
    from orchestrator.economics.catalog import load_catalog

    base = load_config(args.config) if args.config else DeploymentConfig()
    updates: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for value, path, flag in (
        ([args.model] if args.model else None, "models", "--model"),
        (args.rt_max_ms, "slo.rt_max_ms", "--rt-max-ms"),
        (args.sl_min, "slo.sl_min", "--sl-min"),
        (args.types, "fleet.instance_types", "--types"),
        (args.forecaster, "controller.forecaster", "--forecaster"),
    ):
        if value is not None:
            updates[path], origins[path] = value, flag
    if not args.config:  # a simulated cloud: every catalog type, and no machine-sized fleet bound
        if args.types is None:
            updates["fleet.instance_types"] = load_catalog(args.catalog).known_types()
        updates["fleet.max_instances"] = SIM_MAX_INSTANCES
    if "fleet.instance_types" in updates:
        updates["fleet.initial_type"] = None
    return with_overrides(base, updates, origins) if updates else base


def cmd_simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from orchestrator.config import ConfigError
    from orchestrator.economics.catalog import load_catalog
    from orchestrator.runtime.sim_report import plot, table, write_csv, write_json
    from orchestrator.runtime.simulation import SimulationPlan, controller_for, policy_names, run_all
    from orchestrator.workload.window import trace_window
    from predictor.traces import load_trace

    deployment = _deployment(args)  # ConfigError names each bad field and flag
    problems = deployment.problems_with(load_catalog(args.catalog))
    if problems:
        raise ConfigError(args.config or "the command line", problems)
    if args.profiles is not None and not Path(args.profiles).is_dir():
        raise FileNotFoundError(f"--profiles {args.profiles}: not a folder (mark profile writes one per model)")
    policies = policy_names(args.policy, POLICY_ORDER)
    trace = load_trace(args.trace, **trace_format_kwargs(args))
    window = trace_window(trace, days=args.days, start=args.start, end=args.end, scale=args.scale, seed=args.seed)
    model = deployment.models[0]
    plan = SimulationPlan(
        window,
        deployment,
        policies,
        model,
        seed=args.seed,
        spot_hazard_per_hour=args.spot_hazard,
        catalog_path=args.catalog,
        profiles_dir=args.profiles,
    )
    out = Path(args.out) if args.out else None
    if out is not None:  # before the run, not after it
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"--out {args.out}: cannot make the output folder ({e.strerror})") from None
    problems = []
    if "lambda-only" in policies and not deployment.lambda_.enabled:
        problems.append(("lambda.enabled", "false, so the lambda-only policy has nothing to run on"))
    for name in policies:  # build each once here: a model, profile or SLO it cannot serve fails now
        try:
            controller_for(plan, name)
        except (ValueError, OSError) as e:
            msg = str(e)
            problems.append((f"--policy {name}", msg if len(msg) <= 400 else msg[:400] + " ..."))
    if problems:
        raise ConfigError("mark simulate", problems)
    total = int(window.counts.sum())
    print(
        f"[simulate] {trace.describe()}\n[simulate] window {window.label}: {window.seconds} s, {total:,} requests "
        f"(mean {total / window.seconds:.1f}/s, peak {int(window.counts.max())}/s); {model}, "
        f"SLO {deployment.slo.rt_max_ms:g} ms for {100 * deployment.slo.sl_min:g}%; types "
        f"{', '.join(deployment.fleet.instance_types)}; policies {', '.join(policies)}",
        file=sys.stderr,
    )
    t0 = time.monotonic()
    bar = tqdm(total=len(policies) * 100, unit="%", desc="simulating", file=sys.stderr, disable=None)
    last_line = [time.monotonic()]

    def on_progress(done: dict[str, float]) -> None:
        running = " ".join(f"{p}:{100 * f:.0f}%" for p, f in done.items() if 0 < f < 1)
        if bar.disable:  # not a terminal (a log, CI): one line a minute
            if time.monotonic() - last_line[0] >= 60:
                last_line[0] = time.monotonic()
                finished = sum(1 for f in done.values() if f >= 1)
                print(f"[simulate] {finished}/{len(done)} policies done; running {running or '-'}", file=sys.stderr)
            return
        bar.n = round(100 * sum(done.values()))
        bar.set_postfix_str(running)
        bar.refresh()

    try:
        results, failures = run_all(plan, min(args.jobs, len(policies)), on_progress)
    finally:
        bar.close()
    for f in failures:
        print(f"error: policy {f.policy} failed: {f.error}", file=sys.stderr)
    if not results:
        return 1
    print(
        f"\n{model}, {window.label} ({total:,} requests), RTmax {deployment.slo.rt_max_ms:g} ms, "
        f"SLmin {100 * deployment.slo.sl_min:g}%  [{time.monotonic() - t0:.0f} s]\n"
    )
    print(table(results, deployment.slo.sl_min))
    if out is not None:
        meta = {
            "trace": trace.source,
            "window": window.label,
            "offset_s": window.offset_s,
            "seconds": window.seconds,
            "scale": args.scale,
            "model": model,
            "slo": deployment.slo.model_dump(),
            "instance_types": list(deployment.fleet.instance_types),
            "seed": args.seed,
            "catalog": args.catalog or "profiles/catalog.yaml",
            "profiles": args.profiles or "profiles/latency",
            "command": " ".join(sys.argv),
            "failed": {f.policy: f.error for f in failures},
        }
        write_json(results, out / "results.json", meta, known_policies=POLICY_ORDER)
        write_csv(results, out / "results.csv")
        pngs = plot(results, out, f"{model}, {window.label}")
        print(f"\nwrote {out / 'results.json'}, {out / 'results.csv'}, per-policy JSON, {len(pngs)} plots in {out}")
    return 1 if failures else 0
