"""`mark simulate` end to end on a small made-up trace: every policy runs, the table, JSON, CSV and
plots agree, every arrival is accounted for, and bad input is refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator.cli.main import main

POLICIES = ["ours", "mark-paper", "mark-release", "sagemaker", "static-peak", "lambda-only", "oracle"]


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three hours of per-second counts: a slow wave around 60 req/s and a 5-minute burst to 250."""
    t = np.arange(3 * 3600)
    rate = 60 + 30 * np.sin(2 * np.pi * t / 3600)
    rate[2 * 3600 + 600 : 2 * 3600 + 900] = 250
    counts = np.random.default_rng(0).poisson(rate)
    path = tmp_path_factory.mktemp("trace") / "workload.txt"
    path.write_text(" ".join(map(str, counts)))
    return path


def test_every_policy_runs_and_the_outputs_agree(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["simulate", "--trace", str(trace), "--start", "3600", "--end", str(3 * 3600)]
    argv += ["--types", "c5.large", "c5.xlarge", "--jobs", "1", "--out", str(out), "--policy", *POLICIES]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    text = capsys.readouterr().out
    doc = json.loads((out / "results.json").read_text())
    rows = {r["policy"]: r for r in doc["results"]}
    assert list(rows) == POLICIES and doc["meta"]["seconds"] == 7200
    for name, r in rows.items():
        assert r["on_time"] + r["late"] + r["rejected"] == r["arrivals"], name
        assert f"{name} " in text
        assert (out / f"{name}.json").is_file()
    assert len({r["arrivals"] for r in rows.values()}) == 1  # the same arrivals for every policy
    assert rows["lambda-only"]["lambda_share"] == 1.0 and rows["lambda-only"]["launches"] == 0
    assert rows["static-peak"]["lambda_requests"] == 0 and rows["mark-release"]["lambda_requests"] == 0
    assert rows["oracle"]["total_usd"] <= rows["ours"]["total_usd"] * 1.001
    assert rows["ours"]["slo_attainment"] >= 0.98
    for png in ("load_forecast.png", "fleet.png", "latency.png", "cost.png"):
        assert (out / png).stat().st_size > 5000
    assert (out / "results.csv").read_text().count("\n") == len(POLICIES) + 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--policy", "best"], "--policy: unknown 'best'; choose from all, ours"),
        (["--days", "5"], "--days 5: the trace holds 0.12 days"),
        (["--types", "c9.huge"], "fleet.instance_types: unknown instance type 'c9.huge'"),
        (["--sl-min", "1.5"], "slo.sl_min (from --sl-min): Input should be less than 1"),
        (["--seed", "-5"], "argument --seed: must be a whole number >= 0, got '-5'"),
        (["--forecaster", "prophet"], "argument --forecaster: invalid choice: 'prophet'"),
    ],
)
def test_bad_input_is_refused_before_simulating(
    trace: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--trace", str(trace), *extra])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_or_malformed_trace_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 three 4")
    for path, message in ((tmp_path / "none.txt", "trace file not found"), (bad, "bad.txt")):
        with pytest.raises(SystemExit) as e:
            main(["simulate", "--trace", str(path)])
        assert e.value.code == 2
        assert message in capsys.readouterr().err


def test_a_failing_policy_is_reported_and_the_others_still_run(
    trace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.runtime import simulation

    real = simulation.run_one

    def flaky(plan, policy, progress=None):  # type: ignore[no-untyped-def]
        if policy == "static-peak":
            raise RuntimeError("made-up failure")
        return real(plan, policy, progress)

    monkeypatch.setattr(simulation, "run_one", flaky)
    argv = ["simulate", "--trace", str(trace), "--start", "3600", "--end", "5400", "--types", "c5.large"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--jobs", "1", "--policy", "static-peak", "lambda-only"])
    assert e.value.code == 1
    captured = capsys.readouterr()
    assert "error: policy static-peak failed: RuntimeError: made-up failure" in captured.err
    assert "lambda-only " in captured.out and "static-peak " not in captured.out


def test_a_user_catalog_prices_the_run(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same window under a catalog where c5.large on-demand costs twice as much: static-peak (a
    fixed on-demand c5.large fleet) costs exactly twice as much; a bad catalog is named."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "profiles" / "catalog.yaml").read_text()
    doubled = text.replace(
        "    on_demand_usd_per_hour:\n      value: 0.085\n", "    on_demand_usd_per_hour:\n      value: 0.17\n", 1
    )
    assert doubled != text
    (tmp_path / "dear.yaml").write_text(doubled)
    totals = []
    for catalog in (None, tmp_path / "dear.yaml"):
        out = tmp_path / ("dear" if catalog else "base")
        argv = ["simulate", "--trace", str(trace), "--start", "3600", "--end", "5400", "--types", "c5.large"]
        argv += ["--jobs", "1", "--policy", "static-peak", "--out", str(out)]
        with pytest.raises(SystemExit) as e:
            main([*argv, *(["--catalog", str(catalog)] if catalog else [])])
        assert e.value.code == 0
        (row,) = json.loads((out / "results.json").read_text())["results"]
        totals.append(row["instance_usd"])
    assert totals[1] == pytest.approx(2 * totals[0], rel=1e-9)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--trace", str(trace), "--catalog", str(tmp_path / "none.yaml")])
    assert e.value.code == 2 and "catalog file not found" in capsys.readouterr().err


def test_user_latency_profiles_drive_the_run(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A copy of the committed profiles with mobilenet_v2 made 10x slower on every measured batch: the
    static fleet for the same peak needs more instances, so static-peak bills more; a missing folder is named."""
    import shutil

    root = Path(__file__).resolve().parents[2]
    mine = tmp_path / "latency"
    shutil.copytree(root / "profiles" / "latency", mine)
    for f in (mine / "mobilenet_v2").glob("*.json"):
        doc = json.loads(f.read_text())
        for row in doc.get("batches", []):
            for k in ("p50_ms", "p99_ms"):
                if k in row:
                    row[k] = row[k] * 10
        f.write_text(json.dumps(doc))
    totals = []
    for profiles in (None, mine):
        out = tmp_path / ("slow" if profiles else "base")
        argv = ["simulate", "--trace", str(trace), "--start", "3600", "--end", "5400", "--types", "c5.large"]
        argv += ["--jobs", "1", "--policy", "static-peak", "--out", str(out)]
        with pytest.raises(SystemExit) as e:
            main([*argv, *(["--profiles", str(profiles)] if profiles else [])])
        assert e.value.code == 0
        (row,) = json.loads((out / "results.json").read_text())["results"]
        totals.append(row["instance_usd"])
    assert totals[1] > 3 * totals[0], totals
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--trace", str(trace), "--profiles", str(tmp_path / "nowhere")])
    assert e.value.code == 2 and "--profiles" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "resnet9000"], "--policy ours: "),
        (["--spot-hazard", "-1"], "argument --spot-hazard: must be a number >= 0"),
        (["--out", "FILE"], "--out "),
    ],
)
def test_what_a_run_cannot_do_is_refused_before_it_starts(
    trace: Path, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    extra = [str(afile) if x == "FILE" else x for x in extra]
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--trace", str(trace), "--start", "3600", "--end", "5400", "--policy", "ours", *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "[simulate] window" not in err  # nothing was simulated


def test_lambda_only_needs_lambda(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "d.yaml"
    cfg.write_text(
        "models: [mobilenet_v2]\nfleet: {instance_types: [c5.large]}\nlambda: {enabled: false, prewarm: 0}\n"
    )
    with pytest.raises(SystemExit) as e:
        main(
            [
                "simulate",
                "--trace",
                str(trace),
                "--start",
                "0",
                "--end",
                "600",
                "--config",
                str(cfg),
                "--policy",
                "lambda-only",
            ]
        )
    assert e.value.code == 2 and "lambda.enabled: false, so the lambda-only policy" in capsys.readouterr().err


def test_the_planner_does_not_count_on_a_lambda_slower_than_the_slo() -> None:
    from orchestrator.controller.policies import PolicyInputs, _lambda_option
    from orchestrator.economics.catalog import load_catalog
    from orchestrator.types import Slo

    fast = _lambda_option(PolicyInputs(slo=Slo(rt_max_ms=200)), load_catalog())
    slow = _lambda_option(PolicyInputs(slo=Slo(rt_max_ms=8)), load_catalog())  # T(1) ~8 ms + 5 ms margin > 8
    assert fast.concurrency_limit > 0 and slow.concurrency_limit == 0


def test_all_with_names_is_all_once() -> None:
    from orchestrator.cli.simulate import POLICY_ORDER
    from orchestrator.runtime.simulation import policy_names

    assert policy_names(["all", "ours"], POLICY_ORDER) == POLICY_ORDER
    assert policy_names(["oracle", "ours", "oracle"], POLICY_ORDER) == ("oracle", "ours")


def test_killing_mark_simulate_leaves_no_worker_process_behind(trace: Path) -> None:
    """SIGKILL (or SIGTERM) runs no cleanup in the parent; its pool and manager processes end on their own
    within a few seconds instead of simulating on for nobody."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def children(pid: int) -> set[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        return {int(x) for x in out.split()}

    argv = [sys.executable, "-m", "orchestrator.cli.main", "simulate", "--trace", str(trace), "--scale", "20"]
    argv += ["--start", "3600", "--end", str(3 * 3600), "--jobs", "2", "--policy", "oracle", "mark-paper"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(kids := children(proc.pid)) < 3 and time.monotonic() < deadline:  # manager + 2 workers
            time.sleep(0.2)
        assert len(kids) >= 3 and proc.poll() is None, "the run ended or never started its pool"
        time.sleep(1.0)  # the workers are simulating now
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        alive = set(kids)
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = {k for k in alive if os.path.exists(f"/proc/{k}") and "zombie" not in _state(k)}
        assert not alive, f"left behind: {sorted(alive)}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for k in kids | children(proc.pid):  # by PID, whatever the outcome
            if os.path.exists(f"/proc/{k}"):
                os.kill(k, signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((line for line in f if line.startswith("State:")), "").lower()
    except OSError:
        return "zombie"
