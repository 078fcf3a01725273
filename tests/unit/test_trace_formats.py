"""Traces from services other than Twitter (issue 14, item 5): time and count columns by their common
names, timestamped counts read as counts, ambiguous CSVs refused with the flag to pass, a gap rule that
leaves a low-rate service's idle stretches alone, and evaluation output that survives absurd figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.cli.main import build_parser
from predictor.evaluate import Scores, acceptance, table
from predictor.traces import TraceError, load_trace, mark_gaps

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- formats


def test_period_count_per_minute_csv_with_iso_timestamps(tmp_path: Path) -> None:
    p = tmp_path / "service.csv"
    p.write_text("period,count\n" + "".join(f"{_iso(T0 + 60 * i)},{c}\n" for i, c in enumerate([120, 60, 0, 180])))
    tr = load_trace(p, detect_gaps=False)
    assert tr.seconds == 240 and tr.peak_estimated and tr.start_epoch_s == T0
    assert tr.per_second[:60].tolist() == [2.0] * 60 and tr.per_second[180:].tolist() == [3.0] * 60
    assert "counts per 60 s" in tr.describe() and "'period'" in tr.describe()


def test_gmt_create_request_log_is_read_as_events(tmp_path: Path) -> None:
    p = tmp_path / "requests.csv"
    rows = ["1,2024-01-01 00:00:00.250,resnet", "2,2024-01-01 00:00:00.900,resnet", "3,2024-01-01 00:00:02.5,bert"]
    p.write_text("id,gmt_create,model\n" + "\n".join(rows) + "\n")
    tr = load_trace(p, detect_gaps=False)
    assert tr.per_second.tolist() == [2, 0, 1] and tr.start_epoch_s == T0 and not tr.peak_estimated
    ms = [T0 * 1000 + 250, T0 * 1000 + 900, T0 * 1000 + 2500]  # epoch milliseconds, as many loggers write
    p.write_text("gmt_create,latency_ms\n" + "".join(f"{t},12\n" for t in ms))
    tr = load_trace(p, detect_gaps=False)
    assert tr.per_second.tolist() == [2, 0, 1] and tr.start_epoch_s == T0


def test_timestamp_count_csv_at_60_s_is_per_minute_counts_not_events(tmp_path: Path) -> None:
    p = tmp_path / "per_minute.csv"
    p.write_text("timestamp,count\n" + "".join(f"{T0 + 60 * i},{c}\n" for i, c in enumerate([600, 1200])))
    tr = load_trace(p, detect_gaps=False)
    assert tr.per_second.tolist() == [10.0] * 60 + [20.0] * 60  # not 600 in second 0 and 1200 in second 60
    assert tr.peak_estimated and "ESTIMATED" in tr.describe()
    forced = load_trace(p, detect_gaps=False, format="events")  # the old reading, only when asked for
    assert forced.per_second[0] == 600 and forced.per_second[60] == 1200


def test_ambiguous_csvs_are_refused_naming_the_flag(tmp_path: Path) -> None:
    p = tmp_path / "odd.csv"
    p.write_text(f"timestamp,count\n{T0},5\n{T0 + 60},3\n{T0 + 97},4\n")  # a count at irregular times
    with pytest.raises(TraceError, match=r"odd\.csv: a count column .* not on a regular grid .* --format events"):
        load_trace(p)
    assert load_trace(p, detect_gaps=False, format="events").per_second.sum() == 12
    p.write_text(f"time,created_at,count\n{T0},{T0},1\n")
    with pytest.raises(TraceError, match=r"'time' and 'created_at' could each be the time column: pass --time-column"):
        load_trace(p)
    p.write_text(f"ts,count,requests\n{T0},1,2\n{T0 + 1},1,2\n")
    with pytest.raises(TraceError, match=r"could each be the count column: pass --count-column NAME"):
        load_trace(p)
    assert load_trace(p, detect_gaps=False, count_column="requests").per_second.tolist() == [2, 2]
    p.write_text(f"timestamp,count\n{T0},2.5\n{T0 + 7},1\n")
    with pytest.raises(TraceError, match=r"count 2.5 is not a whole number of requests.*--format counts"):
        load_trace(p, format="events")
    p.write_text("when,n_req\n2024-01-01T00:00:00Z,5\n")
    with pytest.raises(TraceError, match=r"no time column among when, n_req .* pass --time-column NAME"):
        load_trace(p)


def test_cli_passes_the_format_flags_through(tmp_path: Path) -> None:
    from orchestrator.cli.forecast import trace_format_kwargs

    p = tmp_path / "log.csv"
    p.write_text(f"arrived,value\n{T0},7\n{T0 + 30},8\n{T0 + 31},9\n")
    for argv in (
        ["forecast", "eval", "--trace", str(p)],
        ["simulate", "--trace", str(p), "--policy", "ours"],
    ):
        args = build_parser().parse_args(
            [*argv, "--format", "events", "--time-column", "ARRIVED", "--count-column", "none", "--gaps", "none"]
        )
        tr = load_trace(args.trace, **trace_format_kwargs(args))
        assert tr.seconds == 32 and tr.per_second.sum() == 3 and tr.gap_seconds == 0


# ---------------------------------------------------------------- gaps


def _bursty(seconds: int, every_s: float, requests: int, burst_s: int, seed: int) -> np.ndarray:
    """A low-rate service: sessions start as Poisson (one per ``every_s`` on average), each sending
    ``requests`` over ``burst_s`` seconds; nothing in between."""
    rng = np.random.default_rng(seed)
    x = np.zeros(seconds)
    t = rng.exponential(every_s)
    while t < seconds - burst_s:
        i = int(t)
        x[i : i + burst_s] += rng.poisson(requests / burst_s, burst_s)
        t += rng.exponential(every_s)
    return x


def test_low_rate_idle_stretches_are_not_gaps_but_an_outage_in_a_busy_trace_is() -> None:
    day = _bursty(86_400, 900, 60, 30, seed=1)  # mean 0.07 req/s in bursts: the former rule marked ~60 %
    assert mark_gaps(day)[1] / day.size < 0.01
    hour = _bursty(3600, 300, 100, 10, seed=2)  # an hour of an inference service's bursts (formerly ~53 %)
    assert mark_gaps(hour)[1] / hour.size < 0.01
    poisson = np.random.default_rng(3).poisson(0.05, 86_400).astype(float)
    assert mark_gaps(poisson)[1] == 0
    busy = np.random.default_rng(4).poisson(20.0, 6 * 3600).astype(float)
    busy[7200:7800] = 0  # a 10-minute outage at 20 req/s
    busy[12_000:12_030] = 0  # 30 s: 600 requests missing
    y, gaps = mark_gaps(busy)
    assert gaps == 630 and np.isnan(y[7200:7800]).all() and np.isnan(y[12_000:12_030]).all()


# ---------------------------------------------------------------- evaluation output

NAMES = ("LSTM", "quantile regression", "last value", "EWMA", "seasonal naive", "peak-hold (cal.)")


def _scores(pin: float, cov: float = 0.9) -> list[Scores]:
    return [Scores((pin, pin, pin), (cov, cov, 0.99), 0.2, 1 - cov, 500) for _ in range(15)]


def test_table_with_huge_numbers_keeps_its_columns_apart() -> None:
    results = {n: _scores(1.234e9 if n != "LSTM" else 0.05, cov=1.0) for n in NAMES}
    results["a forecaster with a name longer than 28 characters"] = [
        Scores((3.2e12, 1e10, float("inf")), (1.0, 1.0, 1.0), 7.7e9, 0.0, 500) for _ in range(15)
    ]
    text = table(results, (1, 15))
    for line in text.splitlines():
        if line.startswith("  ") and not line.lstrip().startswith("forecaster"):
            cells = line.split()[-8:]  # the 8 figures after the name, each its own token
            assert all(float(c.rstrip("%")) >= 0 for c in cells), line
            assert len(line.split()) >= 9
    assert "1.23e+09" in text and "3.20e+12" in text


def test_check_lines_name_the_trace_and_never_pass_on_degenerate_scores() -> None:
    sane = {n: _scores(0.05 if n == "LSTM" else 0.1) for n in NAMES}
    lines = acceptance(sane, trace="my-service.csv")
    assert lines and all("[Twitter]" not in line for line in lines)
    assert all(line.startswith("[my-service.csv] ") for line in lines[1:]) and "my-service.csv" in lines[0]
    assert "pass (smallest margin 50.0 %" in lines[2]
    # calibration factors near 1e9: every calibrated baseline's pinball is absurd, LSTM's "margin" is 100 %
    absurd = {n: _scores(0.05 if n == "LSTM" else 3.0e8, cov=1.0) for n in NAMES}
    checks = acceptance(absurd, trace="sparse.csv")[1:]
    assert all(": pass" not in line for line in checks)  # formerly "pass (smallest margin 100.0 %)"
    assert all("NO VERDICT" in line for line in checks if "below the best of" in line or "regression" in line)
    assert "NO VERDICT" in checks[1] and "3e+08" in checks[1]
    nan = {n: _scores(float("nan") if n == "LSTM" else 0.1) for n in NAMES}
    pinball_line = acceptance(nan, trace="sparse.csv")[2]
    assert ": pass" not in pinball_line and "NO VERDICT" in pinball_line
