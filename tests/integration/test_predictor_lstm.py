"""The quantile LSTM end to end on a tiny synthetic trace: train (seconds), export ONNX, forecast without torch.

Training needs torch (the ``zoo`` extra); the tests skip with that reason where it is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from predictor.features import (
    HORIZON,
    QUANTILES,
    SEQ_CHANNELS,
    STATIC_FEATURES,
    WINDOW,
    History,
    minute_series_from_seconds,
)
from tests.unit.test_predictor import synthetic

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="training needs torch (pip install -e '.[zoo]')")
    from predictor.traces import Trace
    from predictor.train import TrainConfig, train

    out = tmp_path_factory.mktemp("forecaster")
    trace = Trace(synthetic("sine", days=6, base=20), "synthetic sine")
    cfg = TrainConfig(epochs=2, hidden=8, qr_epochs=2, batch=512, test_days=1, val_days=1, thinning=(1.0, 0.1))
    train(trace, out, cfg, command="pytest tiny")
    return out


def _histories() -> dict[str, History]:
    out = {}
    for kind in ("sine", "step", "spike"):
        sec = synthetic(kind, days=2, base=30, seed=1)
        ms = minute_series_from_seconds(sec)
        t = {"sine": 2000, "step": ms.minutes // 2 + 30, "spike": ms.minutes // 2 + 3}[kind]
        out[kind] = History.from_series(ms, t)
    return out


def test_model_folder_is_small_and_documented(tiny_model: Path) -> None:
    names = sorted(p.name for p in tiny_model.iterdir())
    assert names == ["forecaster.json", "model.onnx", "qr.npz"]
    assert sum(p.stat().st_size for p in tiny_model.iterdir()) < 2 * 1024 * 1024
    spec = json.loads((tiny_model / "forecaster.json").read_text())
    assert spec["horizon"] == HORIZON and spec["quantiles"] == list(QUANTILES)
    assert spec["training"]["command"] == "pytest tiny" and spec["training"]["seed"] == 0
    assert set(spec["calibration"]) == {
        "lstm",
        "quantile_regression",
        "last_value",
        "ewma",
        "seasonal_naive",
        "peak_hold",
    }
    assert spec["training"]["onnx_max_abs_error"] < 1e-3


def test_every_forecaster_shapes_and_quantile_order(tiny_model: Path) -> None:
    from predictor.runtime import load_forecasters

    forecasters = load_forecasters(tiny_model)
    assert [f.name for f in forecasters][:2] == ["LSTM", "quantile regression"]
    for kind, hist in _histories().items():
        for fc in forecasters:
            p = fc.forecast(hist)
            assert p.shape == (HORIZON, len(QUANTILES)), (fc.name, kind)
            assert np.isfinite(p).all() and (p >= 0).all(), (fc.name, kind)
            assert (np.diff(p, axis=1) >= 0).all(), f"{fc.name} on {kind}: p50 <= p90 <= p99 violated"


def test_onnx_quantiles_monotone_even_on_wild_inputs(tiny_model: Path) -> None:
    from predictor.runtime import session

    sess = session(tiny_model / "model.onnx")
    rng = np.random.default_rng(0)
    seq = rng.normal(0, 5, (256, WINDOW, len(SEQ_CHANNELS))).astype(np.float32)
    static = rng.normal(0, 5, (256, len(STATIC_FEATURES))).astype(np.float32)
    out = sess.run(None, {"seq": seq, "static": static})[0]
    assert out.shape == (256, HORIZON, len(QUANTILES))
    assert (out[..., 0] >= 0).all() and (np.diff(out, axis=-1) >= 0).all()


def test_batch_equals_one_at_a_time(tiny_model: Path) -> None:
    from predictor.features import rows_at
    from predictor.runtime import load_lstm

    fc = load_lstm(tiny_model)
    ms = minute_series_from_seconds(synthetic("spike", days=2, base=30))
    origins = np.array([1500, 1700, ms.minutes // 2 + 2, ms.minutes - 20])
    batch = fc.forecast_rows(rows_at(ms, origins))
    for i, t in enumerate(origins):
        np.testing.assert_allclose(fc.forecast(History.from_series(ms, int(t))), batch[i], rtol=1e-4)


def test_scaled_trace_gives_scaled_forecast(tiny_model: Path) -> None:
    from predictor.runtime import load_forecasters

    sec = synthetic("sine", days=2, base=30, seed=2)
    a = History.from_series(minute_series_from_seconds(sec), 2500)
    b = History.from_series(minute_series_from_seconds(sec * 10), 2500)
    for fc in load_forecasters(tiny_model):
        np.testing.assert_allclose(fc.forecast(b), 10 * fc.forecast(a), rtol=1e-4, err_msg=fc.name)


def test_runtime_forecaster_never_imports_torch(tiny_model: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from predictor.runtime import load_forecasters\n"
        "from predictor.features import History\n"
        f"fcs = load_forecasters({str(tiny_model)!r})\n"
        "h = History(np.full(1500, 40.0), np.full(1500, 30.0), 30.0, 38.0, 1.6e9)\n"
        "assert all(f.forecast(h).shape == (15, 3) for f in fcs)\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_cli_train_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch", reason="training needs torch (pip install -e '.[zoo]')")
    from orchestrator.cli.main import main

    trace = tmp_path / "workload.txt"
    trace.write_text(" ".join(str(int(v)) for v in synthetic("sine", days=6, base=10)))
    out = tmp_path / "model"
    argv = ["forecast", "train", "--trace", str(trace), "--out", str(out), "--epochs", "1", "--hidden", "8"]
    argv += ["--qr-epochs", "1", "--thinning", "1", "--test-days", "1", "--val-days", "1", "--quiet"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "trained in" in capsys.readouterr().out
    for calibration in ("static", "online"):
        argv = ["forecast", "eval", "--trace", str(trace), "--model", str(out), "--last-days", "1", "--val-days", "1"]
        with pytest.raises(SystemExit) as e:
            main([*argv, "--scale", "10", "--calibration", calibration])
        assert e.value.code == 0
        text = capsys.readouterr().out
        for h in (1, 3, 5, 10, 15):
            assert f"horizon {h} min" in text
        assert "divided by the mean true peak" in text and "rates x10" in text
        for name in ("LSTM", "quantile regression", "last value", "EWMA", "seasonal naive", "peak-hold"):
            assert name in text
        assert "p90 coverage 87-93 %" in text
        assert ("combined " in text) == (calibration == "online")  # the mixture runs online only


def test_cli_reports_malformed_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli.main import main

    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n4 five 6\n")
    with pytest.raises(SystemExit) as e:
        main(["forecast", "eval", "--trace", str(bad)])
    assert e.value.code == 2
    assert "bad.txt: line 2, token 2 (second 4): 'five' is not a non-negative integer" in capsys.readouterr().err
