"""``mark forecast train|eval``: train the load forecaster on a trace; score it and the baselines on held-out days.

Registered by :func:`add_forecast_parser` from ``orchestrator/cli/main.py``. Torch is imported only by
``train`` (the ``zoo`` extra); ``eval`` runs on onnxruntime and numpy.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TypedDict

from orchestrator.cli.args import positive
from orchestrator.cli.forecast_history import (
    add_history_source,
    add_promote_flags,
    add_promote_parser,
    check_history,
    load_history,
    promote,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = ROOT / "profiles" / "forecaster"


def trace_format_args(p: argparse.ArgumentParser) -> None:
    """How a trace file is read and its gaps marked (``mark forecast`` and ``mark simulate``): --format,
    --time-column, --count-column, --gaps; :func:`trace_format_kwargs` turns them into ``load_trace`` keywords."""
    p.add_argument(
        "--format",
        dest="trace_format",
        choices=("auto", "per-second", "per-minute", "counts", "events"),
        default="auto",
        help="how to read the trace (default auto, by content): per-second = whitespace-separated counts a "
        "second; per-minute = a header then one count a line (or a time + count CSV whose rows are whole "
        "minutes apart); counts = a CSV of a time column and a count column on a regular grid of any interval, "
        "each count spread over its interval; events = a CSV of one row per request (a count column, if any, "
        "= that many requests at that time)",
    )
    p.add_argument(
        "--time-column",
        default=None,
        metavar="NAME",
        help="the CSV's time column (ISO 8601 or epoch s/ms/us/ns), when its name is not one of the known "
        "ones (timestamp, time, ts, datetime, date, period, gmt_create, created_at, request_time, event_time, "
        "start_time, ...) or when two columns could be it",
    )
    p.add_argument(
        "--count-column",
        default=None,
        metavar="NAME",
        help="the CSV's count column when its name is not a known one (count, requests, value, ...) or two "
        "could be it; 'none': the CSV has no count column, each row is one request",
    )
    p.add_argument(
        "--gaps",
        choices=("auto", "none"),
        default="auto",
        help="auto (default): mark zero runs that even the quiet traffic beside them could not leave empty as "
        "collection gaps (not scored, not replayed); none: every zero is a real zero (a service that stops on a "
        "schedule)",
    )


class TraceFormat(TypedDict):
    """``load_trace`` keywords set by :func:`trace_format_args`' flags."""

    format: str
    time_column: str | None
    count_column: str | None
    detect_gaps: bool


def trace_format_kwargs(args: argparse.Namespace) -> TraceFormat:
    """``load_trace`` keywords from :func:`trace_format_args`' flags."""
    return {
        "format": args.trace_format,
        "time_column": args.time_column,
        "count_column": args.count_column,
        "detect_gaps": args.gaps == "auto",
    }


def _trace_args(p: argparse.ArgumentParser, many: bool = False, history: bool = False) -> None:
    """The trace source (``--trace``; with ``many``, repeatable; with ``history``, or ``--from-history``)
    and how it is read and split."""
    source = p.add_mutually_exclusive_group() if history else p
    if history:  # this deployment's own arrivals (issue 14): see orchestrator/cli/forecast_history.py
        add_history_source(source)
    source.add_argument(
        "--trace",
        required=not (many or history),
        action="append" if many else "store",
        help="per-second counts (.txt, or a .tbz2 holding workload.txt), per-minute CSV (peaks then estimated), "
        "a CSV of counts per interval with a time column, or a CSV request log (one row per request)"
        + (
            "; give it several times to train on several traces; PATH@X multiplies that trace's rates by X "
            "(after gap detection), e.g. ../shared/traces/nasa-1995/workload.tbz2@100"
            if many
            else ""
        ),
    )
    p.add_argument(
        "--start", default=None, help="clock of the trace's first second (ISO 8601 or epoch s) if it has none"
    )
    p.add_argument(
        "--gap-min-expected",
        type=float,
        default=100.0,
        help="a zero run is a collection gap when the quiet traffic beside it (10th-percentile minute of the day "
        "before or after) would have sent this many requests in it",
    )
    trace_format_args(p)
    p.add_argument(
        "--test-days", "--last-days", dest="test_days", type=positive, default=4.0, help="held-out last days"
    )
    p.add_argument("--val-days", type=positive, default=3.0, help="validation days just before them (default 3)")


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from predictor.traces import load_trace

    if getattr(args, "from_history", None) is not None:
        return load_history(args)
    trace = load_trace(
        args.trace,
        start=args.start,
        gap_min_expected=args.gap_min_expected,
        **trace_format_kwargs(args),
    )
    scale = getattr(args, "scale", 1.0)
    return trace.scaled(scale) if scale != 1.0 else trace


def _load_many(args: argparse.Namespace) -> list:  # type: ignore[type-arg]
    """Every ``--trace PATH[@SCALE]`` then every ``--synthetic FAMILY[:DAYS]`` (seeds --seed, --seed+1, ...)."""
    from dataclasses import replace

    from predictor import synthetic
    from predictor.traces import load_trace

    out = []
    for spec in args.trace or []:
        path, scale = spec, 1.0
        if "@" in spec and not Path(spec).exists():
            path, _, x = spec.rpartition("@")
            try:
                scale = float(x)
            except ValueError:
                raise ValueError(f"--trace {spec!r}: the part after '@' must be a scale factor") from None
        trace = load_trace(path, start=args.start, gap_min_expected=args.gap_min_expected, **trace_format_kwargs(args))
        out.append(replace(trace.scaled(scale), source=f"{trace.source} x{scale:g}") if scale != 1.0 else trace)
    for i, spec in enumerate(args.synthetic or []):
        family, days = synthetic.parse_spec(spec)
        out.append(synthetic.make(family, days, seed=args.seed + i))
    if not out:
        raise ValueError("give at least one --trace or --synthetic, or --from-history")
    return out


def _horizons(text: str) -> tuple[int, ...]:
    """``--horizons``: comma-separated whole minutes within the forecaster's horizon."""
    from predictor.features import HORIZON

    try:
        hs = tuple(int(h) for h in text.split(","))
    except ValueError:
        hs = ()
    if not hs or any(not 1 <= h <= HORIZON for h in hs):
        raise argparse.ArgumentTypeError(f"must be whole minutes 1..{HORIZON}, comma-separated, got {text!r}")
    return hs


def cmd_forecast_train(args: argparse.Namespace) -> int:
    if args.promote_to is not None and args.from_history is None:  # before hours of training, not after
        print(
            "error: --promote-to compares on this deployment's held-out days: give --from-history DIR", file=sys.stderr
        )
        return 2
    try:
        from predictor.train import TrainConfig, train_many
    except ImportError as e:
        print(f"error: training needs torch (install the 'zoo' extra): {e}", file=sys.stderr)
        return 2
    if args.from_history is not None:
        if args.synthetic:
            raise ValueError("--from-history trains on this deployment's own traffic: drop --synthetic")
        history = _load(args)
        check_history(history, args)  # NotEnoughHistory states the minimum
        traces = [history]
    else:
        traces = _load_many(args)
    cfg = TrainConfig(
        epochs=args.epochs,
        hidden=args.hidden,
        layers=args.layers,
        batch=args.batch,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed,
        test_days=args.test_days,
        val_days=args.val_days,
        qr_epochs=args.qr_epochs,
        thinning=tuple(float(x) for x in args.thinning.split(",")),
        progress=not args.quiet,
        max_origins=args.max_origins,
    )
    command = _train_command(args)
    spec = train_many(traces, args.out, cfg, command=command)
    t = spec["training"]
    print(
        f"trained in {t['wall_seconds']} s (LSTM best epoch {t['lstm']['best_epoch']} of {t['lstm']['epochs_run']}); "
        f"model in {args.out}: "
        + ", ".join(f"{p.name} {p.stat().st_size / 1024:.0f} KiB" for p in sorted(Path(args.out).iterdir()))
    )
    if args.promote_to is not None:
        return promote(args, traces[0])  # refused there unless the source is --from-history
    return 0


def _train_command(args: argparse.Namespace) -> str:
    """The full command with every training option spelled out, so a later change of defaults cannot
    change what it reproduces."""
    parts = ["mark", "forecast", "train"]
    if args.from_history is not None:
        parts += ["--from-history", args.from_history]
    for t in args.trace or []:
        parts += ["--trace", t]
    for t in args.synthetic or []:
        parts += ["--synthetic", t]
    parts += ["--out", args.out]
    for flag in ("start", "gap_min_expected", "test_days", "val_days", "epochs", "patience", "hidden", "layers"):
        value = getattr(args, flag)
        if value is not None:
            parts += ["--" + flag.replace("_", "-"), f"{value:g}" if isinstance(value, float) else str(value)]
    for flag, option in (
        ("trace_format", "format"),
        ("time_column", "time-column"),
        ("count_column", "count-column"),
        ("gaps", "gaps"),
    ):
        value = getattr(args, flag, None)
        if value is not None and value != "auto":
            parts += ["--" + option, str(value)]
    for flag in ("batch", "lr", "qr_epochs", "thinning", "max_origins", "seed"):
        value = getattr(args, flag)
        parts += ["--" + flag.replace("_", "-"), f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_forecast_eval(args: argparse.Namespace) -> int:
    from predictor.evaluate import acceptance, evaluate, evaluate_ensemble, evaluate_online, recalibrate, table
    from predictor.features import minute_series
    from predictor.runtime import load_ensemble, load_forecasters, read_spec
    from predictor.split import time_split

    horizons = args.horizons
    trace = _load(args)
    series = minute_series(trace)
    split = time_split(series, args.test_days, args.val_days)
    forecasters = load_forecasters(args.model)
    spec = read_spec(args.model)
    if args.calibration == "trace":
        recalibrate(forecasters, series, split.val)
    if args.calibration == "online":
        results = evaluate_online(forecasters, series, split.val_origins_consecutive(), split.test, args.gamma)
        ensemble = load_ensemble(args.model, gamma=args.gamma)
        results.update(evaluate_ensemble(ensemble, series, split.val_origins_consecutive(), split.test))
    else:
        results = evaluate(forecasters, series, split.test)
    print(report_header(trace.describe(), args, spec, split.describe()))
    print(table(results, horizons, markdown=args.markdown))
    for line in acceptance(results, trace=Path(trace.source).name):
        print(("- " if args.markdown else "") + line)
    return 0


def report_header(trace_desc: str, args: argparse.Namespace, spec: dict, split_desc: str) -> str:  # type: ignore[type-arg]
    cal = {
        "static": "all parameters and calibration factors as fit at training (nothing refit on this trace)",
        "trace": "every forecaster's calibration factors refit on this trace's validation days (weights not retrained)",
        "online": f"calibration factors start as fit at training and adapt online as outcomes arrive (gamma "
        f"{args.gamma:g}; run from the start of the {args.val_days:g} days before the held-out days, scored on "
        "the held-out days only; weights not retrained)",
    }[args.calibration]
    scale = f", rates x{args.scale:g}" if getattr(args, "scale", 1.0) != 1.0 else ""
    model = Path(args.model).resolve()
    shown = model.relative_to(ROOT) if model.is_relative_to(ROOT) else model
    lines = [
        f"trace: {trace_desc}{scale}",
        f"held out: last {args.test_days:g} days ({split_desc.split('; ')[-1]})",
        f"model: {shown} (trained on {spec['training']['trace'].split(':')[0]}, {spec['training']['date']}); {cal}",
        "pinball loss per quantile divided by the mean true peak at that horizon; 'pin mean' = average over "
        "p50/p90/p99; cov = share of true peaks <= the quantile; MAPE of p50 over minutes with a peak > 0; "
        "under p90 = share of minutes whose true peak exceeds p90. Gap minutes are not scored.",
    ]
    if "ESTIMATED" in trace_desc:
        lines.append("WARNING: per-minute input: true peaks are estimated (mean + 2.4 sqrt(mean)), not measured")
    return ("\n\n" if args.markdown else "\n").join(lines) + "\n"


def add_forecast_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``mark forecast train`` and ``mark forecast eval``."""
    fc = sub.add_parser("forecast", help="load forecaster: train on a trace, evaluate against the baselines")
    fsub = fc.add_subparsers(dest="forecast_command", required=True)

    tr = fsub.add_parser("train", help="train the quantile LSTM + quantile regression, fit baselines, export ONNX")
    _trace_args(tr, many=True, history=True)
    add_promote_flags(tr)
    tr.add_argument(
        "--synthetic",
        action="append",
        metavar="FAMILY[:DAYS]",
        help="also train on a synthetic trace (predictor.synthetic: diurnal, weekly, flash, sparse; DAYS default "
        "21; seeds --seed, --seed+1, ... in order); repeatable",
    )
    tr.add_argument("--out", required=True, help="model folder to write (model.onnx, qr.npz, forecaster.json)")
    tr.add_argument("--epochs", type=int, default=40, help="most epochs (early stopping on validation)")
    tr.add_argument("--patience", type=int, default=6, help="epochs without validation improvement before stopping")
    tr.add_argument("--hidden", type=int, default=48, help="LSTM hidden units")
    tr.add_argument("--layers", type=int, default=1, help="LSTM layers")
    tr.add_argument("--batch", type=int, default=256)
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--qr-epochs", type=int, default=60, help="most epochs for the linear quantile regression")
    tr.add_argument(
        "--thinning",
        default="1,0.3,0.1,0.03,0.01",
        help="train also on copies of the trace thinned to these fractions of its requests (rescaled): the "
        "noisier seconds of smaller services, so one model serves traces of any scale",
    )
    tr.add_argument(
        "--max-origins",
        type=int,
        default=0,
        help="most training (and validation) origins per trace version in the fit, evenly spaced (0 = all)",
    )
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--quiet", action="store_true", help="no progress on stderr")
    tr.set_defaults(func=cmd_forecast_train)

    ev = fsub.add_parser("eval", help="per-horizon table on the held-out last days: LSTM and every baseline")
    _trace_args(ev)
    ev.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model folder (default: profiles/forecaster)")
    ev.add_argument("--scale", type=float, default=1.0, help="multiply the trace's rates (after gap detection)")
    ev.add_argument(
        "--horizons", type=_horizons, default=(1, 3, 5, 10, 15), help="horizons (minutes, 1..15) to print, e.g. 1,5,15"
    )
    ev.add_argument(
        "--calibration",
        choices=("static", "online", "trace"),
        default="online",
        help="online (default, what a controller runs: predictor.runtime.load_controller_forecaster): factors "
        "start as fit at training and adapt as outcomes arrive (adaptive conformal); static: as fit at training; "
        "trace: refit on this trace's validation days. Weights are never retrained.",
    )
    ev.add_argument("--gamma", type=positive, default=0.01, help="online calibration step (log factor per outcome)")
    ev.add_argument("--markdown", action="store_true", help="markdown tables")
    ev.set_defaults(func=cmd_forecast_eval)
    add_promote_parser(fsub)
