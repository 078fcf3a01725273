"""SLO-aware dynamic batcher: one per served model, reconfigurable while it runs.

Requests queue in arrival order. When an execution slot is free, the batcher takes the head
request and waits for more until one of: the batch is full (``max_batch_size`` rows), the head has
waited ``batch_timeout_ms``, or waiting longer would make the most urgent request in the batch miss
its deadline given the expected service time. While every slot is busy, requests simply accumulate,
so a batch that forms behind a busy slot dispatches at once when the slot frees. The rule itself is
the pure ``batch_due`` of ``ec2_worker/discipline.py`` (shared with the batch-queue simulation); this
module is the mechanism around it: the queue, the slots, the clock, the executor.

Every accepted request is answered: requests whose deadline passed are still run and counted late;
the only refusal is ``Overloaded`` (503 + Retry-After) at admission, when the queue is at its bound.
Each batch's timestamps are kept in a ring buffer so that tests and operators can check the
batching decisions from the record rather than from client-side wall clocks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ec2_worker.discipline import DISPATCH_MARGIN_MS, Decision, ServiceTimeEstimate, batch_due
from inference.errors import Overloaded
from inference.runtime import OnnxModel


@dataclass(frozen=True)
class BatchingConfig:
    """The knobs the scheduler turns at run time (through the worker's internal endpoint)."""

    max_batch_size: int = 8
    batch_timeout_ms: float = 5.0
    max_queue: int = 256  # pending requests (not rows) before admission answers 503
    default_deadline_ms: float = 200.0  # RTmax, used when a request carries no `timeout`
    dispatch_margin_ms: float = DISPATCH_MARGIN_MS  # slack kept between predicted completion and deadline

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= 4096:
            raise ValueError(f"max_batch_size must be in 1..4096, got {self.max_batch_size}")
        if not 0 <= self.batch_timeout_ms <= 60_000:
            raise ValueError(f"batch_timeout_ms must be in 0..60000, got {self.batch_timeout_ms}")
        if not 1 <= self.max_queue <= 1_000_000:
            raise ValueError(f"max_queue must be in 1..1000000, got {self.max_queue}")
        if not 0 < self.default_deadline_ms <= 3_600_000:
            raise ValueError(f"default_deadline_ms must be in (0, 3600000], got {self.default_deadline_ms}")
        if not 0 <= self.dispatch_margin_ms <= 10_000:
            raise ValueError(f"dispatch_margin_ms must be in 0..10000, got {self.dispatch_margin_ms}")


@dataclass
class _Pending:
    arrays: Mapping[str, np.ndarray]
    rows: int
    arrived: float  # loop clock (monotonic seconds)
    deadline: float
    future: asyncio.Future[InferenceOutcome]


@dataclass(frozen=True)
class InferenceOutcome:
    outputs: dict[str, np.ndarray]
    batch_rows: int
    queue_s: float
    compute_s: float
    late: bool


@dataclass(frozen=True)
class BatchRecord:
    """What the batcher decided for one batch.

    Times are ``time.monotonic()`` seconds: uvloop's loop clock has only millisecond resolution.
    """

    batch_id: int
    rows: int
    requests: int
    first_arrival: float
    slot_free_at: float  # when an execution slot became available to this batch
    timeout_at: float  # first_arrival + batch timeout in force at the time
    earliest_deadline: float  # the most urgent request's deadline in this batch
    due_at: float  # when the batcher decided the batch had to go (full, timeout, deadline or backlog)
    dispatched_at: float  # when it actually went: due_at plus the event loop's wake-up lag
    compute_s: float
    reason: str  # full | timeout | deadline | backlog (head already waited past timeout) | closing
    max_batch_size: int
    batch_timeout_ms: float

    def to_json(self) -> dict[str, float | int | str]:
        return asdict(self)


class DynamicBatcher:
    def __init__(
        self,
        model: OnnxModel,
        config: BatchingConfig,
        *,
        slots: int = 1,
        history: int = 2048,
        on_batch: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.slots = slots
        self.records: deque[BatchRecord] = deque(maxlen=history)
        self.estimate = ServiceTimeEstimate()
        self.on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._arrived = asyncio.Event()
        self._slot = asyncio.Semaphore(slots)
        self._executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="onnx")
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._batch_ids = 0
        self._closing = False

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def close(self) -> None:
        """Finish everything already accepted, then stop (graceful drain)."""
        self._closing = True
        self._arrived.set()
        if self._task:
            await self._task
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def reconfigure(self, **changes: Any) -> BatchingConfig:
        self.config = replace(self.config, **changes)  # validated by BatchingConfig.__post_init__
        self._arrived.set()  # a shorter timeout may mean the current batch is due now
        return self.config

    # ---- admission -------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._queue)

    def retry_after_s(self) -> int:
        """Rough time to drain the queue: queued rows at the best observed rows/s, at least 1 s."""
        if not self.estimate.by_rows:
            return 1
        rate = max(r / s for r, s in self.estimate.by_rows.items() if s > 0) * self.slots
        return max(1, math.ceil(self._queued_rows / rate)) if rate > 0 else 1

    def submit(
        self, arrays: Mapping[str, np.ndarray], timeout_us: int | None = None
    ) -> asyncio.Future[InferenceOutcome]:
        if self._closing:
            raise Overloaded("worker is draining and accepts no new requests", retry_after_s=1)
        if len(self._queue) >= self.config.max_queue:
            raise Overloaded(
                f"queue full ({len(self._queue)} requests pending, bound {self.config.max_queue})",
                retry_after_s=self.retry_after_s(),
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        budget = timeout_us / 1e6 if timeout_us is not None else self.config.default_deadline_ms / 1e3
        first = next(iter(arrays.values()))
        p = _Pending(arrays, int(first.shape[0]), now, now + budget, loop.create_future())
        self._queue.append(p)
        self._queued_rows += p.rows
        self._arrived.set()
        return p.future

    # ---- batching --------------------------------------------------------------------------
    def _decide(self, now: float, slot_free_at: float, batch: list[_Pending], rows: int) -> Decision:
        """``batch_due`` on the queue as it stands: seconds on the monotonic clock."""
        cfg = self.config
        return batch_due(
            now,
            slot_free_at=slot_free_at,
            head_arrival=batch[0].arrived,
            earliest_deadline=min(p.deadline for p in batch),
            rows=rows,
            left_over=len(batch) < len(self._queue),
            max_batch_size=cfg.max_batch_size,
            batch_timeout=cfg.batch_timeout_ms / 1e3,
            dispatch_margin=cfg.dispatch_margin_ms / 1e3,
            predicted_service=self.estimate.predict(max(min(rows, cfg.max_batch_size), 1)),
            closing=self._closing,
        )

    def _take_preview(self) -> list[_Pending]:
        """The requests that the next batch would hold if it dispatched now."""
        out: list[_Pending] = []
        rows = 0
        shape = None
        for p in self._queue:
            tail = tuple((k, a.shape[1:]) for k, a in p.arrays.items())
            if out and (rows + p.rows > self.config.max_batch_size or tail != shape):
                break
            out.append(p)
            rows += p.rows
            shape = tail
        return out

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            await self._slot.acquire()
            slot_free_at = time.monotonic()
            while True:
                batch = self._take_preview()
                rows = sum(p.rows for p in batch)
                now = time.monotonic()
                decision = self._decide(now, slot_free_at, batch, rows)
                if decision.reason is not None:
                    reason, due = decision.reason, decision.due_at
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout=decision.due_at - now)
                except TimeoutError:
                    pass
            for _ in batch:
                self._queue.popleft()
            self._queued_rows -= rows
            dispatched = time.monotonic()
            self._batch_ids += 1
            task = loop.create_task(
                self._execute(self._batch_ids, batch, rows, slot_free_at, max(due, 0.0), dispatched, reason)
            )
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def _run_model(self, batch: list[_Pending]) -> tuple[dict[str, np.ndarray], float]:
        t0 = time.perf_counter()
        if len(batch) == 1:
            feed = dict(batch[0].arrays)
        else:
            feed = {name: np.concatenate([p.arrays[name] for p in batch]) for name in batch[0].arrays}
        out = self.model.run(feed)
        return out, time.perf_counter() - t0

    async def _execute(
        self,
        batch_id: int,
        batch: list[_Pending],
        rows: int,
        slot_free_at: float,
        due_at: float,
        dispatched: float,
        reason: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        released = False
        try:
            try:
                outputs, compute_s = await loop.run_in_executor(self._executor, self._run_model, batch)
            except Exception as e:  # noqa: BLE001 - any failure must reach every waiting client
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
                return
            # Free the slot before answering: the batcher's wake-up is then queued ahead of the
            # response handlers, so the next batch starts computing while responses are written.
            self._slot.release()
            released = True
            self.estimate = self.estimate.observe(rows, compute_s)
            done = time.monotonic()
            start = 0
            for p in batch:
                part = {k: v[start : start + p.rows] for k, v in outputs.items()}
                start += p.rows
                if not p.future.done():
                    p.future.set_result(
                        InferenceOutcome(part, rows, dispatched - p.arrived, compute_s, done > p.deadline)
                    )
            rec = BatchRecord(
                batch_id=batch_id,
                rows=rows,
                requests=len(batch),
                first_arrival=batch[0].arrived,
                slot_free_at=slot_free_at,
                timeout_at=batch[0].arrived + cfg.batch_timeout_ms / 1e3,
                earliest_deadline=min(p.deadline for p in batch),
                due_at=min(due_at, dispatched),
                dispatched_at=dispatched,
                compute_s=compute_s,
                reason=reason,
                max_batch_size=cfg.max_batch_size,
                batch_timeout_ms=cfg.batch_timeout_ms,
            )
            self.records.append(rec)
            if self.on_batch:
                self.on_batch(rec)
        finally:
            if not released:
                self._slot.release()
