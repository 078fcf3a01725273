"""Forecast latency: one controller step of each run-time forecaster, single-threaded onnxruntime.

    .venv/bin/python benchmarks/forecaster_latency.py [--model profiles/forecaster] [--runs 3000]

The history is what a controller holds (per-minute peaks and means of the last 25 hours): a real one
cut from ../shared/traces/twitter-2021-08/workload.txt where present, else a synthetic diurnal one.
Times ``forecast(history)`` end to end (features + ONNX + calibration), then the ONNX call alone and
the feature building alone, and the conversion from raw per-second counts (not needed per step when
the controller keeps per-minute aggregates). Prints p50 and p99 in ms. Target: LSTM forecast < 1 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from predictor.features import HISTORY_MINUTES, History, build_features, rows_of  # noqa: E402
from predictor.online import OnlineCalibrated  # noqa: E402
from predictor.runtime import OnnxForecaster, load_forecasters  # noqa: E402

TWITTER = ROOT.parent / "shared" / "traces" / "twitter-2021-08" / "workload.txt"


def per_second_history() -> tuple[np.ndarray, str]:
    if TWITTER.is_file():
        from predictor.traces import load_trace

        x = load_trace(TWITTER).per_second
        end = 20 * 86400
        return x[end - HISTORY_MINUTES * 60 : end], f"Twitter trace, day 20 ({TWITTER})"
    rng = np.random.default_rng(0)
    t = np.arange(HISTORY_MINUTES * 60)
    return rng.poisson(60 * (1 + 0.4 * np.sin(2 * np.pi * t / 86400))).astype(float), "synthetic diurnal (no ../shared)"


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    for _ in range(50):
        fn()
    ts = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        ts[i] = time.perf_counter() - t0
    return float(np.percentile(ts, 50) * 1e3), float(np.percentile(ts, 99) * 1e3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "profiles" / "forecaster"))
    ap.add_argument("--runs", type=int, default=3000)
    args = ap.parse_args()
    sec, where = per_second_history()
    hist = History.from_per_second(sec, origin_epoch_s=20 * 86400.0)
    forecasters = load_forecasters(args.model, threads=1)
    lstm = forecasters[0]
    print(f"history: {where}; model: {args.model}; onnxruntime intra_op_num_threads=1; {args.runs} runs each")
    print(f"{'what':52} {'p50 ms':>8} {'p99 ms':>8}")
    rows: list[tuple[str, Callable[[], object]]] = [
        (f"{fc.name}: forecast(history) -> [15, 3]", partial(fc.forecast, hist)) for fc in forecasters
    ]
    assert isinstance(lstm, OnnxForecaster), lstm  # the LSTM comes first
    online = OnlineCalibrated(lstm)
    rows.append(("LSTM with online calibration: forecast(history)", lambda: online.forecast(hist)))
    f = build_features(rows_of(hist))
    sess = lstm.sess  # type: ignore[attr-defined]
    feed = {"seq": f.seq, "static": f.static}
    rows += [
        ("LSTM: ONNX session.run alone", lambda: sess.run(None, feed)),
        ("features alone (build_features)", lambda: build_features(rows_of(hist))),
        ("History.from_per_second (25 h of seconds)", lambda: History.from_per_second(sec, 0.0)),
    ]
    for name, fn in rows:
        p50, p99 = timed(fn, args.runs)
        print(f"{name:52} {p50:8.3f} {p99:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
