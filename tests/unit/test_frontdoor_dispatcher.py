"""The dispatcher's own bookkeeping (no processes): how it corrects profile predictions."""

from __future__ import annotations

from orchestrator.frontdoor.dispatcher import Dispatcher, FrontDoorConfig
from orchestrator.policy.estimators import SLOWDOWN_QUANTILE


def test_slowdown_follows_a_high_quantile_of_observed_over_predicted() -> None:
    d = Dispatcher(None, FrontDoorConfig(), None)  # type: ignore[arg-type]
    # 4 in 5 answers at the profile's speed, 1 in 5 at 3x: the mean ratio is 1.4, the 90th percentile 3.
    for i in range(100):
        d._observe("w", actual_ms=30.0 if i % 5 == 4 else 10.0, predicted_ms=10.0 * d.slowdown.get("w", 1.0))
    assert SLOWDOWN_QUANTILE == 0.9
    assert 2.9 <= d.slowdown["w"] <= 3.1
    # The worker recovers: once the window (128 answers) holds only fast answers, so does the factor.
    for _ in range(200):
        d._observe("w", actual_ms=10.0, predicted_ms=10.0 * d.slowdown["w"])
    assert 0.95 <= d.slowdown["w"] <= 1.05


def test_predictions_come_from_the_measured_profile_of_the_layout_or_the_start_fails() -> None:
    import pytest

    from orchestrator.economics.latency_profiles import ProfileError, layout_batches
    from orchestrator.frontdoor.dispatcher import profile_line

    rows = layout_batches("digits_mlp_small", threads=1)
    t1_p99, per_row = profile_line("digits_mlp_small", threads=1)
    assert t1_p99 == rows[0][2] and rows[0][0] == 1
    assert per_row == pytest.approx((rows[-1][1] - rows[0][1]) / (rows[-1][0] - 1))
    d = Dispatcher(None, FrontDoorConfig(threads=1), None, models=["digits_mlp_small"])  # type: ignore[arg-type]
    assert d._profiles["digits_mlp_small"] == (t1_p99, per_row)
    # no profile for 3 threads: an error naming the file it looked for, never the old 5 ms + 1 ms/row guess
    with pytest.raises(ProfileError, match=r"looked for profiles/latency/digits_mlp_small/<host>-t3\.json"):
        Dispatcher(None, FrontDoorConfig(threads=3), None, models=["digits_mlp_small"])  # type: ignore[arg-type]


def test_a_throttled_function_is_a_429_by_its_type_not_its_class_name() -> None:
    import asyncio

    from orchestrator.cloud.base import FunctionError, FunctionThrottled

    class Fn:
        def __init__(self, error: Exception) -> None:
            self.error = error

        async def invoke(self, model: str, body: bytes, headers: dict[str, str]) -> None:
            raise self.error

        def concurrency_limit(self) -> int:
            return 1

    for error, status in ((FunctionThrottled("all busy"), 429), (FunctionError("died"), 502), (OSError("x"), 502)):
        d = Dispatcher(None, FrontDoorConfig(), Fn(error))  # type: ignore[arg-type]
        answer = asyncio.run(d._to_lambda("m", b"{}", {}))
        assert (answer.status, answer.route) == (status, "lambda"), error
        assert b"Lambda could not serve the request" in answer.body


def test_a_request_lambda_throttles_is_answered_503_with_retry_after_never_429() -> None:
    """Lambda's 429 (every environment busy, e.g. while the controller pre-warms) goes back to the
    policy without Lambda: with no worker that can take it, an explicit 503 + Retry-After."""
    import asyncio

    from orchestrator.cloud.base import FunctionThrottled

    class Cloud:
        def instances(self) -> list[object]:
            return []

    class Fn:
        calls = 0

        async def invoke(self, model: str, body: bytes, headers: dict[str, str]) -> None:
            Fn.calls += 1
            raise FunctionThrottled("all busy")

        def concurrency_limit(self) -> int:
            return 1

        def warm_idle(self) -> int:
            return 1

        def concurrency_left(self) -> int:
            return 0

        def predicted_latency_ms(self, model: str, cold: bool) -> float:
            return 5.0

    d = Dispatcher(Cloud(), FrontDoorConfig(), Fn())  # type: ignore[arg-type]
    answer = asyncio.run(d.handle("m", "/v2/models/m/infer", b"{}", {}, 200.0))
    assert answer.status == 503 and answer.route == "frontdoor"
    assert (b"retry-after", b"1") in answer.headers
    assert Fn.calls == 1 and d.lambda_throttled == 1 and d.by_route["rejected"] == 1
