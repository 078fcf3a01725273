"""Request traces: per-second counts, per-minute sums, timestamped count CSVs or request logs, with gaps marked.

Everything is turned into one shape, a :class:`Trace`: request counts per second as floats, ``NaN``
where nothing was observed. A NaN second is a *collection gap* (the logger was down), not a quiet
second: it is masked from training targets and evaluation, and features fill it from what was seen.

Formats (``format="auto"`` chooses by content, not only by name; the others force one reading):

- ``per-second``: whitespace-separated non-negative integers, one line or many (``workload.txt`` of
  the Twitter and NASA traces); also inside a ``.tbz2``/``.tar.bz2``/``.tar.gz`` archive, read in
  memory with :mod:`tarfile` (never extracted to disk). Auto for any file that is not a CSV.
- ``per-minute``: a header line, then one non-negative number a line (``per_minute.csv``), spread
  evenly over each minute's 60 seconds. Auto for a one-column CSV whose header is not a time column.
  With a time column, the same as ``counts`` but the rows must be whole minutes apart.
- ``counts``: a CSV with a time column and a count column (:data:`COUNT_COLUMNS`), one row per
  interval: the timestamps must sit on a regular grid (the interval is the most common spacing, every
  spacing a whole multiple of it, in whole seconds: 60 s for per-minute, 1 s, 300 s, ...). Each count
  is spread evenly over its interval's seconds; a row missing from the grid is an interval with no
  requests (the gap rule then decides whether it was an outage). Auto for a CSV with both columns and
  regular timestamps.
- ``events``: a CSV of request events, one row per request at its time (or, with a count column,
  that many requests at that time, which must then be whole numbers), binned per second from the
  first timestamp's second. Auto for a CSV with a time column and no count column.

Wherever a count is spread over more than one second (per-minute, counts at an interval > 1 s), the
per-second *peak* of a minute cannot be known: the trace is flagged ``peak_estimated`` and
:func:`predictor.features.minute_series` estimates the peak (Poisson), which every report says.

Columns are matched by name, case-insensitively: the time column is the one column named in
:data:`TIMESTAMP_COLUMNS` (``timestamp``, ``time``, ``ts``, ``datetime``, ``date``, ``period``,
``gmt_create``, ``created_at``, ``request_time``, ``event_time``, ``start_time``, ...) unless
``time_column`` names it; the count column is the one named in :data:`COUNT_COLUMNS` (``count``,
``requests``, ``value``, ...) unless ``count_column`` names it (``"none"``: no count column, each row
is one request). Times are ISO 8601 (a time without a zone is UTC) or epoch numbers: seconds, or
milliseconds / microseconds / nanoseconds when the numbers are at least 1e11 / 1e14 / 1e17 (1e11 s
would be the year 5138). Input that could be read two ways is refused with a :class:`TraceError`
naming the flag that decides it: two candidate time or count columns, or a count column whose
timestamps are not on a regular grid (counts per interval, or request events carrying a count?).

Gaps: a run of zero seconds is a collection gap when it is at least ``gap_min_seconds`` (5; one
interval for spread counts) long and even the *quiet* traffic beside it would almost surely have sent
a request in it. The quiet rate ``r`` of a side is the 10th percentile of the per-minute rates of the
whole minutes in the day before the run (or the day after it; the run itself excluded), and ``r`` is
that of the busier side. The run is a gap when ``r * length >= gap_min_expected`` (100): Poisson
arrivals at rate ``r`` would leave it empty with probability ``exp(-r * length) <= e^-100``.

Why a low percentile of a day and not the mean of the hour around (the former rule): an outage
interrupts traffic that is busy in nine minutes out of ten all day long, so even its quiet minutes
predict requests; a low-rate or bursty service's idle stretches sit in days where a tenth of the
minutes or more are empty, so its quiet rate is zero and they are never called gaps. The mean of an
hour is inflated by a few bursts: the former rule marked 17.6 % and 53.5 % of two low-rate users'
traces, and 60 % of a synthetic day of 30 s bursts every 15 min, as outages. The busier side decides
because loggers often fail gradually: NASA's 37.7 h outage of Aug 1-3 1995 ends in a day where a
fifth of the minutes are empty, while the day before it is busy. The cost: an outage in a service
that idles in more than a tenth of its minutes on both sides is not detected, and a service that
stops abruptly on a schedule cannot be told from an outage by counts alone; ``detect_gaps=False``
(``--gaps none``) keeps every zero as a real zero. Figures: Twitter 63 gap runs, 21 of 29 minutes
(23:31-24:00 of most days: missing archive files), one of 150 s and 41 of 12-44 s: 37,899 seconds
(2.0 %), the same as under the former rule; NASA 23 runs, 150,371 seconds (3.0 %; the former rule
155,135), the outage and 22 shorter silences of 3-34 min amid busy days (per_minute.csv: Twitter
35,520 s before and after, NASA 146,580 s, formerly 148,500). Detection runs on the raw
counts, before any scaling, because a trace multiplied by 100 has 100x the "expected" count but the
same real lulls.
"""

from __future__ import annotations

import csv
import io
import math
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

TIMESTAMP_COLUMNS = (
    "timestamp",
    "time",
    "ts",
    "datetime",
    "date_time",
    "date",
    "period",
    "time_stamp",
    "epoch",
    "unix_time",
    "gmt_create",
    "created_at",
    "create_time",
    "creation_time",
    "request_time",
    "arrival_time",
    "event_time",
    "start_time",
)
"""Header names (lower case) read as the time column of a CSV."""
COUNT_COLUMNS = (
    "count",
    "counts",
    "requests",
    "request_count",
    "num_requests",
    "n",
    "value",
    "calls",
    "invocations",
    "hits",
)
"""Header names (lower case) read as a count column: requests in the row's interval (or at its time)."""
FORMATS = ("auto", "per-second", "per-minute", "counts", "events")
"""What ``load_trace(format=...)`` and ``--format`` accept (see the module docstring)."""
ARCHIVE_SUFFIXES = (".tbz2", ".tar.bz2", ".tbz", ".tar.gz", ".tgz", ".tar")
GAP_RATE_QUANTILE = 0.10  # the gap rule's "quiet traffic": this quantile of the minutes around a zero run
GAP_CONTEXT_S = 86_400  # the rule looks this far before and after a zero run
GAP_MIN_SIDE_MINUTES = 30  # a side with fewer whole minutes is pooled with the other, not judged alone


class TraceError(ValueError):
    """A malformed or ambiguous trace; the message names the file and the line (or token, or flag) at fault."""


@dataclass(frozen=True)
class Trace:
    """Requests per second (float, NaN = not observed) from ``start_epoch_s``.

    ``start_epoch_s`` is None when the file carries no clock (the count files): time-of-day
    features then use the trace's own phase, second 0 = 00:00 UTC of a Thursday (the epoch).
    ``peak_estimated`` is True when the per-second values were spread from per-minute (or coarser) sums.
    ``layout`` says how the file was read (e.g. "counts per 60 s from columns period, count").
    """

    per_second: np.ndarray
    source: str
    start_epoch_s: float | None = None
    peak_estimated: bool = False
    gap_seconds: int = 0
    layout: str = ""

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
        read = f" (read as {self.layout})" if self.layout else ""
        return (
            f"{self.source}: {self.seconds} s ({self.days:.1f} days), {peak}{read}, start {clock}, "
            f"{self.gap_seconds} gap seconds ({100 * self.gap_seconds / max(1, self.seconds):.1f} %)"
        )


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


@dataclass(frozen=True)
class _Read:
    """A file turned into seconds: ``per_second`` counts, the seconds one value was spread over."""

    per_second: np.ndarray
    interval_s: int = 1
    start_epoch_s: float | None = None
    layout: str = ""


def load_trace(
    path: Path | str,
    *,
    start: str | float | None = None,
    gap_min_expected: float = 100.0,
    gap_min_seconds: int = 5,
    detect_gaps: bool = True,
    format: str = "auto",
    time_column: str | None = None,
    count_column: str | None = None,
) -> Trace:
    """Read any supported trace file (see the module docstring) and mark its collection gaps.

    Args:
        path: the trace file.
        start: clock of second 0 (ISO 8601 or epoch seconds) for files that have none; overrides a CSV's.
        gap_min_expected: requests the quiet traffic around a zero run must predict in it (gap rule).
        gap_min_seconds: shortest zero run (seconds) that can be a gap; one interval for spread counts.
        detect_gaps: False keeps every zero as a real zero (``--gaps none``).
        format: one of :data:`FORMATS`; ``auto`` chooses by content.
        time_column: the CSV's time column (case-insensitive), instead of recognising it by name.
        count_column: the CSV's count column, or ``"none"``: each row is one request.

    Raises:
        FileNotFoundError: no such file.
        TraceError: a malformed file (names the line or token), or one that could be read two ways
            (names the flag that decides it: ``--format``, ``--time-column``, ``--count-column``).
    """
    if format not in FORMATS:
        raise TraceError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trace file not found: {p}")
    name = p.name.lower()
    start_epoch = _parse_time(start, f"--start {start!r}") if start is not None else None
    if name.endswith(ARCHIVE_SUFFIXES):
        if format not in ("auto", "per-second"):
            raise TraceError(
                f"{p}: an archive holds per-second counts (workload.txt); --format {format} does not apply"
            )
        read = _Read(_read_archive(p).astype(np.float64))
    else:
        text = p.read_text(encoding="utf-8", errors="replace")
        first = text.lstrip("\ufeff").split("\n", 1)[0]
        is_csv = name.endswith(".csv") or "," in first
        if format == "per-second" or (format == "auto" and not is_csv):
            read = _Read(_parse_counts(text, str(p)).astype(np.float64))
        else:
            read = _read_csv(text, str(p), format, time_column, count_column)
    if read.per_second.size == 0:
        raise TraceError(f"{p}: the trace is empty")
    if start_epoch is None:
        start_epoch = read.start_epoch_s
    per_second, gaps = read.per_second, 0
    if detect_gaps:
        min_seconds = max(gap_min_seconds, read.interval_s) if read.interval_s > 1 else gap_min_seconds
        per_second, gaps = mark_gaps(per_second, min_expected=gap_min_expected, min_seconds=min_seconds)
    return Trace(per_second, str(p), start_epoch, read.interval_s > 1, gaps, read.layout)


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


def _pick_column(
    header: list[str], asked: str | None, known: tuple[str, ...], what: str, flag: str, where: str
) -> int | None:
    """Index of the column ``asked`` names, else of the one header name in ``known``; None if neither."""
    if asked is not None:
        want = asked.strip().lower()
        if want not in header:
            raise TraceError(f"{where}: {flag} {asked!r}: no such column (the header has {', '.join(header)})")
        return header.index(want)
    found = [i for i, c in enumerate(header) if c in known]
    if len(found) > 1:
        names = " and ".join(repr(header[i]) for i in found)
        raise TraceError(f"{where}: {names} could each be the {what} column: pass {flag} NAME to say which")
    return found[0] if found else None


def _read_csv(text: str, where: str, fmt: str, time_column: str | None, count_column: str | None) -> _Read:
    """A CSV trace in any of the CSV formats (module docstring); ``fmt`` may be ``auto``."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    raw_header = next(reader, [])
    header = [c.strip().strip('"').lower() for c in raw_header]
    if not header or not any(header):
        raise TraceError(f"{where}: the CSV has no header line")
    t_col = _pick_column(header, time_column, TIMESTAMP_COLUMNS, "time", "--time-column", where)
    no_count = count_column is not None and count_column.strip().lower() == "none"
    c_col = None if no_count else _pick_column(header, count_column, COUNT_COLUMNS, "count", "--count-column", where)
    if t_col is None:
        if fmt in ("auto", "per-minute") and len(header) == 1:
            return _Read(_parse_per_minute_csv(text, where), 60, None, "per-minute counts, one a line")
        raise TraceError(
            f"{where}: no time column among {', '.join(header)} (known names: {', '.join(TIMESTAMP_COLUMNS)}): "
            "pass --time-column NAME, or --format per-minute for a one-column file of per-minute counts"
        )
    if c_col == t_col:
        raise TraceError(f"{where}: the time and count columns are both {header[t_col]!r}")
    if c_col is None and fmt in ("counts", "per-minute"):
        raise TraceError(
            f"{where}: --format {fmt} needs a count column (known names: {', '.join(COUNT_COLUMNS)}): "
            "pass --count-column NAME, or --format events if each row is one request"
        )
    times, counts = _csv_rows(reader, where, len(header), t_col, c_col)
    t = _epoch_seconds(times)
    cols = f"time column {header[t_col]!r}" + (f", count column {header[c_col]!r}" if c_col is not None else "")
    if c_col is None or fmt == "events":
        return _bin_events(t, counts, where, cols, c_col is not None)
    step, why = _grid_step(t)
    if fmt == "per-minute" and (step is None or step % 60 != 0):
        raise TraceError(
            f"{where}: --format per-minute needs rows whole minutes apart, but {why or f'they are {step} s apart'}: "
            "pass --format counts for another interval, or --format events to add each row's count at its own second"
        )
    if step is None:
        raise TraceError(
            f"{where}: a count column ({header[c_col]!r}) but the timestamps are not on a regular grid ({why}), "
            "so the rows are neither clearly counts per interval nor clearly request events: pass --format events "
            f"to add each row's count at its own second, or --count-column none if {header[c_col]!r} is not a "
            "request count (each row is then one request)"
        )
    if fmt == "per-minute":
        step = 60
    return _spread_counts(t, counts, step, cols)


def _csv_rows(
    reader: Iterator[list[str]], where: str, width: int, t_col: int, c_col: int | None
) -> tuple[list[float], list[float]]:
    """(times, counts, first data line) of a CSV's rows; counts are 1.0 without a count column."""
    times: list[float] = []
    counts: list[float] = []
    need = max(t_col, c_col or 0)
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= need:
            raise TraceError(f"{where}: line {lineno}: expected {width} columns, got {len(row)}")
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
    return times, counts


def _epoch_seconds(times: list[float]) -> np.ndarray:
    """Epoch numbers in seconds: numbers >= 1e11 / 1e14 / 1e17 are milli- / micro- / nanoseconds."""
    t = np.asarray(times, dtype=np.float64)
    big = float(np.median(np.abs(t)))
    for limit, unit in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
        if big >= limit:
            return t / unit
    return t


def _grid_step(t: np.ndarray) -> tuple[int | None, str]:
    """The regular interval (whole seconds) of sorted unique timestamps, or None and why not."""
    if t.size < 2:
        return None, "a single row gives no interval"
    if np.any(np.diff(t) < 0):
        return None, "the rows are not in time order"
    d = np.diff(t)
    if np.any(d == 0):
        i = int(np.argmax(d == 0))
        return None, f"rows {i + 2} and {i + 3} of the data have the same time"
    values, freq = np.unique(np.round(d, 6), return_counts=True)
    step = float(values[np.argmax(freq)])
    if step < 1 or abs(step - round(step)) > 1e-6:
        return None, f"the most common spacing is {step:g} s, not a whole number of seconds"
    ratio = d / step
    bad = np.abs(ratio - np.round(ratio)) > 1e-6
    if bad.any():
        i = int(np.argmax(bad))
        return None, f"data rows {i + 1} and {i + 2} are {d[i]:g} s apart while most are {step:g} s apart"
    return round(step), ""


def _spread_counts(t: np.ndarray, counts: list[float], step: int, cols: str) -> _Read:
    """Counts per ``step`` seconds on a regular grid, spread evenly over each interval's seconds."""
    idx = np.round((t - t[0]) / step).astype(np.int64)
    per_interval = np.zeros(int(idx[-1]) + 1)
    per_interval[idx] = counts
    missing = per_interval.size - idx.size
    note = f"; {missing} missing intervals read as 0" if missing else ""
    layout = f"counts per {step} s from {cols}{note}"
    return _Read(np.repeat(per_interval / step, step), step, float(t[0]), layout)


def _bin_events(t: np.ndarray, counts: list[float], where: str, cols: str, weighted: bool) -> _Read:
    """Request events binned into seconds from the first timestamp's second."""
    w = np.asarray(counts)
    if weighted and np.any(w != np.round(w)):
        i = int(np.argmax(w != np.round(w)))
        raise TraceError(
            f"{where}: data row {i + 1}: count {w[i]:g} is not a whole number of requests, so the rows cannot be "
            "request events: pass --format counts to read counts per interval"
        )
    t0 = math.floor(float(t.min()))
    idx = np.floor(t - t0).astype(np.int64)
    layout = f"request events from {cols}" + (" (each row that many requests)" if weighted else " (one a row)")
    return _Read(np.bincount(idx, weights=w).astype(np.float64), 1, float(t0), layout)


def _parse_event_csv(text: str, where: str) -> tuple[np.ndarray, float]:
    """Rows of (timestamp[, count]) binned into seconds from the first timestamp's second (``--format events``)."""
    read = _read_csv(text, where, "events", None, None)
    assert read.start_epoch_s is not None
    return read.per_second, read.start_epoch_s


def zero_runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) indices of maximal runs of exact zeros (end exclusive)."""
    z = np.concatenate(([0], (x == 0).astype(np.int8), [0]))
    d = np.diff(z)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def _quiet_rate(x: np.ndarray, s: int, e: int) -> float:
    """Requests/s of the quiet minutes beside run ``[s, e)``: on each side holding at least
    :data:`GAP_MIN_SIDE_MINUTES` whole minutes within :data:`GAP_CONTEXT_S`, the :data:`GAP_RATE_QUANTILE`
    of their rates, and the busier side's figure. When neither side holds that many, the same quantile of
    the whole minutes of both sides pooled (a few minutes cannot show a quantile alone), or the mean rate
    of what there is when there is no whole minute (0.0 when the run is everything)."""
    before = x[max(0, s - GAP_CONTEXT_S) : s]
    after = x[e : e + GAP_CONTEXT_S]
    minutes = [
        side.reshape(-1, 60).sum(axis=1) for side in (before[before.size % 60 :], after[: after.size - after.size % 60])
    ]
    rates = [float(np.quantile(m, GAP_RATE_QUANTILE)) for m in minutes if m.size >= GAP_MIN_SIDE_MINUTES]
    if rates:
        return max(rates) / 60.0
    pooled = np.concatenate(minutes)
    if pooled.size:
        return float(np.quantile(pooled, GAP_RATE_QUANTILE)) / 60.0
    span = before.size + after.size
    return float(before.sum() + after.sum()) / span if span else 0.0


def mark_gaps(per_second: np.ndarray, *, min_expected: float = 100.0, min_seconds: int = 5) -> tuple[np.ndarray, int]:
    """Replace implausible zero runs by NaN; returns (series, gap seconds).

    A zero run of at least ``min_seconds`` is a gap when the quiet rate beside it (requests/s: the 10th
    percentile of the per-minute rates of the day before it or of the day after, the busier) times its
    length (s) is at least ``min_expected`` requests: Poisson arrivals at that rate leave it empty with
    probability at most ``exp(-min_expected)``. See the module docstring for why.
    """
    x = per_second.astype(np.float64, copy=True)
    raw = np.nan_to_num(per_second.astype(np.float64))
    starts, ends = zero_runs(x)
    csum = np.concatenate(([0.0], np.cumsum(raw)))
    n = x.size
    gap = 0
    for s, e in zip(starts, ends, strict=True):
        length = int(e - s)
        if length < min_seconds:
            continue
        lo, hi = max(0, s - GAP_CONTEXT_S), min(n, e + GAP_CONTEXT_S)
        side_means = [(csum[b] - csum[a]) / (b - a) for a, b in ((lo, s), (e, hi)) if b > a]
        # a quantile of whole minutes is at most (side mean) / (1 - q): when even that cannot reach
        # min_expected, skip the quantile (most zero runs of a busy trace end here)
        if max(side_means, default=0.0) / (1 - GAP_RATE_QUANTILE) * length < min_expected:
            continue
        if _quiet_rate(raw, int(s), int(e)) * length >= min_expected:
            x[s:e] = np.nan
            gap += length
    return x, gap
