"""``mark forecast train --from-history DIR [--promote-to ACTIVE]`` and ``mark forecast promote``: the
forecaster learns from this deployment's own arrivals (``predictor.history``, recorded by the front door)
and replaces the running model only when it beats it on the latest held-out days (``predictor.promotion``).

Wired into ``orchestrator/cli/forecast.py`` (its ``--trace`` and ``--from-history`` are one choice).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_history_source(group: Any, required: bool = False) -> None:
    """``--from-history DIR``: the other choice next to ``--trace``."""
    group.add_argument(
        "--from-history",
        required=required,
        default=None,
        metavar="DIR",
        help="this deployment's per-second arrivals as recorded by its front doors (mark run --history-dir; "
        "files YYYY-MM-DD.WRITER.csv); --start and --gap-min-expected do not apply (unrecorded seconds are gaps)",
    )


def add_promote_flags(p: argparse.ArgumentParser) -> None:
    """``--promote-to ACTIVE`` and ``--record FILE`` on ``mark forecast train``."""
    p.add_argument(
        "--promote-to",
        default=None,
        metavar="ACTIVE",
        help="then make the new model the active one (ACTIVE, a link into ACTIVE.versions/, the old kept as "
        "backup) only if its mean pinball loss on the held-out days is below the running model's (ACTIVE, else "
        "the default); needs --from-history",
    )
    p.add_argument("--record", default=None, metavar="FILE", help="decision JSON (default: OUT/promotion.json)")


def load_history(args: argparse.Namespace) -> Any:
    """The arrival history as a Trace (HistoryError, a ValueError, when missing, empty or malformed)."""
    from predictor.history import read_history

    return read_history(args.from_history)


def check_history(trace: Any, args: argparse.Namespace) -> None:
    """Raises NotEnoughHistory (a ValueError: `mark` prints it, exit 2) stating the minimum days."""
    from predictor.history import check_enough_history

    check_enough_history(trace, args.test_days, args.val_days)


def promote(args: argparse.Namespace, trace: Any) -> int:
    """Compare ``args.out`` (or ``args.candidate``) with the running model; install it if better. Prints the
    decision with both figures; writes it as JSON."""
    from predictor.promotion import promote_if_better

    if args.from_history is None:
        raise ValueError("--promote-to compares on this deployment's held-out days: give --from-history DIR")
    candidate = getattr(args, "candidate", None) or args.out
    decision = promote_if_better(candidate, args.promote_to, trace, args.test_days, args.val_days, args.record)
    print(decision.render())
    return 0


def cmd_forecast_promote(args: argparse.Namespace) -> int:
    from predictor.history import read_history

    trace = read_history(args.from_history)
    check_history(trace, args)
    return promote(args, trace)


def add_promote_parser(fsub: Any) -> None:
    """``mark forecast promote``: the comparison and swap alone, for a model trained elsewhere."""
    pr = fsub.add_parser(
        "promote",
        help="make CANDIDATE the active model only if it beats the running one on the history's held-out days",
    )
    pr.add_argument("--candidate", required=True, help="model folder to promote (mark forecast train --out)")
    pr.add_argument("--promote-to", "--active", dest="promote_to", required=True, metavar="ACTIVE")
    add_history_source(pr, required=True)
    pr.add_argument("--test-days", type=float, default=4.0, help="held-out last days (as the candidate's training)")
    pr.add_argument("--val-days", type=float, default=3.0, help="validation days before them (default 3)")
    pr.add_argument("--record", default=None, metavar="FILE", help="decision JSON (default: CANDIDATE/promotion.json)")
    pr.set_defaults(func=cmd_forecast_promote, out=None)
