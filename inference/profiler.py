"""Latency profiler: measures a model's batch service time T(b) on this machine.

The planner's capacity model is only as good as T(b), so each figure is a measurement with its
conditions recorded (CPU model, cores, threads, onnxruntime version, date) and ``source: measured``.
Profiles for hardware that is not at hand are produced elsewhere and marked ``estimated``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from inference.codec import V2_TO_NUMPY
from inference.repository import ModelRepository
from inference.runtime import OnnxModel

PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles" / "latency"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_slug() -> str:
    """A file-name-safe tag for this machine's CPU and core count, e.g. ``intel-xeon-...-2c``."""
    name = re.sub(r"\(r\)|\(tm\)|cpu|@.*$", "", cpu_model().lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:40] + f"-{os.cpu_count()}c"


def synthetic_input(model: OnnxModel, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the right dtype and shape (dynamic non-batch axes become 1); values don't change CNN latency."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in model.inputs:
        shape = (batch, *[d if d > 0 else 1 for d in spec.shape[1:]])
        dtype = V2_TO_NUMPY[spec.datatype]
        feed[spec.name] = (rng.random(shape) * 16).astype(dtype)
    return feed


@dataclass(frozen=True)
class BatchTiming:
    batch_size: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    samples: int
    throughput_rps: float  # rows/s over all slots, measured (not derived from p50)


def time_batch(
    model: OnnxModel, batch: int, *, min_samples: int, max_seconds: float, slots: int = 1, warmup: int = 3
) -> BatchTiming:
    """Time ``model.run`` on batches of ``batch`` rows, with ``slots`` threads running batches at once.

    With slots > 1 each batch takes longer (the slots share the cores) but more rows finish per
    second; both the per-batch latency and the total rows/s are what the planner needs.
    """
    feed = synthetic_input(model, batch)
    for _ in range(warmup):
        model.run(feed)
    per_slot: list[list[float]] = [[] for _ in range(slots)]
    start = time.perf_counter()

    def enough() -> bool:
        n = sum(len(x) for x in per_slot)
        elapsed = time.perf_counter() - start
        if n >= 20 * min_samples or (elapsed > 4 * max_seconds and n >= 20):
            return True  # very slow batches: 20 samples give a p50, and p99 is then about the max
        return n >= min_samples and elapsed >= max_seconds

    def loop(samples: list[float]) -> None:
        while not enough():
            t0 = time.perf_counter()
            model.run(feed)
            samples.append(time.perf_counter() - t0)

    workers = [threading.Thread(target=loop, args=(per_slot[i],)) for i in range(slots)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    arr = np.array([x for xs in per_slot for x in xs]) * 1e3
    return BatchTiming(
        batch,
        float(np.percentile(arr, 50)),
        float(np.percentile(arr, 99)),
        float(arr.mean()),
        len(arr),
        len(arr) * batch / elapsed,
    )


def batch_sizes(max_batch: int) -> list[int]:
    out, b = [], 1
    while b <= max_batch:
        out.append(b)
        b *= 2
    if out[-1] != max_batch:
        out.append(max_batch)
    return out


def profile(
    repo: ModelRepository,
    name: str,
    *,
    threads: int,
    max_batch: int,
    slots: int = 1,
    min_samples: int = 50,
    max_seconds_per_batch: float = 3.0,
    progress: bool = True,
) -> dict[str, Any]:
    card = repo.card(name)
    t0 = time.perf_counter()
    model = OnnxModel(repo.onnx_path(name), intra_op_threads=threads)
    load_s = time.perf_counter() - t0
    rows = []
    for b in batch_sizes(max_batch):
        t = time_batch(model, b, min_samples=min_samples, max_seconds=max_seconds_per_batch, slots=slots)
        rows.append(t)
        if progress:
            print(
                f"[profile] {name} slots={slots} b={b:<4} p50 {t.p50_ms:8.3f} ms  p99 {t.p99_ms:8.3f} ms  "
                f"{t.throughput_rps:9.1f} rows/s  (n={t.samples})",
                file=sys.stderr,
                flush=True,
            )
    return {
        "model": name,
        "family": card.family,
        "model_sha256": card.sha256,
        "source": "measured",
        "how": "mark profile: onnxruntime session run on synthetic inputs of the model's shape, after warm-up, "
        "by parallel_slots threads at once; wall time per batch, p50/p99 over all samples; throughput_rps = "
        "rows completed per second over all slots",
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {
            "cpu_model": cpu_model(),
            "logical_cores": os.cpu_count(),
            "machine": platform.machine(),
            "instance_type": None,
        },
        "onnxruntime_version": ort.__version__,
        "providers": list(model.providers),
        "threads": threads,
        "parallel_slots": slots,
        "load_seconds": round(load_s, 4),
        "batches": [
            {
                "batch_size": t.batch_size,
                "p50_ms": round(t.p50_ms, 4),
                "p99_ms": round(t.p99_ms, 4),
                "mean_ms": round(t.mean_ms, 4),
                "samples": t.samples,
                "throughput_rps": round(t.throughput_rps, 2),
            }
            for t in rows
        ],
    }


def write_profile(result: dict[str, Any], out_dir: Path = PROFILES_DIR) -> Path:
    slots = result.get("parallel_slots", 1)
    layout = f"t{result['threads']}" if slots == 1 else f"s{slots}-t{result['threads']}"
    path = out_dir / result["model"] / f"{host_slug()}-{layout}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
