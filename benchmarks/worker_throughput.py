"""Worker throughput over HTTP vs raw in-process onnxruntime, measured in the same run.

For each model and each way of splitting T onnxruntime threads into slots x threads (T=2: 1x2 and
2x1): (1) raw: one onnxruntime session run back to back on batches of b by `slots` Python threads,
rows/s; (2) worker: a real worker process with the same layout and max batch b, under a closed-loop
client keeping 2*b*slots single-row requests in flight over keep-alive HTTP with binary tensors,
req/s. Phases are interleaved round by round against drift in the machine's speed. The headline
ratio is the best worker layout over the best raw layout: what serving over HTTP costs (HTTP,
codec, batching, and the client's own CPU on this same machine). Target: >= 0.9 for MobileNetV2.

    .venv/bin/python benchmarks/worker_throughput.py              # mobilenet_v2 b=8, digits_mlp_large b=32
    .venv/bin/python benchmarks/worker_throughput.py --models mobilenet_v2 --rounds 6

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
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.codec import encode_request  # noqa: E402
from inference.profiler import cpu_model, synthetic_input  # noqa: E402
from inference.repository import ModelRepository  # noqa: E402
from inference.runtime import OnnxModel  # noqa: E402
from orchestrator.frontdoor.upstream import Connection, build_request  # noqa: E402

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
    def __init__(
        self, repo: ModelRepository, name: str, batch: int, layout: Layout, extra: dict[str, Any] | None = None
    ) -> None:
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
            **(extra or {}),
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
        # Listening comes before the model is loaded; measuring raw while it loads would skew round 1.
        import urllib.error
        import urllib.request

        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/health/ready") as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not become ready")
            time.sleep(0.05)

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


def measure(
    repo: ModelRepository, name: str, batch: int, total_threads: int, seconds: float, rounds: int
) -> list[Result]:
    """Every slots x threads layout, raw and HTTP, interleaved in each round.

    The machine's speed drifts by several percent over a minute, so each round measures every
    (layout, raw|HTTP) phase back to back and the figures are means over rounds; one worker
    process per layout stays up (idle, costing nothing) while the others are measured.
    """
    lays = layouts(total_threads)
    workers = {lay: WorkerUnderTest(repo, name, batch, lay) for lay in lays}
    raw: dict[Layout, list[float]] = {lay: [] for lay in lays}
    http: dict[Layout, list[float]] = {lay: [] for lay in lays}
    lat: dict[Layout, list[float]] = {lay: [] for lay in lays}
    errors = dict.fromkeys(lays, 0)
    try:
        sample = synthetic_input(OnnxModel(repo.onnx_path(name)), 1)
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        for i in range(rounds):
            for lay in lays:
                raw[lay].append(raw_throughput(repo, name, batch, lay, seconds))
                clients = 2 * batch * lay.slots
                done, lat_i, err_i = runner(closed_loop(workers[lay].port, name, sample, clients, 2.0, seconds))
                http[lay].append(done / seconds)
                lat[lay] += lat_i
                errors[lay] += err_i
                print(
                    f"[bench] {name} round {i + 1}/{rounds} layout {lay}: raw {raw[lay][-1]:.1f} rows/s, "
                    f"HTTP {http[lay][-1]:.1f} req/s",
                    file=sys.stderr,
                    flush=True,
                )
        rows = {lay: batch_rows(workers[lay].admin_port, name) for lay in lays}
    finally:
        for w in workers.values():
            w.stop()
    results = []
    for lay in lays:
        lat_ms = np.array(lat[lay]) * 1e3
        results.append(
            Result(
                name,
                batch,
                lay,
                float(np.mean(raw[lay])),
                float(np.mean(http[lay])),
                float(np.percentile(lat_ms, 50)),
                float(np.percentile(lat_ms, 99)),
                rows[lay],
                errors[lay],
            )
        )
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_BATCH))
    p.add_argument("--batch", type=int, default=None, help="batch size for every model (default per model)")
    p.add_argument(
        "--threads", type=int, default=2, help="onnxruntime threads in all (slots x threads), raw and worker alike"
    )
    p.add_argument("--seconds", type=float, default=6.0, help="measurement window per phase")
    p.add_argument("--rounds", type=int, default=4, help="rounds of every (layout, raw|HTTP) phase, against drift")
    p.add_argument("--repo", default=None)
    args = p.parse_args()
    repo = ModelRepository(args.repo)
    results = []
    for name in args.models:
        ensure_model(repo, name)
        b = args.batch or DEFAULT_BATCH.get(name, 8)
        print(
            f"[bench] {name}: batch {b}, layouts {', '.join(map(str, layouts(args.threads)))}, {args.rounds} rounds "
            f"of raw then HTTP (2 x batch x slots closed-loop clients), {args.seconds:.0f} s each",
            file=sys.stderr,
            flush=True,
        )
        results.append(measure(repo, name, b, args.threads, args.seconds, args.rounds))

    print(
        f"\nworker throughput: {cpu_model()}, {os.cpu_count()} cores, "
        f"{args.rounds} rounds x {args.seconds:.0f} s per phase, means over rounds"
    )
    print(
        f"{'model':18} {'batch':>5} {'slots x thr':>11} {'raw rows/s':>11} {'HTTP req/s':>11} {'ratio':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'mean batch':>10} {'errors':>6}"
    )
    for per_layout in results:
        for r in per_layout:
            print(
                f"{r.model:18} {r.batch:5d} {str(r.layout):>11} {r.raw_rps:11.1f} {r.http_rps:11.1f} {r.ratio:6.3f} "
                f"{r.http_p50_ms:7.2f} {r.http_p99_ms:7.2f} {r.mean_batch_rows:10.2f} {r.errors:6d}"
            )
    print("\nbest worker layout vs best raw layout (the headline ratio):")
    for per_layout in results:
        best_raw = max(per_layout, key=lambda r: r.raw_rps)
        best_http = max(per_layout, key=lambda r: r.http_rps)
        print(
            f"{best_raw.model:18} raw {best_raw.raw_rps:9.1f} rows/s ({best_raw.layout})  "
            f"worker {best_http.http_rps:9.1f} req/s ({best_http.layout})  "
            f"ratio {best_http.http_rps / best_raw.raw_rps:.3f}"
        )


if __name__ == "__main__":
    main()
