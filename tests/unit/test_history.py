"""Issue 14 item 1: the arrival history store, the front door's recorder, --from-history and promotion.

Numpy and onnxruntime only (the shipped model stands in for trained ones); training itself is in
tests/integration/test_history_frontdoor.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from orchestrator.cli.config import deployment_from_args
from orchestrator.cli.main import build_parser
from orchestrator.economics.catalog import load_catalog
from orchestrator.frontdoor.arrivals import ArrivalRecorder
from orchestrator.runtime.local_stack import stack_config
from predictor.history import (
    HistoryError,
    HistoryWriter,
    NotEnoughHistory,
    check_enough_history,
    min_history_days,
    read_history,
    writer_id_for,
)
from predictor.promotion import SHIPPED_MODEL_DIR, decide, promote_if_better, retrain_if_due, versions_dir
from predictor.traces import Trace

T0 = 1_700_000_017  # 2023-11-14 22:13:37 UTC: not on a minute


# ---------------------------------------------------------------- the store


def test_round_trip_starts_on_a_whole_minute(tmp_path: Path) -> None:
    w = HistoryWriter(tmp_path, "fd-a")
    assert w.append([(T0, 3), (T0 + 1, 0), (T0 + 2, 5)]) == 3
    t = read_history(tmp_path)
    assert t.start_epoch_s == T0 - 37 and t.start_epoch_s % 60 == 0
    assert np.isnan(t.per_second[:37]).all() and t.gap_seconds == 37
    assert t.per_second[37:].tolist() == [3.0, 0.0, 5.0]  # a recorded zero is a quiet second, not a gap
    assert "1 writer" in t.source


def test_writers_are_summed_per_second_and_days_split_by_utc(tmp_path: Path) -> None:
    midnight = 1_700_006_400  # 2023-11-15 00:00:00 UTC
    HistoryWriter(tmp_path, "fd-a").append([(midnight - 1, 2), (midnight, 4)])
    HistoryWriter(tmp_path, "fd-b").append([(midnight, 1), (midnight + 1, 7)])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["2023-11-14.fd-a.csv", "2023-11-15.fd-a.csv", "2023-11-15.fd-b.csv"]
    t = read_history(tmp_path)
    assert t.per_second[-3:].tolist() == [2.0, 5.0, 7.0]


def test_a_second_written_twice_by_one_writer_counts_once(tmp_path: Path) -> None:
    w = HistoryWriter(tmp_path, "fd-a")
    w.append([(T0, 4), (T0 + 1, 6)])  # shut down in the middle of second T0+1 ...
    HistoryWriter(tmp_path, "fd-a").append([(T0 + 1, 6), (T0 + 2, 1)])  # ... restarted: T0+1 written again
    HistoryWriter(tmp_path, "fd-b").append([(T0 + 1, 2)])  # another front door's share of it is added
    assert read_history(tmp_path).per_second[-3:].tolist() == [4.0, 8.0, 1.0]


def test_unrecorded_seconds_are_gaps_and_windows_cut(tmp_path: Path) -> None:
    w = HistoryWriter(tmp_path, "fd-a")
    w.append([(T0 + i, 1) for i in range(10)])
    w.append([(T0 + 100 + i, 2) for i in range(10)])  # the front door was down for 90 s
    t = read_history(tmp_path)
    x = t.per_second[37:]
    assert np.isnan(x[10:100]).all() and (x[:10] == 1).all() and (x[100:] == 2).all()
    assert t.gap_seconds == 37 + 90
    assert np.nansum(read_history(tmp_path, start_epoch_s=T0 + 100).per_second) == 20
    assert np.nansum(read_history(tmp_path, end_epoch_s=T0 + 5).per_second) == 5


def test_a_torn_last_line_is_ignored_then_cut_off(tmp_path: Path) -> None:
    w = HistoryWriter(tmp_path, "fd-a")
    w.append([(T0, 1)])
    with open(w.path("2023-11-14"), "a") as f:
        f.write(f"{T0 + 1},9")  # a crash mid-write
    assert read_history(tmp_path).per_second[-1] == 1.0
    w.append([(T0 + 2, 3)])
    assert np.nan_to_num(read_history(tmp_path).per_second[-3:]).tolist() == [1.0, 0.0, 3.0]


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no arrival history folder"):
        read_history(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("not history")
    with pytest.raises(HistoryError, match="no arrival history in .*YYYY-MM-DD.WRITER.csv"):
        read_history(tmp_path)
    (tmp_path / "2023-11-14.fd-a.csv").write_text(f"{T0},1\n{T0 + 1};2\n")
    with pytest.raises(HistoryError, match="line 2: .* is not 'EPOCH_SECOND,COUNT'"):
        read_history(tmp_path)
    with pytest.raises(ValueError, match="writer id"):
        HistoryWriter(tmp_path, "a/b")
    assert writer_id_for("frontdoor-127.0.0.1-8080") == "frontdoor-127-0-0-1-8080"
    assert writer_id_for("frontdoor-::1-0") == "frontdoor--1-0"


def test_too_little_history_states_the_minimum() -> None:
    need = min_history_days(4.0, 3.0)
    assert need == pytest.approx((1440 + 60 + 15) / 1440 + 1 + 3 + 4)
    short = Trace(np.ones(5 * 86400), "h", 0.0)
    with pytest.raises(NotEnoughHistory, match=rf"at least {need:.2f} days.*keeps the default model"):
        check_enough_history(short)
    check_enough_history(Trace(np.ones(int(need * 86400) + 60), "h", 0.0))


# ---------------------------------------------------------------- the recorder


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_recorder_counts_per_second_writes_zeros_and_flushes_the_last_second(tmp_path: Path) -> None:
    clock = Clock(T0 + 0.5)
    rec = ArrivalRecorder(HistoryWriter(tmp_path, "fd-a"), clock=clock)
    for _ in range(3):
        rec.record()
    clock.t = T0 + 3.2  # two quiet seconds
    rec.record()
    asyncio.run(rec.flush())
    assert read_history(tmp_path).per_second[37:].tolist() == [3.0, 0.0, 0.0]  # the current second is not over
    rec.record()
    asyncio.run(rec.close())  # a clean shutdown writes the current second too
    t = read_history(tmp_path)
    assert t.per_second[37:].tolist() == [3.0, 0.0, 0.0, 2.0]


def test_recorder_keeps_rows_a_failed_write_left(tmp_path: Path) -> None:
    clock = Clock(T0)
    writer = HistoryWriter(tmp_path / "h", "fd-a")
    rec = ArrivalRecorder(writer, clock=clock)
    rec.record()
    clock.t = T0 + 2
    shutil.rmtree(tmp_path / "h")
    (tmp_path / "h").write_text("a file where the folder was")
    asyncio.run(rec.flush())
    assert rec.failures == 1 and rec.written == 0
    (tmp_path / "h").unlink()
    (tmp_path / "h").mkdir()
    asyncio.run(rec.flush(final=True))
    assert read_history(tmp_path / "h").per_second[-3:].tolist() == [1.0, 0.0, 0.0]


def test_run_config_sets_the_history_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = lambda *a: build_parser().parse_args(["run", *a])  # noqa: E731
    monkeypatch.setenv("MARK_STATE_DIR", str(tmp_path))
    d = deployment_from_args(run())
    assert d.history_path() == tmp_path / "mark" / "arrivals"
    assert stack_config(d, load_catalog(), "repo").history_dir == str(tmp_path / "mark" / "arrivals")
    d = deployment_from_args(run("--history-dir", str(tmp_path / "x")))
    assert d.controller.history_dir == str(tmp_path / "x") and d.history_path() == tmp_path / "x"
    d = deployment_from_args(run("--no-history"))
    assert not d.controller.record_arrivals and stack_config(d, load_catalog(), "repo").history_dir is None


# ---------------------------------------------------------------- --from-history and promotion


def diurnal(days: float, base: float = 40.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(days * 86400))
    rate = base * (1.0 + 0.6 * np.sin(2 * np.pi * t / 86400.0))
    return np.random.default_rng(seed).poisson(rate)


def write_history(folder: Path, counts: np.ndarray, t0: int = T0) -> None:
    HistoryWriter(folder, "fd-a").append(zip(range(t0, t0 + counts.size), counts.tolist(), strict=True))


def model_copy(dst: Path, calibration_factor: float = 1.0) -> Path:
    """The shipped model; a factor != 1 scales its calibration (a deliberately worse model)."""
    shutil.copytree(SHIPPED_MODEL_DIR, dst)
    spec = json.loads((dst / "forecaster.json").read_text())
    spec["calibration"]["lstm"] = [[v * calibration_factor for v in row] for row in spec["calibration"]["lstm"]]
    (dst / "forecaster.json").write_text(json.dumps(spec))
    return dst


def test_train_from_history_refuses_too_little_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    write_history(tmp_path / "h", diurnal(0.05))
    args = build_parser().parse_args(
        ["forecast", "train", "--from-history", str(tmp_path / "h"), "--out", str(tmp_path / "m")]
    )
    with pytest.raises(NotEnoughHistory, match=rf"at least {min_history_days():.2f} days.*default model"):
        args.func(args)
    assert not (tmp_path / "m").exists()
    with pytest.raises(SystemExit):  # --trace or --from-history, not both
        build_parser().parse_args(["forecast", "train", "--trace", "x", "--from-history", "y", "--out", "m"])


def test_decide_is_strict() -> None:
    assert decide(0.10, 0.12)[0] and decide(0.10, None)[0]
    assert not decide(0.12, 0.12)[0] and not decide(0.13, 0.12)[0]
    assert not decide(float("nan"), 0.12)[0] and not decide(0.10, float("nan"))[0]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Trace]:
    folder = tmp_path_factory.mktemp("history")
    write_history(folder, diurnal(3.2))
    return folder, read_history(folder)


def test_a_better_candidate_replaces_the_active_model_atomically(tmp_path: Path, history: tuple[Path, Trace]) -> None:
    _, trace = history
    active = model_copy(tmp_path / "active", 3.0)  # over-provisions 3x: a high pinball loss
    cand = model_copy(tmp_path / "cand")
    d = promote_if_better(cand, active, trace, test_days=1.0, val_days=0.5)
    assert d.promote and d.candidate_pinball is not None and d.active_pinball is not None
    assert d.candidate_pinball < d.active_pinball
    assert active.is_symlink() and active.resolve() == Path(d.installed or "").resolve()
    assert (active / "model.onnx").is_file() and (active / "promotion.json").is_file()
    backup = Path(d.backup or "")
    assert backup.parent == versions_dir(active) and (backup / "forecaster.json").is_file()  # the old one, kept
    record = json.loads((cand / "promotion.json").read_text())
    assert record["promote"] and record["candidate_pinball"] == d.candidate_pinball
    assert "PROMOTED" in d.render() and f"{d.active_pinball:.4f}" in d.render()

    # the next candidate is worse: the active model stays where it is
    worse = model_copy(tmp_path / "worse", 3.0)
    before = active.resolve()
    d2 = promote_if_better(worse, active, trace, test_days=1.0, val_days=0.5, record=tmp_path / "d2.json")
    assert not d2.promote and d2.candidate_pinball is not None and d2.active_pinball is not None
    assert d2.candidate_pinball > d2.active_pinball and active.resolve() == before
    assert json.loads((tmp_path / "d2.json").read_text())["promote"] is False
    # and an equal one neither (strictly better only)
    assert not promote_if_better(model_copy(tmp_path / "same"), active, trace, 1.0, 0.5).promote


def test_retrain_if_due(tmp_path: Path, history: tuple[Path, Trace]) -> None:
    folder, _ = history
    active = model_copy(tmp_path / "active", 3.0)
    trained: list[Path] = []

    def train_fn(trace: Trace, out: Path) -> None:  # stands in for predictor.train.train
        assert trace.days >= 3.0
        trained.append(out)
        shutil.copytree(SHIPPED_MODEL_DIR, out, dirs_exist_ok=True)

    now = T0 + 4 * 86400
    d = retrain_if_due(folder, active, now, train_fn, test_days=1.0, val_days=0.1)
    assert d is not None and d.promote and active.is_symlink()
    assert not trained[0].exists()  # the candidate's folder is cleaned up; the installed copy stays
    assert retrain_if_due(folder, active, now + 3600, train_fn, test_days=1.0, val_days=0.1) is None  # not due
    d = retrain_if_due(folder, active, now + 86400, train_fn, test_days=4.0, val_days=3.0)
    assert d is not None and not d.promote and "too little arrival history" in d.reason and len(trained) == 1
