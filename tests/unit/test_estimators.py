"""The front door's online latency estimators (orchestrator/policy/estimators.py) on exact numbers:
the slowdown quantile over a sliding window, and the EWMA of the Lambda pool; both pure."""

from __future__ import annotations

import ec2_worker.discipline
from orchestrator.policy.estimators import (
    SLOWDOWN_QUANTILE,
    SLOWDOWN_WINDOW,
    Slowdown,
    ewma,
    observe_slowdown,
)


def test_slowdown_is_a_high_quantile_of_observed_over_unscaled_predictions() -> None:
    assert (SLOWDOWN_QUANTILE, SLOWDOWN_WINDOW) == (0.9, 128)
    s = observe_slowdown(Slowdown(), actual_ms=30.0, predicted_ms=10.0)
    assert s == Slowdown(3.0, (3.0,))
    # the next prediction was scaled by 3 (30 ms); the answer took 10 ms: the ratio to the profile is 1
    s = observe_slowdown(s, actual_ms=10.0, predicted_ms=30.0)
    assert s == Slowdown(3.0, (3.0, 1.0))  # sorted [1, 3], index int(0.9 * 2) = 1
    for _ in range(8):
        s = observe_slowdown(s, actual_ms=10.0, predicted_ms=10.0 * s.factor)
    # 10 ratios, one of them 3: sorted index int(0.9 * 10) = 9 is the 3 (recomputed at length 8, kept at 9, 10)
    assert s.ratios == (3.0, *[1.0] * 9) and s.factor == 3.0


def test_each_ratio_is_clamped_and_tiny_predictions_floored() -> None:
    assert observe_slowdown(Slowdown(), 1000.0, 1.0).factor == 20.0
    assert observe_slowdown(Slowdown(), 0.0, 10.0).factor == 0.5
    assert observe_slowdown(Slowdown(), 1.0, 0.0).factor == 10.0  # predicted floored at 0.1 ms


def test_the_factor_is_refreshed_every_eighth_answer_once_eight_are_in() -> None:
    s = Slowdown(1.0, (1.0,) * 8)
    s = observe_slowdown(s, 20.0, 10.0)  # 9 ratios: not a refresh point, the factor stays
    assert s.factor == 1.0 and s.ratios[-1] == 2.0
    for _ in range(6):
        s = observe_slowdown(s, 10.0, 10.0)
    assert len(s.ratios) == 15 and s.factor == 1.0
    s = observe_slowdown(s, 10.0, 10.0)  # 16: sorted index int(0.9 * 16) = 14 of 15 ones and a 2
    assert s.factor == 1.0
    s = observe_slowdown(Slowdown(1.0, (1.0,) * 7 + (2.0,) * 8), 20.0, 10.0)  # 16: index 14 is a 2
    assert s.factor == 2.0


def test_the_window_slides_and_the_factor_follows_every_answer_once_full() -> None:
    full = Slowdown(3.0, (3.0,) * 20 + (1.0,) * 108)
    s = observe_slowdown(full, 10.0, 30.0)  # ratio 1; the oldest 3 leaves
    assert len(s.ratios) == 128 and s.ratios == (3.0,) * 19 + (1.0,) * 109
    assert s.factor == 3.0  # index int(0.9 * 128) = 115: 109 ones, then the 3s
    for _ in range(6):
        s = observe_slowdown(s, 10.0, 10.0 * s.factor)
    assert s.ratios.count(3.0) == 13 and s.factor == 3.0  # 115 ones: index 115 is still a 3
    s = observe_slowdown(s, 10.0, 30.0)
    assert s.ratios.count(3.0) == 12 and s.factor == 1.0  # 116 ones: refreshed at once, not 8 answers later


def test_the_estimators_are_pure() -> None:
    before = Slowdown(2.0, (2.0, 1.0, 3.0))
    copy = Slowdown(before.factor, tuple(before.ratios))
    after = observe_slowdown(before, 50.0, 10.0)
    assert before == copy and after is not before
    assert observe_slowdown(before, 50.0, 10.0) == after  # same inputs, same state out


def test_ewma_exact_and_the_workers_copy_agrees() -> None:
    assert ewma(None, 7.0) == 7.0  # the first sample is the estimate
    assert ewma(100.0, 200.0) == 120.0  # alpha 0.2 (the Lambda pool's)
    assert ewma(10.0, 20.0, 0.5) == 15.0
    # ec2_worker cannot import orchestrator, so it keeps its own copy of the formula: they agree
    for prev, sample, alpha in ((None, 3.0, 0.2), (10.0, 20.0, 0.2), (4.0, 1.0, 0.7)):
        assert ewma(prev, sample, alpha) == ec2_worker.discipline.ewma(prev, sample, alpha)
