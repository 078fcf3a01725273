"""``mark simulate``'s outputs from a list of :class:`~orchestrator.sim.results.SimResult`: the results
table, JSON and CSV files, and PNG plots (matplotlib, Agg backend: no display needed).

Cost ratios are against ``oracle`` (the lower bound) and ``sagemaker`` (what a user would run
instead) when those policies were simulated in the same run.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.sim.results import SimResult

REFERENCES = ("oracle", "sagemaker")


def _ratio(r: SimResult, ref: SimResult | None) -> float:
    if ref is None or not ref.total_usd > 0:
        return math.nan
    return r.total_usd / ref.total_usd


def _fmt(v: float, spec: str) -> str:
    return "-" if isinstance(v, float) and math.isnan(v) else format(v, spec)


def _hours(r: SimResult) -> str:
    parts = [f"{k} {v:.1f}" for k, v in sorted(r.instance_hours.items(), key=lambda kv: -kv[1]) if v > 0]
    return ", ".join(parts) or "-"


def table(results: Sequence[SimResult], sl_min: float) -> str:
    """One row per policy: cost per 1M requests, SLO attainment (and whether it meets ``sl_min``),
    latency p50/p99, Lambda share, launches, spot interruptions, cost vs oracle and vs sagemaker, then
    the billed instance-hours by type/market."""
    refs = {name: next((r for r in results if r.policy == name), None) for name in REFERENCES}
    head = (
        f"{'policy':18} {'$ per 1M':>9} {'total $':>9} {'SLO att.':>9} {'p50 ms':>7} {'p99 ms':>8} "
        f"{'Lambda':>7} {'launches':>8} {'interr.':>7} {'vs oracle':>9} {'vs sagemaker':>12}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        att = r.slo_attainment
        mark = "" if math.isnan(att) else (" " if att >= sl_min else "!")
        lines.append(
            f"{r.policy:18} {_fmt(r.usd_per_million, '9.3f')} {_fmt(r.total_usd, '9.2f')} "
            f"{_fmt(100 * att, '8.2f')}%{mark}{_fmt(r.latency_p50_ms, '6.1f')} {_fmt(r.latency_p99_ms, '8.1f')} "
            f"{_fmt(100 * r.lambda_share, '6.1f')}% {r.launches:8d} {r.interruptions:7d} "
            f"{_fmt(_ratio(r, refs['oracle']), '9.2f')} {_fmt(_ratio(r, refs['sagemaker']), '12.3f')}"
        )
    lines.append("")
    lines.append(f"! = SLO attainment below the target {100 * sl_min:g}% (late and rejected requests count against it)")
    lines.append("instance-hours billed by type/market:")
    lines += [f"  {r.policy:18} {_hours(r)}" for r in results]
    return "\n".join(lines)


def write_json(
    results: Sequence[SimResult], path: Path, meta: dict[str, Any], known_policies: Sequence[str] = ()
) -> None:
    """``{"meta": ..., "results": [summary, ...]}``, plus each policy's minute series and decision log
    in ``<policy>.json`` beside it. A ``<policy>.json`` of a policy in ``known_policies`` that this run
    did not simulate (left by an earlier run into the same folder) is removed, so the folder never
    mixes runs; other files are left alone."""
    ran = {r.policy for r in results}
    for name in set(known_policies) - ran:
        (path.parent / f"{name}.json").unlink(missing_ok=True)
    doc = {"meta": meta, "results": [r.summary() for r in results]}
    path.write_text(json.dumps(_clean(doc), indent=2, allow_nan=False))
    for r in results:
        detail = {"summary": r.summary(), "series": asdict(r.series), "ticks": list(r.ticks)}
        (path.parent / f"{r.policy}.json").write_text(json.dumps(_clean(detail), allow_nan=False))


def _clean(o: Any) -> Any:
    """Standard JSON: NaN and infinities (no answer in a minute, no forecast) become null."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o


def write_csv(results: Sequence[SimResult], path: Path) -> None:
    """One row per policy with the headline figures (the same as the JSON's results)."""
    rows = [r.summary() for r in results]
    fields = [k for k in rows[0] if k != "instance_hours" and k != "notes"] + ["instance_hours"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({**row, "instance_hours": "; ".join(f"{k}={v:.3f}" for k, v in row["instance_hours"].items())})


def plot(results: Sequence[SimResult], out: Path, title: str) -> list[Path]:
    """Four PNGs: load with forecast bands, fleet by type and market over time, latency percentiles over
    time, cumulative cost per policy. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    hours = lambda n: [m / 60 for m in range(n)]  # noqa: E731

    # 1. load and forecast bands (each forecasting policy)
    forecasting = [r for r in results if any(r.series.forecast_rps)]
    fig, axes = plt.subplots(max(1, len(forecasting)), 1, figsize=(12, 3 * max(1, len(forecasting))), squeeze=False)
    base = results[0].series
    for ax, r in zip(axes[:, 0], forecasting or results[:1], strict=False):
        ax.plot(hours(len(base.peak_rps)), base.peak_rps, color="black", lw=0.6, label="peak req/s (per minute)")
        q = r.series.quantiles
        fc = r.series.forecast_rps
        for j, quant in enumerate(q):
            ys = [row[j] if row else math.nan for row in fc]
            ax.plot(hours(len(ys)), ys, lw=0.8, label=f"{r.policy}: forecast p{round(100 * quant)}")
        ax.set_ylabel("req/s")
        ax.legend(loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel("hours")
    fig.suptitle(f"{title}: load and forecasts")
    written.append(_save(fig, out / "load_forecast.png"))

    # 2. fleet by type/market per policy
    fig, axes = plt.subplots(len(results), 1, figsize=(12, 2.2 * len(results)), squeeze=False, sharex=True)
    for ax, r in zip(axes[:, 0], results, strict=True):
        keys = sorted(k for k, v in r.series.fleet.items() if any(v))
        if keys:
            ax.stackplot(hours(len(r.series.booting)), *[r.series.fleet[k] for k in keys], labels=keys)
        ax.plot(hours(len(r.series.booting)), r.series.booting, color="black", lw=0.6, ls=":", label="booting")
        ax.set_ylabel(r.policy, fontsize=8)
        ax.legend(loc="upper left", fontsize=6, ncol=4)
    axes[-1, 0].set_xlabel("hours")
    fig.suptitle(f"{title}: instances serving, by type/market")
    written.append(_save(fig, out / "fleet.png"))

    # 3. latency percentiles per minute
    fig, axes = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    for r in results:
        axes[0].plot(hours(len(r.series.latency_p50_ms)), r.series.latency_p50_ms, lw=0.6, label=r.policy)
        axes[1].plot(hours(len(r.series.latency_p99_ms)), r.series.latency_p99_ms, lw=0.6, label=r.policy)
    axes[0].set_ylabel("p50 ms")
    axes[1].set_ylabel("p99 ms")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7, ncol=4)
    axes[1].set_xlabel("hours")
    fig.suptitle(f"{title}: latency per minute")
    written.append(_save(fig, out / "latency.png"))

    # 4. cumulative cost
    fig, ax = plt.subplots(figsize=(12, 4))
    for r in results:
        ax.plot(hours(len(r.series.cost_usd)), r.series.cost_usd, label=f"{r.policy} (${r.total_usd:.2f})")
    ax.set_ylabel("cumulative USD")
    ax.set_xlabel("hours")
    ax.legend(fontsize=7)
    fig.suptitle(f"{title}: cumulative cost")
    written.append(_save(fig, out / "cost.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
