"""predictor.train.train_many: one model fit on several traces at once (tiny traces, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from predictor import synthetic
from predictor.features import minute_series


def test_each_trace_mean_normalised_pinball_counts_the_same() -> None:
    pytest.importorskip("torch", reason="training needs torch (pip install -e '.[zoo]')")
    from predictor.features import targets_at
    from predictor.train import _dataset

    busy, quiet = minute_series(synthetic.flash(3, seed=0)), minute_series(synthetic.sparse(3, seed=0))
    o_busy, o_quiet = np.arange(1500, 3500), np.arange(1500, 2000)
    f, t = _dataset([([busy, busy], o_busy), ([quiet], o_quiet)])  # the busy trace has 8x the rows
    w, level = t.w.numpy(), f.level
    k = 2 * o_busy.size
    assert w.shape[0] == k + o_quiet.size
    # the loss of a target is w x (ratio error) = w / level x (error in req/s); summed over a trace with
    # every error equal to that trace's mean true peak, each trace must give the same total
    totals = []
    for (ms, o), rows in (((busy, o_busy), slice(0, k)), ((quiet, o_quiet), slice(k, None))):
        y, valid = targets_at(ms, o)
        totals.append(float((w[rows] / level[rows, None]).sum()) * float(np.mean(y[valid])))
    assert totals[0] == pytest.approx(totals[1], rel=1e-3)
    assert float(w[w > 0].mean()) == pytest.approx(1.0, rel=1e-4)


def test_calibration_is_the_median_of_per_trace_factors_and_survives_a_sparse_trace() -> None:
    pytest.importorskip("torch", reason="training needs torch (pip install -e '.[zoo]')")
    from predictor.baselines import LastValue
    from predictor.calibration import Calibration
    from predictor.features import QUANTILES, rows_at, targets_at
    from predictor.train import _calibrate

    parts = [
        (minute_series(synthetic.make(f, 2, seed=0)), np.arange(1500, 2400)) for f in ("diurnal", "weekly", "sparse")
    ]
    targets = [targets_at(ms, o) for ms, o in parts]
    got = _calibrate(LastValue(), parts, targets).factors
    each = [
        Calibration.fit(LastValue().raw_rows(rows_at(ms, o)), *t, QUANTILES).factors
        for (ms, o), t in zip(parts, targets, strict=True)
    ]
    np.testing.assert_allclose(got, np.median(np.stack(each), axis=0))
    assert 10.0 < each[2].max() <= 100.0  # sparse alone: wide (a 0 forecast before a burst), yet bounded
    assert got.max() < 3.0  # the typical trace's factors, not the sparse trace's


def test_train_many_records_every_source_and_fits_calibration_on_every_trace(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs torch (pip install -e '.[zoo]')")
    from predictor.runtime import load_forecasters
    from predictor.train import TrainConfig, train_many

    traces = [synthetic.diurnal(4, seed=0), synthetic.sparse(4, seed=0)]
    cfg = TrainConfig(
        epochs=2, hidden=8, qr_epochs=2, batch=512, test_days=1, val_days=1, thinning=(1.0, 0.1), max_origins=400
    )
    spec = train_many(traces, tmp_path, cfg, command="pytest many")
    t = spec["training"]
    assert [r["source"].split(":")[0] for r in t["traces"]] == [tr.source for tr in traces]
    assert [r["thinning"] for r in t["traces"]] == [[1.0, 0.1], [1.0]]  # thinning sparse would delete its bursts
    assert [r["weight_share"] for r in t["traces"]] == [0.5, 0.5]
    assert t["trace"].startswith("2 traces (synthetic diurnal") and t["config"]["max_origins"] == 400
    for r in t["traces"]:  # each trace split the same way: 4 days = 2 train + 1 validation + 1 test
        assert r["split_minutes"]["validation_start_day"] == 2.0 and r["split_minutes"]["test_start_day"] == 3.0
    assert json.loads((tmp_path / "forecaster.json").read_text())["training"]["traces"] == t["traces"]
    # two traces: the median is the mean of their factors, so not the diurnal-only fit's
    single = train_many(traces[:1], tmp_path / "one", cfg, command="pytest one")
    assert spec["calibration"]["lstm"] != single["calibration"]["lstm"]
    assert len(load_forecasters(tmp_path)) >= 6


def test_cli_trains_on_several_traces_and_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch", reason="training needs torch (pip install -e '.[zoo]')")
    from orchestrator.cli.main import main

    path = tmp_path / "workload.txt"
    path.write_text(" ".join(str(int(v)) for v in synthetic.diurnal(4, seed=5).per_second))
    out = tmp_path / "model"
    argv = ["forecast", "train", "--trace", str(path), "--trace", f"{path}@10", "--synthetic", "sparse:4"]
    argv += ["--out", str(out), "--epochs", "1", "--hidden", "8", "--qr-epochs", "1", "--thinning", "1"]
    argv += ["--test-days", "1", "--val-days", "1", "--max-origins", "300", "--quiet"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "trained in" in capsys.readouterr().out
    t = json.loads((out / "forecaster.json").read_text())["training"]
    assert t["traces"][1]["source"].startswith(f"{path} x10: ")  # the scale is part of the recorded source
    assert len(t["traces"]) == 3 and t["traces"][2]["source"].startswith("synthetic sparse 4 d seed 0")
    assert f"--trace {path}@10" in t["command"] and "--synthetic sparse:4" in t["command"]
    assert "--max-origins 300" in t["command"]
