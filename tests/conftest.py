"""Shared fixtures: a digits model repository built once per session, and real worker processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.repository import ModelRepository

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every ``mark run`` of the suite (in process or a subprocess) keeps its state, the front doors'
    arrival history included, in a temporary folder, never in the user's ~/.local/state."""
    old = os.environ.get("MARK_STATE_DIR")
    os.environ["MARK_STATE_DIR"] = str(tmp_path_factory.mktemp("mark-state"))
    yield
    if old is None:
        os.environ.pop("MARK_STATE_DIR", None)
    else:
        os.environ["MARK_STATE_DIR"] = old


@pytest.fixture(scope="session")
def digits_repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    from inference.zoo import digits

    repo = ModelRepository(tmp_path_factory.mktemp("model-repo"))
    digits.build(repo)
    return repo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """A real ``python -m ec2_worker`` on loopback; stopped by PID when the test ends."""

    def __init__(self, repo: ModelRepository, tmp: Path, env: dict[str, str] | None = None, **settings: Any) -> None:
        self.ready_file = tmp / f"worker-{time.monotonic_ns()}.json"
        cfg = {
            "repository": str(repo.root),
            "port": 0,
            "admin_port": 0,
            "threads": 1,
            "ready_file": str(self.ready_file),
        } | settings
        self.log = (tmp / f"worker-{time.monotonic_ns()}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ec2_worker", "--json", json.dumps(cfg)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=os.environ | (env or {}),
        )
        deadline = time.monotonic() + 30
        while not self.ready_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker did not start: {Path(self.log.name).read_text()}")
            time.sleep(0.05)
        info = json.loads(self.ready_file.read_text())
        self.port, self.admin_port = info["port"], info["admin_port"]
        self.url = f"127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{self.url}/v2/health/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("worker never became ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def start_worker(digits_repo: ModelRepository, tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def _start(env: dict[str, str] | None = None, **settings: Any) -> WorkerProcess:
        w = WorkerProcess(digits_repo, tmp_path, env, **({"models": ["digits_mlp_small"]} | settings))
        started.append(w)
        return w

    yield _start
    for w in started:
        w.stop()
