"""The front door's arrival recorder: requests per wall-clock second, flushed to the history store.

The request path pays one clock read and an integer increment (:meth:`ArrivalRecorder.record`). A
background task (:meth:`ArrivalRecorder.run`) hands every completed second to
:class:`predictor.history.HistoryWriter` every few seconds, the file I/O in a worker thread so the event
loop never waits on the disk; :meth:`ArrivalRecorder.close` flushes the rest, the current second
included, at a clean shutdown. Every second from the start of recording is written, zeros included
(a zero is an observed quiet second; an unrecorded one is a gap).

Everything but the file write runs on the front door's event loop thread, so no lock is needed. A
failed write is logged and retried at the next flush (a second written twice counts once); rows
beyond ``max_pending_s`` seconds are dropped, and those seconds read as gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from predictor.history import HistoryWriter

log = logging.getLogger(__name__)


class ArrivalRecorder:
    """Counts arrivals per POSIX second (``clock``, default :func:`time.time`) and writes them with ``writer``."""

    def __init__(
        self,
        writer: HistoryWriter,
        *,
        clock: Callable[[], float] = time.time,
        flush_every_s: float = 5.0,
        max_pending_s: int = 86400,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.flush_every_s = flush_every_s
        self.max_pending_s = max_pending_s
        self._second = int(clock())  # the second being counted
        self._n = 0
        self._done: dict[int, int] = {}  # completed seconds not yet handed to the writer
        self._next = self._second  # first second not yet handed to the writer
        self._pending: list[tuple[int, int]] = []  # handed over but not yet written (a failed write)
        self._task: asyncio.Task[None] | None = None
        self.written = 0  # rows written so far
        self.failures = 0

    def record(self) -> None:
        """One request arrived now (the hot path)."""
        s = int(self.clock())
        if s != self._second:
            self._roll(s)
        self._n += 1

    def _roll(self, s: int) -> None:
        if self._n:
            self._done[self._second] = self._done.get(self._second, 0) + self._n
        self._second, self._n = s, 0

    def take(self, final: bool = False) -> list[tuple[int, int]]:
        """The ``(second, count)`` rows completed since the last call, every second included (the current
        second too when ``final``). Counts for seconds already handed over (the clock stepped back) go to
        the first row."""
        now = int(self.clock())
        if final or now != self._second:
            self._roll(now)
        end = now + 1 if final else now
        if end <= self._next:
            return []
        late = sum(self._done.pop(s) for s in [s for s in self._done if s < self._next])
        rows = [(s, self._done.pop(s, 0)) for s in range(self._next, end)]
        rows[0] = (rows[0][0], rows[0][1] + late)
        self._next = end
        return rows

    async def flush(self, final: bool = False) -> None:
        """Write what :meth:`take` gives (plus rows a failed write left), the I/O in a worker thread."""
        self._pending += self.take(final)
        if len(self._pending) > self.max_pending_s:
            self._pending = self._pending[-self.max_pending_s :]
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            self.written += await asyncio.to_thread(self.writer.append, rows)
        except (OSError, ValueError) as e:
            self.failures += 1
            self._pending = rows + self._pending
            log.warning("arrival history: could not write %d s to %s: %s", len(rows), self.writer.directory, e)

    async def run(self) -> None:
        """Flush every ``flush_every_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.flush_every_s)
            await self.flush()

    def start(self) -> None:
        """Start :meth:`run` on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        """Stop the background task and write everything, the current second included."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush(final=True)
