"""A deployment's own arrival history: per-second request counts written by its front doors, read as a Trace.

On disk, one folder (``controller.history_dir``; on AWS the same files, persisted to S3)::

    YYYY-MM-DD.WRITER.csv     one file per UTC day per writer (a front door), one line per second:
                              "EPOCH_SECOND,COUNT\\n"  (integer POSIX second, requests that arrived in it)

A writer writes a line for *every* second it was recording, zeros included, so "no line from any
writer" means "nobody was recording" and reads as NaN (a collection gap, masked from training
targets and evaluation, filled in features; see :mod:`predictor.traces`). Each flush is one
``O_APPEND`` write of whole lines; a line torn by a crash (no final newline) is ignored by the reader
and cut off by the writer's next append (each file has one writer).

Reading sums the writers per second. A second one writer recorded twice (a restart within the same
second, or a retried flush) counts once, at the larger count: never double-counted, at worst the
smaller part of one second lost. The trace starts at a whole UTC minute (leading seconds before the
first record are NaN), so its minutes are the clock's minutes whatever second recording began.

No torch here: the front door imports the writer.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from predictor.features import DAY, HISTORY_MINUTES, HORIZON
from predictor.traces import Trace, TraceError

WRITER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FILE_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.([A-Za-z0-9][A-Za-z0-9_-]{0,63})\.csv$")
MIN_TRAIN_DAYS = 1.0  # days of training origins asked for on top of the lookback, validation and test days


class HistoryError(TraceError):
    """The arrival history cannot be read (missing or empty folder, malformed file: named with its line)."""


class NotEnoughHistory(HistoryError):
    """Too little history to train on and hold days out; the message states the minimum."""


def writer_id_for(name: str) -> str:
    """A valid writer id made from any name (e.g. ``frontdoor-127.0.0.1-8080``): other characters become '-'."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")[:64] or "writer"
    return s if WRITER_ID.match(s) else f"w{s}"[:64]


def day_of(epoch_s: int) -> str:
    """The UTC day (``YYYY-MM-DD``) of a POSIX second."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d")


class HistoryWriter:
    """Appends one writer's per-second counts to ``directory`` (created if missing).

    Raises:
        ValueError: ``writer_id`` is not 1-64 letters, digits, '_' or '-' (it is part of a file name).
        OSError: the folder cannot be created.
    """

    def __init__(self, directory: Path | str, writer_id: str) -> None:
        if not WRITER_ID.match(writer_id):
            raise ValueError(f"writer id {writer_id!r}: use 1-64 letters, digits, '_' or '-' (see writer_id_for)")
        self.directory = Path(directory)
        self.writer_id = writer_id
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, day: str) -> Path:
        return self.directory / f"{day}.{self.writer_id}.csv"

    def append(self, counts: Iterable[tuple[int, int]]) -> int:
        """Append ``(epoch_second, count)`` rows (every second recorded, zeros included); returns rows written.

        One ``O_APPEND`` write per UTC day touched, then fsync: durable once this returns.

        Raises:
            ValueError: a second or count is negative.
            OSError: the file cannot be written (the caller may retry: a re-written second counts once).
        """
        by_day: dict[str, list[str]] = {}
        n = 0
        for second, count in counts:
            if second < 0 or count < 0:
                raise ValueError(f"second {second} and count {count} must both be >= 0")
            by_day.setdefault(day_of(second), []).append(f"{int(second)},{int(count)}\n")
            n += 1
        for day, lines in by_day.items():
            self._append_file(self.path(day), "".join(lines).encode())
        return n

    @staticmethod
    def _append_file(path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a crash tore the last line: drop it
                tail = os.pread(fd, min(size, 4096), max(0, size - 4096))
                os.ftruncate(fd, size - len(tail) + tail.rfind(b"\n") + 1)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class HistoryFile:
    path: Path
    day: str
    writer: str


def history_files(directory: Path | str) -> list[HistoryFile]:
    """The history files in ``directory``, by day then writer (other files are ignored).

    Raises:
        HistoryError: the folder does not exist.
    """
    d = Path(directory)
    if not d.is_dir():
        raise HistoryError(f"no arrival history folder {d} (the front door writes it: mark run --history-dir)")
    out = []
    for p in d.iterdir():
        if (m := FILE_NAME.match(p.name)) and p.is_file():
            out.append(HistoryFile(p, m.group(1), m.group(2)))
    return sorted(out, key=lambda f: (f.day, f.writer))


def _parse(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Seconds and counts of one file; a torn last line (no newline) is dropped."""
    text = path.read_text(encoding="ascii", errors="replace")
    text = text[: text.rfind("\n") + 1]
    lines = text.count("\n")
    if not lines:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    try:
        arr = np.array(text.replace(",", " ").split(), dtype=np.int64)
    except (ValueError, OverflowError):
        arr = None
    if arr is None or arr.size != 2 * lines or text.count(",") != lines or (arr.size and arr.min() < 0):
        for lineno, line in enumerate(text.splitlines(), start=1):
            parts = line.split(",")
            if line and not (len(parts) == 2 and all(p.strip().isdigit() for p in parts)):
                raise HistoryError(f"{path}: line {lineno}: {line[:40]!r} is not 'EPOCH_SECOND,COUNT'")
        arr = np.array([int(p) for line in text.splitlines() if line for p in line.split(",")], dtype=np.int64)
    pairs = arr.reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def read_history(
    directory: Path | str, *, start_epoch_s: float | None = None, end_epoch_s: float | None = None
) -> Trace:
    """The arrivals in ``directory`` as a :class:`~predictor.traces.Trace` (requests per second).

    Writers are summed per second; a second one writer recorded twice counts once (its larger count);
    seconds no writer recorded are NaN. ``start_epoch_s``/``end_epoch_s`` (POSIX seconds, end exclusive)
    keep a window. The trace begins at a whole UTC minute.

    Raises:
        HistoryError: the folder is missing, holds no history (in the window), or a file is malformed.
    """
    d = Path(directory)
    files = history_files(d)
    lo_day = day_of(int(start_epoch_s)) if start_epoch_s is not None else ""
    hi_day = day_of(max(0, math.ceil(end_epoch_s) - 1)) if end_epoch_s is not None else "9999"
    files = [f for f in files if lo_day <= f.day <= hi_day]
    per_writer: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for f in files:
        secs, counts = _parse(f.path)
        keep = np.ones(secs.size, dtype=bool)
        if start_epoch_s is not None:
            keep &= secs >= start_epoch_s
        if end_epoch_s is not None:
            keep &= secs < end_epoch_s
        if keep.any():
            per_writer.setdefault(f.writer, []).append((secs[keep], counts[keep]))
    if not per_writer:
        window = "" if start_epoch_s is None and end_epoch_s is None else " in the window asked for"
        raise HistoryError(
            f"no arrival history in {d}{window}: expected files YYYY-MM-DD.WRITER.csv of 'EPOCH_SECOND,COUNT' "
            "lines (the front door writes them while it serves)"
        )
    merged: list[tuple[np.ndarray, np.ndarray]] = []
    for parts in per_writer.values():
        secs = np.concatenate([s for s, _ in parts])
        counts = np.concatenate([c for _, c in parts])
        uniq, inv = np.unique(secs, return_inverse=True)
        best = np.zeros(uniq.size, dtype=np.int64)
        np.maximum.at(best, inv, counts)  # recorded twice by one writer: once, the larger count
        merged.append((uniq, best))
    first = min(int(s[0]) for s, _ in merged)
    last = max(int(s[-1]) for s, _ in merged)
    t0 = first - first % 60  # whole UTC minutes
    per_second = np.zeros(last + 1 - t0, dtype=np.float64)
    seen = np.zeros(per_second.size, dtype=bool)
    for secs, counts in merged:
        per_second[secs - t0] += counts  # unique per writer, so plain indexing adds once
        seen[secs - t0] = True
    per_second[~seen] = np.nan
    days = sorted({f.day for f in files})
    source = f"arrival history {d} ({len(per_writer)} writer(s), {days[0]}..{days[-1]})"
    return Trace(per_second, source, float(t0), False, int((~seen).sum()))


def min_history_days(test_days: float = 4.0, val_days: float = 3.0) -> float:
    """Days of history training on it needs: the features' lookback (one day + one hour) and the
    forecast horizon, ``MIN_TRAIN_DAYS`` of training origins, then the validation and held-out test days."""
    minutes = HISTORY_MINUTES + HORIZON + round((MIN_TRAIN_DAYS + val_days + test_days) * DAY)
    return minutes / DAY


def check_enough_history(trace: Trace, test_days: float = 4.0, val_days: float = 3.0) -> None:
    """Refuse a history too short to train on and hold ``test_days`` out.

    Raises:
        NotEnoughHistory: the trace spans fewer than :func:`min_history_days` days, or no second of it
            was observed; the message states the minimum and that the default model stays meanwhile.
    """
    need = min_history_days(test_days, val_days)
    observed = int(np.count_nonzero(~np.isnan(trace.per_second)))
    if trace.days < need or observed == 0:
        raise NotEnoughHistory(
            f"too little arrival history to train on: {trace.days:.2f} days recorded ({observed / 86400:.2f} days "
            f"observed) in {trace.source}; training needs at least {need:.2f} days = the features' lookback "
            f"({HISTORY_MINUTES / 60:g} h) + {MIN_TRAIN_DAYS:g} training day + {val_days:g} validation days + "
            f"{test_days:g} held-out days + the {HORIZON}-minute horizon. The controller keeps the default model "
            "(profiles/forecaster) meanwhile."
        )
