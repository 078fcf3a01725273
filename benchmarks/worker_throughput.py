"""Worker throughput over HTTP vs raw in-process onnxruntime, measured in the same run.

For each model: (1) raw: one onnxruntime session with T intra-op threads runs batches of b back to
back, rows/s; (2) worker: a real worker process (same T threads, max batch b) under a closed-loop
client keeping 2*b single-row requests in flight over keep-alive HTTP with binary tensors, rows/s.
The ratio worker/raw is the serving overhead (HTTP, codec, batching, the client's own CPU on this
same machine). Target: >= 0.9 for MobileNetV2.

    .venv/bin/python benchmarks/worker_throughput.py            # mobilenet_v2 b=8 and digits_mlp_large b=32
    .venv/bin/python benchmarks/worker_throughput.py --seconds 30 --threads 2

Builds missing models first (digits in seconds; mobilenet_v2 needs the zoo extra, about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.codec import encode_request  # noqa: E402
from inference.repository import ModelRepository  # noqa: E402
from inference.runtime import OnnxModel  # noqa: E402
from orchestrator.httpclient import Connection, build_request  # noqa: E402
from orchestrator.profiler import cpu_model, synthetic_input  # noqa: E402

DEFAULT_BATCH = {"mobilenet_v2": 8, "digits_mlp_large": 32}


@dataclass(frozen=True)
class Layout:
    """How a worker spends its cores: ``slots`` batches at once, each on ``threads`` onnxruntime threads."""

    slots: int
    threads: int

    def __str__(self) -> str:
        return f"{self.slots}x{self.threads}"


def layouts(total_threads: int) -> list[Layout]:
    """Every slots x threads split of the thread budget (2 -> 1x2 and 2x1)."""
    return [Layout(s, total_threads // s) for s in range(1, total_threads + 1) if total_threads % s == 0]


@dataclass
class Result:
    model: str
    batch: int
    layout: Layout
    raw_rps: float
    http_rps: float
    http_p50_ms: float
    http_p99_ms: float
    mean_batch_rows: float
    errors: int

    @property
    def ratio(self) -> float:
        return self.http_rps / self.raw_rps


def ensure_model(repo: ModelRepository, name: str) -> None:
    if repo.has(name):
        return
    print(f"[bench] building {name} (not in {repo.root})", file=sys.stderr, flush=True)
    if name.startswith("digits"):
        from inference.zoo import digits

        digits.build(repo, only=[name])
    else:
        from inference.zoo import imagenet

        imagenet.build(repo, only=[name])


def raw_throughput(repo: ModelRepository, name: str, batch: int, layout: Layout, seconds: float) -> float:
    """Rows/s of one session with ``layout.threads`` intra-op threads, run by ``layout.slots`` threads at once."""
    model = OnnxModel(repo.onnx_path(name), intra_op_threads=layout.threads)
    feed = synthetic_input(model, batch)
    for _ in range(3):
        model.run(feed)
    counts = [0] * layout.slots
    start = time.perf_counter()

    def loop(i: int) -> None:
        while time.perf_counter() - start < seconds:
            model.run(feed)
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(layout.slots)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) * batch / (time.perf_counter() - start)


class WorkerUnderTest:
    def __init__(self, repo: ModelRepository, name: str, batch: int, layout: Layout) -> None:
        self.ready = Path(tempfile.mkdtemp()) / "ready.json"
        settings = {
            "models": [name],
            "repository": str(repo.root),
            "port": 0,
            "threads": layout.threads,
            "slots": layout.slots,
            "max_batch_size": batch,
            "batch_timeout_ms": 50,
            "max_queue": 100_000,
            "rt_max_ms": 60_000,
            "ready_file": str(self.ready),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ec2_worker", "--json", json.dumps(settings)], cwd=ROOT, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker failed to start")
            time.sleep(0.05)
        info = json.loads(self.ready.read_text())
        self.port, self.admin_port = info["port"], info["admin_port"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


async def closed_loop(
    port: int, name: str, sample: dict[str, np.ndarray], concurrency: int, warmup: float, seconds: float
) -> tuple[int, list[float], int]:
    """``concurrency`` clients, each sending its next request as soon as the previous one returns."""
    body, headers = encode_request(sample, binary=True, binary_output=True)
    raw = build_request("POST", "127.0.0.1", port, f"/v2/models/{name}/infer", body, headers)
    conns = [Connection("127.0.0.1", port) for _ in range(concurrency)]
    # Wait until the model is loaded (readiness) before timing anything.
    probe = Connection("127.0.0.1", port)
    ready_req = build_request("GET", "127.0.0.1", port, "/v2/health/ready", b"", {})
    while (await probe.send(ready_req)).status != 200:
        await asyncio.sleep(0.05)
    await probe.close()
    clock = time.perf_counter  # uvloop's loop.time() is millisecond-coarse
    t_start = clock() + warmup
    t_end = t_start + seconds
    latencies: list[float] = []
    errors = 0

    async def client(c: Connection) -> None:
        nonlocal errors
        while True:
            t0 = clock()
            if t0 >= t_end:
                return
            resp = await c.send(raw)
            t1 = clock()
            if resp.status != 200:
                errors += 1
            elif t_start <= t1 <= t_end:  # completions inside the window, whenever they started
                latencies.append(t1 - t0)

    await asyncio.gather(*(client(c) for c in conns))
    for c in conns:
        await c.close()
    return len(latencies), latencies, errors


def batch_rows(admin_port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/internal/models/{name}/batches?limit=100000") as r:
        recs = json.loads(r.read())["batches"]
    return float(np.mean([r["rows"] for r in recs])) if recs else 0.0


def best_layout(repo: ModelRepository, name: str, batch: int, total_threads: int, seconds: float) -> Layout:
    """The fastest in-process split of the thread budget: the reference the worker must approach."""
    rates = {lay: raw_throughput(repo, name, batch, lay, seconds) for lay in layouts(total_threads)}
    for lay, r in rates.items():
        print(f"[bench] {name}: raw layout {lay} (slots x threads): {r:.1f} rows/s", file=sys.stderr, flush=True)
    return max(rates, key=lambda lay: rates[lay])


def measure(repo: ModelRepository, name: str, batch: int, layout: Layout, seconds: float, rounds: int) -> Result:
    """Alternate raw and HTTP phases so that drift in the machine's speed hits both alike."""
    worker = WorkerUnderTest(repo, name, batch, layout)
    try:
        sample = synthetic_input(OnnxModel(repo.onnx_path(name)), 1)
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        raw_rates, http_rates, lat, errors = [], [], [], 0
        for i in range(rounds):
            raw_rates.append(raw_throughput(repo, name, batch, layout, seconds))
            clients = 2 * batch * layout.slots
            done, lat_i, err_i = runner(closed_loop(worker.port, name, sample, clients, 2.0, seconds))
            http_rates.append(done / seconds)
            lat += lat_i
            errors += err_i
            print(
                f"[bench] {name} round {i + 1}/{rounds}: raw {raw_rates[-1]:.1f} rows/s, "
                f"HTTP {http_rates[-1]:.1f} req/s, ratio {http_rates[-1] / raw_rates[-1]:.3f}",
                file=sys.stderr,
                flush=True,
            )
        rows = batch_rows(worker.admin_port, name)
    finally:
        worker.stop()
    lat_ms = np.array(lat) * 1e3
    return Result(
        name,
        batch,
        layout,
        float(np.mean(raw_rates)),
        float(np.mean(http_rates)),
        float(np.percentile(lat_ms, 50)),
        float(np.percentile(lat_ms, 99)),
        rows,
        errors,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_BATCH))
    p.add_argument("--batch", type=int, default=None, help="batch size for every model (default per model)")
    p.add_argument(
        "--threads", type=int, default=2, help="onnxruntime threads in all (slots x threads), raw and worker alike"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measurement window per phase")
    p.add_argument("--rounds", type=int, default=3, help="raw/HTTP phase pairs (alternated against drift)")
    p.add_argument("--repo", default=None)
    args = p.parse_args()
    repo = ModelRepository(args.repo)
    results = []
    for name in args.models:
        ensure_model(repo, name)
        b = args.batch or DEFAULT_BATCH.get(name, 8)
        layout = best_layout(repo, name, b, args.threads, min(args.seconds, 5.0))
        print(
            f"[bench] {name}: batch {b}, layout {layout}, {args.rounds} rounds of raw then HTTP "
            f"({2 * b * layout.slots} closed-loop clients), {args.seconds:.0f} s each",
            file=sys.stderr,
            flush=True,
        )
        results.append(measure(repo, name, b, layout, args.seconds, args.rounds))

    print(
        f"\nworker throughput: {cpu_model()}, {os.cpu_count()} cores, "
        f"{args.rounds} x {args.seconds:.0f} s per phase, means over rounds"
    )
    print(f"{'model':18} {'batch':>5} {'slots x thr':>11} {'raw rows/s':>11} {'HTTP req/s':>11} {'ratio':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'mean batch':>10} {'errors':>6}")
    for r in results:
        print(f"{r.model:18} {r.batch:5d} {str(r.layout):>11} {r.raw_rps:11.1f} {r.http_rps:11.1f} {r.ratio:6.3f} "
              f"{r.http_p50_ms:7.2f} {r.http_p99_ms:7.2f} {r.mean_batch_rows:10.2f} {r.errors:6d}")


if __name__ == "__main__":
    main()
