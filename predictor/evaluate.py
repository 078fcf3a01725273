"""Score forecasters on the held-out days: pinball loss, coverage, MAPE, under-provisioning, per horizon.

Metrics per horizon h, over the test origins whose target minute is fully observed (collection gaps
are masked, never scored):

- pinball loss per quantile, divided by the mean true peak at that horizon, so traces of any scale
  compare (a figure of 0.05 is 5 % of the mean peak); "mean" is the average over the three quantiles,
  the summary the acceptance compares;
- coverage of p90 and p99: the share of true peaks at or below the forecast;
- MAPE of p50: mean |peak - p50| / peak over minutes whose true peak is above zero;
- under-provisioning: the share of minutes whose true peak exceeds p90 (= 100 % - p90 coverage; shown
  because that is what a planner provisioning to p90 would suffer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from predictor.baselines import Forecaster
from predictor.calibration import Calibration
from predictor.ensemble import Ensemble
from predictor.features import QUANTILES, MinuteSeries, rows_at, targets_at
from predictor.online import online_forecasts

REPORT_HORIZONS = (1, 3, 5, 10, 15)
NAIVE = ("last value", "EWMA", "seasonal naive", "peak-hold (cal.)", "peak-hold x1.2 raw")


@dataclass(frozen=True)
class Scores:
    """One forecaster at one horizon."""

    pinball: tuple[float, ...]  # per quantile, / mean true peak
    coverage: tuple[float, ...]  # per quantile
    mape50: float
    under90: float
    n: int

    @property
    def pinball_mean(self) -> float:
        return float(np.mean(self.pinball))


def forecast_many(fc: Forecaster, series: MinuteSeries, origins: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``[N, H, Q]`` forecasts at many origins, in chunks to bound memory."""
    parts = [fc.forecast_rows(rows_at(series, origins[i : i + chunk])) for i in range(0, origins.size, chunk)]
    return np.concatenate(parts, axis=0)


def score(pred: np.ndarray, y: np.ndarray, valid: np.ndarray, quantiles: Sequence[float] = QUANTILES) -> list[Scores]:
    """Scores per horizon; pred ``[N, H, Q]``, y and valid ``[N, H]``."""
    out = []
    i90 = list(quantiles).index(0.9)
    for h in range(pred.shape[1]):
        ok = valid[:, h]
        yh, ph = y[ok, h], pred[ok, h, :]
        scale = float(yh.mean()) if yh.size else float("nan")
        pins, covs = [], []
        for j, q in enumerate(quantiles):
            d = yh - ph[:, j]
            pins.append(float(np.mean(np.maximum(q * d, (q - 1) * d))) / scale)
            covs.append(float(np.mean(yh <= ph[:, j])))
        pos = yh > 0
        mape = float(np.mean(np.abs(yh[pos] - ph[pos, 0]) / yh[pos])) if pos.any() else float("nan")
        out.append(Scores(tuple(pins), tuple(covs), mape, float(np.mean(yh > ph[:, i90])), int(yh.size)))
    return out


def evaluate(forecasters: Sequence[Forecaster], series: MinuteSeries, origins: np.ndarray) -> dict[str, list[Scores]]:
    y, valid = targets_at(series, origins)
    return {fc.name: score(forecast_many(fc, series, origins), y, valid) for fc in forecasters}


def evaluate_online(
    forecasters: Sequence[Forecaster], series: MinuteSeries, warmup: np.ndarray, test: np.ndarray, gamma: float
) -> dict[str, list[Scores]]:
    """Online-calibrated forecasters (:mod:`predictor.online`) run over the warm-up then the test origins
    (consecutive), starting from their stored factors; only the test origins are scored. Uncalibrated
    forecasters (raw peak-hold) are scored as they are."""
    origins = np.concatenate((warmup, test))
    if np.any(np.diff(origins) != 1):
        raise ValueError("online calibration needs consecutive origins")
    y, valid = targets_at(series, origins)
    out = {}
    for fc in forecasters:
        cal = getattr(fc, "calibration", None)
        if cal is None:
            pred = forecast_many(fc, series, origins)
        else:
            raw = np.concatenate(
                [fc.raw_rows(rows_at(series, origins[i : i + 4096])) for i in range(0, origins.size, 4096)]  # type: ignore[attr-defined]
            )
            pred = online_forecasts(raw, y, valid, cal, fc.quantiles, gamma)
        k = warmup.size
        out[fc.name + (" online" if cal is not None else "")] = score(pred[k:], y[k:], valid[k:])
    return out


def evaluate_ensemble(
    ensemble: Ensemble, series: MinuteSeries, warmup: np.ndarray, test: np.ndarray
) -> dict[str, list[Scores]]:
    """The combined forecaster (:mod:`predictor.ensemble`) run over the warm-up then the test origins
    (consecutive), from equal weights; only the test origins are scored."""
    origins = np.concatenate((warmup, test))
    pred, _ = ensemble.replay(series, origins)
    y, valid = targets_at(series, origins)
    k = warmup.size
    return {ensemble.name: score(pred[k:], y[k:], valid[k:])}


def recalibrate(forecasters: Sequence[Forecaster], series: MinuteSeries, val_origins: np.ndarray) -> None:
    """Refit each calibrated forecaster's factors on these validation origins (weights untouched)."""
    y, valid = targets_at(series, val_origins)
    for fc in forecasters:
        if getattr(fc, "calibration", None) is None:
            continue  # uncalibrated by design (raw peak-hold)
        raw = np.concatenate(
            [fc.raw_rows(rows_at(series, val_origins[i : i + 4096])) for i in range(0, val_origins.size, 4096)]  # type: ignore[attr-defined]
        )
        fc.calibration = Calibration.fit(raw, y, valid, fc.quantiles)  # type: ignore[attr-defined]


DEGENERATE_PINBALL = 10.0
"""A mean pinball loss above this many mean true peaks means forecasts off by orders of magnitude (e.g.
calibration factors near 1e9 fit on a sparse trace): a check on such scores gives no verdict."""


def _num(v: float, decimals: int = 4) -> str:
    """A table cell: fixed point while it fits in 9 characters, scientific notation above, 'nan'/'inf'."""
    if not np.isfinite(v):
        return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
    text = f"{v:.{decimals}f}"
    return text if len(text) <= 9 else f"{v:.2e}"


def _pct(v: float) -> str:
    """A share as a percentage cell (``v`` = 0.25 -> '25.0%'), scientific notation when it is huge."""
    return _num(100 * v, 1) + "%"


def table(results: dict[str, list[Scores]], horizons: Sequence[int] = REPORT_HORIZONS, markdown: bool = False) -> str:
    """Per-horizon blocks: one row per forecaster.

    Plain text columns are as wide as their widest cell (names 28, figures 9 at least) and a space apart, so no value
    (a pinball of 1e9, a name of 40 characters) runs into the next; a value that would not fit in 9
    characters is printed in scientific notation (e.g. ``1.23e+09``).
    """
    cols = ("forecaster", "pin p50", "pin p90", "pin p99", "pin mean", "cov p90", "cov p99", "MAPE p50", "under p90")
    lines: list[str] = []
    for h in horizons:
        any_scores = next(iter(results.values()))[h - 1]
        title = f"horizon {h} min (n = {any_scores.n} test minutes)"
        rows = []
        for name, per_h in results.items():
            s = per_h[h - 1]
            vals = [*(_num(p) for p in s.pinball), _num(s.pinball_mean)]
            vals += [_pct(s.coverage[1]), _pct(s.coverage[2]), _pct(s.mape50), _pct(s.under90)]
            rows.append([name, *vals])
        if markdown:
            lines += [f"**{title}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
            widths = [max(widths[0], 28)] + [max(w, 9) for w in widths[1:]]

            def line(cells: Sequence[str], widths: list[int] = widths) -> str:
                return (
                    "  "
                    + f"{cells[0]:<{widths[0]}}"
                    + "".join(f" {c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))
                )

            lines += [title, line(cols)]
            lines += [line(r) for r in rows]
        lines.append("")
    return "\n".join(lines)


def _find(results: dict[str, list[Scores]], name: str) -> str | None:
    return next((k for k in results if k == name or k == f"{name} online"), None)


def _degenerate(results: dict[str, list[Scores]], names: Sequence[str]) -> str | None:
    """Why these forecasters' scores cannot support a verdict (non-finite, or a mean pinball above
    :data:`DEGENERATE_PINBALL`), or None when they can."""
    for name in names:
        for h, s in enumerate(results[name], start=1):
            figures = (*s.pinball, *s.coverage, s.pinball_mean)
            if s.n == 0:
                return f"{name} has no scored minute at h = {h}"
            if not all(np.isfinite(v) for v in figures):
                return f"{name} has a non-finite score at h = {h}"
            if s.pinball_mean > DEGENERATE_PINBALL:
                return (
                    f"{name}'s mean pinball is {s.pinball_mean:.3g} mean peaks at h = {h} "
                    f"(over {DEGENERATE_PINBALL:g}: degenerate forecasts)"
                )
    return None


def _verdict(ok: bool, degenerate: str | None) -> str:
    return f"NO VERDICT ({degenerate})" if degenerate else ("pass" if ok else "MISS")


def acceptance(results: dict[str, list[Scores]], trace: str = "trace") -> list[str]:
    """The issue's checks, stated with their figures: pass, MISS, or NO VERDICT (with why) when a
    figure it compares is degenerate (non-finite, or a mean pinball over :data:`DEGENERATE_PINBALL`),
    so a "pass" never rests on absurd forecasts. Each line is labelled with ``trace`` (the trace's file
    name). The coverage and pinball targets were set for the Twitter trace; on another trace only the
    coverage-vs-peak-hold ("transfer") check is asked for."""
    model = _find(results, "LSTM")
    if model is None:
        return []
    tag = f"[{trace}]"
    lines = [
        f"checks on {trace} (issue 5 sets the 'Twitter target' lines for the Twitter trace, the 'transfer "
        "target' lines for any other trace):"
    ]
    m = results[model]
    naive = [k for n in NAIVE[:4] if (k := _find(results, n)) is not None]
    cov = [100 * s.coverage[1] for s in m]
    ok = all(87.0 <= c <= 93.0 for c in cov)
    lines.append(
        f"{tag} Twitter target: p90 coverage 87-93 % at every horizon: {_verdict(ok, _degenerate(results, [model]))} "
        f"({min(cov):.1f}-{max(cov):.1f} %)"
    )
    worst_gain, worst_h = np.inf, 0
    for h in range(3, len(m) + 1):
        best = min(results[n][h - 1].pinball_mean for n in naive)
        gain = 1 - m[h - 1].pinball_mean / best
        if not gain >= worst_gain:  # a NaN gain is the worst
            worst_gain, worst_h = gain, h
    ok = bool(np.isfinite(worst_gain) and worst_gain >= 0.15)
    lines.append(
        f"{tag} Twitter target: mean pinball >= 15 % below the best of {', '.join(naive)} at every horizon >= 3: "
        f"{_verdict(ok, _degenerate(results, [model, *naive]))} "
        f"(smallest margin {100 * worst_gain:.1f} % at h = {worst_h})"
    )
    if (qr_name := _find(results, "quantile regression")) is not None:
        qr = results[qr_name]
        above = [h for h in range(1, len(m) + 1) if not m[h - 1].pinball_mean <= qr[h - 1].pinball_mean]
        ok = not above
        lines.append(
            f"{tag} Twitter target: mean pinball not above the quantile regression's at any horizon: "
            f"{_verdict(ok, _degenerate(results, [model, qr_name]))}" + (f" (above at h = {above})" if above else "")
        )
    for name in (_find(results, "peak-hold (cal.)"), _find(results, "peak-hold x1.2 raw")):
        if name is None:
            continue
        ph = results[name]
        cov_m = [s.coverage[1] for s in m]
        cov_p = [s.coverage[1] for s in ph]
        higher = all(a >= b for a, b in zip(cov_m, cov_p, strict=True))
        not_worse = all(a >= min(b, 0.9) - 0.005 for a, b in zip(cov_m, cov_p, strict=True))
        lines.append(
            f"{tag} transfer target: p90 coverage not worse than {name} (LSTM >= min(its, 90 %) - 0.5 pp at every "
            f"horizon): {_verdict(not_worse, _degenerate(results, [model, name]))} (LSTM {100 * min(cov_m):.1f}-"
            f"{100 * max(cov_m):.1f} %, {name} {100 * min(cov_p):.1f}-{100 * max(cov_p):.1f} %; at least as high "
            f"at every horizon: {'yes' if higher else 'no'})"
        )
    return lines
