"""Issue 14 item 1 end to end: a real front door records the requests it accepted; `mark forecast train
--from-history` trains on such a history and runs the promotion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from inference.repository import ModelRepository
from orchestrator.runtime.local_stack import StackConfig
from predictor.history import HistoryWriter, read_history
from tests.surfaces import StackThread

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_front_door_records_the_requests_it_accepted(digits_repo: ModelRepository, tmp_path: Path) -> None:
    history = tmp_path / "arrivals"
    s = StackThread(
        StackConfig(models=("digits_mlp_small",), repository=str(digits_repo.root), port=0, history_dir=str(history))
    )
    try:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
        with httpx.Client(base_url=f"http://{s.url}") as c:
            for _ in range(25):
                assert c.post("/v2/models/digits_mlp_small/infer", json=body).status_code == 200
            assert c.post("/v2/models/nope/infer", json=body).status_code == 404  # not an arrival
    finally:
        s.close()
    files = list(history.iterdir())
    assert len(files) >= 1 and all(f.name.endswith(f".frontdoor-127-0-0-1-{s.stack.port}.csv") for f in files)  # type: ignore[union-attr]
    trace = read_history(history)
    assert np.nansum(trace.per_second) == 25  # nothing lost at the clean shutdown
    observed = trace.per_second[~np.isnan(trace.per_second)]
    assert observed.size >= 1 and trace.start_epoch_s is not None and trace.start_epoch_s % 60 == 0


def test_train_from_history_then_promote(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    t0 = 1_700_000_017
    t = np.arange(int(3.2 * 86400))
    counts = np.random.default_rng(1).poisson(30.0 * (1.0 + 0.5 * np.sin(2 * np.pi * t / 86400.0)))
    HistoryWriter(tmp_path / "h", "fd-a").append(zip((t0 + t).tolist(), counts.tolist(), strict=True))
    out, active = tmp_path / "cand", tmp_path / "active"
    cmd = [sys.executable, "-m", "orchestrator", "forecast", "train", "--from-history", str(tmp_path / "h")]
    cmd += ["--out", str(out), "--promote-to", str(active), "--test-days", "1", "--val-days", "0.1", "--epochs", "1"]
    cmd += ["--hidden", "4", "--qr-epochs", "1", "--thinning", "1", "--batch", "1024", "--quiet"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "promotion:" in r.stdout and "mean pinball" in r.stdout
    record = json.loads((out / "promotion.json").read_text())
    assert record["candidate_pinball"] > 0 and record["active_pinball"] > 0  # vs the shipped default
    assert record["promote"] == (record["candidate_pinball"] < record["active_pinball"])
    assert active.is_symlink() == record["promote"]
    spec = json.loads((out / "forecaster.json").read_text())
    assert "--from-history" in spec["training"]["command"] and "arrival history" in spec["training"]["trace"]
