"""Argument types shared by the command modules (argparse names the flag when one refuses a value)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number_arg(ok: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """An argparse type: a finite number satisfying ``ok`` (argparse names the flag on error)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and ok(v)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return v

    return parse


positive_ms = number_arg(lambda v: v > 0, "a number of milliseconds > 0")
non_negative_ms = number_arg(lambda v: v >= 0, "a number of milliseconds >= 0")
fraction = number_arg(lambda v: 0 < v < 1, "strictly between 0 and 1 (e.g. 0.98)")
positive = number_arg(lambda v: v > 0, "a number > 0")
non_negative = number_arg(lambda v: v >= 0, "a number >= 0")


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return v
