"""Request traces: per-second counts, per-minute sums, or a user CSV of timestamps, with gaps marked.

Everything is turned into one shape, a :class:`Trace`: request counts per second as floats, ``NaN``
where nothing was observed. A NaN second is a *collection gap* (the logger was down), not a quiet
second: it is masked from training targets and evaluation, and features fill it from what was seen.

Formats (chosen by content, not only by name):

- per-second counts: whitespace-separated non-negative integers, one line or many
  (``workload.txt`` of the Twitter and NASA traces); also inside a ``.tbz2``/``.tar.bz2``/``.tar.gz``
  archive, read in memory with :mod:`tarfile` (never extracted to disk);
- per-minute sums: a header line, then one non-negative number a line (``per_minute.csv``). These
  cannot give the per-second *peak* of a minute; the trace is flagged ``peak_estimated`` and
  :func:`predictor.features.minute_series` estimates the peak (Poisson), which every report says;
- a user CSV with a header naming a ``timestamp`` column (epoch seconds or ISO 8601) and optionally a
  ``count`` column (else each row is one request), binned per second from the first timestamp.

Gaps: a run of zero seconds is a gap when it is at least ``gap_min_seconds`` (5) long and the traffic
around it (the hour before and the hour after) would have produced at least ``gap_min_expected`` (100)
requests in it. Under Poisson arrivals that is a chance below e^-100: a logger outage, not a lull.
The Twitter trace has 63 such runs: 21 of 29 minutes (23:31-24:00 of most days: missing archive
files), one of 150 s and 41 of 12-44 s: 37,899 seconds in all (2.0 %). NASA has its known
outage of Aug 1-3 1995 (37.7 h) and shorter ones. Detection runs on the raw counts, before any
scaling, because a trace multiplied by 100 has 100x the "expected" count but the same real lulls.
"""

from __future__ import annotations

import csv
import io
import math
import tarfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

TIMESTAMP_COLUMNS = ("timestamp", "time", "ts")
COUNT_COLUMNS = ("count", "requests", "n")
ARCHIVE_SUFFIXES = (".tbz2", ".tar.bz2", ".tbz", ".tar.gz", ".tgz", ".tar")


class TraceError(ValueError):
    """A malformed trace; the message names the file and the line (or token) at fault."""


@dataclass(frozen=True)
class Trace:
    """Requests per second (float, NaN = not observed) from ``start_epoch_s``.

    ``start_epoch_s`` is None when the file carries no clock (the count files): time-of-day
    features then use the trace's own phase, second 0 = 00:00 UTC of a Thursday (the epoch).
    ``peak_estimated`` is True when the per-second values were spread from per-minute sums.
    """

    per_second: np.ndarray
    source: str
    start_epoch_s: float | None = None
    peak_estimated: bool = False
    gap_seconds: int = 0

    @property
    def seconds(self) -> int:
        return int(self.per_second.size)

    @property
    def days(self) -> float:
        return self.seconds / 86400.0

    @property
    def epoch0(self) -> float:
        """Clock of second 0 used for time features (0.0 when the trace has none)."""
        return 0.0 if self.start_epoch_s is None else float(self.start_epoch_s)

    def scaled(self, factor: float) -> Trace:
        """The same trace with every rate multiplied (gaps stay gaps)."""
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"scale must be a positive number, got {factor}")
        return replace(self, per_second=self.per_second * factor)

    def describe(self) -> str:
        clock = "no clock (phase from trace start)" if self.start_epoch_s is None else _iso(self.start_epoch_s)
        peak = "peaks ESTIMATED from per-minute sums" if self.peak_estimated else "per-second counts"
        return (
            f"{self.source}: {self.seconds} s ({self.days:.1f} days), {peak}, start {clock}, "
            f"{self.gap_seconds} gap seconds ({100 * self.gap_seconds / max(1, self.seconds):.1f} %)"
        )


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def load_trace(
    path: Path | str,
    *,
    start: str | float | None = None,
    gap_min_expected: float = 100.0,
    gap_min_seconds: int = 5,
    detect_gaps: bool = True,
) -> Trace:
    """Read any supported trace file (see the module docstring) and mark its collection gaps.

    ``start`` (ISO 8601 or epoch seconds) gives the clock of second 0 for count files, which have none.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trace file not found: {p}")
    name = p.name.lower()
    start_epoch = _parse_time(start, f"--start {start!r}") if start is not None else None
    peak_estimated = False
    if name.endswith(ARCHIVE_SUFFIXES):
        counts = _read_archive(p)
    elif name.endswith(".csv"):
        text = p.read_text(encoding="utf-8", errors="replace")
        header = text.split("\n", 1)[0]
        cols = [c.strip().lower() for c in next(csv.reader([header]), [])]
        if any(c in TIMESTAMP_COLUMNS for c in cols):
            counts, csv_start = _parse_event_csv(text, str(p))
            start_epoch = start_epoch if start_epoch is not None else csv_start
        else:
            counts = _parse_per_minute_csv(text, str(p))
            peak_estimated = True
    else:
        counts = _parse_counts(p.read_text(encoding="utf-8", errors="replace"), str(p))
    if counts.size == 0:
        raise TraceError(f"{p}: the trace is empty")
    per_second = counts.astype(np.float64)
    gaps = 0
    if detect_gaps and not peak_estimated:
        per_second, gaps = mark_gaps(per_second, min_expected=gap_min_expected, min_seconds=gap_min_seconds)
    elif detect_gaps:
        per_second, gaps = _mark_minute_gaps(per_second, gap_min_expected)
    return Trace(per_second, str(p), start_epoch, peak_estimated, gaps)


def _read_archive(p: Path) -> np.ndarray:
    """The single per-second count file inside a tar archive, read in memory."""
    try:
        with tarfile.open(p, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            if not members:
                raise TraceError(f"{p}: the archive holds no file")
            preferred = [m for m in members if m.name.endswith("workload.txt")] or members
            if len(preferred) > 1:
                names = ", ".join(m.name for m in preferred[:5])
                raise TraceError(f"{p}: the archive holds several files ({names}); expected one workload.txt")
            f = tar.extractfile(preferred[0])
            assert f is not None
            data = f.read().decode("utf-8", errors="replace")
    except tarfile.TarError as e:
        raise TraceError(f"{p}: not a readable tar archive: {e}") from None
    return _parse_counts(data, f"{p}:{preferred[0].name}")


def _parse_counts(text: str, where: str) -> np.ndarray:
    """Whitespace-separated non-negative integers; errors give line and token number."""
    try:
        arr = np.array(text.split(), dtype=np.int64)
    except (ValueError, OverflowError):
        arr = None
    if arr is not None:
        if arr.size and arr.min() < 0:
            i = int(np.argmax(arr < 0))
            raise TraceError(_locate(text, i, where, f"negative count {arr[i]}"))
        return arr
    for i, tok in enumerate(text.split()):  # slow path only to name the bad token
        if not tok.isdigit():
            raise TraceError(_locate(text, i, where, f"{tok[:20]!r} is not a non-negative integer count"))
    raise TraceError(f"{where}: unreadable counts")  # pragma: no cover


def _locate(text: str, index: int, where: str, what: str) -> str:
    seen = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        n = len(line.split())
        if seen + n > index:
            return f"{where}: line {lineno}, token {index - seen + 1} (second {index}): {what}"
        seen += n
    return f"{where}: token {index + 1}: {what}"


def _parse_per_minute_csv(text: str, where: str) -> np.ndarray:
    """Header, then one count a line; spread evenly over the minute's 60 seconds (peak unknown)."""
    lines = text.splitlines()
    if len(lines) < 2:
        raise TraceError(f"{where}: per-minute CSV needs a header line and at least one count")
    values = []
    for lineno, line in enumerate(lines[1:], start=2):
        s = line.strip()
        if not s:
            continue
        try:
            v = float(s)
        except ValueError:
            raise TraceError(f"{where}: line {lineno}: {s[:30]!r} is not a number (one count a line)") from None
        if not (v >= 0 and math.isfinite(v)):
            raise TraceError(f"{where}: line {lineno}: count must be finite and >= 0, got {s}")
        values.append(v)
    return np.repeat(np.asarray(values) / 60.0, 60)


def _parse_time(value: str | float, where: str) -> float:
    if isinstance(value, int | float):
        return float(value)
    s = value.strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise TraceError(f"{where}: {s[:40]!r} is neither epoch seconds nor an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _parse_event_csv(text: str, where: str) -> tuple[np.ndarray, float]:
    """Rows of (timestamp[, count]) binned into seconds from the first timestamp's second."""
    reader = csv.reader(io.StringIO(text))
    header = [c.strip().lower() for c in next(reader)]
    t_col = next(header.index(c) for c in TIMESTAMP_COLUMNS if c in header)
    c_col = next((header.index(c) for c in COUNT_COLUMNS if c in header), None)
    times: list[float] = []
    counts: list[float] = []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(t_col, c_col or 0):
            raise TraceError(f"{where}: line {lineno}: expected {len(header)} columns, got {len(row)}")
        times.append(_parse_time(row[t_col], f"{where}: line {lineno}"))
        if c_col is None:
            counts.append(1.0)
            continue
        try:
            c = float(row[c_col])
        except ValueError:
            raise TraceError(f"{where}: line {lineno}: count {row[c_col][:20]!r} is not a number") from None
        if not (c >= 0 and math.isfinite(c)):
            raise TraceError(f"{where}: line {lineno}: count must be finite and >= 0, got {row[c_col]}")
        counts.append(c)
    if not times:
        raise TraceError(f"{where}: no rows after the header")
    t = np.asarray(times)
    t0 = math.floor(float(t.min()))
    idx = np.floor(t - t0).astype(np.int64)
    return np.bincount(idx, weights=np.asarray(counts)), float(t0)


def zero_runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) indices of maximal runs of exact zeros (end exclusive)."""
    z = np.concatenate(([0], (x == 0).astype(np.int8), [0]))
    d = np.diff(z)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def mark_gaps(per_second: np.ndarray, *, min_expected: float = 100.0, min_seconds: int = 5) -> tuple[np.ndarray, int]:
    """Replace implausible zero runs by NaN (see the module docstring); returns (series, gap seconds)."""
    x = per_second.astype(np.float64, copy=True)
    starts, ends = zero_runs(x)
    csum = np.concatenate(([0.0], np.cumsum(np.nan_to_num(x))))
    n = x.size
    gap = 0
    for s, e in zip(starts, ends, strict=True):
        length = int(e - s)
        if length < min_seconds:
            continue
        lo, hi = max(0, s - 3600), min(n, e + 3600)
        around = (csum[s] - csum[lo]) + (csum[hi] - csum[e])
        span = (s - lo) + (hi - e)
        if span and around / span * length >= min_expected:
            x[s:e] = np.nan
            gap += length
    return x, gap


def _mark_minute_gaps(per_second: np.ndarray, min_expected: float) -> tuple[np.ndarray, int]:
    """Same rule on a per-minute trace (spread to seconds): zero minutes among busy ones are gaps."""
    return mark_gaps(per_second, min_expected=min_expected, min_seconds=60)
