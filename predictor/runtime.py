"""The run-time forecasters: the exported LSTM on onnxruntime, and every fitted baseline, from a model folder.

No torch here (a test imports this module in a fresh interpreter and checks ``sys.modules``): the
controller process stays small and starts fast. One forecast is one ONNX call on a batch of one with a
single-threaded session (``benchmarks/forecaster_latency.py`` measures it).

A model folder (``profiles/forecaster/``) holds ``model.onnx`` (ratio quantiles, monotone by
construction), ``qr.npz`` (the linear quantile regression's weights) and ``forecaster.json``: horizon,
quantiles, feature names, calibration factors of every forecaster, the baselines' fitted parameters,
and how the model was trained (command, data range, seed, date).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from predictor.baselines import EWMA, CalibratedQuantiles, Forecaster, LastValue, PeakHold, SeasonalNaive
from predictor.calibration import Calibration, monotone
from predictor.ensemble import Ensemble
from predictor.features import (
    HORIZON,
    QUANTILES,
    SEQ_CHANNELS,
    STATIC_FEATURES,
    WINDOW,
    HistoryRows,
    build_features,
)
from predictor.online import DEFAULT_GAMMA, OnlineCalibrated
from predictor.quantile_regression import LinearQuantileForecaster

SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[1] / "profiles" / "forecaster"
SPEC_FILE = "forecaster.json"
ONNX_FILE = "model.onnx"
QR_FILE = "qr.npz"
FORMAT_VERSION = 2  # 2: no clock features (issue 14); folders of version 1 must be retrained


def session(path: Path | str, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads and no inter-op pool (one forecast at a time)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@dataclass
class OnnxForecaster(CalibratedQuantiles):
    """The quantile LSTM: features -> ONNX (peak / level ratios) -> x level x calibration."""

    sess: ort.InferenceSession
    calibration: Calibration | None = None
    name: str = "LSTM"
    horizon: int = HORIZON
    quantiles: tuple[float, ...] = QUANTILES
    batch: int = 4096
    _names: tuple[str, str, str] = field(init=False)

    def __post_init__(self) -> None:
        ins = self.sess.get_inputs()
        self._names = (ins[0].name, ins[1].name, self.sess.get_outputs()[0].name)

    def raw_rows(self, rows: HistoryRows) -> np.ndarray:
        f = build_features(rows)
        seq_name, static_name, out_name = self._names
        outs = []
        for i in range(0, max(1, len(f)), self.batch):
            feed = {seq_name: f.seq[i : i + self.batch], static_name: f.static[i : i + self.batch]}
            outs.append(self.sess.run([out_name], feed)[0])
        ratio = np.concatenate(outs, axis=0).astype(np.float64)
        return monotone(ratio) * f.level[:, None, None]


def read_spec(model_dir: Path | str) -> dict[str, Any]:
    p = Path(model_dir) / SPEC_FILE
    if not p.is_file():
        raise FileNotFoundError(f"no {SPEC_FILE} in {model_dir} (train one with `mark forecast train`)")
    spec: dict[str, Any] = json.loads(p.read_text())
    if spec.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{p}: format_version {spec.get('format_version')} is not this code's {FORMAT_VERSION} (the features "
            "changed: retrain the model with `mark forecast train`)"
        )
    want = {"horizon": HORIZON, "quantiles": list(QUANTILES), "window_minutes": WINDOW}
    got = {k: spec.get(k) for k in want}
    if got != want or spec.get("seq_channels") != list(SEQ_CHANNELS) or spec.get("static") != list(STATIC_FEATURES):
        raise ValueError(f"{p}: feature spec {got} does not match this code's {want} (retrain the model)")
    return spec


def _cal(spec: dict[str, Any], key: str) -> Calibration | None:
    rows = spec.get("calibration", {}).get(key)
    return None if rows is None else Calibration.from_json(rows)


def load_lstm(model_dir: Path | str, threads: int = 1) -> OnnxForecaster:
    spec = read_spec(model_dir)
    return OnnxForecaster(session(Path(model_dir) / ONNX_FILE, threads), _cal(spec, "lstm"))


def load_controller_forecaster(
    model_dir: Path | str = SHIPPED_MODEL_DIR, threads: int = 1, gamma: float = DEFAULT_GAMMA
) -> OnlineCalibrated:
    """The forecaster a controller runs: the LSTM with its calibration adapted online as outcomes arrive.

    Factors fit on the training trace's validation days are right for that trace only; on a burstier
    service (NASA x100) the static p90 covered 72-80 % of peaks, the online one 90 % (profiles/forecaster/
    EVAL.md). Call its ``forecast`` once a minute, in order: it scores its own past forecasts. Its state is
    the immutable ``.state`` (:class:`~predictor.online.CalibrationState`, JSON round trip); a pure
    controller step calls :func:`~predictor.online.calibrated_forecast` on ``.inner`` with a state instead."""
    return OnlineCalibrated(load_lstm(model_dir, threads), gamma=gamma)


def load_ensemble(
    model_dir: Path | str = SHIPPED_MODEL_DIR, threads: int = 1, gamma: float = DEFAULT_GAMMA
) -> Ensemble:
    """The combined forecaster (:mod:`predictor.ensemble`) over every calibrated forecaster of the folder
    (:func:`load_forecasters` less the uncalibrated raw peak-hold): the controller's default."""
    members = [f for f in load_forecasters(model_dir, threads) if getattr(f, "calibration", None) is not None]
    return Ensemble(members, gamma=gamma)  # type: ignore[arg-type]


def load_forecasters(model_dir: Path | str, threads: int = 1) -> list[Forecaster]:
    """The LSTM, the quantile regression and every baseline with the parameters fit at training."""
    d = Path(model_dir)
    spec = read_spec(d)
    base = spec.get("baselines", {})
    out: list[Forecaster] = [load_lstm(d, threads)]
    if (d / QR_FILE).is_file():
        with np.load(d / QR_FILE) as z:
            out.append(LinearQuantileForecaster(z["weights"].astype(np.float32), _cal(spec, "quantile_regression")))
    out += [
        LastValue(calibration=_cal(spec, "last_value")),
        EWMA(alpha=float(base.get("ewma_alpha", 0.3)), calibration=_cal(spec, "ewma")),
        SeasonalNaive(calibration=_cal(spec, "seasonal_naive")),
        PeakHold(
            name="peak-hold (cal.)", window=int(base.get("peak_hold_window", 5)), calibration=_cal(spec, "peak_hold")
        ),
        PeakHold(name="peak-hold x1.2 raw", window=int(base.get("peak_hold_window", 5))),
    ]
    return out
