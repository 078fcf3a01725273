"""Batching policy (DESIGN.md §3 "Batching"): feasibility rules and the analytic capacity at SLO
(orchestrator/policy/batching.py). tests/sim/test_batch_queue.py checks that capacity against an exact
simulation of the worker's discipline."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.policy.batching import (
    BatchingError,
    ServiceProfile,
    batching_pays,
    feasible_settings,
    latency_quantile_ms,
    plan_batching,
)
from tests.fakes import EPS, GPU, GPU_HEAVY, MOBILENET, SL, Batches


def test_infeasible_when_one_request_cannot_meet_the_slo() -> None:
    # T_p99(1) 9.8 ms + eps 5 ms > RTmax 12 ms.
    plan = plan_batching(ServiceProfile(MOBILENET, 1), rt_max_ms=12.0, sl_min=SL, usd_per_hour=0.1, epsilon_ms=EPS)
    assert plan.best is None
    assert plan.candidates == ()
    assert "infeasible" in plan.reason and "T_p99(1)" in plan.reason


def test_batching_that_does_not_pay_yields_only_b1() -> None:
    linear = ((1, 10.0, 12.0), (2, 20.0, 24.0), (4, 41.0, 49.0), (8, 85.0, 100.0))  # b/T(b) never above 1/T(1)
    profile = ServiceProfile(linear, 2)
    assert [batching_pays(profile, b) for b in profile.batch_sizes] == [True, False, False, False]
    plan = plan_batching(profile, rt_max_ms=200.0, sl_min=SL, usd_per_hour=0.2, epsilon_ms=EPS)
    assert plan.best is not None and plan.best.batch_size == 1 and plan.best.batch_timeout_ms == 0.0
    assert {c.batch_size for c in plan.candidates} == {1}


def test_cost_per_million_is_price_per_second_over_capacity() -> None:
    plan = plan_batching(ServiceProfile(GPU, 1), rt_max_ms=200.0, sl_min=SL, usd_per_hour=0.526, epsilon_ms=EPS)
    for c in plan.candidates:
        assert c.usd_per_million == pytest.approx(0.526 / 3600 / c.capacity_rps * 1e6)
    assert plan.best == max(plan.candidates, key=lambda c: c.capacity_rps)
    assert plan.best.usd_per_million == min(c.usd_per_million for c in plan.candidates)


@st.composite
def monotone_profiles(draw: st.DrawFn) -> ServiceProfile:
    """Random T(b): increasing p50 over b = 1, 2, 4, ..., p99 >= p50."""
    sizes = [1, 2, 4, 8, 16, 32, 64][: draw(st.integers(1, 7))]
    p50 = 0.0
    rows: list[tuple[int, float, float]] = []
    for b in sizes:
        p50 += draw(st.floats(0.01, 60.0)) if rows else draw(st.floats(0.01, 80.0))
        rows.append((b, p50, p50 * draw(st.floats(1.0, 2.0))))
    return ServiceProfile(tuple(rows), draw(st.integers(1, 8)))


@given(monotone_profiles(), st.floats(1.0, 500.0), st.floats(0.0, 20.0))
@settings(max_examples=200, deadline=None)
def test_every_candidate_fits_the_deadline(profile: ServiceProfile, rt: float, eps: float) -> None:
    for b, w in feasible_settings(profile, rt_max_ms=rt, epsilon_ms=eps):
        assert w >= 0
        assert w + profile.p99_ms(b) + eps <= rt + 1e-9
        assert b in profile.batch_sizes
        assert batching_pays(profile, b)
        assert b > 1 or w == 0


@given(monotone_profiles(), st.floats(20.0, 400.0))
@settings(max_examples=12, deadline=None)
def test_plan_candidates_fit_the_deadline_and_best_is_highest(profile: ServiceProfile, rt: float) -> None:
    plan = plan_batching(profile, rt_max_ms=rt, sl_min=SL, usd_per_hour=1.0, epsilon_ms=EPS)
    for c in plan.candidates:
        assert c.batch_timeout_ms + c.service_p99_ms + EPS <= rt + 1e-9
        assert c.capacity_rps >= 0
    if plan.best is not None:
        assert plan.best.capacity_rps == max(c.capacity_rps for c in plan.candidates) > 0


def test_capacity_grows_with_rt_max_and_slots() -> None:
    def best(batches: Batches, slots: int, rt: float) -> float:
        plan = plan_batching(ServiceProfile(batches, slots), rt_max_ms=rt, sl_min=SL, usd_per_hour=1.0)
        assert plan.best is not None
        return plan.best.capacity_rps

    for batches in (MOBILENET, GPU_HEAVY):
        by_rt = [best(batches, 1, rt) for rt in (60.0, 120.0, 400.0)]
        assert by_rt == sorted(by_rt), by_rt
        by_slots = [best(batches, s, 200.0) for s in (1, 2, 8)]
        assert by_slots == sorted(by_slots) and by_slots[-1] > 4 * by_slots[0], by_slots


def test_latency_quantile_rises_with_rate_and_is_infinite_past_saturation() -> None:
    profile = ServiceProfile(MOBILENET, 1)
    lat = latency_quantile_ms(profile, [20.0, 60.0, 100.0, 120.0, 140.0], 2, 0.0, SL)
    assert list(lat[:4]) == sorted(lat[:4])
    assert math.isinf(lat[4])  # 140/s > 2 / 14.8 ms


def test_deterministic() -> None:
    profile = ServiceProfile(GPU, 2)
    a = plan_batching(profile, rt_max_ms=150.0, sl_min=0.99, usd_per_hour=1.006, epsilon_ms=3.0)
    b = plan_batching(profile, rt_max_ms=150.0, sl_min=0.99, usd_per_hour=1.006, epsilon_ms=3.0)
    assert a == b


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"rt_max_ms": 0.0}, "rt_max_ms"),
        ({"rt_max_ms": -5.0}, "rt_max_ms"),
        ({"sl_min": 1.0}, "sl_min"),
        ({"sl_min": 0.0}, "sl_min"),
        ({"epsilon_ms": -1.0}, "epsilon_ms"),
        ({"usd_per_hour": -1.0}, "usd_per_hour"),
    ],
)
def test_bad_slo_values_name_the_field(kwargs: dict[str, float], field: str) -> None:
    args = {"rt_max_ms": 200.0, "sl_min": SL, "usd_per_hour": 1.0, "epsilon_ms": EPS} | kwargs
    with pytest.raises(BatchingError, match=field):
        plan_batching(ServiceProfile(MOBILENET, 1), **args)


def test_bad_profiles_are_refused() -> None:
    with pytest.raises(BatchingError, match="increasing"):
        ServiceProfile(((1, 1.0, 1.0), (4, 2.0, 2.0), (2, 3.0, 3.0)), 1)
    with pytest.raises(BatchingError, match="batch size 1 first"):
        ServiceProfile(((2, 1.0, 1.0), (4, 2.0, 2.0)), 1)
    with pytest.raises(BatchingError, match="p50_ms <= p99_ms"):
        ServiceProfile(((1, 2.0, 1.0),), 1)
    with pytest.raises(BatchingError, match="slots"):
        ServiceProfile(((1, 2.0, 3.0),), 0)
