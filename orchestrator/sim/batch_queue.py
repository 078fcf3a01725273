"""Exact discrete-event simulation of one worker's batching discipline, to check the analytic model.

The discipline is the worker's (ec2_worker/batcher.py, without its deadline rule, which the batching
policy's ``W + T_p99(b) + eps <= RTmax`` keeps from binding): Poisson arrivals join one FIFO queue;
``slots`` identical servers; when a server is free and requests wait, it dispatches at once if ``b``
are waiting, else waits until ``b`` have arrived or the oldest waiting request is ``W`` old, whichever
comes first, and takes up to ``b``. A batch of n rows takes a lognormal time with the profile's p50
and p99 at n (linear interpolation between measured batch sizes), or exactly p50 when they agree.

Seeded and self-contained (numpy only), so ``capacity_by_simulation`` with one seed uses common random
numbers at every rate: the bisection on the rate sees a curve that is monotone up to service noise.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z99 = 2.3263478740408408  # standard normal 0.99 quantile


@dataclass(frozen=True)
class SimResult:
    rate_rps: float
    latency_quantile_ms: float  # the asked quantile over requests after warm-up
    latency_mean_ms: float
    mean_batch: float
    utilization: float  # busy server-time / (slots x simulated time)


def _per_size(batches: Sequence[tuple[int, float, float]], max_batch: int) -> tuple[list[float], list[float]]:
    """Median and lognormal sigma of the service time for every n in 1..max_batch."""
    bs = [b for b, _, _ in batches]
    p50 = [p for _, p, _ in batches]
    p99 = [p for _, _, p in batches]
    mu, sig = [0.0], [0.0]
    for n in range(1, max_batch + 1):
        m = float(np.interp(n, bs, p50)) if n <= bs[-1] else p50[-1] * n / bs[-1]
        q = float(np.interp(n, bs, p99)) if n <= bs[-1] else p99[-1] * n / bs[-1]
        mu.append(math.log(m))
        sig.append(math.log(max(q, m) / m) / Z99)
    return mu, sig


def simulate(
    batches: Sequence[tuple[int, float, float]],
    *,
    slots: int,
    max_batch: int,
    batch_timeout_ms: float,
    rate_rps: float,
    requests: int = 30_000,
    quantile: float = 0.98,
    seed: int = 0,
    warmup_fraction: float = 0.05,
) -> SimResult:
    """Run ``requests`` Poisson arrivals through the discipline; ``batches`` = (b, p50_ms, p99_ms)."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.standard_exponential(requests)) * (1000.0 / rate_rps)  # ms
    noise = rng.standard_normal(requests)
    mu, sig = _per_size(batches, max_batch)
    t = arrivals.tolist()
    latency = np.empty(requests)
    free = [0.0] * slots
    head = k = 0
    busy = 0.0
    w = batch_timeout_ms
    while head < requests:
        i = min(range(slots), key=free.__getitem__)
        last = head + max_batch - 1
        ready = t[head] + w
        if last < requests and t[last] < ready:
            ready = t[last]
        start = max(free[i], ready)
        n = bisect_right(t, start, head, min(head + max_batch, requests)) - head
        s = math.exp(mu[n] + sig[n] * noise[k])
        done = start + s
        free[i] = done
        busy += s
        latency[head : head + n] = done - arrivals[head : head + n]
        head += n
        k += 1
    kept = latency[int(requests * warmup_fraction) :]
    span = max(free) - t[0]
    return SimResult(
        rate_rps=rate_rps,
        latency_quantile_ms=float(np.quantile(kept, quantile)),
        latency_mean_ms=float(kept.mean()),
        mean_batch=requests / k,
        utilization=busy / (slots * span) if span > 0 else 0.0,
    )


def capacity_by_simulation(
    batches: Sequence[tuple[int, float, float]],
    *,
    slots: int,
    max_batch: int,
    batch_timeout_ms: float,
    rt_max_ms: float,
    sl_min: float,
    requests: int = 30_000,
    seed: int = 0,
    rel_tol: float = 0.01,
    bracket_rps: tuple[float, float] | None = None,
) -> float:
    """Highest Poisson rate (req/s) whose simulated ``sl_min``-quantile latency stays <= ``rt_max_ms``.

    Rates at or past the throughput bound (mean service at the most efficient batch size) fail outright.
    Bisection (geometric) between ``bracket_rps`` (default: 1/1024 of the throughput bound, and the bound);
    a lower end that already fails is halved until it passes (0 if nothing passes), an upper end that still
    passes is doubled (up to the bound).
    """

    mu, sig = _per_size(batches, max_batch)
    # Past this rate the queue grows without bound: a finite run may not last long enough to show it.
    stable_below = slots * 1000.0 * max(n / math.exp(mu[n] + sig[n] ** 2 / 2) for n in range(1, max_batch + 1))

    def ok(rate: float) -> bool:
        if rate >= stable_below:
            return False
        r = simulate(
            batches,
            slots=slots,
            max_batch=max_batch,
            batch_timeout_ms=batch_timeout_ms,
            rate_rps=rate,
            requests=requests,
            quantile=sl_min,
            seed=seed,
        )
        return r.latency_quantile_ms <= rt_max_ms

    bound = stable_below
    lo, hi = bracket_rps if bracket_rps is not None else (bound / 1024, bound)
    while not ok(lo):
        lo, hi = lo / 2, lo
        if lo < bound / 4096:
            return 0.0
    while ok(hi) and hi < bound:
        lo, hi = hi, min(2 * hi, bound)
    while hi - lo > rel_tol * lo:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo
