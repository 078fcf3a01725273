"""Workload traces come from the one trace loader (predictor.traces), whatever the file's format."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from orchestrator.workload.loadgen import trace_rates
from predictor.traces import TraceError


def test_replay_rates_from_counts_csv_and_archives(tmp_path: Path) -> None:
    counts = tmp_path / "workload.txt"
    counts.write_text("3 0 7 1\n")
    assert trace_rates(counts, scale=2.0) == [6.0, 0.0, 14.0, 2.0]
    assert trace_rates(counts, limit_seconds=2) == [3.0, 0.0]
    csv = tmp_path / "per_minute.csv"
    csv.write_text("requests\n120\n60\n")
    rates = trace_rates(csv)
    assert len(rates) == 120 and rates[0] == 2.0 and rates[-1] == 1.0
    archive = tmp_path / "workload.tbz2"
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(counts, arcname="workload.txt")
    assert trace_rates(archive) == [3.0, 0.0, 7.0, 1.0]  # the replay reads archives too now


def test_bad_traces_name_the_file_and_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 x\n")
    with pytest.raises(TraceError, match=r"bad\.txt.*'x' is not a non-negative integer"):
        trace_rates(bad)
    with pytest.raises(FileNotFoundError, match="trace file not found"):
        trace_rates(tmp_path / "absent.txt")
