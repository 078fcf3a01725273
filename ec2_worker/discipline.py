"""When a worker sends its batch: the pure rule shared by the batcher and the simulator.

The worker's batcher (``ec2_worker/batcher.py``) and the batch-queue simulation
(``orchestrator/sim/batch_queue.py``) both call :func:`batch_due`, so the discipline the capacity
model is checked against is the one the worker runs. Once a slot is free, the batch that starts at
the head of the queue goes as soon as one of these holds (first match wins):

- ``full``: it holds ``max_batch_size`` rows, or a queued request does not fit in it;
- ``closing``: the worker is draining;
- ``backlog``: it is due and its head had already waited past the batch timeout when the slot freed
  (it formed behind busy slots);
- ``timeout``: the head has waited the batch timeout;
- ``deadline``: waiting longer would make the most urgent request miss its deadline, given the
  predicted service time of the batch and a dispatch margin.

Pure: no clock, no event loop, no I/O; plain numbers in, a :class:`Decision` out. Times and durations
are in one unit of the caller's choosing: seconds on the monotonic clock in the worker, milliseconds
in the simulator. :class:`ServiceTimeEstimate` (the prediction behind the deadline rule) is a value
too: ``observe`` returns a new estimate.

The worker never imports ``orchestrator`` (the worker image must not pull it in), so this EWMA is
the one not shared with ``orchestrator/policy/estimators.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

DISPATCH_MARGIN_MS = 1.0  # slack kept between a batch's predicted completion and its deadline
SERVICE_EWMA_ALPHA = 0.2  # weight of the newest observed service time

Reason = Literal["full", "closing", "backlog", "timeout", "deadline"]


@dataclass(frozen=True)
class Decision:
    """What :func:`batch_due` decided for the batch at the head of the queue.

    ``reason`` is why the batch goes now, or None when it is not due yet. ``due_at`` is when the batch
    is due: when it goes, the moment it became due (never before the slot freed, never after ``now``:
    a caller that wakes late does not make the decision look late); when it waits, the time to decide
    again unless a request arrives first (the caller wakes at ``due_at`` or at the next arrival).
    """

    reason: Reason | None
    due_at: float


def batch_due(
    now: float,
    *,
    slot_free_at: float,
    head_arrival: float,
    earliest_deadline: float,
    rows: int,
    left_over: bool,
    max_batch_size: int,
    batch_timeout: float,
    dispatch_margin: float,
    predicted_service: float,
    closing: bool = False,
) -> Decision:
    """Whether the batch that starts at the queue's head goes at ``now``, and when it is due.

    Args (all times and durations in the caller's one unit):
        now: the current time (>= ``slot_free_at``).
        slot_free_at: when an execution slot became free for this batch.
        head_arrival: arrival time of the batch's first (oldest) request.
        earliest_deadline: the most urgent deadline among the batch's requests (``inf``: none).
        rows: rows the batch would hold if it went now (>= 1).
        left_over: a queued request the batch cannot take waits behind it (the rows or the
            input shapes do not fit), so it can grow no further.
        max_batch_size: rows in a full batch.
        batch_timeout: the longest the head waits for partners.
        dispatch_margin: slack kept between the predicted completion and the deadline.
        predicted_service: predicted service time of a batch of ``min(rows, max_batch_size)`` rows.
        closing: the worker is draining: whatever is queued goes now.

    Returns:
        The decision; ``reason`` None means wait until ``due_at`` or the next arrival.
    """
    timeout_at = head_arrival + batch_timeout
    deadline_at = earliest_deadline - predicted_service - dispatch_margin
    planned: float
    why: Reason
    planned, why = (timeout_at, "timeout") if timeout_at <= deadline_at else (deadline_at, "deadline")
    due = max(slot_free_at, min(now, planned))
    if rows >= max_batch_size or left_over:
        return Decision("full", due)
    if closing:
        return Decision("closing", due)
    if now >= planned:
        return Decision("backlog" if timeout_at < slot_free_at else why, due)
    return Decision(None, planned)


def ewma(previous: float | None, sample: float, alpha: float) -> float:
    """Exponentially weighted moving average: ``sample`` when nothing was seen before (``previous`` None),
    else ``previous + alpha * (sample - previous)``. Unit: the samples' own."""
    return sample if previous is None else previous + alpha * (sample - previous)


@dataclass(frozen=True)
class ServiceTimeEstimate:
    """EWMA of observed batch service time per row count (a value: :meth:`observe` returns a new one).

    ``by_rows`` maps a batch's rows to its smoothed service time, in the unit observed (the worker:
    seconds). Sizes never observed are predicted by scaling the nearest observed size linearly.
    """

    alpha: float = SERVICE_EWMA_ALPHA
    by_rows: Mapping[int, float] = field(default_factory=dict)

    def observe(self, rows: int, duration: float) -> ServiceTimeEstimate:
        """The estimate after a batch of ``rows`` rows took ``duration``; ``self`` is unchanged."""
        return replace(self, by_rows={**self.by_rows, rows: ewma(self.by_rows.get(rows), duration, self.alpha)})

    def predict(self, rows: int) -> float:
        """Predicted service time of a batch of ``rows`` rows (0 before anything was observed)."""
        if rows in self.by_rows:
            return self.by_rows[rows]
        if not self.by_rows:
            return 0.0
        nearest = min(self.by_rows, key=lambda r: abs(r - rows))
        return self.by_rows[nearest] * max(rows, 1) / nearest
