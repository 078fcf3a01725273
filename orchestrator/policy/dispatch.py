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

Several front doors (a load balancer spreads clients over them) each see only the requests they
sent. Each worker therefore reports its queue on every answer (``x-mark-queue-depth``/``-bound``),
and ``fold_report`` makes a front door's view of a worker the larger of its own outstanding requests
and that report, aged by the time since it came at the worker's service rate: a front door then
avoids a worker another front door has filled, and a stale report stops counting once the worker
would have drained it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace


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

    def drain_per_s(self) -> float:
        """Requests per second the worker takes off its queue when busy: full batches on every slot."""
        return self.slots * self.max_batch * 1000.0 / max(1e-3, self.service_ms(self.max_batch))

    def marginal_usd(self) -> float:
        """What one more request costs on this worker: its share of a batch's busy time."""
        return self.usd_per_hour / 3600.0 * self.per_row_ms / 1000.0


@dataclass(frozen=True)
class QueueReport:
    """A worker's report of its own queue, from the headers of its latest answer to this front door."""

    depth: int  # requests waiting for a batch at the worker when it answered
    bound: int  # its queue bound (max_queue), requests
    at_s: float  # when the answer arrived, monotonic seconds


def parse_queue_report(depth: str | None, bound: str | None, at_s: float) -> QueueReport | None:
    """The report in an answer's ``x-mark-queue-depth``/``x-mark-queue-bound`` header values (``at_s``:
    monotonic seconds); None when the worker sent none or they are not non-negative integers."""
    if depth is None or bound is None or not depth.isdigit() or not bound.isdigit():
        return None
    return QueueReport(int(depth), int(bound), at_s)


def aged_depth(report: QueueReport, now_s: float, drain_per_s: float, min_drain_s: float = 0.0) -> float:
    """The reported depth less what the worker has served since, >= 0: it drains linearly, at
    ``drain_per_s`` requests/s but over ``min_drain_s`` seconds at least (profiles time the model
    alone, and for a small model the worker's HTTP handling, not the model, sets how fast it drains)."""
    if report.depth <= 0:
        return 0.0
    drain_s = max(report.depth / max(drain_per_s, 1e-9), min_drain_s)
    return report.depth * max(0.0, 1.0 - max(0.0, now_s - report.at_s) / drain_s)


def fold_report(
    view: WorkerView,
    report: QueueReport | None,
    now_s: float,
    min_drain_s: float = 0.0,
    sent_since: int = 0,
    headroom: int = 0,
) -> WorkerView:
    """``view`` (built from this front door's own outstanding requests) with the worker's own report
    folded in (``now_s``, ``min_drain_s``: seconds; see ``aged_depth``).

    The worker's queue as this front door estimates it is the reported depth, aged at the view's
    drain rate and rounded up, plus the ``sent_since`` requests this front door sent it after that
    report; outstanding becomes the larger of that and its own count. Within ``headroom`` requests of
    the worker's reported bound the worker counts as full (outstanding raised to the view's bound):
    the other front doors send to it while the report travels, so aiming at the exact bound would
    get refusals. The bound itself stays the view's: own outstanding counts requests in running
    batches too, the worker's bound only those waiting for one.
    """
    if report is None:
        return view
    queued = math.ceil(aged_depth(report, now_s, view.drain_per_s(), min_drain_s) - 1e-9) + sent_since
    outstanding = max(view.outstanding, queued)
    if report.bound > 0 and queued >= max(1, report.bound - headroom):
        outstanding = max(outstanding, view.queue_bound)
    return replace(view, outstanding=outstanding)


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
