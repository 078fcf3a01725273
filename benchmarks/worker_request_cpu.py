"""Host CPU a worker spends per request outside onnxruntime (HTTP, codec, batching), per model.

    .venv/bin/python benchmarks/worker_request_cpu.py [--models mobilenet_v2 digits_mlp_large] [--write]

T(b) in a latency profile is inference only. A worker also parses each request, decodes its tensors,
stacks them into a batch and encodes the answer, in one Python event loop: that work caps what one
worker process can answer (1 / cpu_per_request) whatever the accelerator does, and on CPU types it
takes core time from inference. The capacity model (orchestrator/economics/capacity.py) needs that figure.

Method: one worker process (1 slot x 1 onnxruntime thread, idle threads not spinning, max batch b)
under a closed loop of binary-tensor requests; the CPU time (utime + stime from /proc) of the worker's
main thread, which runs the event loop (HTTP, decoding, batching, encoding), over the window, less what
the idle loop burns in as long (measured just before), divided by the requests answered. onnxruntime
runs in the slot's executor thread and is not counted. CPU time,
not wall time, so a busy machine does not inflate it (wall-clock compute minus process CPU did).
With ``--write`` the figure goes to profiles/request_cpu/MODEL.json with
``source: measured``, the machine and the date.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from worker_throughput import Layout, WorkerUnderTest, batch_rows, closed_loop, ensure_model  # noqa: E402

from inference.profiler import cpu_model, synthetic_input  # noqa: E402
from inference.repository import ModelRepository  # noqa: E402
from inference.runtime import OnnxModel  # noqa: E402

OUT_DIR = ROOT / "profiles" / "request_cpu"
TICKS = os.sysconf("SC_CLK_TCK")


def main_thread_cpu_s(pid: int) -> float:
    """utime + stime of a process's main thread (the worker's event loop), seconds."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(repo: ModelRepository, name: str, batch: int, seconds: float) -> dict[str, float]:
    worker = WorkerUnderTest(repo, name, batch, Layout(1, 1), extra={"spin": False})
    try:
        sample = synthetic_input(OnnxModel(repo.onnx_path(name)), 1)
        asyncio.run(closed_loop(worker.port, name, sample, 2 * batch, 1.0, 2.0))  # warm-up
        # What the idle event loop burns (timers, polls) is not per-request work: measure it, subtract it.
        idle0, i0 = main_thread_cpu_s(worker.proc.pid), time.perf_counter()
        time.sleep(2.0)
        idle_rate = (main_thread_cpu_s(worker.proc.pid) - idle0) / (time.perf_counter() - i0)
        cpu0, t0 = main_thread_cpu_s(worker.proc.pid), time.perf_counter()
        done, _, errors = asyncio.run(closed_loop(worker.port, name, sample, 2 * batch, 0.0, seconds))
        wall = time.perf_counter() - t0
        cpu = main_thread_cpu_s(worker.proc.pid) - cpu0 - idle_rate * wall
        mean_batch = batch_rows(worker.admin_port, name)  # over the worker's last 2048 batches
    finally:
        worker.stop()
    if done == 0 or errors:
        raise RuntimeError(f"{name}: {done} answers, {errors} errors: no figure")
    return {
        "requests": done,
        "wall_s": wall,
        "event_loop_cpu_s": cpu,
        "mean_batch": mean_batch,
        "idle_cpu_share": idle_rate,
        "cpu_per_request_ms": max(cpu, 0.0) / done * 1e3,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mobilenet_v2", "digits_mlp_large"])
    p.add_argument("--batch", type=int, default=8, help="worker max batch size")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=3, help="repeat and keep the median (the machine drifts)")
    p.add_argument("--repo", default=None)
    p.add_argument("--write", action="store_true", help="write profiles/request_cpu/MODEL.json")
    args = p.parse_args()
    repo = ModelRepository(args.repo)
    print(f"worker CPU per request outside onnxruntime: {cpu_model()}, {os.cpu_count()} cores, batch {args.batch}")
    print(f"{'model':20} {'requests':>9} {'req/s':>8} {'mean batch':>10} {'cpu ms/req':>10}  (median of rounds)")
    for name in args.models:
        ensure_model(repo, name)
        runs = sorted(
            (measure(repo, name, args.batch, args.seconds) for _ in range(args.rounds)),
            key=lambda r: r["cpu_per_request_ms"],
        )
        r = runs[len(runs) // 2]
        per_round = ", ".join(f"{x['cpu_per_request_ms']:.3f}" for x in runs)
        print(
            f"{name:20} {r['requests']:>9.0f} {r['requests'] / r['wall_s']:>8.0f} {r['mean_batch']:>10.1f} "
            f"{r['cpu_per_request_ms']:>10.3f}  (rounds: {per_round})"
        )
        if args.write:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            record = {
                "model": name,
                "cpu_per_request_ms": round(r["cpu_per_request_ms"], 4),
                "source": "measured",
                "how": (
                    "benchmarks/worker_request_cpu.py: one worker process (1 slot x 1 thread, no spinning, "
                    f"max batch {args.batch}) under a closed loop of {2 * args.batch} binary-tensor clients for "
                    f"{args.seconds:.0f} s; CPU time of its main thread (the event loop: HTTP, decoding, batching, "
                    f"encoding), less the idle loop's CPU over as long, / requests; median of {args.rounds} rounds"
                ),
                "rounds_ms": [round(x["cpu_per_request_ms"], 4) for x in runs],
                "host": {"cpu_model": cpu_model(), "logical_cores": os.cpu_count()},
                "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            (OUT_DIR / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
