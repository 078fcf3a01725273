"""``mark``: the command line. Subcommands: zoo, profile, worker, run, config, plan, simulate, forecast."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.errors import InferenceError
from orchestrator.cli.args import fraction, non_negative_int, non_negative_ms, positive, positive_int, positive_ms
from orchestrator.cli.config import add_config_parser, add_run_config_flags
from orchestrator.cloud.base import CapacityError

DEFAULT_MODEL = "mobilenet_v2"  # `mark run`: a real ImageNet model, built on first use
# sklearn's digits image 0 (a handwritten "0"), so the printed curl command returns a real answer.
DIGIT_ZERO = (
    "[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,"
    "0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]"
)


def _repo(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from inference.repository import ModelRepository

    return ModelRepository(args.repo)


def cmd_zoo_build(args: argparse.Namespace) -> int:
    from inference.zoo import FAMILIES

    repo = _repo(args)
    families = args.family or ["digits"]
    for fam in families:
        if fam not in FAMILIES:
            print(f"error: unknown family {fam!r}; choose from {', '.join(FAMILIES)}", file=sys.stderr)
            return 2
    if args.only:
        from inference.zoo import digits
        from inference.zoo.imagenet_variants import VARIANTS as IMAGENET

        names = {"digits": [v.name for v in digits.VARIANTS], "imagenet": list(IMAGENET)}
        known = [n for fam in families for n in names[fam]]
        unknown = [n for n in args.only if n not in known]
        if unknown:
            print(
                f"error: --only: {', '.join(map(repr, unknown))} is not a variant of {', '.join(families)}; "
                f"choose from {', '.join(known)}",
                file=sys.stderr,
            )
            return 2
    for fam in families:
        if fam == "digits":
            from inference.zoo import digits

            cards = digits.build(repo, only=args.only)
        else:
            try:
                from inference.zoo import imagenet
            except ImportError as e:
                print(
                    f"error: the imagenet family needs the 'zoo' extra ({e.name} is missing): "
                    "run `bash scripts/setup-venv.sh zoo,dev`",
                    file=sys.stderr,
                )
                return 2
            cards = imagenet.build(repo, only=args.only)
        for c in cards:
            print(
                f"{c.name:24} {c.family:9} top1 {c.primary_accuracy:.3f}  {c.file_bytes / 1e6:7.2f} MB  {c.sha256[:12]}"
            )
    print(f"model repository: {repo.root}")
    return 0


def cmd_zoo_list(args: argparse.Namespace) -> int:
    repo = _repo(args)
    cards = repo.cards()
    if not cards:
        print(f"no models in {repo.root}; build some with `mark zoo build digits` or `mark zoo build imagenet`")
        return 0
    print(f"{'name':24} {'family':9} {'accuracy':>8} {'source':9} {'size MB':>8}  input")
    for c in cards:
        acc = c.accuracy[0] if c.accuracy else None
        inp = ", ".join(f"{t.name}:{t.datatype}{list(t.shape)}" for t in c.inputs)
        print(
            f"{c.name:24} {c.family:9} {c.primary_accuracy:8.3f} {acc.source if acc else '-':9} "
            f"{c.file_bytes / 1e6:8.2f}  {inp}"
        )
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from inference.profiler import PROFILES_DIR, profile, write_profile

    result = profile(
        _repo(args),
        args.model,
        threads=args.threads,
        max_batch=args.max_batch,
        slots=args.slots,
        min_samples=args.samples,
    )
    path = write_profile(result, Path(args.out) if args.out else PROFILES_DIR)
    print(f"{'batch':>5} {'p50 ms':>10} {'p99 ms':>10} {'rows/s':>10}")
    for row in result["batches"]:
        print(f"{row['batch_size']:5d} {row['p50_ms']:10.3f} {row['p99_ms']:10.3f} {row['throughput_rps']:10.1f}")
    print(f"wrote {path}")
    return 0


def _worker_settings(args: argparse.Namespace, models: list[str]):  # type: ignore[no-untyped-def]
    from ec2_worker.config import WorkerSettings

    return WorkerSettings(
        models=models,
        repository=args.repo,
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        threads=args.threads,
        slots=args.slots,
        max_batch_size=args.max_batch,
        batch_timeout_ms=args.batch_timeout_ms,
        max_queue=args.max_queue,
        rt_max_ms=args.rt_max_ms,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    from ec2_worker.server import run

    run(_worker_settings(args, args.model))
    return 0


def _ensure_model(repo, name: str, field: str = "models") -> None:  # type: ignore[no-untyped-def]
    """Build the model if it is absent: digits in seconds; imagenet variants need the zoo extra.

    Raises:
        ConfigError: ``name`` is neither in the repository nor a zoo variant.
    """
    if repo.has(name):
        return
    from inference.zoo import digits
    from inference.zoo.imagenet_variants import VARIANTS as IMAGENET
    from orchestrator.config import ConfigError

    zoo = [v.name for v in digits.VARIANTS] + list(IMAGENET)
    if name not in zoo:
        raise ConfigError(
            "the deployment",
            [
                (
                    field,
                    f"unknown model {name!r}: not in the model repository {repo.root} and not a zoo variant "
                    f"({', '.join(zoo)})",
                )
            ],
        )
    if name in {v.name for v in digits.VARIANTS}:
        print(f"[run] building {name} into {repo.root} (first run only)", file=sys.stderr)
        digits.build(repo, only=[name])
        return
    from inference.zoo import imagenet

    print(f"[run] building {name} into {repo.root} (first run only, about a minute)", file=sys.stderr)
    imagenet.build(repo, only=[name])


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _api_keys(host: str, flag_digests: list[str] | None, configured: list[str] | None = None):  # type: ignore[no-untyped-def]
    """API keys for the front door from --api-key-sha256, MARK_API_KEY_SHA256 and the config's
    frontdoor.api_key_sha256; warn loudly when the front door listens beyond loopback without any."""
    from orchestrator.frontdoor.auth import API_KEYS_ENV, HASH_HINT, ApiKeys, digests_from_env, parse_digests

    digests = parse_digests(flag_digests or []) + digests_from_env() + tuple(configured or ())
    if digests:
        print(f"[run] API keys required on every route but health ({len(digests)} configured)", file=sys.stderr)
        return ApiKeys(digests)
    if host not in LOOPBACK:
        print(
            f"\n[run] WARNING: the front door listens on {host} and accepts ANY caller: no API key is "
            f"configured. Set --api-key-sha256 HASH, frontdoor.api_key_sha256 or {API_KEYS_ENV} (the SHA-256 "
            f"of each key: {HASH_HINT}).\n",
            file=sys.stderr,
        )
    return None


def cmd_run(args: argparse.Namespace) -> int:
    """The local default: front door + local cloud + local Lambda, under a replayed workload."""
    import asyncio

    from orchestrator.cli.config import check_deployment, deployment_from_args
    from orchestrator.cloud import registry
    from orchestrator.config import ConfigError
    from orchestrator.economics.catalog import load_catalog
    from orchestrator.runtime.local_stack import stack_config
    from orchestrator.workload.loadgen import builtin_shape, trace_slice

    deployment = deployment_from_args(args)  # ConfigError (a ValueError) names each bad field and flag
    repo = _repo(args)
    catalog = load_catalog()
    problems = check_deployment(deployment)
    if problems:
        raise ConfigError(args.config or "the command line", problems)
    for i, model in enumerate(deployment.models):
        _ensure_model(repo, model, f"models[{i}]")
    config = stack_config(deployment, catalog, str(repo.root))
    function = registry.backend(deployment.backend.name).open_function(deployment, str(repo.root))
    try:
        api_keys = _api_keys(config.host, args.api_key_sha256, deployment.frontdoor.api_key_sha256)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not config.initial_instances and function is None:
        print("[run] WARNING: no instance and no Lambda: every request will be answered 503", file=sys.stderr)
    if config.history_dir is not None:
        print(f"[run] recording arrivals per second in {config.history_dir} (--no-history: off)", file=sys.stderr)
    if args.serve:
        return _serve(config, function, catalog, api_keys)
    history: tuple[int, ...] = ()
    epoch_at_start: float | None = None
    if args.trace:
        from orchestrator.controller.step import HISTORY_SECONDS

        window = trace_slice(
            args.trace,
            scale=args.scale,
            start_seconds=args.start,
            limit_seconds=args.seconds,
            history_seconds=0 if args.static else HISTORY_SECONDS,
        )
        rates, history, epoch_at_start = window.rates, window.history, window.epoch_at_start_s
    else:
        if args.start:
            print("error: --start needs --trace (it skips that many seconds of the trace)", file=sys.stderr)
            return 2
        try:
            base, peak, burst = (float(x) for x in args.shape.split(","))
        except ValueError:
            print(f"error: --shape must be BASE,PEAK,BURST requests/s, got {args.shape!r}", file=sys.stderr)
            return 2
        rates = [r * args.scale for r in builtin_shape(args.seconds, base, peak, burst)]
    import signal

    from orchestrator.runtime.session import RunReport, run_workload

    controller = None
    decision_log: Path | None = None
    if args.static:
        fleet = f"a static fleet of {config.initial_instances} x {config.instance_type} (--static)"
    else:
        controller = _live_controller(args.policy, deployment)
        decision_log = Path(args.decision_log) if args.decision_log else _default_decision_log(deployment)
        if not controller.uses_lambda and function is not None:
            function = None  # the policy runs without Lambda (as in `mark simulate`): overflow gets 503
        fleet = (
            f"{config.initial_instances} x {config.instance_type} to start, then the {controller.name} controller "
            f"(a step every {controller.interval_s:g} virtual s; decision log {decision_log})"
        )
    print(
        f"[run] {config.models[0]} on {fleet}{' + local Lambda' if function is not None else ', no Lambda'}; "
        f"{len(rates)} virtual seconds at time factor {config.time_factor:g} "
        f"(~{len(rates) * config.time_factor:.0f} s); "
        f"SLO {config.rt_max_ms:g} ms for {deployment.slo.sl_min * 100:g}%; front door http://{config.host}:{config.port}",
        file=sys.stderr,
    )

    async def main() -> RunReport:
        # Ctrl-C or SIGTERM cancels the run; LocalStack's exit then stops every process it started.
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        return await run_workload(
            config,
            rates,
            catalog,
            function=function,
            sl_min=deployment.slo.sl_min,
            lambda_prewarm=deployment.lambda_.prewarm,
            api_keys=api_keys,
            controller=controller,
            decision_log=decision_log,
            epoch_at_start_s=epoch_at_start,
            history=history,
        )

    try:
        report = asyncio.run(main())
    except asyncio.CancelledError:
        print("\n[run] interrupted: every process this run started has been stopped", file=sys.stderr)
        return 130
    print(report.render())
    return 0


LIVE_POLICIES = ("ours", "mark-release", "mark-paper", "lambda-only")  # those that need no future or window peak


def _live_controller(policy: str, deployment):  # type: ignore[no-untyped-def]
    """The controller ``mark run`` drives live: ``policy`` from the deployment's inputs, its fleet bound
    never above what this machine can hold (the local cloud refuses past it).

    Raises:
        ValueError: the policy cannot be built from the deployment (names the reason)."""
    from orchestrator.cloud.local.instances import machine_instance_cap
    from orchestrator.controller.policies import build_controller, inputs_from_config
    from orchestrator.runtime.simulation import silence_solver_banner

    silence_solver_banner()  # the planner's HiGHS would print its banner into the run's progress lines
    inputs = inputs_from_config(deployment)
    inputs["max_instances"] = max(deployment.fleet.min_instances, min(inputs["max_instances"], machine_instance_cap()))
    return build_controller(policy, **inputs)


def _default_decision_log(deployment) -> Path:  # type: ignore[no-untyped-def]
    """``<state dir>/<deployment>/decisions/run-<local time>.jsonl``, beside the recorded arrivals."""
    import time

    return deployment.history_path().parent / "decisions" / f"run-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"


def _serve(config, function, catalog, api_keys) -> int:  # type: ignore[no-untyped-def]
    import asyncio
    import signal

    from orchestrator.runtime.local_stack import LocalStack

    async def main() -> None:
        # Ctrl-C or SIGTERM cancels serving, also while instances still boot; LocalStack's exit then
        # finishes accepted requests and stops every process it started.
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        async with LocalStack(config, function, catalog=catalog, api_keys=api_keys) as stack:
            await stack.wait_running(config.initial_instances, timeout_s=120)
            base = f"http://{config.host}:{stack.port}"
            model = config.models[0]
            example = DIGIT_ZERO if model.startswith("digits") else "..."
            auth = ' -H "Authorization: Bearer $KEY"' if api_keys is not None else ""  # the key itself is never printed
            print(
                f"\nserving {model} through the front door on {base} "
                f"({config.initial_instances} x {config.instance_type}"
                f"{' + local Lambda' if function is not None else ''})\n"
                f"  health:   curl {base}/v2/health/ready\n"
                f"  metadata: curl{auth} {base}/v2/models/{model}\n"
                f"  infer:    curl{auth} -s -X POST {base}/v2/models/{model}/infer -d "
                f'\'{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,64],"data":{example}}}]}}\'\n'
                f"  metrics:  curl{auth} {base}/metrics\n"
                "Ctrl-C stops everything (accepted requests are finished first).\n",
                flush=True,
            )
            await asyncio.Event().wait()  # until cancelled

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        print("\n[run] stopped: every process this run started has been stopped", file=sys.stderr)
    return 0


def cmd_plan_capacity(args: argparse.Namespace) -> int:
    """Capacity at SLO and $ per 1M requests of each model on each type and market, cheapest first."""
    from orchestrator.economics.capacity import capacity_report
    from orchestrator.economics.catalog import load_catalog
    from orchestrator.economics.latency_profiles import known_models, model_family

    catalog = load_catalog()
    known = known_models()
    models = list(dict.fromkeys(args.model or []))
    if args.family:
        members = [m for m in known if model_family(m) == args.family]
        if not members:
            families = sorted({f for m in known if (f := model_family(m))})
            print(f"error: --family: unknown family {args.family!r}; known: {', '.join(families)}", file=sys.stderr)
            return 2
        models += [m for m in members if m not in models]
    if not models:
        print("error: give --model NAME (repeatable) or --family NAME", file=sys.stderr)
        return 2
    unknown = [m for m in models if m not in known]
    if unknown:
        print(
            f"error: --model: unknown model {', '.join(map(repr, unknown))}; known: {', '.join(known)}", file=sys.stderr
        )
        return 2
    types = list(dict.fromkeys(args.types)) if args.types else None
    bad_types = [t for t in types or [] if t not in catalog.instance_types]
    if bad_types:
        print(
            f"error: --types: unknown instance type {', '.join(map(repr, bad_types))}; "
            f"the catalog knows: {', '.join(catalog.known_types())}",
            file=sys.stderr,
        )
        return 2
    print(
        f"capacity at SLO: {args.sl_min:.4g} of requests within {args.rt_max_ms:g} ms "
        f"(eps {args.epsilon_ms:g} ms for network and dispatch); prices: profiles/catalog.yaml ({catalog.region})"
    )
    for model in models:
        report = capacity_report(model, catalog, args.rt_max_ms, args.sl_min, args.epsilon_ms, types=types)
        print()
        print(
            f"{'model':24} {'type':12} {'market':9} {'slots':>5} {'b':>3} {'W ms':>6} "
            f"{'infer req/s':>11} {'capacity req/s':>14} {'$ per 1M':>9}  source"
        )
        for r in report.rows:
            print(
                f"{r.model:24} {r.instance_type:12} {r.market:9} {r.slots:5d} {r.batch_size:3d} "
                f"{r.batch_timeout_ms:6.1f} {r.inference_rps:11.1f} {r.capacity_rps:14.1f} {r.usd_per_million:9.4g}  "
                f"{r.source}"
            )
        cpu_ms = report.rows[0].request_cpu_ms if report.rows else None
        if cpu_ms is None:
            print(
                f"{model:24} host CPU per request: not measured (benchmarks/worker_request_cpu.py --write): "
                "capacity = inference capacity, HTTP cost not included"
            )
        else:
            print(
                f"{model:24} host CPU per request: {cpu_ms:.3f} ms measured (profiles/request_cpu/{model}.json): "
                f"one worker answers at most {1000 / cpu_ms:.0f} req/s"
            )
        by_reason: dict[str, list[str]] = {}
        for name, reason in report.skipped:
            by_reason.setdefault(reason.split(": ", 1)[-1], []).append(name)
        for reason, names in by_reason.items():
            print(f"{model:24} no row on {', '.join(names)}: {reason}")
        if args.explain:
            for method in dict.fromkeys(r.method for r in report.rows):
                print(f"  how: {method}")
    print(
        "\nestimated = not measured on that type. CPU rows: this machine's single-thread T(b) per physical core; "
        "GPU rows: datasheet-based (profiles/gpu_estimates.yaml). --explain prints each profile's method. "
        "infer req/s: capacity at SLO from T(b) alone; capacity req/s also pays the worker's host CPU per request "
        "(HTTP, decoding; orchestrator/economics/capacity.py says how)."
    )
    return 0


def _add_worker_flags(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="public interface (default loopback)")
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--admin-port", type=int, default=0, help="internal control port on 127.0.0.1 (0 = any free)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads per slot")
    p.add_argument("--slots", type=int, default=1, help="batches executed at once (2 slots x 1 thread suits 2 cores)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-timeout-ms", type=float, default=5.0)
    p.add_argument("--max-queue", type=int, default=256)
    p.add_argument("--rt-max-ms", type=float, default=200.0, help="default per-request deadline (RTmax)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mark", description="Hybrid IaaS + FaaS inference orchestrator")
    p.add_argument("--repo", default=None, help="model repository folder (default: $MARK_MODEL_REPO or ./model-repo)")
    sub = p.add_subparsers(dest="command", required=True)

    zoo = sub.add_parser("zoo", help="build and list models").add_subparsers(dest="zoo_command", required=True)
    b = zoo.add_parser("build", help="build model families into the repository")
    b.add_argument("family", nargs="*", help="digits, imagenet (default: digits)")
    b.add_argument("--only", nargs="+", help="only these variant names")
    b.set_defaults(func=cmd_zoo_build)
    zoo.add_parser("list", help="list built models").set_defaults(func=cmd_zoo_list)

    pr = sub.add_parser("profile", help="measure T(b) for a model on this machine")
    pr.add_argument("model")
    pr.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads per slot")
    pr.add_argument("--slots", type=int, default=1, help="batches run at once (a worker's parallel slots)")
    pr.add_argument("--max-batch", type=int, default=32)
    pr.add_argument("--samples", type=int, default=50, help="minimum timed runs per batch size")
    pr.add_argument("--out", default=None, help="profiles folder (default: profiles/latency in the checkout)")
    pr.set_defaults(func=cmd_profile)

    w = sub.add_parser("worker", help="run one EC2-worker server")
    w.add_argument("--model", nargs="+", required=True)
    _add_worker_flags(w, 8000)
    w.set_defaults(func=cmd_worker)

    r = sub.add_parser(
        "run",
        help="the local stack: front door, local cloud, local Lambda, a replayed workload",
        description="Flags override the --config file; `mark config show [flags]` prints the result.",
    )
    add_run_config_flags(r)
    r.add_argument("--serve", action="store_true", help="just serve until Ctrl-C (no workload)")
    r.add_argument("--trace", default=None, help="per-second counts file or per-minute CSV (default: built-in shape)")
    r.add_argument("--scale", type=positive, default=1.0, help="multiply the workload's rates")
    r.add_argument(
        "--shape", default="20,60,130", help="built-in workload: BASE,PEAK,BURST req/s (diurnal curve + burst)"
    )
    r.add_argument("--seconds", type=positive_int, default=600, help="virtual seconds of workload")
    r.add_argument(
        "--start", type=non_negative_int, default=0, help="with --trace: replay from this second of the trace on"
    )
    r.add_argument(
        "--static", action="store_true", help="no controller: the initial fleet stays as it is (the pre-controller run)"
    )
    r.add_argument(
        "--policy",
        choices=LIVE_POLICIES,
        default="ours",
        help="the controller's policy (default ours; see mark simulate for what each is)",
    )
    r.add_argument(
        "--decision-log",
        default=None,
        metavar="FILE",
        help="JSON lines, one per controller step (default: <state dir>/<name>/decisions/run-<time>.jsonl)",
    )
    r.add_argument(
        "--api-key-sha256",
        action="append",
        metavar="HASH",
        help="require 'Authorization: Bearer KEY' on every route but health; HASH is the SHA-256 hex of KEY "
        "(printf %%s KEY | sha256sum | cut -d' ' -f1); repeatable; also read from MARK_API_KEY_SHA256 "
        "(comma-separated)",
    )
    r.set_defaults(func=cmd_run)
    add_config_parser(sub)

    plan = sub.add_parser("plan", help="planning figures from the catalog and latency profiles").add_subparsers(
        dest="plan_command", required=True
    )
    cap = plan.add_parser(
        "capacity",
        help="capacity at SLO and $ per 1M requests per instance type and market (no model repository needed)",
    )
    cap.add_argument("--model", action="append", help="model variant (repeatable)")
    cap.add_argument("--family", default=None, help="every variant of this family, e.g. imagenet")
    cap.add_argument("--rt-max-ms", type=positive_ms, default=200.0, help="RTmax: the latency bound (ms)")
    cap.add_argument("--sl-min", type=fraction, default=0.98, help="SLmin: share of requests within RTmax")
    cap.add_argument(
        "--epsilon-ms", type=non_negative_ms, default=5.0, help="network/dispatch margin kept out of RTmax (ms)"
    )
    cap.add_argument("--types", nargs="+", default=None, help="only these instance types (default: the catalog's)")
    cap.add_argument("--explain", action="store_true", help="print how each latency profile was obtained")
    cap.set_defaults(func=cmd_plan_capacity)
    from orchestrator.cli.plan_fleet import add_plan_fleet_parser  # mark plan fleet

    add_plan_fleet_parser(plan)
    from orchestrator.cli.simulate import add_simulate_parser  # mark simulate (sim/, controller/)

    add_simulate_parser(sub)
    from orchestrator.cli.forecast import add_forecast_parser  # mark forecast train|eval (predictor/)

    add_forecast_parser(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (InferenceError, OSError, ValueError, CapacityError) as e:
        msg = e.message if isinstance(e, InferenceError) else str(e)
        print(f"error: {msg}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
