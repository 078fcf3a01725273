"""Per-request dispatch (DESIGN.md §3): which worker, Lambda, or an explicit 503.

Pure: the front door builds the views from what it tracks (requests outstanding per worker, the
worker's latency profile, Lambda's warm pool) and applies the decision. The rule:
1. predict each ready worker's completion time for this request (wait to fill/close its batch,
   the batches ahead of it in its queue, this batch's service time);
2. among workers that meet the deadline, take the lowest marginal cost (price of the extra busy
   time), breaking ties by earliest completion;
3. else Lambda, if a warm environment is idle and its warm latency fits, or a cold start fits and
   concurrency is left, or (every environment busy, at the concurrency limit) waiting at the front
   door for one to free up plus its warm latency fits: a Lambda environment frees every warm_ms /
   limit on average, which beats piling late work onto a worker whose queue is already past the
   deadline (and then making every later request on it late too);
4. else whichever answers earliest, late (a late answer beats no answer): the worker with the
   earliest completion or Lambda (warm, or a cold start, which also warms it for the requests
   that follow); workers whose queue is at its bound are out; with nothing left, 503 with
   Retry-After.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerView:
    worker_id: str
    outstanding: int  # requests sent and not yet answered
    slots: int  # batches it runs at once
    max_batch: int
    batch_timeout_ms: float
    t1_ms: float  # service time of a batch of 1 (p99 from its profile or observed)
    per_row_ms: float  # extra service time per extra row in a batch
    usd_per_hour: float
    queue_bound: int  # outstanding requests past which it is overloaded

    def service_ms(self, rows: int) -> float:
        return self.t1_ms + self.per_row_ms * max(0, rows - 1)

    def predicted_completion_ms(self) -> float:
        """Time from now until a request sent now would be answered, from queue and profile."""
        ahead = self.outstanding
        batches_before = ahead // (self.max_batch * self.slots)
        rows_in_mine = min(self.max_batch, ahead % (self.max_batch * self.slots) // self.slots + 1)
        # An empty worker may hold the request for its batch timeout waiting for partners.
        wait = self.batch_timeout_ms if ahead == 0 and self.max_batch > 1 else 0.0
        return wait + batches_before * self.service_ms(self.max_batch) + self.service_ms(rows_in_mine)

    def marginal_usd(self) -> float:
        """What one more request costs on this worker: its share of a batch's busy time."""
        return self.usd_per_hour / 3600.0 * self.per_row_ms / 1000.0


@dataclass(frozen=True)
class LambdaView:
    enabled: bool
    warm_idle: int  # idle warm environments
    concurrency_left: int  # environments that may still start (limit - existing)
    warm_ms: float  # predicted latency on a warm environment
    cold_ms: float  # predicted latency including a cold start
    limit: int = 0  # concurrency limit (0: unknown, so no waiting for a busy environment)
    waiting: int = 0  # requests already waiting at the front door for a free environment
    max_waiting_per_env: int = 4  # past limit x this, waiting is not offered

    def can_take(self) -> bool:
        return self.enabled and (
            self.warm_idle > 0 or self.concurrency_left > 0 or self.waiting < self.limit * self.max_waiting_per_env
        )

    def predicted_ms(self) -> float:
        """Completion for a request routed to Lambda now: warm, cold start, or wait for a busy one."""
        if self.warm_idle > 0:
            return self.warm_ms
        if self.concurrency_left > 0:
            return self.cold_ms
        return self.warm_ms * (self.waiting + 1) / max(1, self.limit) + self.warm_ms


class Route(enum.StrEnum):
    WORKER = "worker"
    LAMBDA = "lambda"
    REJECT = "reject"


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: str
    worker_id: str | None = None
    predicted_ms: float | None = None
    retry_after_s: int | None = None


def decide(budget_ms: float, workers: tuple[WorkerView, ...], lam: LambdaView) -> Decision:
    """``budget_ms``: time left until the request's deadline."""
    live = [w for w in workers if w.outstanding < w.queue_bound]
    timed = [(w.predicted_completion_ms(), w) for w in live]
    meeting = [(t, w) for t, w in timed if t <= budget_ms]
    if meeting:
        t, w = min(meeting, key=lambda tw: (tw[1].marginal_usd(), tw[0], tw[1].worker_id))
        return Decision(Route.WORKER, "meets deadline at lowest marginal cost", w.worker_id, t)
    if lam.enabled:
        if lam.warm_idle > 0 and lam.warm_ms <= budget_ms:
            return Decision(Route.LAMBDA, "no worker meets the deadline; warm Lambda does", predicted_ms=lam.warm_ms)
        if lam.concurrency_left > 0 and lam.cold_ms <= budget_ms:
            return Decision(
                Route.LAMBDA, "no worker meets the deadline; a Lambda cold start does", predicted_ms=lam.cold_ms
            )
        if lam.warm_idle == 0 and lam.concurrency_left == 0 and lam.can_take() and lam.predicted_ms() <= budget_ms:
            return Decision(
                Route.LAMBDA,
                "no worker meets the deadline; a busy Lambda environment frees in time",
                predicted_ms=lam.predicted_ms(),
            )
    lam_ms = lam.predicted_ms() if lam.can_take() else None
    if timed:
        t, w = min(timed, key=lambda tw: (tw[0], tw[1].worker_id))
        if lam_ms is None or t <= lam_ms:
            return Decision(Route.WORKER, "nothing meets the deadline: earliest completion (late)", w.worker_id, t)
    if lam_ms is not None:
        # Late either way: Lambda answers sooner (and a cold start warms it for what follows).
        return Decision(Route.LAMBDA, "nothing meets the deadline: Lambda is the earliest (late)", predicted_ms=lam_ms)
    waits = [w.predicted_completion_ms() for w in workers]
    retry = max(1, math.ceil(min(waits) / 1000.0)) if waits else 1
    why = "every worker queue is at its bound" if workers else "no worker is running"
    return Decision(Route.REJECT, f"{why} and Lambda cannot take it", retry_after_s=retry)
