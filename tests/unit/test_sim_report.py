"""mark simulate's outputs: the table's figures and ratios, JSON and CSV that read back, the plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from orchestrator.runtime.sim_report import plot, table, write_csv, write_json
from orchestrator.sim.results import MinuteSeries, SimResult


def result(policy: str, instance_usd: float, lambda_usd: float, on_time: int, forecast: bool = False) -> SimResult:
    n = 3
    series = MinuteSeries(
        arrivals=(600, 600, 600),
        peak_rps=(12.0, 11.0, 13.0),
        forecast_rps=tuple((10.0, 12.0, 15.0) for _ in range(n)) if forecast else ((),) * n,
        quantiles=(0.5, 0.9, 0.99) if forecast else (),
        fleet={"c5.large/on-demand": (1, 1, 2), "c5.large/spot": (0, 0, 0)},
        booting=(1, 0, 0),
        lambda_requests=(10, 0, 0),
        latency_p50_ms=(20.0, 21.0, math.nan),
        latency_p99_ms=(80.0, 90.0, math.nan),
        on_time=(590, 600, 600),
        cost_usd=(0.1, 0.2, instance_usd + lambda_usd),
    )
    return SimResult(
        policy=policy,
        seconds=180,
        arrivals=1800,
        on_time=on_time,
        late=1800 - on_time - 5,
        rejected=5,
        lambda_requests=10,
        latency_p50_ms=20.5,
        latency_p99_ms=88.0,
        instance_usd=instance_usd,
        lambda_usd=lambda_usd,
        instance_hours={"c5.large/on-demand": 0.05},
        launches=2,
        interruptions=0,
        wall_seconds=0.1,
        series=series,
        ticks=({"tick": 0, "actions": []},),
    )


RESULTS = [
    result("ours", 1.0, 0.2, 1795, forecast=True),
    result("sagemaker", 9.0, 0.0, 1795),
    result("oracle", 1.0, 0.0, 1795),
    result("lambda-only", 0.0, 3.0, 1700),
]


def test_the_table_gives_cost_per_million_attainment_and_ratios() -> None:
    text = table(RESULTS, sl_min=0.98)
    ours = next(line for line in text.splitlines() if line.startswith("ours "))
    # $1.2 for 1800 requests = $666.667 per 1M; 1795/1800 = 99.72 %; 1.2 / 1.0 oracle; 1.2 / 9.0 sagemaker
    assert "666.667" in ours and "99.72%" in ours and "1.20" in ours and "0.133" in ours
    only = next(line for line in text.splitlines() if line.startswith("lambda-only "))
    assert "94.44%!" in only  # below the target, marked
    assert "ours               c5.large/on-demand 0.1" in text


def test_json_and_csv_read_back(tmp_path: Path) -> None:
    write_json(RESULTS, tmp_path / "results.json", {"trace": "t"})
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["meta"] == {"trace": "t"} and [r["policy"] for r in doc["results"]] == [r.policy for r in RESULTS]
    assert doc["results"][0]["usd_per_million"] == RESULTS[0].usd_per_million
    detail = json.loads((tmp_path / "ours.json").read_text())
    assert detail["series"]["latency_p50_ms"][2] is None and detail["ticks"] == [{"tick": 0, "actions": []}]
    write_csv(RESULTS, tmp_path / "results.csv")
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["policy"] for r in rows] == [r.policy for r in RESULTS]
    assert float(rows[1]["total_usd"]) == 9.0 and rows[0]["instance_hours"] == "c5.large/on-demand=0.050"


def test_a_reused_out_folder_keeps_no_per_policy_json_of_an_earlier_run(tmp_path: Path) -> None:
    (tmp_path / "oracle.json").write_text("{}")  # an earlier run's policy, not simulated now
    (tmp_path / "notes.json").write_text("{}")  # the user's own file
    write_json(RESULTS[:1], tmp_path / "results.json", {}, known_policies=("ours", "oracle", "sagemaker"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json", "ours.json", "results.json"]


def test_the_plots_are_written(tmp_path: Path) -> None:
    files = plot(RESULTS, tmp_path, "test")
    assert [f.name for f in files] == ["load_forecast.png", "fleet.png", "latency.png", "cost.png"]
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000
