"""`mark profile` measures T(b) and records its conditions; the CLI's zoo commands work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from inference.profiler import batch_sizes, profile, write_profile
from inference.repository import ModelRepository


def test_batch_sizes_are_powers_of_two_up_to_the_max() -> None:
    assert batch_sizes(1) == [1]
    assert batch_sizes(16) == [1, 2, 4, 8, 16]
    assert batch_sizes(12) == [1, 2, 4, 8, 12]


def test_profile_measures_every_batch_size(digits_repo: ModelRepository, tmp_path: Path) -> None:
    result = profile(
        digits_repo,
        "digits_mlp_large",
        threads=1,
        max_batch=8,
        min_samples=10,
        max_seconds_per_batch=0.2,
        progress=False,
    )
    assert result["source"] == "measured"
    assert result["threads"] == 1 and result["host"]["logical_cores"] >= 1
    assert result["onnxruntime_version"] and result["host"]["cpu_model"]
    rows = result["batches"]
    assert [r["batch_size"] for r in rows] == [1, 2, 4, 8]
    for r in rows:
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["samples"] >= 10
    path = write_profile(result, tmp_path)
    assert json.loads(path.read_text())["model"] == "digits_mlp_large"
    assert path.name.endswith("-t1.json")


def test_cli_zoo_list_and_profile(digits_repo: ModelRepository, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "orchestrator", "--repo", str(digits_repo.root)]
    out = subprocess.run([*cmd, "zoo", "list"], capture_output=True, text=True, check=True).stdout
    assert "digits_mlp_small" in out and "measured" in out
    out = subprocess.run(
        [
            *cmd,
            "profile",
            "digits_linear",
            "--threads",
            "1",
            "--max-batch",
            "4",
            "--samples",
            "5",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "wrote" in out and list((tmp_path / "digits_linear").glob("*.json"))
    bad = subprocess.run([*cmd, "profile", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown model 'nope'" in bad.stderr


def test_profile_with_parallel_slots_records_the_layout(digits_repo: ModelRepository, tmp_path: Path) -> None:
    result = profile(
        digits_repo,
        "digits_mlp_small",
        threads=1,
        max_batch=2,
        slots=2,
        min_samples=10,
        max_seconds_per_batch=0.1,
        progress=False,
    )
    assert result["parallel_slots"] == 2
    assert all(r["throughput_rps"] > 0 and r["samples"] >= 10 for r in result["batches"])
    assert write_profile(result, tmp_path).name.endswith("-s2-t1.json")
