"""Nothing accepted is lost: SIGTERM drains the queue; `mark run` builds its model and serves it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from inference.codec import encode_request
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


def test_sigterm_finishes_every_accepted_request(start_worker) -> None:  # type: ignore[no-untyped-def]
    w = start_worker(models=["digits_mlp_large"], max_batch_size=4096, batch_timeout_ms=0, max_queue=10_000)
    x = np.random.default_rng(1).integers(0, 17, size=(4096, 64)).astype(np.float32)
    body, headers = encode_request({"input": x})
    url = f"http://{w.url}/v2/models/digits_mlp_large/infer"

    def one(_: int) -> int | str:
        try:
            r = httpx.post(url, content=body, headers=headers, timeout=60)
        except httpx.HTTPError as e:
            return type(e).__name__  # refused after the listener closed: never accepted
        if r.status_code == 503:
            assert "draining" in r.json()["error"] and r.headers["retry-after"] == "1"
        return r.status_code

    with ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(one, i) for i in range(48)]
        time.sleep(0.3)  # let a backlog build up in the worker
        w.proc.send_signal(signal.SIGTERM)
        results = [f.result() for f in futures]
    assert w.proc.wait(timeout=60) == 0
    accepted = [r for r in results if r == 200]
    assert accepted, results
    # Every request got an answer: a result, an explicit 503 while draining, or a refused connection.
    assert all(r in (200, 503) or isinstance(r, str) for r in results), results
    log = Path(w.log.name).read_text()
    assert "Traceback" not in log


def test_mark_run_serve_builds_the_model_and_serves_through_the_front_door(tmp_path: Path) -> None:
    port = free_port()
    env = os.environ | {"MARK_MODEL_REPO": str(tmp_path / "repo")}
    cmd = [sys.executable, "-m", "orchestrator", "run", "--serve", "--model", "digits_mlp_small", "--no-lambda"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--time-factor", "0.01"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and not ready:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ready, "mark run --serve never became ready"
        x = np.zeros((1, 64), dtype=np.float32)
        body, headers = encode_request({"input": x})
        r = httpx.post(f"http://127.0.0.1:{port}/v2/models/digits_mlp_small/infer", content=body, headers=headers)
        assert r.status_code == 200 and r.headers["x-mark-route"] == "instance"
        # the banner follows readiness by up to one poll of the fleet: Ctrl-C before it would (rightly)
        # stop the start-up without printing it
        while time.monotonic() < deadline and not any("Ctrl-C stops everything" in line for line in lines):
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(10)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert f"curl -s -X POST http://127.0.0.1:{port}/v2/models/digits_mlp_small/infer" in out
    assert "building digits_mlp_small" in out
    assert (tmp_path / "repo" / "digits_mlp_small" / "card.json").is_file()


def test_mark_run_replays_a_workload_and_prints_the_report(tmp_path: Path, digits_repo) -> None:  # type: ignore[no-untyped-def]
    cmd = [sys.executable, "-m", "orchestrator", "--repo", str(digits_repo.root), "run", "--model", "digits_mlp_small"]
    args = ["--seconds", "60", "--time-factor", "0.05", "--shape", "5,10,40", "--port", str(free_port())]
    out = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    for line in ("SLO attainment", "cost per 1M requests", "Lambda share (burst"):
        assert line in out.stdout, out.stdout
    # the controller runs by default: the report says what it did and where its decisions are
    assert re.search(r"instances launched\s+\d+ \(1 at the start, \d+ by the controller\)", out.stdout), out.stdout
    assert re.search(r"controller\s+ours, a step every 60 virtual s", out.stdout), out.stdout
    assert "HiGHS" not in out.stdout  # the planner's solver banner stays out of the report
    log = re.search(r"decision log\s+(\S+\.jsonl)", out.stdout)
    assert log and Path(log.group(1)).read_text().count("\n") >= 1, out.stdout
    assert "[run] t=" in out.stderr  # the live progress line


def test_sigterm_stops_a_running_mark_run_and_every_process_it_started(tmp_path: Path, digits_repo) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    subprocess.run(["cp", "-r", str(digits_repo.root), str(repo)], check=True)  # a path unique to this test
    cmd = [sys.executable, "-m", "orchestrator", "--repo", str(repo), "run", "--model", "digits_mlp_small"]
    proc = subprocess.Popen(
        [*cmd, "--seconds", "3000", "--time-factor", "0.05", "--shape", "5,10,40", "--port", str(free_port())],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def ours() -> list[str]:
        out = subprocess.run(["pgrep", "-f", str(repo)], capture_output=True, text=True).stdout.split()
        return [p for p in out if int(p) != proc.pid]

    try:
        deadline = time.monotonic() + 60
        while not ours() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ours(), "mark run started no worker"
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: every process this run started has been stopped" in err
    assert ours() == []
