"""The Lambda handler, called directly with Function URL (payload 2.0) and ALB event shapes.

The event builders follow the documented shapes (AWS Lambda docs; Powertools' own test events
``lambdaFunctionUrlEvent.json`` and ``albMultiValueHeadersEvent.json``): a Function URL event has
``version``/``rawPath``/``requestContext.http``, lower-case ``headers`` and a base64 body for binary
content; an ALB event has ``requestContext.elb``, ``httpMethod``/``path`` and either ``headers`` or,
with the target group's multi-value option, ``multiValueHeaders`` (and must be answered in kind).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from inference.codec import decode_response, encode_request
from inference.repository import ModelRepository
from inference.runtime import OnnxModel
from inference.zoo.digits import load_split
from lambda_fn import handler as fn
from tests.integration.test_worker_bad_input import CASES, GOOD
from tests.surfaces import alb_event, body_of, ctx, function_url_event, header

MODELS = "digits_mlp_small,digits_linear"


@pytest.fixture
def packaged(digits_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelRepository]:
    """The function as packaged: a model repository and the names it serves; a fresh environment."""
    monkeypatch.setenv("MARK_MODEL_REPO", str(digits_repo.root))
    monkeypatch.setenv("MARK_MODELS", MODELS)
    monkeypatch.setenv("MARK_MAX_BATCH_SIZE", "64")
    monkeypatch.delenv("MODEL_URI", raising=False)
    fn._reset_for_tests()
    yield digits_repo
    fn._reset_for_tests()


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    _, x_test, _, y_test = load_split()
    return x_test[:64], y_test[:64]


def test_json_infer_over_function_url_classifies_real_digits(packaged, digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}]}
    r = fn.handler(function_url_event("POST", "/v2/models/digits_mlp_small/infer", orjson.dumps(doc)), ctx())
    assert r["statusCode"] == 200 and r["isBase64Encoded"] is False
    assert header(r, "content-type") == "application/json"
    out = json.loads(r["body"])
    assert out["model_name"] == "digits_mlp_small" and out["parameters"] == {"batch_rows": 64, "queue_us": 0}
    probs = np.asarray(out["outputs"][0]["data"], dtype=np.float32).reshape(out["outputs"][0]["shape"])
    assert (probs.argmax(axis=1) == y).mean() >= 0.9


def test_binary_infer_base64_in_and_out_matches_direct_run(packaged, digits) -> None:  # type: ignore[no-untyped-def]
    x, _ = digits
    body, headers = encode_request({"input": x}, binary=True, binary_output=True)
    r = fn.handler(function_url_event("POST", "/v2/models/digits_mlp_small/versions/1/infer", body, headers), ctx())
    assert r["statusCode"] == 200 and r["isBase64Encoded"] is True
    assert header(r, "content-type") == "application/octet-stream"
    got = decode_response(body_of(r), header(r, "inference-header-content-length"))["probabilities"]
    want = OnnxModel(packaged.onnx_path("digits_mlp_small")).run({"input": x})["probabilities"]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("multi_value", [False, True], ids=["headers", "multiValueHeaders"])
def test_alb_events_json_and_binary(packaged, digits, multi_value: bool) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    body, headers = encode_request({"input": x}, binary=True, binary_output=True)
    r = fn.handler(alb_event("POST", "/v2/models/digits_linear/infer", body, headers, multi_value), ctx())
    assert r["statusCode"] == 200 and r["isBase64Encoded"] is True
    assert ("multiValueHeaders" in r) is multi_value  # the answer must use the form the ALB sent
    probs = decode_response(body_of(r), header(r, "inference-header-content-length"))["probabilities"]
    assert (probs.argmax(axis=1) == y).mean() >= 0.9

    doc = orjson.dumps({"inputs": [GOOD]})
    r = fn.handler(
        alb_event("POST", "/v2/models/digits_linear/infer", doc, {"content-type": "application/json"}), ctx()
    )
    assert r["statusCode"] == 200 and json.loads(body_of(r))["outputs"][0]["shape"] == [1, 10]

    r = fn.handler(alb_event("GET", "/v2/health/ready", multi_value=multi_value), ctx())
    assert r["statusCode"] == 200 and json.loads(body_of(r)) == {"ready": True}


# Requests the worker answers; the handler must answer each with the same status and message.
EXTRA_CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("bad timeout", orjson.dumps({"inputs": [GOOD], "parameters": {"timeout": -5}}), {}),
    ("no inputs", orjson.dumps({"inputs": []}), {}),
    ("good", orjson.dumps({"inputs": [GOOD], "parameters": {"timeout": 100_000}}), {}),
]
ROUTES = [
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/models/digits_mlp_small"),
    ("GET", "/v2/models/digits_mlp_small/ready"),
    ("GET", "/v3/anything"),
    ("POST", "/v2/models/digits_mlp_small/versions/7/infer"),
    ("POST", "/v2/models/Bad..Name/infer"),
]


@pytest.mark.slow
def test_answers_match_a_real_worker(packaged, start_worker, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MARK_MODELS", "digits_mlp_small")  # serve what the worker serves
    worker = start_worker()
    base = f"http://{worker.url}"
    requests = [("POST", "/v2/models/digits_mlp_small/infer", b, h) for _, b, h, *_ in CASES + EXTRA_CASES]
    requests += [(m, p, orjson.dumps({"inputs": [GOOD]}) if m == "POST" else b"", {}) for m, p in ROUTES]
    for method, path, body, headers in requests:
        expected = httpx.request(method, base + path, content=body, headers=headers)
        got = fn.handler(function_url_event(method, path, body, headers), ctx())
        assert got["statusCode"] == expected.status_code, (path, body[:60], got["body"])
        got_doc, want_doc = json.loads(body_of(got)), expected.json()
        for doc in (got_doc, want_doc):  # time spent queued differs; a Lambda has no queue
            doc.get("parameters", {}).pop("queue_us", None)
        assert got_doc == want_doc, (path, body[:60])

    r = fn.handler(function_url_event("POST", "/v2/models/resnet9000/infer", orjson.dumps({"inputs": [GOOD]})), ctx())
    assert r["statusCode"] == 404
    assert json.loads(r["body"]) == {"error": "unknown model 'resnet9000'; served here: ['digits_mlp_small']"}


def test_bad_base64_and_unsupported_events_are_400(packaged) -> None:  # type: ignore[no-untyped-def]
    event = function_url_event("POST", "/v2/models/digits_mlp_small/infer", b"\xff\x00binary")
    event["body"] = "***not base64***"
    r = fn.handler(event, ctx())
    assert r["statusCode"] == 400 and "not valid base64" in json.loads(r["body"])["error"]
    r = fn.handler({"Records": [{"eventSource": "aws:sqs"}]}, ctx())
    assert r["statusCode"] == 400 and "unsupported event" in json.loads(r["body"])["error"]


def _read_logs(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]


def test_cold_start_logged_and_metered_only_on_first_call(packaged, capsys) -> None:  # type: ignore[no-untyped-def]
    buf = io.StringIO()
    stream_handler = fn.logger.registered_handler
    old = stream_handler.setStream(buf)  # type: ignore[attr-defined]
    try:
        body = orjson.dumps({"inputs": [dict(GOOD, data=[7.25] * 64)]})
        headers = {"content-type": "application/json", "x-request-id": "client-chosen-id"}
        first = fn.handler(function_url_event("POST", "/v2/models/digits_mlp_small/infer", body, headers), ctx("a"))
        first_out = capsys.readouterr().out
        second = fn.handler(function_url_event("POST", "/v2/models/digits_mlp_small/infer", body), ctx("b"))
        second_out = capsys.readouterr().out
    finally:
        stream_handler.setStream(old)  # type: ignore[attr-defined]
    assert first["statusCode"] == second["statusCode"] == 200
    requests = [r for r in _read_logs(buf) if r["message"] == "request"]
    assert [r["cold_start"] for r in requests] == [True, False]
    assert requests[0]["correlation_id"] == "client-chosen-id"  # x-request-id wins
    assert requests[1]["correlation_id"] == "fu-req-1"  # else the platform's request id
    assert requests[0]["function_request_id"] == "a" and requests[0]["model"] == "digits_mlp_small"
    assert header(first, "x-request-id") == "client-chosen-id"
    assert "7.25" not in buf.getvalue()  # request bodies are never logged

    emf = [json.loads(line) for line in first_out.splitlines() if line.startswith('{"_aws"')]
    names = {m["Name"] for doc in emf for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"ColdStart", "InferenceCount", "InferenceLatencyMs"} <= names
    assert all(d["Namespace"] == "Mark" for doc in emf for d in doc["_aws"]["CloudWatchMetrics"])
    assert '"ColdStart"' not in second_out and '"InferenceCount"' in second_out


def test_model_uri_local_folder(digits_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_URI", str(digits_repo.model_dir("digits_linear")))
    monkeypatch.setenv("MARK_MODELS", "digits_mlp_small")  # MODEL_URI wins over the packaged repository
    fn._reset_for_tests()
    try:
        doc = orjson.dumps({"inputs": [GOOD]})
        r = fn.handler(function_url_event("POST", "/v2/models/digits_linear/infer", doc), ctx())
        assert r["statusCode"] == 200
        r = fn.handler(function_url_event("POST", "/v2/models/digits_mlp_small/infer", doc), ctx())
        assert r["statusCode"] == 404 and "served here: ['digits_linear']" in json.loads(r["body"])["error"]
        monkeypatch.setenv("MODEL_URI", str(digits_repo.root / "nowhere"))
        fn._reset_for_tests()
        r = fn.handler(function_url_event("GET", "/v2/health/ready"), ctx())
        assert r["statusCode"] == 503 and "is not a folder with model.onnx" in json.loads(r["body"])["error"]
    finally:
        fn._reset_for_tests()


def test_tracer_is_built_only_with_xray_sdk_and_not_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    assert fn._make_tracer() is None
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "aws_xray_sdk" else real_find_spec(name, *a)
    )
    assert fn._make_tracer() is None  # without the tracer extra the handler runs untraced
    monkeypatch.undo()
    if importlib.util.find_spec("aws_xray_sdk") is not None:
        monkeypatch.delenv("LAMBDA_TASK_ROOT", raising=False)
        tracer = fn._make_tracer()
        assert tracer is not None and tracer.disabled  # outside Lambda Powertools disables it itself


def test_an_internal_error_is_a_counted_json_500(packaged, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("internal detail")

    monkeypatch.setattr(fn, "encode_response", broken)
    body = orjson.dumps({"inputs": [GOOD]})
    r = fn.handler(function_url_event("POST", "/v2/models/digits_mlp_small/infer", body), ctx())
    assert r["statusCode"] == 500 and header(r, "content-type") == "application/json"
    assert "internal error (ref " in json.loads(r["body"])["error"] and "internal detail" not in r["body"]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf[-1]["InferenceErrorCount"] == [1.0] and emf[-1]["reason"] == "OTHER"


def test_a_bad_max_batch_size_setting_is_named(packaged, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MARK_MAX_BATCH_SIZE", "lots")
    body = orjson.dumps({"inputs": [GOOD]})
    r = fn.handler(function_url_event("POST", "/v2/models/digits_mlp_small/infer", body), ctx())
    assert r["statusCode"] == 503
    assert json.loads(r["body"])["error"] == "MARK_MAX_BATCH_SIZE must be a positive integer, got 'lots'"
