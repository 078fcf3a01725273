"""``mark config example|validate|show``, and the deployment config behind ``mark run --config FILE``.

A flag given on the command line overrides the file; one not given leaves the file's value (or the
default). ``RUN_FLAGS`` is the one table from ``mark run`` flags to config fields.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orchestrator.config import ConfigError, DeploymentConfig, example_yaml, load_config, with_overrides

# argparse dest -> (config field, flag as the user types it, how the flag's value maps to the field)
RUN_FLAGS: dict[str, tuple[str, str, Any]] = {
    "model": ("models", "--model", lambda v: [v]),
    "type": ("fleet.instance_types", "--type", lambda v: [v]),
    "market": ("fleet.initial_market", "--market", None),
    "instances": ("fleet.initial_instances", "--instances", None),
    "rt_max_ms": ("slo.rt_max_ms", "--rt-max-ms", None),
    "sl_min": ("slo.sl_min", "--sl-min", None),
    "no_lambda": ("lambda.enabled", "--no-lambda", lambda v: not v),
    "lambda_concurrency": ("lambda.concurrency", "--lambda-concurrency", None),
    "lambda_memory_mb": ("lambda.memory_mb", "--lambda-memory-mb", None),
    "lambda_prewarm": ("lambda.prewarm", "--lambda-prewarm", None),
    "max_batch": ("batching.max_batch_size", "--max-batch", None),
    "batch_timeout_ms": ("batching.batch_timeout_ms", "--batch-timeout-ms", None),
    "max_queue": ("batching.max_queue", "--max-queue", None),
    "host": ("frontdoor.host", "--host", None),
    "port": ("frontdoor.port", "--port", None),
    "time_factor": ("backend.time_factor", "--time-factor", None),
    "instance_threads": ("backend.instance_threads", "--instance-threads", None),
    "history_dir": ("controller.history_dir", "--history-dir", None),
    "no_history": ("controller.record_arrivals", "--no-history", lambda v: not v),
}


def deployment_from_args(args: argparse.Namespace) -> DeploymentConfig:
    """``--config FILE`` (or the defaults), then every flag the user gave on top.

    ``--type`` makes that type the only allowed one (and the initial one); ``--instances`` above the
    file's ``fleet.max_instances`` raises that bound too, as asking for N instances means it.

    Raises:
        ConfigError: the file or a flag is invalid; each problem names its field (and flag).
    """
    base = load_config(args.config) if getattr(args, "config", None) else DeploymentConfig()
    updates: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for dest, (path, flag, convert) in RUN_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None or (dest in ("no_lambda", "no_history") and not value):
            continue
        updates[path] = convert(value) if convert else value
        origins[path] = flag
    if getattr(args, "no_lambda", None):
        moot = [
            RUN_FLAGS[d][1]
            for d in ("lambda_concurrency", "lambda_memory_mb", "lambda_prewarm")
            if getattr(args, d, None) is not None
        ]
        if moot:
            raise ConfigError(
                "the command line",
                [("lambda.enabled (from --no-lambda)", f"{', '.join(moot)} would have no effect with --no-lambda")],
            )
    if "fleet.instance_types" in updates:
        updates["fleet.initial_type"] = None
    n = updates.get("fleet.initial_instances")
    if isinstance(n, int) and n >= 0:  # asking for N instances means it: widen the bounds to N
        if n > base.fleet.max_instances:
            updates["fleet.max_instances"] = n
        if n < base.fleet.min_instances:
            updates["fleet.min_instances"] = n
    c = updates.get("lambda.concurrency")
    if isinstance(c, int) and c >= 1 and "lambda.prewarm" not in updates:
        # fewer environments than the file pre-warms: pre-warm them all, not an error
        updates["lambda.prewarm"] = min(base.lambda_.prewarm, c)
    if not updates:
        return base
    return with_overrides(base, updates, origins)


def cmd_config_example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_yaml())
    return 0


def check_deployment(config: DeploymentConfig) -> list[tuple[str, str]]:
    """What the catalog, the backend and the measured latency profiles say about a valid config:
    ``(field path, message)`` pairs, empty when it can run."""
    from orchestrator.economics.catalog import load_catalog
    from orchestrator.economics.latency_profiles import ProfileError, layout_batches, profile_for

    catalog = load_catalog()
    problems = config.problems_with(catalog)
    if problems:
        return problems
    if config.backend.name == "local":
        from orchestrator.cloud.local.backend import instance_types, problems_with

        problems += problems_with(config)
        threads = sorted({s.threads for s in instance_types(config, catalog)})
        for i, model in enumerate(config.models):
            for n in threads:
                try:
                    layout_batches(model, n)
                except ProfileError as e:
                    problems.append((f"models[{i}]", str(e)))
    else:
        for i, model in enumerate(config.models):
            for t in config.fleet.instance_types:
                try:
                    profile_for(model, t, catalog)
                except ProfileError as e:
                    problems.append((f"models[{i}]", str(e)))
    return list(dict.fromkeys(problems))


def _refuse_problems(config: DeploymentConfig, source: str) -> None:
    problems = check_deployment(config)
    if problems:
        raise ConfigError(source, problems)


def cmd_config_validate(args: argparse.Namespace) -> int:
    config = load_config(args.file)  # a ConfigError is printed by main() with exit 2, as every ValueError
    _refuse_problems(config, args.file)
    f = config.fleet
    print(
        f"{args.file}: valid. {config.name}: {', '.join(config.models)} within {config.slo.rt_max_ms:g} ms for "
        f"{config.slo.sl_min:.4%} of requests; {', '.join(f.instance_types)} "
        f"({', '.join(m.value for m in f.markets)}), "
        f"{f.min_instances}..{f.max_instances} instances; Lambda "
        f"{f'{config.lambda_.memory_mb} MB x {config.lambda_.concurrency}' if config.lambda_.enabled else 'off'}; "
        f"backend {config.backend.name}"
    )
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """The effective config: the file (or defaults) with the given run flags applied, as YAML."""
    import yaml

    config = deployment_from_args(args)
    _refuse_problems(config, args.config or "the command line")
    sys.stdout.write(yaml.safe_dump(config.model_dump(by_alias=True, mode="json"), sort_keys=False))
    return 0


def add_config_parser(sub: Any) -> None:
    c = sub.add_parser("config", help="the deployment config: example, validate, show").add_subparsers(
        dest="config_command", required=True
    )
    c.add_parser("example", help="print every field with its default and meaning (YAML)").set_defaults(
        func=cmd_config_example
    )
    v = c.add_parser(
        "validate", help="check a config file: every field, instance types against the catalog, latency profiles"
    )
    v.add_argument("file", help="YAML (.yaml/.yml), TOML (.toml) or JSON (.json)")
    v.set_defaults(func=cmd_config_validate)
    s = c.add_parser("show", help="the effective config of `mark run --config FILE [flags]`, as YAML")
    add_run_config_flags(s)
    s.set_defaults(func=cmd_config_show)


def add_run_config_flags(p: argparse.ArgumentParser) -> None:
    """The flags that override a deployment config (defaults: the file's value, else the config default)."""
    d = DeploymentConfig()
    p.add_argument("--config", default=None, metavar="FILE", help="deployment config (mark config example)")
    p.add_argument("--model", default=None, help=f"model variant (default {d.models[0]})")
    p.add_argument("--type", default=None, help=f"instance type, profiles/catalog.yaml (default {d.fleet.initial})")
    p.add_argument("--market", default=None, choices=["on-demand", "spot"], help="market of the initial fleet")
    p.add_argument("--instances", type=int, default=None, help=f"initial fleet (default {d.fleet.initial_instances})")
    p.add_argument("--rt-max-ms", type=float, default=None, help=f"RTmax (default {d.slo.rt_max_ms:g} ms)")
    p.add_argument("--sl-min", type=float, default=None, help=f"SLmin (default {d.slo.sl_min:g})")
    p.add_argument("--no-lambda", action="store_true", default=None, help="no Lambda: overflow gets 503")
    p.add_argument("--lambda-concurrency", type=int, default=None, help=f"default {d.lambda_.concurrency}")
    p.add_argument("--lambda-memory-mb", type=int, default=None, help=f"default {d.lambda_.memory_mb}")
    p.add_argument(
        "--lambda-prewarm",
        type=int,
        default=None,
        help=f"Lambda environments warmed before the workload starts (default {d.lambda_.prewarm}; a static "
        "stand-in for the planner's pre-warm decision)",
    )
    p.add_argument("--max-batch", type=int, default=None, help=f"default {d.batching.max_batch_size}")
    p.add_argument("--batch-timeout-ms", type=float, default=None, help=f"default {d.batching.batch_timeout_ms:g}")
    p.add_argument(
        "--max-queue", type=int, default=None, help=f"per-worker queue bound (default {d.batching.max_queue})"
    )
    p.add_argument("--host", default=None, help=f"front door interface (default {d.frontdoor.host})")
    p.add_argument("--port", type=int, default=None, help=f"front door port (default {d.frontdoor.port})")
    p.add_argument("--time-factor", type=float, default=None, help="real seconds per virtual second (default 0.1)")
    p.add_argument(
        "--instance-threads",
        type=int,
        default=None,
        help="at most this many onnxruntime threads per local instance (a type gets one per physical core, "
        "vCPU / 2; default cap: half this machine's cores, leaving room for the local Lambda and the front door)",
    )
    p.add_argument(
        "--history-dir",
        default=None,
        metavar="DIR",
        help="record requests per second here (mark forecast train --from-history DIR; default: "
        "$MARK_STATE_DIR/NAME/arrivals, else ~/.local/state/mark/NAME/arrivals)",
    )
    p.add_argument(
        "--no-history", action="store_true", default=None, help="do not record arrivals (controller.record_arrivals)"
    )
