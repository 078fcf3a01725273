"""Workloads and the open-loop load generator used by ``mark run``.

A workload is a list of request rates, one per (virtual) second. Arrivals are Poisson
(exponential gaps, seeded), and open loop: a request is sent at its arrival time whatever
happened to the previous ones, as real users do; a closed loop would hide overload by slowing
down. The replay is time-compressed by the run's time factor: virtual second ``i`` is played in
``time_factor`` real seconds at the real rate ``rates[i]``, so the machine sees the trace's
intensity while the trace's timeline (and boot times, and billing) runs faster; every request
sent stands for ``1 / time_factor`` requests of the virtual workload.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from predictor.traces import load_trace


def builtin_shape(
    seconds: int = 600, base_rps: float = 40.0, peak_rps: float = 120.0, burst_rps: float = 400.0
) -> list[float]:
    """A compressed diurnal curve (one cosine period) with a sudden burst at 60 % of the run.

    The burst lasts 8 % of the run: long enough that a new instance could boot during it, short
    enough that Lambda should absorb it while that instance boots.
    """
    rates = []
    burst_start, burst_len = int(seconds * 0.6), max(1, int(seconds * 0.08))
    for i in range(seconds):
        diurnal = base_rps + (peak_rps - base_rps) * 0.5 * (1 - math.cos(2 * math.pi * i / seconds))
        rates.append(burst_rps if burst_start <= i < burst_start + burst_len else diurnal)
    return rates


def burst_window(rates: list[float]) -> tuple[int, int] | None:
    """(start, end) seconds of the built-in shape's burst: where the rate jumps by more than 2x."""
    for i in range(1, len(rates)):
        if rates[i] > 2 * rates[i - 1]:
            end = next((j for j in range(i, len(rates)) if rates[j] < rates[i] / 2), len(rates))
            return i, end
    return None


def trace_rates(path: Path | str, scale: float = 1.0, limit_seconds: int | None = None) -> list[float]:
    """Requests per second to replay from any trace file ``predictor.traces`` reads (per-second
    counts, per-minute CSV spread over its seconds, event CSVs, archives), times ``scale``, at most
    ``limit_seconds`` of it. One loader for forecaster and workload alike; collection gaps are not
    marked here (a replay sends what the file says).

    Raises:
        FileNotFoundError, predictor.traces.TraceError (a ValueError): naming the file and the problem.
    """
    per_second = load_trace(path, detect_gaps=False).per_second
    if limit_seconds:
        per_second = per_second[:limit_seconds]
    return [float(r) * scale for r in per_second]


async def replay(
    rates: list[float],
    send: Callable[[], Coroutine[Any, Any, None]],
    *,
    time_factor: float = 1.0,
    seed: int = 0,
    on_second: Callable[[int], None] | None = None,
) -> int:
    """Fire ``send()`` at Poisson arrival times; returns how many were sent. Does not await answers
    (open loop); the caller's ``send`` records them. Waits for all in-flight sends at the end."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    for i, rate in enumerate(rates):
        if on_second:
            on_second(i)
        t = 0.0
        while rate > 0:
            t += rng.expovariate(rate * time_factor)  # per virtual second: real rate = rate
            if t >= 1.0:
                break
            due = start + (i + t) * time_factor
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(send())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        end_of_second = start + (i + 1) * time_factor
        if end_of_second > loop.time():
            await asyncio.sleep(end_of_second - loop.time())
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    return sent


@dataclass(frozen=True)
class TraceSlice:
    """A window of a trace to replay: ``rates`` (req/s per second of the window, scaled), ``history``
    (req/s of the seconds before it, scaled and rounded, NaN as 0: what a controller running since
    before the window would have seen), ``epoch_at_start_s`` (calendar time of the window's first
    second; the trace's phase from 00:00 UTC of the epoch when the file carries no clock)."""

    rates: list[float]
    history: tuple[int, ...]
    epoch_at_start_s: float


def trace_slice(
    path: Path | str,
    *,
    scale: float = 1.0,
    start_seconds: int = 0,
    limit_seconds: int | None = None,
    history_seconds: int = 0,
) -> TraceSlice:
    """``limit_seconds`` of a trace from second ``start_seconds`` on, with up to ``history_seconds``
    before it (see :class:`TraceSlice`).

    Raises:
        ValueError: ``start_seconds`` is negative or at/after the trace's end (naming its length);
        FileNotFoundError, predictor.traces.TraceError: as :func:`trace_rates`.
    """
    trace = load_trace(path, detect_gaps=False)
    per_second = trace.per_second
    if not 0 <= start_seconds < per_second.size:
        raise ValueError(
            f"--start {start_seconds}: the trace {path} has {per_second.size} seconds (0..{per_second.size - 1})"
        )
    end = per_second.size if not limit_seconds else min(per_second.size, start_seconds + limit_seconds)
    window = per_second[start_seconds:end]
    before = per_second[max(0, start_seconds - history_seconds) : start_seconds] if history_seconds else per_second[:0]
    history = tuple(int(round(float(x) * scale)) if math.isfinite(float(x)) else 0 for x in before)
    return TraceSlice([float(r) * scale for r in window], history, trace.epoch0 + start_seconds)
