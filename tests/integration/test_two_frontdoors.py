"""Two front doors on loopback in front of the same two workers (issue 15, "several front doors").

On AWS a load balancer spreads clients over N front doors, and no front door sees the others'
requests. Each worker reports its queue on every answer (``x-mark-queue-depth``/``-bound``) and each
front door folds that into its view of the worker (``policy/dispatch.py:fold_report``). The fleet is
one cheap worker and one pricey one, so both front doors prefer the cheap worker: on its own view
each would fill the cheap worker's queue up to the bound by itself, twice over together.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from inference.codec import encode_request
from inference.repository import ModelRepository
from orchestrator.cloud.base import Instance
from orchestrator.frontdoor.app import FrontDoor
from orchestrator.frontdoor.dispatcher import Dispatcher, FrontDoorConfig
from orchestrator.frontdoor.upstream import Connection, build_request
from orchestrator.types import InstanceState, Market, Slo
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.slow

MODEL = "digits_mlp_small"
QUEUE_BOUND = 8  # each worker's max_queue, requests
MAX_BATCH = 4
CLIENTS_PER_DOOR = 8  # closed-loop clients on each front door: all fit the cheap worker on either door's own view
RUN_S = 3.0
SLO = Slo()  # RTmax 200 ms, SLmin 0.98


class _Workers:
    """The cloud as a front door sees it: the two running workers (its ``instances()``)."""

    def __init__(self, workers: dict[str, WorkerProcess]) -> None:
        self._instances = [
            Instance(wid, "local", Market.ON_DEMAND, InstanceState.RUNNING, 0.0, endpoint=w.url)
            for wid, w in workers.items()
        ]

    def instances(self) -> list[Instance]:
        return self._instances


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test owns signals
        yield


@dataclass
class RunResult:
    sent: int
    statuses: Counter[int]
    retry_after_missing: int  # 503s without Retry-After
    within_rt_max: int  # answered 200 within RTmax
    max_depth: dict[str, int]  # deepest queue each worker reported to either front door, requests
    refusals: int  # worker 503s (queue full) the front doors re-dispatched
    by_route: Counter[str]  # answers by route (instance, lambda, rejected, failed), both front doors

    @property
    def attainment(self) -> float:
        return self.within_rt_max / max(1, self.sent)


async def _drive(repo: ModelRepository, workers: dict[str, WorkerProcess], fold: bool) -> RunResult:
    price = {"cheap": 0.1, "pricey": 1.0}  # $/h: dispatch takes the cheap worker while it meets the SLO
    doors: list[Dispatcher] = []
    servers: list[_Server] = []
    tasks: list[asyncio.Task[None]] = []
    max_depth: dict[str, int] = {}
    for _ in range(2):
        d = Dispatcher(
            _Workers(workers),  # type: ignore[arg-type]
            FrontDoorConfig(
                rt_max_ms=SLO.rt_max_ms,
                queue_bound=QUEUE_BOUND,
                max_batch=MAX_BATCH,
                threads=1,
                fold_queue_reports=fold,
            ),
            prices=lambda inst: price[inst.id],
            models=[MODEL],
        )
        inner = d._to_worker

        async def spy(inst: Instance, *a: Any, _inner: Any = inner, _d: Dispatcher = d) -> Any:
            answer = await _inner(inst, *a)
            if (report := _d.queue_reports.get((inst.id, MODEL))) is not None:
                max_depth[inst.id] = max(max_depth.get(inst.id, 0), report.depth)
            return answer

        d._to_worker = spy  # type: ignore[method-assign]
        s = _Server(
            uvicorn.Config(
                FrontDoor(d, repo, [MODEL]),  # type: ignore[arg-type]
                host="127.0.0.1",
                port=0,
                http="httptools",
                loop="none",
                lifespan="off",
                access_log=False,
                log_level="warning",
            )
        )
        tasks.append(asyncio.get_running_loop().create_task(s.serve()))
        doors.append(d)
        servers.append(s)
    while not all(s.started for s in servers):
        await asyncio.sleep(0.01)
    ports = [int(s.servers[0].sockets[0].getsockname()[1]) for s in servers]

    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    body, hdrs = encode_request({"input": x}, binary=True)
    path = f"/v2/models/{MODEL}/infer"
    raws = [build_request("POST", "127.0.0.1", p, path, body, hdrs) for p in ports]
    statuses: Counter[int] = Counter()
    counts = {"sent": 0, "ok_in_time": 0, "no_retry_after": 0}
    stop_at = time.monotonic() + RUN_S

    async def client(door: int) -> None:
        conn = Connection("127.0.0.1", ports[door])
        try:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                counts["sent"] += 1
                r = await conn.send(raws[door])
                ms = (time.perf_counter() - t0) * 1e3
                statuses[r.status] += 1
                if r.status == 200 and ms <= SLO.rt_max_ms:
                    counts["ok_in_time"] += 1
                if r.status == 503 and "retry-after" not in r.headers:
                    counts["no_retry_after"] += 1
        finally:
            await conn.close()

    await asyncio.gather(*(client(i % 2) for i in range(2 * CLIENTS_PER_DOOR)))
    for s in servers:
        s.should_exit = True
    await asyncio.gather(*tasks)
    by_route: Counter[str] = Counter()
    for d in doors:
        by_route.update(d.by_route)
    return RunResult(
        counts["sent"],
        statuses,
        counts["no_retry_after"],
        counts["ok_in_time"],
        max_depth,
        sum(d.refusals for d in doors),
        by_route,
    )


def run_two_frontdoors(repo: ModelRepository, tmp: Path, fold: bool) -> RunResult:
    """Two front doors (``fold``: with or without the workers' queue reports) over a cheap and a pricey
    worker, each driven by its own closed-loop clients for RUN_S seconds."""
    settings = {"models": [MODEL], "max_queue": QUEUE_BOUND, "max_batch_size": MAX_BATCH, "spin": False}
    workers: dict[str, WorkerProcess] = {}
    try:
        for wid in ("cheap", "pricey"):
            workers[wid] = WorkerProcess(repo, tmp, **settings)
        return asyncio.run(_drive(repo, workers, fold))
    finally:
        for w in workers.values():
            w.stop()


def test_two_front_doors_keep_every_worker_under_its_bound_and_meet_the_slo(
    digits_repo: ModelRepository, tmp_path: Path
) -> None:
    r = run_two_frontdoors(digits_repo, tmp_path, fold=True)
    print(r)
    assert r.sent == sum(r.statuses.values())  # every request answered
    assert set(r.statuses) <= {200, 503} and r.retry_after_missing == 0
    assert all(depth <= QUEUE_BOUND for depth in r.max_depth.values()), r.max_depth
    assert r.attainment >= SLO.sl_min, r
    # The reports keep both front doors off a worker the other filled: refusals (the worker's 503 at its
    # bound, re-dispatched) stay rare. Measured on 2 shared cores: ~1.0 % with the reports folded;
    # 4.6-11 % with fold=False (each front door on its own view), which fails this assertion.
    assert r.refusals <= 0.025 * r.sent, r
