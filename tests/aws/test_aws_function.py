"""``AwsFunction`` on moto's Lambda (no Docker: moto cannot run the code, so the real handler is
called directly on the very event ``invoke`` sends, and its answer is what moto returns): the
request/response plumbing, the REPORT line, throttling, function errors, provisioned concurrency."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import orjson
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto.awslambda_simple.models import lambda_simple_backends
from moto.core import DEFAULT_ACCOUNT_ID

from inference.repository import ModelRepository
from lambda_fn import handler as fn
from orchestrator.cloud.aws.function import AwsFunction, AwsFunctionConfig, parse_report
from orchestrator.cloud.aws.session import AwsSession, AwsSessionSettings
from orchestrator.cloud.base import FunctionError, FunctionThrottled
from tests.integration.test_worker_bad_input import GOOD
from tests.surfaces import ctx

REPORT = (
    "START RequestId: 8f5 Version: 3\nEND RequestId: 8f5\n"
    "REPORT RequestId: 8f5\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 2048 MB\t"
    "Max Memory Used: 180 MB\tInit Duration: 1534.20 ms\t\n"
)


@pytest.fixture
def packaged(digits_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MARK_MODEL_REPO", str(digits_repo.root))
    monkeypatch.setenv("MARK_MODELS", "digits_mlp_small")
    monkeypatch.delenv("MODEL_URI", raising=False)
    fn._reset_for_tests()
    yield
    fn._reset_for_tests()


def _deploy(name: str) -> None:
    iam = boto3.client("iam", region_name="us-east-1")
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("lambda_fn/handler.py", "def handler(event, context): pass\n")
    lam = boto3.client("lambda", region_name="us-east-1")
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler="lambda_fn.handler.handler",
        Code={"ZipFile": zipped.getvalue()},
        MemorySize=2048,
    )
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)


def _function(name: str) -> AwsFunction:
    session = AwsSession(AwsSessionSettings(region="us-east-1"))
    return AwsFunction(AwsFunctionConfig(name, "live", 2048, 3), session)


def _run_real_handler(function: AwsFunction, sent: list[dict[str, Any]], log_tail: str | None = REPORT) -> None:
    """On each Invoke: run the real handler on the event sent and queue its answer for moto to return;
    add the log tail AWS would (moto's Docker-less Lambda has none)."""
    queue = lambda_simple_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].lambda_simple_results_queue

    def run(params: dict[str, Any], **_: Any) -> None:
        event = json.loads(params["Payload"])
        sent.append(params | {"event": event})
        queue.append(json.dumps(fn.handler(event, ctx())))

    def tail(parsed: dict[str, Any], **_: Any) -> None:
        if log_tail is not None:
            parsed["LogResult"] = base64.b64encode(log_tail.encode()).decode()

    function.client.meta.events.register("before-parameter-build.lambda.Invoke", run)
    function.client.meta.events.register("after-call.lambda.Invoke", tail)


def test_invoke_sends_a_function_url_event_and_returns_the_handler_answer(
    moto: None, deployment: str, packaged: None
) -> None:
    _deploy(deployment)
    function = _function(deployment)
    sent: list[dict[str, Any]] = []
    _run_real_handler(function, sent)
    body = orjson.dumps({"inputs": [GOOD]})
    r = asyncio.run(function.invoke("digits_mlp_small", body, {"content-type": "application/json"}))
    assert r.status == 200, r.body
    out = orjson.loads(r.body)["outputs"][0]
    assert out["shape"] == [1, 10] and np.isfinite(out["data"]).all()
    # what went over the wire: RequestResponse on the alias, a Function URL 2.0 POST to the v2 route
    (call,) = sent
    assert (call["FunctionName"], call["Qualifier"], call["InvocationType"], call["LogType"]) == (
        deployment,
        "live",
        "RequestResponse",
        "Tail",
    )
    event = call["event"]
    assert event["version"] == "2.0" and event["rawPath"] == "/v2/models/digits_mlp_small/infer"
    assert event["requestContext"]["http"]["method"] == "POST" and base64.b64decode(event["body"]) == body
    # the REPORT line: duration, billed duration, a cold start's init
    assert (r.duration_ms, r.billed_duration_ms, r.init_ms, r.cold_start) == (12.34, 13, 1534.2, True)
    s = function.stats()
    assert (s.invocations, s.cold_starts, s.billed_ms, s.throttles) == (1, 1, 13, 0)
    assert s.billed_gb_seconds == pytest.approx(0.013 * 2)
    assert function.predicted_latency_ms("digits_mlp_small", cold=True) == pytest.approx(12.34 + 1534.2)
    assert function.concurrency_left() == 3

    # a v2 error from the handler is an answer, not an exception
    r = asyncio.run(function.invoke("no_such_model", body, {"content-type": "application/json"}))
    assert r.status == 404 and "no_such_model" in orjson.loads(r.body)["error"]


def test_throttling_is_function_throttled_at_once_and_function_errors_are_function_errors(
    moto: None, deployment: str
) -> None:
    _deploy(deployment)
    function = _function(deployment)
    attempts: list[int] = []

    def answer_429(request: Any, **_: Any) -> AWSResponse:  # Lambda's throttle, on the wire
        attempts.append(1)
        raw = type("Raw", (), {"stream": lambda self, **_: iter([b'{"Type":"User","message":"Rate Exceeded."}'])})()
        return AWSResponse(request.url, 429, {"x-amzn-errortype": "TooManyRequestsException"}, raw)

    function.client.meta.events.register_first("before-send.lambda.Invoke", answer_429)
    with pytest.raises(FunctionThrottled, match="throttled") as e:
        asyncio.run(function.invoke("m", b"{}", {}))
    assert e.value.status == 429 and len(attempts) == 1  # no retry: the front door fails over now
    assert function.stats().throttles == 1
    function.client.meta.events.unregister("before-send.lambda.Invoke", answer_429)

    # an unhandled exception in the function (X-Amz-Function-Error) is a FunctionError (502)
    def crashed(parsed: dict[str, Any], **_: Any) -> None:
        parsed["FunctionError"] = "Unhandled"

    function.client.meta.events.register("after-call.lambda.Invoke", crashed)
    with pytest.raises(FunctionError, match="function error") as e2:
        asyncio.run(function.invoke("m", b"{}", {}))
    assert not isinstance(e2.value, FunctionThrottled) and e2.value.status == 502
    # any other API error (moto's Docker-less Lambda never raises one: injected) is a FunctionError
    other = _function(deployment)

    def missing(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "no alias"}}, "Invoke")

    other.client.meta.events.register("before-parameter-build.lambda.Invoke", missing)
    with pytest.raises(FunctionError, match="ResourceNotFoundException") as e3:
        asyncio.run(other.invoke("m", b"{}", {}))
    assert not isinstance(e3.value, FunctionThrottled)


def test_prewarm_sets_provisioned_concurrency_on_the_alias(moto: None, deployment: str) -> None:
    # moto has no provisioned concurrency: botocore's Stubber checks the calls and gives AWS's answers
    function = _function(deployment)
    stub = Stubber(function.control)
    where = {"FunctionName": deployment, "Qualifier": "live"}
    stub.add_response(
        "put_provisioned_concurrency_config",
        {"RequestedProvisionedConcurrentExecutions": 2, "Status": "IN_PROGRESS"},
        where | {"ProvisionedConcurrentExecutions": 2},
    )
    stub.add_response(
        "get_provisioned_concurrency_config",
        {"RequestedProvisionedConcurrentExecutions": 2, "AvailableProvisionedConcurrentExecutions": 1},
        where,
    )
    stub.add_response("delete_provisioned_concurrency_config", {}, where)
    with stub:
        assert asyncio.run(function.prewarm(2)) == 1  # allocation takes minutes: one ready so far
        assert function.warm_idle() == 1 and function.stats().environments == 1
        assert asyncio.run(function.prewarm(0)) == 0
    stub.assert_no_pending_responses()
    with pytest.raises(ValueError, match="exceeds the concurrency limit"):
        asyncio.run(function.prewarm(4))


def test_parse_report() -> None:
    assert parse_report("no report here") is None
    warm = parse_report("REPORT RequestId: a\tDuration: 3.01 ms\tBilled Duration: 4 ms\tMemory Size: 128 MB\t")
    assert warm is not None and (warm.duration_ms, warm.billed_ms, warm.init_ms) == (3.01, 4, 0.0)
