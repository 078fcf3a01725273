"""What the front door adds: latency at fixed offered loads, front door vs direct, same run.

A local stack (front door + one worker serving digits_mlp_small, 1 onnxruntime thread) runs in a
child process; this process is the load generator. At each offered load (open loop, Poisson
arrivals, binary tensors, keep-alive connections) it alternates phases straight to the worker and
through the front door, then reports p50/p99 of each and the difference. Finally the front door's
maximum throughput under a closed loop. Targets: added p50 <= 1 ms, added p99 <= 3 ms at 300 req/s.

    .venv/bin/python benchmarks/frontdoor_overhead.py                 # 100 and 300 req/s
    .venv/bin/python benchmarks/frontdoor_overhead.py --rates 100 300 600 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.codec import encode_request  # noqa: E402
from inference.profiler import cpu_model  # noqa: E402
from inference.repository import ModelRepository  # noqa: E402
from orchestrator.frontdoor.upstream import Connection, build_request  # noqa: E402
from orchestrator.workload.loadgen import replay  # noqa: E402

MODEL = "digits_mlp_small"


def serve_stack(repo: str) -> None:
    """Child mode: run the stack, print its ports as one JSON line, serve until SIGTERM."""
    from orchestrator.cloud.local.instances import InstanceTypeSpec
    from orchestrator.runtime.local_stack import LocalStack, StackConfig

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        config = StackConfig(
            models=(MODEL,), repository=repo, port=0, threads=1, types=(InstanceTypeSpec("c5.large", 1, 0.0),)
        )
        async with LocalStack(config) as stack:
            running = await stack.wait_running(1)
            print(json.dumps({"frontdoor": stack.port, "worker": running[0].endpoint}), flush=True)
            await stop.wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


async def open_loop(port: int, rate: float, seconds: float, body: bytes, headers: dict[str, str]) -> list[float]:
    raw = build_request("POST", "127.0.0.1", port, f"/v2/models/{MODEL}/infer", body, headers)
    idle: list[Connection] = []
    latencies: list[float] = []
    errors = 0

    async def send() -> None:
        nonlocal errors
        conn = idle.pop() if idle else Connection("127.0.0.1", port)
        t0 = time.perf_counter()
        resp = await conn.send(raw)
        latencies.append((time.perf_counter() - t0) * 1e3)
        idle.append(conn)
        if resp.status != 200:
            errors += 1

    await replay([rate] * int(seconds), send, time_factor=1.0, seed=int(rate))
    for c in idle:
        await c.close()
    if errors:
        raise RuntimeError(f"{errors} requests failed at {rate} req/s")
    return latencies


async def closed_loop(port: int, clients: int, seconds: float, body: bytes, headers: dict[str, str]) -> float:
    raw = build_request("POST", "127.0.0.1", port, f"/v2/models/{MODEL}/infer", body, headers)
    done = 0
    end = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        c = Connection("127.0.0.1", port)
        while time.perf_counter() < end:
            await c.send(raw)
            done += 1
        await c.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return done / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", type=float, nargs="+", default=[100.0, 300.0])
    p.add_argument("--seconds", type=float, default=8.0, help="per phase")
    p.add_argument("--rounds", type=int, default=2, help="direct/front-door phase pairs per rate")
    p.add_argument("--repo", default=None)
    p.add_argument("--serve-stack", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_stack:
        serve_stack(args.serve_stack)
        return
    repo = ModelRepository(args.repo)
    if not repo.has(MODEL):
        from inference.zoo import digits

        digits.build(repo, only=[MODEL])
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-stack", str(repo.root)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        ports = json.loads(child.stdout.readline())
        fd_port, worker_port = ports["frontdoor"], int(ports["worker"].rsplit(":", 1)[1])
        from inference.zoo.digits import load_split

        body, headers = encode_request({"input": load_split()[1][:1]})
        try:
            import uvloop

            run: Any = uvloop.run
        except ImportError:
            run = asyncio.run
        run(open_loop(fd_port, 50, 2, body, headers))  # warm-up: connections, first batches
        rows = []
        for rate in args.rates:
            direct: list[float] = []
            front: list[float] = []
            for _ in range(args.rounds):
                direct += run(open_loop(worker_port, rate, args.seconds, body, headers))
                front += run(open_loop(fd_port, rate, args.seconds, body, headers))
            d50, d99 = np.percentile(direct, [50, 99])
            f50, f99 = np.percentile(front, [50, 99])
            rows.append((rate, d50, d99, f50, f99))
            print(
                f"[bench] {rate:.0f} req/s: direct p50 {d50:.2f} p99 {d99:.2f}; front door p50 {f50:.2f} "
                f"p99 {f99:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
        max_fd = run(closed_loop(fd_port, 32, args.seconds, body, headers))
        max_direct = run(closed_loop(worker_port, 32, args.seconds, body, headers))
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    print(
        f"\nfront door overhead: {MODEL}, 1 worker (1 thread), {cpu_model()}, {os.cpu_count()} cores, "
        f"open loop, {args.rounds} x {args.seconds:.0f} s per phase"
    )
    print(
        f"{'req/s':>6} {'direct p50':>11} {'direct p99':>11} {'fd p50':>8} {'fd p99':>8} {'added p50':>10} "
        f"{'added p99':>10}"
    )
    for rate, d50, d99, f50, f99 in rows:
        print(f"{rate:6.0f} {d50:11.2f} {d99:11.2f} {f50:8.2f} {f99:8.2f} {f50 - d50:10.2f} {f99 - d99:10.2f}")
    print(
        f"max throughput (closed loop, 32 connections): front door {max_fd:.0f} req/s, "
        f"direct to the worker {max_direct:.0f} req/s"
    )


if __name__ == "__main__":
    main()
