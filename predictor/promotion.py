"""Replace the running forecaster by a newly trained one only when it beats it on the latest held-out days.

The rule (:func:`decide`, pure): both models are scored on the same origins, the held-out last
``test_days`` of the deployment's history (the candidate never saw them: training holds them out), by
the mean pinball loss over p50/p90/p99 and every horizon, each divided by the mean true peak as in
:mod:`predictor.evaluate` (calibration as fit at training). The candidate is promoted only if its figure
is strictly lower. With a daily retrain and ``test_days`` >= 1 the active model never trained on these
days either: they were its own held-out days or came after it.

The swap (:func:`install`) is atomic: ACTIVE is a symbolic link into ``ACTIVE.versions/``; the
candidate is copied to a new version folder, then a new link is renamed over ACTIVE (one ``rename``:
a reader sees the old model or the new, never a mix of folders). The previous version stays in
``ACTIVE.versions/`` as the backup. The first promotion over a plain ACTIVE folder moves that folder
into ``ACTIVE.versions/`` first (the only moment ACTIVE is briefly absent; a controller then falls back
to the default model). With no active model, the comparison is against the shipped default.

No torch here: training is passed in (:func:`retrain_if_due` takes a ``train_fn``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from predictor.evaluate import evaluate
from predictor.features import MinuteSeries, minute_series
from predictor.history import NotEnoughHistory, check_enough_history, read_history
from predictor.runtime import SHIPPED_MODEL_DIR, SPEC_FILE, load_lstm
from predictor.split import time_split
from predictor.traces import Trace

RECORD_FILE = "promotion.json"
RETRAIN_STATE = "retrain.json"
KEEP_VERSIONS = 3


@dataclass(frozen=True)
class Decision:
    """A promotion decision with both figures (mean normalised pinball on the held-out days; lower is better)."""

    promote: bool
    reason: str
    candidate: str
    active: str
    candidate_pinball: float | None
    active_pinball: float | None
    held_out: str = ""
    installed: str | None = None  # the version folder ACTIVE now points to, when promoted
    backup: str | None = None  # the version replaced, kept
    at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}

    def render(self) -> str:
        def fig(x: float | None) -> str:
            return "-" if x is None else f"{x:.4f}"

        verdict = "PROMOTED" if self.promote else "kept the active model"
        return (
            f"promotion: {verdict}: {self.reason}\n"
            f"  candidate {self.candidate}: mean pinball {fig(self.candidate_pinball)}\n"
            f"  active    {self.active}: mean pinball {fig(self.active_pinball)}\n"
            f"  scored on {self.held_out}"
            + (f"\n  installed {self.installed}; backup {self.backup}" if self.installed else "")
        )


def decide(candidate: float, active: float | None) -> tuple[bool, str]:
    """Pure rule: promote when the candidate's figure is finite and strictly below the active model's
    (``None``: no active model could be scored, so any scoreable candidate is promoted)."""
    if not np.isfinite(candidate):
        return False, "the candidate could not be scored (no fully observed held-out minute)"
    if active is None:
        return True, "no active model could be scored"
    if not np.isfinite(active):
        return False, "the active model could not be scored on these days (no fully observed held-out minute)"
    if candidate < active:
        return True, f"the candidate's loss is {100 * (1 - candidate / active):.1f} % below the active model's"
    return False, f"the candidate's loss is not below the active model's ({candidate:.4f} >= {active:.4f})"


def held_out_pinball(model_dir: Path | str, series: MinuteSeries, origins: np.ndarray) -> float:
    """Mean over horizons and p50/p90/p99 of the LSTM's pinball loss / mean true peak at these origins.

    Raises:
        FileNotFoundError, ValueError: the folder holds no loadable model (see :func:`predictor.runtime.read_spec`).
    """
    results = evaluate([load_lstm(model_dir)], series, origins)
    return float(np.mean([s.pinball_mean for s in next(iter(results.values()))]))


def active_model(active_dir: Path | str) -> Path | None:
    """The model a controller runs for ACTIVE: ACTIVE if it holds a model, else the shipped default
    (None when neither exists)."""
    a = Path(active_dir)
    if (a / SPEC_FILE).is_file():
        return a
    return SHIPPED_MODEL_DIR if (SHIPPED_MODEL_DIR / SPEC_FILE).is_file() else None


def compare(
    candidate_dir: Path | str, active_dir: Path | str, trace: Trace, test_days: float = 4.0, val_days: float = 3.0
) -> Decision:
    """Score the candidate and the running model (ACTIVE, else the default) on the last ``test_days`` of ``trace``.

    Raises:
        FileNotFoundError, ValueError: the candidate holds no loadable model, or the trace is too short
            for the split.
    """
    series = minute_series(trace)
    split = time_split(series, test_days, val_days)
    cand = held_out_pinball(candidate_dir, series, split.test)
    running = active_model(active_dir)
    act: float | None = None
    note = ""
    if running is not None:
        try:
            act = held_out_pinball(running, series, split.test)
        except (FileNotFoundError, ValueError) as e:  # e.g. trained for another feature spec: not runnable
            note = f" ({running} is not loadable: {e})"
    promote, reason = decide(cand, act)
    t0 = trace.epoch0 + 60.0 * split.test_start
    held = f"the last {test_days:g} days from {datetime.fromtimestamp(t0, UTC).isoformat()} ({split.test.size} origins)"
    return Decision(
        promote,
        reason + note,
        str(candidate_dir),
        str(running) if running is not None else f"{active_dir} (none)",
        cand,
        act,
        held,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def versions_dir(active_dir: Path | str) -> Path:
    a = Path(active_dir)
    return a.parent / f"{a.name}.versions"


def install(candidate_dir: Path | str, active_dir: Path | str, keep: int = KEEP_VERSIONS) -> tuple[Path, Path | None]:
    """Make ACTIVE point at a copy of the candidate, atomically; returns (new version, backup or None).

    Keeps the newest ``keep`` (>= 2) versions: the new one and at least the one it replaced.

    Raises:
        OSError: a copy or rename failed (ACTIVE is then unchanged, except as the module docstring says).
    """
    a, cand = Path(active_dir), Path(candidate_dir)
    vdir = versions_dir(a)
    vdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=vdir))
    for p in cand.iterdir():
        if p.is_file():
            shutil.copy2(p, tmp / p.name)
            with open(tmp / p.name, "rb") as f:
                os.fsync(f.fileno())
    new = vdir / stamp
    os.rename(tmp, new)
    backup: Path | None = None
    if a.is_symlink():
        backup = a.resolve()
    elif a.exists():  # a plain folder: keep it as the backup version
        backup = vdir / f"{stamp}-replaced"
        os.rename(a, backup)
    link = a.parent / f".{a.name}.link-{os.getpid()}"
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(new, a.parent), link)
    os.replace(link, a)  # the atomic swap
    _prune(vdir, keep=max(2, keep), protect={new.resolve(), *(() if backup is None else (backup.resolve(),))})
    return new, backup


def _prune(vdir: Path, keep: int, protect: set[Path]) -> None:
    versions = sorted((p for p in vdir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    for old in versions[:-keep]:
        if old.resolve() not in protect:
            shutil.rmtree(old, ignore_errors=True)


def promote_if_better(
    candidate_dir: Path | str,
    active_dir: Path | str,
    trace: Trace,
    test_days: float = 4.0,
    val_days: float = 3.0,
    record: Path | str | None = None,
) -> Decision:
    """:func:`compare`, then :func:`install` when the candidate wins; the decision is written as JSON to
    ``record`` (default ``CANDIDATE/promotion.json``, also copied into the installed version).

    Raises:
        FileNotFoundError, ValueError: as :func:`compare`. OSError: as :func:`install`.
    """
    d = compare(candidate_dir, active_dir, trace, test_days, val_days)
    if d.promote:
        new, backup = install(candidate_dir, active_dir)
        d = Decision(**{**asdict(d), "installed": str(new), "backup": None if backup is None else str(backup)})
        (new / RECORD_FILE).write_text(json.dumps(d.to_json(), indent=1) + "\n")
    out = Path(record) if record is not None else Path(candidate_dir) / RECORD_FILE
    out.write_text(json.dumps(d.to_json(), indent=1) + "\n")
    return d


def retrain_if_due(
    history_dir: Path | str,
    active_dir: Path | str,
    now: float,
    train_fn: Callable[[Trace, Path], object],
    *,
    every_s: float = 86400.0,
    test_days: float = 4.0,
    val_days: float = 3.0,
) -> Decision | None:
    """Retrain on the deployment's history and promote the result if it is better; None when not due.

    For the controller to call on a schedule, off the serving path (it trains for minutes: run it in a
    worker thread or process). Nothing schedules it yet: the live controller loop is a later issue.
    Due when the last attempt recorded in ``ACTIVE.versions/retrain.json`` is ``every_s`` seconds or
    more before ``now`` (POSIX seconds). ``train_fn(trace, out_dir)`` trains into ``out_dir`` (e.g.
    ``lambda t, out: predictor.train.train(t, out, cfg)`` with ``cfg``'s test and validation days equal
    to these); it is passed in so this run-time module never imports torch. With too little history the
    decision says so and the running model (or the default) stays.

    Raises:
        HistoryError: the history folder is missing or malformed (not merely short).
        OSError: as :func:`install`.
    """
    vdir = versions_dir(active_dir)
    state = vdir / RETRAIN_STATE
    if state.is_file():
        last = float(json.loads(state.read_text()).get("last_attempt_epoch_s", 0.0))
        if now - last < every_s:
            return None
    vdir.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"last_attempt_epoch_s": now}) + "\n")
    trace = read_history(history_dir, end_epoch_s=now)
    try:
        check_enough_history(trace, test_days, val_days)
    except NotEnoughHistory as e:
        running = active_model(active_dir)
        d = Decision(False, str(e), "(not trained)", str(running), None, None, at=_iso(now))
        (vdir / "last_decision.json").write_text(json.dumps(d.to_json(), indent=1) + "\n")
        return d
    work = Path(tempfile.mkdtemp(prefix=".candidate-", dir=vdir))
    try:
        t0 = time.monotonic()
        train_fn(trace, work)
        d = promote_if_better(work, active_dir, trace, test_days, val_days, record=vdir / "last_decision.json")
        return Decision(**{**asdict(d), "reason": d.reason + f" (trained in {time.monotonic() - t0:.0f} s)"})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")
