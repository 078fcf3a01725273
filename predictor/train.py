"""Train the quantile LSTM and the linear quantile regression, fit the baselines, write a model folder.

Steps: time split of every training trace the same way (train / validation days / test days,
:mod:`predictor.split`); both learned models minimise the pinball loss on the ratio peak / level, each
target weighted by level / (the mean true peak of its trace version), so a row's loss is the
evaluation's pinball on req/s divided by the mean true peak; with several traces (:func:`train_many`)
each target's weight is also divided by the number of targets of its trace (all its thinned versions
together), so every trace's mean normalised pinball counts the same, in training and in the validation
loss: a long trace (NASA, 58 days) or a bursty one cannot dominate. Early stopping on the validation
loss (best epoch kept); the LSTM is exported to ONNX and checked against torch; then every
forecaster's calibration factors are fit on each trace's validation days through the run-time
(onnxruntime / numpy) code path and combined by the median over traces (:func:`_calibrate` says why
not one pooled fit). The test days are not touched here.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from predictor.baselines import EWMA, LastValue, PeakHold, PointForecaster, SeasonalNaive, fit_ewma_alpha
from predictor.calibration import Calibration
from predictor.features import (
    DAY,
    HORIZON,
    QUANTILES,
    SEQ_CHANNELS,
    STATIC_FEATURES,
    WINDOW,
    Features,
    HistoryRows,
    MinuteSeries,
    build_features,
    minute_series,
    rows_at,
    targets_at,
)
from predictor.lstm import QuantileLSTM, pinball
from predictor.quantile_regression import LinearQuantileForecaster, design
from predictor.runtime import FORMAT_VERSION, ONNX_FILE, QR_FILE, SPEC_FILE, OnnxForecaster, session
from predictor.split import Split, time_split
from predictor.traces import Trace

EWMA_GRID = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
PEAK_HOLD_WINDOW = 5


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    hidden: int = 48
    layers: int = 1
    batch: int = 256
    lr: float = 2e-3
    patience: int = 6
    seed: int = 0
    test_days: float = 4.0
    val_days: float = 3.0
    qr_epochs: int = 60
    thinning: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01)
    progress: bool = True
    # most origins per trace version in the torch fit (train and validation each; evenly strided; 0 = all):
    # bounds the time of training on many or long traces. Calibration always uses every validation origin.
    max_origins: int = 0


MIN_THINNED_RATE = 0.5  # req/s: a thinned copy is kept only if its mean rate stays at least this


@dataclass(frozen=True)
class Tensors:
    seq: torch.Tensor
    static: torch.Tensor
    y: torch.Tensor  # ratio peak / level, 0 where invalid
    w: torch.Tensor  # level / mean level where valid, else 0

    def __len__(self) -> int:
        return int(self.y.shape[0])


def thinned(trace: Trace, p: float, seed: int) -> Trace:
    """Keep each request with probability p, then rescale by 1/p: the same load shape at a p-times lower
    rate, hence with the relatively noisier seconds of a smaller service (gaps stay gaps)."""
    x = trace.per_second
    obs = ~np.isnan(x)
    out = np.full_like(x, np.nan)
    out[obs] = np.random.default_rng(seed).binomial(np.rint(x[obs]).astype(np.int64), p) / p
    return Trace(out, f"{trace.source} thinned x{p:g}", trace.start_epoch_s, trace.peak_estimated, trace.gap_seconds)


def _features(ms: MinuteSeries, origins: np.ndarray, chunk: int = 4096) -> Features:
    """Features at many origins in chunks (a history row is 1500 minutes x 2 floats: bound the memory)."""
    parts = [build_features(rows_at(ms, origins[i : i + chunk])) for i in range(0, origins.size, chunk)]
    return Features(
        np.concatenate([x.seq for x in parts]),
        np.concatenate([x.static for x in parts]),
        np.concatenate([x.level for x in parts]),
    )


def _strided(origins: np.ndarray, most: int) -> np.ndarray:
    """At most ``most`` origins, evenly spaced (all when ``most`` is 0 or more than there are)."""
    if most <= 0 or origins.size <= most:
        return origins
    return origins[np.linspace(0, origins.size - 1, most).round().astype(np.int64)]


def _dataset(groups: list[tuple[list[MinuteSeries], np.ndarray]]) -> tuple[Features, Tensors]:
    """Features and targets at the origins of every version of every trace, rows without a valid target
    dropped. ``groups``: one (versions, origins) pair per trace.

    Targets are ratios peak / level; each is weighted by level / (its version's mean true peak), so a
    target's weighted loss is the evaluation's pinball on req/s over the mean true peak; then divided by
    the number of valid targets of its trace (all versions together), so every trace's *mean* normalised
    pinball counts the same in the loss, whatever its length or number of versions. (Scaling each trace's
    weights to the same *sum* would not do: the mean peak cancels and a trace counts by pinball over its
    mean level, so the sparse trace, peaks ~15x its level, would outweigh the rest.)"""
    feats, ys, ws = [], [], []
    for versions, origins in groups:
        g_ws = []
        for ms in versions:
            y, valid = targets_at(ms, origins)
            keep = valid.any(axis=1)
            f = _features(ms, origins[keep])
            y, valid = y[keep], valid[keep]
            mean_peak = max(float(np.mean(y[valid])) if valid.any() else 1.0, 1e-9)
            feats.append(f)
            ys.append(np.where(valid, np.nan_to_num(y) / f.level[:, None], 0.0))
            g_ws.append(np.where(valid, f.level[:, None] / mean_peak, 0.0))
        count = sum(int((w > 0).sum()) for w in g_ws)
        ws += [w / max(count, 1) for w in g_ws]
    f = Features(
        np.concatenate([x.seq for x in feats]),
        np.concatenate([x.static for x in feats]),
        np.concatenate([x.level for x in feats]),
    )
    w_all = np.concatenate(ws)
    w_all *= np.count_nonzero(w_all) / max(float(w_all.sum()), 1e-12)  # mean weight 1 (pinball divides by it)
    t = Tensors(
        torch.from_numpy(f.seq),
        torch.from_numpy(f.static),
        torch.from_numpy(np.concatenate(ys).astype(np.float32)),
        torch.from_numpy(w_all.astype(np.float32)),
    )
    return f, t


class _Progress:
    """tqdm when installed, else one line per epoch; always on stderr."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.enabled, self.desc, self.total = enabled, desc, total
        self.bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=True)
            except ImportError:
                self.bar = None

    def update(self, epoch: int, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(text)
        else:
            print(f"{self.desc} epoch {epoch}/{self.total}: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fit(
    model: torch.nn.Module,
    forward: Any,
    train: Tensors,
    val: Tensors,
    *,
    epochs: int,
    batch: int,
    lr: float,
    patience: int,
    seed: int,
    desc: str,
    progress: bool,
) -> dict[str, Any]:
    """Adam on the weighted pinball loss, lr halved on validation plateaus, early stopping on validation;
    the best epoch's weights are kept."""
    q = torch.tensor(QUANTILES, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)  # halve lr after 2 flat epochs
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, bad = math.inf, None, 0, 0
    bar = _Progress(epochs, desc, progress)
    history = []
    t0 = time.monotonic()
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(train), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(train), batch):
            idx = perm[i : i + batch]
            loss = pinball(forward(train, idx), train.y[idx], train.w[idx], q)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * idx.numel()
            seen += idx.numel()
        model.eval()
        with torch.no_grad():
            v = float(pinball(forward(val, slice(None)), val.y, val.w, q))
        sched.step(v)
        history.append({"epoch": epoch, "train": round(total / seen, 5), "val": round(v, 5)})
        improved = v < best - 1e-5
        if improved:
            best, best_epoch, bad = v, epoch, 0
            best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        else:
            bad += 1
        bar.update(
            epoch, f"train {total / seen:.4f} val {v:.4f}{' *' if improved else ''} {time.monotonic() - t0:.0f}s"
        )
        if bad >= patience:
            break
    bar.close()
    assert best_state is not None
    model.load_state_dict(best_state)
    return {
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "best_val_pinball_ratio": round(best, 5),
        "history": history,
        "seconds": round(time.monotonic() - t0, 1),
    }


def _export(model: QuantileLSTM, seq: torch.Tensor, static: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        model,
        (seq, static),
        str(path),
        input_names=["seq", "static"],
        output_names=["ratio_quantiles"],
        dynamic_axes={"seq": {0: "batch"}, "static": {0: "batch"}, "ratio_quantiles": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def _export_onnx(model: QuantileLSTM, path: Path, sample: Tensors) -> float:
    """Export (TorchScript exporter, dynamic batch) and return the largest |onnx - torch| on a sample."""
    model.eval()
    seq, static = sample.seq[:64], sample.static[:64]
    with warnings.catch_warnings():  # tracer notes on LSTM shape checks; the sequence length is fixed
        warnings.simplefilter("ignore")
        _export(model, seq, static, path)
    sess = session(path)
    got = sess.run(None, {"seq": seq.numpy(), "static": static.numpy()})[0]
    with torch.no_grad():
        want = model(seq, static).numpy()
    return float(np.abs(got - want).max())


def _point_baselines(alpha: float) -> dict[str, PointForecaster]:
    return {
        "last_value": LastValue(),
        "ewma": EWMA(alpha=alpha),
        "seasonal_naive": SeasonalNaive(),
        "peak_hold": PeakHold(window=PEAK_HOLD_WINDOW),
    }


def _versions(
    trace: Trace, series: MinuteSeries, cfg: TrainConfig, salt: int
) -> tuple[list[MinuteSeries], list[float]]:
    """The trace and its thinned copies (those whose mean rate stays >= MIN_THINNED_RATE req/s: thinning a
    sparse trace only deletes its bursts)."""
    rate = float(np.nanmean(trace.per_second)) if trace.seconds else 0.0
    kept = [p for p in cfg.thinning if p < 1 and p * rate >= MIN_THINNED_RATE]
    versions = [series] + [minute_series(thinned(trace, p, cfg.seed + 1000 * salt + i)) for i, p in enumerate(kept)]
    return versions, [1.0, *kept]


def _fit_ewma_alpha_many(parts: list[tuple[HistoryRows, np.ndarray, np.ndarray]]) -> float:
    """The EWMA alpha with the lowest p50 absolute error summed over traces, each trace's error divided by
    its mean true peak (so a busy trace does not decide alone); one trace: as :func:`fit_ewma_alpha`."""
    if len(parts) == 1:
        return fit_ewma_alpha(*parts[0], EWMA_GRID)
    best, best_err = EWMA_GRID[0], math.inf
    for a in EWMA_GRID:
        err = 0.0
        for rows, y, valid in parts:
            p = EWMA(alpha=a).point(rows)
            err += float(np.mean(np.abs(y[valid] - p[valid]))) / max(float(np.mean(y[valid])), 1e-9)
        if err < best_err:
            best, best_err = a, err
    return best


def _calibrate(
    fc: Any, parts: list[tuple[MinuteSeries, np.ndarray]], targets: list[tuple[np.ndarray, np.ndarray]]
) -> Calibration:
    """Split-conformal factors ``[H, Q]`` fit on each trace's validation origins, then the median over
    traces (one trace: its factors as such).

    Not one fit on the pooled rows: pooled, the heaviest-tailed trace decides the high quantiles for
    all. On the on/off sparse trace a point baseline forecasts 0 after an empty minute and the next
    minute's burst makes the ratio true / forecast ~1e7; pooled with five other traces, last value's
    p99 factor became so large that its online-calibrated pinball on Twitter was ~2e4 x the mean peak
    (LOTO run of issue 14). The median of per-trace factors is the calibration of a typical trace;
    online calibration then adapts it to the trace at hand."""
    fits = []
    for (ms, o), (y, valid) in zip(parts, targets, strict=True):
        raw = np.concatenate([fc.raw_rows(rows_at(ms, o[i : i + 4096])) for i in range(0, o.size, 4096)], axis=0)
        fits.append(Calibration.fit(raw, y, valid, QUANTILES).factors)
    return Calibration(np.median(np.stack(fits), axis=0))


def train(trace: Trace, out_dir: Path | str, cfg: TrainConfig, command: str = "") -> dict[str, Any]:
    """Train everything on one trace and write the model folder; returns the spec written.

    The same as :func:`train_many` with one trace. Raises ``ValueError`` if the trace is too short for
    the split (:func:`predictor.split.time_split`)."""
    return train_many([trace], out_dir, cfg, command)


def train_many(traces: list[Trace], out_dir: Path | str, cfg: TrainConfig, command: str = "") -> dict[str, Any]:
    """Train the LSTM and the quantile regression on several traces at once, fit the calibration (median
    over traces of per-trace factors) and the baselines on their validation days, write the model folder;
    returns the spec written.

    Every trace is split the same way (``cfg.test_days`` held out, ``cfg.val_days`` validation before
    them); every trace's mean normalised pinball counts the same in the loss (module docstring). The training
    record (``forecaster.json`` "training") lists every source with its split. Raises ``ValueError``
    when ``traces`` is empty or a trace is too short for the split."""
    if not traces:
        raise ValueError("train_many needs at least one trace")
    t_start = time.monotonic()
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = _Log(cfg.progress)

    g_tr: list[tuple[list[MinuteSeries], np.ndarray]] = []
    g_va: list[tuple[list[MinuteSeries], np.ndarray]] = []
    val_parts: list[tuple[MinuteSeries, np.ndarray]] = []
    records: list[dict[str, Any]] = []
    for k, trace in enumerate(traces):
        series = minute_series(trace)
        split = time_split(series, cfg.test_days, cfg.val_days)
        versions, kept = _versions(trace, series, cfg, k)
        log(f"{trace.describe()}\n  {split.describe()}; versions: thinning {', '.join(f'{p:g}' for p in kept)}")
        g_tr.append((versions, _strided(split.train, cfg.max_origins)))
        g_va.append((versions, _strided(split.val, cfg.max_origins)))
        val_parts.append((series, split.val))
        records.append(
            {
                "source": trace.describe(),
                "minutes": series.minutes,
                "split_minutes": _split_info(split, series),
                "thinning": kept,
                "weight_share": round(1 / len(traces), 4),
            }
        )
    f_tr, tr = _dataset(g_tr)
    f_va, va = _dataset(g_va)
    log(f"{len(tr)} training rows, {len(va)} validation rows from {len(traces)} trace(s), each trace weighted equally")
    typical = float(np.median(tr.y[tr.w > 0].numpy()))

    model = QuantileLSTM(len(SEQ_CHANNELS), len(STATIC_FEATURES), HORIZON, len(QUANTILES), cfg.hidden, cfg.layers)
    model.init_output(typical)
    lstm_fit = _fit(
        model,
        lambda d, i: model(d.seq[i], d.static[i]),
        tr,
        va,
        epochs=cfg.epochs,
        batch=cfg.batch,
        lr=cfg.lr,
        patience=cfg.patience,
        seed=cfg.seed,
        desc="LSTM",
        progress=cfg.progress,
    )
    onnx_err = _export_onnx(model, out / ONNX_FILE, va)
    log(f"ONNX export: max |onnx - torch| = {onnx_err:.2e} on 64 validation rows")
    if onnx_err > 1e-3:
        raise RuntimeError(f"ONNX export disagrees with torch by {onnx_err}")

    x_tr, x_va = torch.from_numpy(design(f_tr)), torch.from_numpy(design(f_va))
    linear = torch.nn.Linear(x_tr.shape[1], HORIZON * len(QUANTILES), bias=False)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[:, -1] = typical  # the design's last column is the constant 1
    qr_fit = _fit(
        linear,
        lambda d, i: linear(x_tr[i] if d is tr else x_va[i]).view(-1, HORIZON, len(QUANTILES)),
        tr,
        va,
        epochs=cfg.qr_epochs,
        batch=cfg.batch,
        lr=cfg.lr * 2,
        patience=cfg.patience,
        seed=cfg.seed,
        desc="quantile regression",
        progress=cfg.progress,
    )
    qr_weights = linear.weight.detach().numpy().T.copy()  # [D, H*Q]
    np.savez_compressed(out / QR_FILE, weights=qr_weights.astype(np.float32))

    # calibration and baseline parameters on the validation days of every trace, through the run-time code
    targets = [targets_at(ms, o) for ms, o in val_parts]
    alpha = _fit_ewma_alpha_many([(rows_at(ms, o), y, v) for (ms, o), (y, v) in zip(val_parts, targets, strict=True)])
    members: dict[str, Any] = {
        "lstm": OnnxForecaster(session(out / ONNX_FILE)),
        "quantile_regression": LinearQuantileForecaster(qr_weights),
        **_point_baselines(alpha),
    }
    cal = {key: _calibrate(fc, val_parts, targets) for key, fc in members.items()}

    first = records[0]
    summary = (
        first["source"]
        if len(traces) == 1
        else f"{len(traces)} traces ({', '.join(t.source.replace(':', ' ') for t in traces)}); "
        + "; ".join(r["source"] for r in records)
    )
    spec: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "what": "quantiles of the per-second peak request rate of each of the next H one-minute steps",
        "horizon": HORIZON,
        "step_seconds": 60,
        "quantiles": list(QUANTILES),
        "window_minutes": WINDOW,
        "seq_channels": list(SEQ_CHANNELS),
        "static": list(STATIC_FEATURES),
        "level": "mean of the observed per-minute means over the last 60 minutes (req/s), floored at 1/60",
        "outputs": "ONNX 'ratio_quantiles' [N, H, Q] = peak / level; forecast = ratio x level x calibration",
        "calibration_rule": "split-conformal multiplicative factor per (horizon, quantile) on the validation days"
        + (" of each training trace, then the median over traces" if len(traces) > 1 else ""),
        "calibration": {k: c.to_json() for k, c in cal.items()},
        "baselines": {
            "ewma_alpha": alpha,
            "ewma_grid": list(EWMA_GRID),
            "peak_hold_window": PEAK_HOLD_WINDOW,
            "peak_hold_factor": 1.2,
        },
        "model": {
            "type": "LSTM",
            "hidden": cfg.hidden,
            "layers": cfg.layers,
            "parameters": int(sum(p.numel() for p in model.parameters())),
        },
        "training": {
            "command": command,
            "trace": summary,
            "traces": records,
            "trace_weighting": "each target weighted by level / (its version's mean true peak) / (number of "
            "targets of its trace, all versions together): every trace's mean normalised pinball counts the same",
            "minutes": first["minutes"],
            "split_minutes": first["split_minutes"],
            "seed": cfg.seed,
            "config": {k: v for k, v in cfg.__dict__.items() if k != "progress"},
            "lstm": {k: v for k, v in lstm_fit.items()},
            "quantile_regression": {k: v for k, v in qr_fit.items() if k != "history"},
            "onnx_max_abs_error": onnx_err,
            "torch": torch.__version__,
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "wall_seconds": round(time.monotonic() - t_start, 1),
        },
    }
    (out / SPEC_FILE).write_text(json.dumps(spec, indent=1) + "\n")
    log(f"wrote {out} in {spec['training']['wall_seconds']} s")
    return spec


def _split_info(split: Split, series: MinuteSeries) -> dict[str, Any]:
    def days(m: int) -> float:
        return round(m / DAY, 3)

    return {
        "train_origins": [int(split.train[0]), int(split.train[-1])],
        "validation_origins": [int(split.val[0]), int(split.val[-1])],
        "test_origins_untouched": [int(split.test[0]), int(split.test[-1])],
        "validation_start_day": days(split.val_start),
        "test_start_day": days(split.test_start),
        "trace_days": days(series.minutes),
    }


class _Log:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(msg, file=sys.stderr, flush=True)
