"""Exact discrete-event simulation of one worker's batching discipline, to check the analytic model.

The discipline is the worker's own: every dispatch decision is ``batch_due`` from
``ec2_worker/discipline.py``, the function the batcher (``ec2_worker/batcher.py``) calls. Poisson
arrivals join one FIFO queue; ``slots`` identical servers; when a server is free and requests wait, the
batch at the head goes at once if ``b`` are waiting, else when ``b`` have arrived, when the oldest
waiting request is ``W`` old, or when waiting longer would make the oldest request miss its deadline
(arrival + ``deadline_ms``) given the predicted service time and the dispatch margin, whichever comes
first, and takes up to ``b``. The prediction is the worker's: an EWMA per batch size of the service
times of batches already completed (``ServiceTimeEstimate``). A batch of n rows takes a lognormal time
with the profile's p50 and p99 at n (linear interpolation between measured batch sizes), or exactly p50
when they agree.

Without a deadline (``deadline_ms`` infinite, the default of ``simulate``) the deadline rule cannot
bind; ``capacity_by_simulation`` gives every request the SLO bound ``rt_max_ms`` as its deadline, as a
worker started with ``rt_max_ms`` does. The batching policy's ``W + T_p99(b) + eps <= RTmax`` keeps the
rule from binding in most settings.

Seeded and self-contained (numpy and the worker's pure discipline module), so ``capacity_by_simulation``
with one seed uses common random numbers at every rate: the bisection on the rate sees a curve that is
monotone up to service noise.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ec2_worker.discipline import DISPATCH_MARGIN_MS, ServiceTimeEstimate, batch_due

Z99 = 2.3263478740408408  # standard normal 0.99 quantile


@dataclass(frozen=True)
class SimResult:
    rate_rps: float
    latency_quantile_ms: float  # the asked quantile over requests after warm-up
    latency_mean_ms: float
    mean_batch: float
    utilization: float  # busy server-time / (slots x simulated time)
    batches_by_reason: dict[str, int] = field(default_factory=dict)  # why each batch went (discipline.Reason)


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
    deadline_ms: float = math.inf,
    dispatch_margin_ms: float = DISPATCH_MARGIN_MS,
) -> SimResult:
    """Run ``requests`` Poisson arrivals through the discipline; ``batches`` = (b, p50_ms, p99_ms).

    ``deadline_ms``: each request's deadline after its arrival (the worker's RTmax; infinite: no
    deadline, so only full batches, the timeout and the backlog decide). ``dispatch_margin_ms``: the
    worker's slack between a batch's predicted completion and its most urgent deadline.
    """
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.standard_exponential(requests)) * (1000.0 / rate_rps)  # ms
    noise = rng.standard_normal(requests)
    mu, sig = _per_size(batches, max_batch)
    t = arrivals.tolist()
    latency = np.empty(requests)
    free = [0.0] * slots
    head = k = 0
    busy = 0.0
    estimate = ServiceTimeEstimate()  # in ms, from completed batches only, as the worker learns it
    running: list[tuple[float, int, float]] = []  # (done, rows, service ms) of batches not yet observed
    reasons: dict[str, int] = {}
    while head < requests:
        i = min(range(slots), key=free.__getitem__)
        slot_free_at = now = max(free[i], t[head])
        end = min(head + max_batch, requests)
        while True:  # one decision per event: the slot freeing, an arrival, the planned due time
            if running and min(running)[0] <= now:
                running.sort()
                while running and running[0][0] <= now:
                    _, rows, service = running.pop(0)
                    estimate = estimate.observe(rows, service)
            n = bisect_right(t, now, head, end) - head
            decision = batch_due(
                now,
                slot_free_at=slot_free_at,
                head_arrival=t[head],
                earliest_deadline=t[head] + deadline_ms,  # FIFO, one budget: the head is the most urgent
                rows=n,
                left_over=False,  # one row per request: a batch is full exactly at max_batch
                max_batch_size=max_batch,
                batch_timeout=batch_timeout_ms,
                dispatch_margin=dispatch_margin_ms,
                predicted_service=estimate.predict(n),
            )
            if decision.reason is not None:
                reason = decision.reason
                break
            now = decision.due_at if head + n >= end else min(decision.due_at, t[head + n])
        reasons[reason] = reasons.get(reason, 0) + 1
        s = math.exp(mu[n] + sig[n] * noise[k])
        done = now + s
        free[i] = done
        running.append((done, n, s))
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
        batches_by_reason=reasons,
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
    deadline_ms: float | None = None,
    dispatch_margin_ms: float = DISPATCH_MARGIN_MS,
) -> float:
    """Highest Poisson rate (req/s) whose simulated ``sl_min``-quantile latency stays <= ``rt_max_ms``.

    Each request's deadline is its arrival + ``deadline_ms`` (default: ``rt_max_ms``, the bound a worker
    started with that RTmax gives every request); the worker's deadline rule uses it, with
    ``dispatch_margin_ms`` of slack (see ``simulate``).

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
            deadline_ms=rt_max_ms if deadline_ms is None else deadline_ms,
            dispatch_margin_ms=dispatch_margin_ms,
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
