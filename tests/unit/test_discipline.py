"""The worker's batch-dispatch rule (ec2_worker/discipline.py) on exact numbers, its service-time EWMA,
and the batch-queue simulation running the same rule (deadline included).

Times in these tests are milliseconds: the rule is unit-free (the worker passes seconds).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from ec2_worker.discipline import Decision, ServiceTimeEstimate, batch_due, ewma


def due(now: float, **overrides: Any) -> Decision:
    """The rule with a slot free since 100, the head arrived at 100, 5 ms timeout, no deadline, 3 rows of 8."""
    args: dict[str, Any] = {
        "slot_free_at": 100.0,
        "head_arrival": 100.0,
        "earliest_deadline": math.inf,
        "rows": 3,
        "left_over": False,
        "max_batch_size": 8,
        "batch_timeout": 5.0,
        "dispatch_margin": 1.0,
        "predicted_service": 20.0,
    }
    return batch_due(now, **(args | overrides))


def test_a_full_batch_goes_at_once() -> None:
    assert due(102.0, rows=8) == Decision("full", 102.0)
    assert due(102.0, rows=9) == Decision("full", 102.0)  # one request larger than a batch goes alone
    # a queued request that does not fit (rows or shapes): the batch cannot grow, so it is full
    assert due(102.0, left_over=True) == Decision("full", 102.0)
    # full wins over closing; a batch that fills after it was due records when it was due
    assert due(107.0, rows=8, closing=True) == Decision("full", 105.0)


def test_the_head_waits_the_timeout() -> None:
    assert due(100.0) == Decision(None, 105.0)  # not yet: decide again at 105 or at the next arrival
    assert due(104.999) == Decision(None, 105.0)
    assert due(105.0) == Decision("timeout", 105.0)
    # a late wake-up does not make the decision look late: it was due at 105
    assert due(109.0) == Decision("timeout", 105.0)
    # a zero timeout sends the head alone at once
    assert due(100.0, batch_timeout=0.0) == Decision("timeout", 100.0)


def test_the_deadline_comes_first_when_waiting_would_miss_it() -> None:
    # deadline 130, predicted service 20, margin 1: the batch must go by 109, before its 150 timeout
    kw: dict[str, Any] = {"earliest_deadline": 130.0, "batch_timeout": 50.0}
    assert due(105.0, **kw) == Decision(None, 109.0)
    assert due(109.0, **kw) == Decision("deadline", 109.0)
    assert due(112.0, **kw) == Decision("deadline", 109.0)
    # a tie goes to the timeout
    assert due(109.0, earliest_deadline=130.0, batch_timeout=9.0) == Decision("timeout", 109.0)
    # a deadline already past: due at once, never before the slot freed
    assert due(100.0, earliest_deadline=90.0) == Decision("deadline", 100.0)


def test_the_margin_is_kept_between_predicted_completion_and_deadline() -> None:
    kw: dict[str, Any] = {"earliest_deadline": 130.0, "batch_timeout": 50.0}
    assert due(100.0, dispatch_margin=0.0, **kw).due_at == 110.0
    assert due(100.0, dispatch_margin=4.0, **kw).due_at == 106.0
    assert due(100.0, dispatch_margin=4.0, predicted_service=0.0, **kw).due_at == 126.0


def test_a_batch_formed_behind_busy_slots_goes_as_backlog() -> None:
    # the head arrived at 100 and waited past its timeout (105) before a slot freed at 120
    assert due(120.0, slot_free_at=120.0) == Decision("backlog", 120.0)
    # past its deadline rule too: still backlog (what it waited for was the slot)
    assert due(120.0, slot_free_at=120.0, earliest_deadline=130.0) == Decision("backlog", 120.0)
    # the slot freed exactly at the timeout: an ordinary timeout
    assert due(105.0, slot_free_at=105.0) == Decision("timeout", 105.0)


def test_closing_sends_what_is_queued() -> None:
    assert due(101.0, closing=True) == Decision("closing", 101.0)


def test_the_service_time_estimate_is_a_value() -> None:
    empty = ServiceTimeEstimate()
    assert empty.predict(4) == 0.0
    one = empty.observe(4, 10.0)
    assert empty.by_rows == {} and one.by_rows == {4: 10.0}  # observe returns a new estimate
    two = one.observe(4, 20.0)
    assert one.by_rows == {4: 10.0}
    assert two.predict(4) == pytest.approx(12.0)  # 10 + 0.2 * (20 - 10)
    assert two.predict(8) == pytest.approx(24.0)  # unseen: the nearest seen size, scaled by rows
    assert two.predict(2) == pytest.approx(6.0)
    assert two.observe(1, 4.0).predict(2) == pytest.approx(8.0)  # now 1 row (4 ms) is the nearest: doubled
    assert ewma(None, 7.0, 0.2) == 7.0 and ewma(10.0, 20.0, 0.5) == 15.0
