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
from pathlib import Path
from typing import Any


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


def load_trace(path: Path | str, scale: float = 1.0, limit_seconds: int | None = None) -> list[float]:
    """Per-second counts (space-separated integers, one line) or a per-minute CSV (header, one count a line)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trace file not found: {p}")
    text = p.read_text()
    rates: list[float]
    if p.suffix == ".csv":
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        try:
            per_minute = [float(x) for x in lines[1:]]
        except ValueError as e:
            raise ValueError(f"{p}: per-minute CSV must have a header line, then one number a line: {e}") from None
        rates = [m / 60.0 for m in per_minute for _ in range(60)]
    else:
        try:
            rates = [float(x) for x in text.split()]
        except ValueError as e:
            raise ValueError(f"{p}: per-second trace must be space-separated numbers: {e}") from None
    if not rates:
        raise ValueError(f"{p}: the trace is empty")
    if any(r < 0 for r in rates):
        raise ValueError(f"{p}: negative request rates")
    rates = rates[:limit_seconds] if limit_seconds else rates
    return [r * scale for r in rates]


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
