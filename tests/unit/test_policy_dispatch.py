"""The dispatch policy on hand-built fleets, and its invariants on random ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.policy.dispatch import Decision, LambdaView, Route, WorkerView, decide

NO_LAMBDA = LambdaView(False, 0, 0, 0.0, 0.0)
WARM = LambdaView(True, warm_idle=2, concurrency_left=8, warm_ms=40.0, cold_ms=900.0)


def worker(wid: str, outstanding: int = 0, usd: float = 0.085, bound: int = 64, **kw: float) -> WorkerView:
    base = dict(slots=1, max_batch=8, batch_timeout_ms=5.0, t1_ms=10.0, per_row_ms=5.0)
    base.update(kw)
    return WorkerView(
        wid,
        outstanding,
        int(base["slots"]),
        int(base["max_batch"]),
        base["batch_timeout_ms"],
        base["t1_ms"],
        base["per_row_ms"],
        usd,
        bound,
    )


def test_completion_grows_with_the_queue() -> None:
    times = [worker("a", n).predicted_completion_ms() for n in range(0, 40)]
    assert times[0] == 5.0 + 10.0  # waits its batch timeout, then T(1)
    assert all(b >= a for a, b in zip(times[1:], times[2:], strict=False))
    assert worker("a", 8).predicted_completion_ms() == worker("a", 0).service_ms(8) + 10.0


def test_cheapest_worker_that_meets_the_deadline() -> None:
    fleet = (worker("pricey", 0, usd=0.68), worker("cheap", 3, usd=0.085), worker("late", 60, usd=0.01))
    d = decide(200.0, fleet, WARM)
    assert d == Decision(Route.WORKER, "meets deadline at lowest marginal cost", "cheap", d.predicted_ms)


def test_lambda_when_no_worker_meets_the_deadline() -> None:
    fleet = (worker("busy", 40),)  # 5 full batches ahead: ~280 ms
    assert decide(100.0, fleet, WARM).route == Route.LAMBDA
    cold_only = LambdaView(True, 0, 8, 40.0, 900.0)
    late = decide(100.0, fleet, cold_only)  # a cold start does not fit either: late on the worker
    assert late.route == Route.WORKER and late.worker_id == "busy" and "late" in late.reason
    assert decide(1000.0, (), cold_only).route == Route.LAMBDA


def test_503_only_when_every_queue_is_full_and_lambda_is_out() -> None:
    full = (worker("a", 64), worker("b", 70))
    d = decide(200.0, full, NO_LAMBDA)
    assert d.route == Route.REJECT and d.retry_after_s is not None and d.retry_after_s >= 1
    assert decide(200.0, full, WARM).route == Route.LAMBDA  # late on Lambda beats a 503
    assert decide(200.0, (), NO_LAMBDA).reason.startswith("no worker is running")


views = st.builds(
    worker,
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, 100),
    st.floats(0.01, 4.0),
    st.integers(1, 80),
)
lambdas = st.builds(
    LambdaView,
    st.booleans(),
    st.integers(0, 3),
    st.integers(0, 5),
    st.floats(1, 500),
    st.floats(100, 3000),
    st.integers(0, 4),
    st.integers(0, 20),
)


@given(st.floats(1, 2000), st.lists(views, max_size=6, unique_by=lambda w: w.worker_id), lambdas)
def test_invariants(budget: float, fleet: list[WorkerView], lam: LambdaView) -> None:
    d = decide(budget, tuple(fleet), lam)
    if d.route == Route.WORKER:
        w = next(w for w in fleet if w.worker_id == d.worker_id)
        assert w.outstanding < w.queue_bound  # never onto a full queue
        meeting = [v for v in fleet if v.outstanding < v.queue_bound and v.predicted_completion_ms() <= budget]
        if meeting:
            assert w.predicted_completion_ms() <= budget
    if d.route == Route.LAMBDA:
        assert lam.can_take()
        assert d.predicted_ms is not None and (d.predicted_ms <= budget or "late" in d.reason)
    if d.route == Route.REJECT:
        assert all(v.outstanding >= v.queue_bound for v in fleet)
        assert not lam.can_take()
    assert decide(budget, tuple(fleet), lam) == d  # deterministic


def test_late_either_way_goes_to_whichever_answers_first() -> None:
    swamped = (worker("swamped", 60, t1_ms=20.0, per_row_ms=20.0),)  # ~1.2 s of queue ahead
    cold_only = LambdaView(True, 0, 4, 40.0, 900.0)
    d = decide(200.0, swamped, cold_only)
    assert d.route == Route.LAMBDA and d.predicted_ms == 900.0 and "late" in d.reason
    slow_cold = LambdaView(True, 0, 4, 40.0, 5000.0)
    assert decide(200.0, swamped, slow_cold).route == Route.WORKER


def test_waits_for_a_busy_lambda_environment_rather_than_a_swamped_worker() -> None:
    swamped = (worker("swamped", 60, t1_ms=20.0, per_row_ms=20.0),)  # ~1.2 s of queue ahead
    # Both environments busy at the concurrency limit, 3 requests already waiting: the 4th one
    # waits ~ 4/2 x 15 ms for an environment, then 15 ms on it.
    busy = LambdaView(True, 0, 0, 15.0, 900.0, limit=2, waiting=3)
    d = decide(200.0, swamped, busy)
    assert d.route == Route.LAMBDA and "frees in time" in d.reason
    assert d.predicted_ms == 15.0 * 4 / 2 + 15.0
    # A long line for Lambda and a worker that still meets the deadline: the worker.
    assert decide(200.0, (worker("ok", 2),), busy).route == Route.WORKER
    # Past limit x 4 waiting, Lambda is not offered; late on the worker (never a 503 while it has room).
    crowded = LambdaView(True, 0, 0, 15.0, 900.0, limit=2, waiting=8)
    assert decide(200.0, swamped, crowded).route == Route.WORKER
    # Unknown limit (0): no waiting offered.
    assert not LambdaView(True, 0, 0, 15.0, 900.0).can_take()


def test_front_door_honours_a_tighter_client_timeout() -> None:
    from inference.codec import encode_request
    from orchestrator.frontdoor.app import request_budget_ms

    x = np.zeros((1, 64), dtype=np.float32)
    body, h = encode_request({"input": x}, parameters={"timeout": 50_000})  # 50 ms in µs
    assert request_budget_ms(body, h, 200.0) == 50.0
    assert request_budget_ms(body, h | {"content-encoding": "gzip"}, 200.0) == 200.0  # not inflated here
    body, h = encode_request({"input": x}, parameters={"timeout": 900_000})  # looser than RTmax: RTmax
    assert request_budget_ms(body, h, 200.0) == 200.0
    body, h = encode_request({"input": x}, binary=False, binary_output=False)
    assert request_budget_ms(body, {}, 200.0) == 200.0
    assert request_budget_ms(b'{"parameters": {"timeout": "soon"}}', {}, 200.0) == 200.0
    assert request_budget_ms(b"not json", {"inference-header-content-length": "x"}, 200.0) == 200.0
    # a JSON header over 1 MiB is not parsed on the front door's event loop (the worker still applies it)
    big = b'{"parameters":{"timeout":1000},"inputs":[' + b" " * (1024 * 1024) + b"]}"
    assert request_budget_ms(big, {}, 200.0) == 200.0


def test_slo_tracker_counts_errors_as_misses_however_fast() -> None:
    from orchestrator.frontdoor.slo import SloTracker

    t = SloTracker(rt_max_ms=200.0, windows_s=(10.0,))
    t.record(100.0, 50.0)
    t.record(100.5, 250.0)  # late
    t.record(101.0, 1.0, ok=False)  # a fast 503 is still a miss
    w = t.window(101.0, 10.0)
    assert (w.requests, w.within_slo) == (3, 1) and w.attainment == 1 / 3
    assert t.attainment == 1 / 3
    t.record(120.0, 10.0)  # the older events leave the window
    assert t.window(120.0, 10.0).requests == 1


def test_a_worker_report_raises_the_view_and_a_stale_one_decays() -> None:
    from orchestrator.policy.dispatch import QueueReport, aged_depth, fold_report, parse_queue_report

    own = worker("cheap", 2, bound=64)  # this front door sent 2; another filled the worker
    drain = own.drain_per_s()  # 8 rows per 45 ms on one slot: ~178 requests/s
    assert drain == 8 * 1000.0 / own.service_ms(8)
    report = QueueReport(depth=30, bound=40, at_s=100.0)
    fresh = fold_report(own, report, now_s=100.0)
    assert (fresh.outstanding, fresh.queue_bound) == (30, 64)
    assert fresh.predicted_completion_ms() > own.predicted_completion_ms()
    # plus what this front door sent after the report
    assert fold_report(own, report, now_s=100.0, sent_since=3).outstanding == 33
    # 90 ms later the worker has served ~16 of them: the report counts for what is left, rounded up
    assert aged_depth(report, 100.09, drain) == pytest.approx(30 - 0.09 * drain) == pytest.approx(14.0)
    assert fold_report(own, report, now_s=100.08).outstanding == math.ceil(30 - 0.08 * drain) == 16
    # once the worker would have drained it, the front door's own count rules again
    assert fold_report(own, report, now_s=101.0).outstanding == 2
    # a model the profile says drains in microseconds: the report still counts for min_drain_s
    tiny = worker("tiny", 0, t1_ms=0.025, per_row_ms=0.0)
    assert fold_report(tiny, report, now_s=100.001).outstanding == 0  # gone in a millisecond...
    held = [fold_report(tiny, report, now_s=100.0 + t, min_drain_s=0.05).outstanding for t in (0, 0.025, 0.05)]
    assert held == [30, 15, 0]  # ...or draining linearly over 50 ms
    # a report below the front door's own count never lowers it; no report changes nothing
    assert fold_report(worker("cheap", 9), QueueReport(1, 64, 100.0), 100.0).outstanding == 9
    assert fold_report(own, None, 100.0) == own
    # within headroom of the worker's bound it counts as full: the cheap one is skipped
    near = fold_report(own, QueueReport(36, 40, 5.0), now_s=5.0, headroom=4)
    assert near.outstanding == near.queue_bound == 64
    assert decide(200.0, (near, worker("pricey", 0, usd=0.68)), NO_LAMBDA).worker_id == "pricey"
    assert decide(200.0, (own, worker("pricey", 0, usd=0.68)), NO_LAMBDA).worker_id == "cheap"
    assert fold_report(own, QueueReport(35, 40, 5.0), now_s=5.0, headroom=4).outstanding == 35
    # header values: integers or nothing
    assert parse_queue_report("3", "256", 1.0) == QueueReport(3, 256, 1.0)
    assert parse_queue_report(None, "256", 1.0) is None
    assert parse_queue_report("-1", "256", 1.0) is None
    assert parse_queue_report("x", "2", 1.0) is None
