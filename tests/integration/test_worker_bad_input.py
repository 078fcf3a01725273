"""Bad input against a real worker: each case gets the right status and a message naming the
problem as {"error": ...}, and the worker keeps serving everything else."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest

from inference.codec import encode_request

pytestmark = pytest.mark.slow

GOOD = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}


def _json(doc: object) -> bytes:
    return orjson.dumps(doc)


def _binary_body(size_claimed: int, payload: bytes) -> tuple[bytes, dict[str, str]]:
    header = _json({"inputs": [dict(GOOD, data=None, parameters={"binary_data_size": size_claimed})]})
    return header + payload, {"Inference-Header-Content-Length": str(len(header))}


CASES = [
    ("malformed JSON", b'{"inputs": [', {}, 400, "malformed JSON"),
    ("missing input", _json({"inputs": [dict(GOOD, name="other")]}), {}, 400, "missing input(s) ['input']"),
    ("extra input", _json({"inputs": [GOOD, dict(GOOD, name="extra")]}), {}, 400, "unexpected input(s) ['extra']"),
    ("wrong shape", _json({"inputs": [dict(GOOD, shape=[2, 32])]}), {}, 400, "shape [2, 32]"),
    ("wrong rank", _json({"inputs": [dict(GOOD, shape=[64])]}), {}, 400, "shape [64]"),
    (
        "wrong datatype",
        _json({"inputs": [dict(GOOD, datatype="INT32", data=[0] * 64)]}),
        {},
        400,
        "datatype INT32, the model expects FP32",
    ),
    ("too few elements", _json({"inputs": [dict(GOOD, data=[0.0] * 10)]}), {}, 400, "the shape needs 64"),
    ("binary sizes short", *_binary_body(256, b"\0" * 100), 400, "runs past the body"),
    ("binary sizes long", *_binary_body(256, b"\0" * 300), 400, "44 binary bytes not claimed"),
    ("binary size vs shape", *_binary_body(100, b"\0" * 100), 400, "needs 256 bytes"),
    ("bad header length", _json({"inputs": [GOOD]}), {"Inference-Header-Content-Length": "x"}, 400, "integer"),
]


@pytest.fixture(scope="module")
def worker(digits_repo, tmp_path_factory):  # type: ignore[no-untyped-def]
    from tests.conftest import WorkerProcess

    w = WorkerProcess(
        digits_repo, tmp_path_factory.mktemp("w"), models=["digits_mlp_small"], threads=1, max_body_bytes=64 * 1024
    )
    yield w
    w.stop()


@pytest.mark.parametrize(("case", "body", "headers", "status", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_named_and_worker_keeps_serving(worker, case, body, headers, status, message) -> None:  # type: ignore[no-untyped-def]
    url = f"http://{worker.url}/v2/models/digits_mlp_small/infer"
    r = httpx.post(url, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    good = httpx.post(url, content=_json({"inputs": [GOOD]}))
    assert good.status_code == 200


def test_unknown_model_and_route_and_version(worker) -> None:  # type: ignore[no-untyped-def]
    base = f"http://{worker.url}"
    r = httpx.post(f"{base}/v2/models/resnet9000/infer", content=_json({"inputs": [GOOD]}))
    assert r.status_code == 404 and "unknown model 'resnet9000'" in r.json()["error"]
    r = httpx.post(f"{base}/v2/models/digits_mlp_small/versions/7/infer", content=_json({"inputs": [GOOD]}))
    assert r.status_code == 404 and "no version '7'" in r.json()["error"]
    r = httpx.get(f"{base}/v2/models/..%2F..%2Fetc/ready")
    assert r.status_code in (400, 404) and "error" in r.json()
    r = httpx.get(f"{base}/v3/anything")
    assert r.status_code == 404 and r.json() == {"error": "no route GET /v3/anything"}
    r = httpx.get(f"{base}/v2/models/digits_mlp_small/infer")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json() == {"error": "GET is not allowed on /v2/models/digits_mlp_small/infer: use POST"}


def test_payload_over_the_limit_gets_413(worker) -> None:  # type: ignore[no-untyped-def]
    big = np.zeros((300, 64), dtype=np.float32)  # 76.8 kB of tensor > 64 KiB limit
    body, headers = encode_request({"input": big})
    r = httpx.post(f"http://{worker.url}/v2/models/digits_mlp_small/infer", content=body, headers=headers)
    assert r.status_code == 413 and "exceeds the limit of 65536 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit must hold for streamed bodies too
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    r = httpx.post(f"http://{worker.url}/v2/models/digits_mlp_small/infer", content=chunks(), headers=headers)
    assert r.status_code == 413


def _failures(worker) -> dict[tuple[str, str], float]:  # type: ignore[no-untyped-def]
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://{worker.url}/metrics").text
    return {
        (s.labels["model"], s.labels["reason"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if f.name == "nv_inference_request_failure"
    }


def test_failures_are_counted_by_reason(worker) -> None:  # type: ignore[no-untyped-def]
    url = f"http://{worker.url}/v2/models/digits_mlp_small/infer"
    before = _failures(worker)
    httpx.post(url, content=b"{")
    httpx.post(url, content=b"x" * 70_000)
    httpx.post(f"http://{worker.url}/v2/models/resnet9000/infer", content=b"{}")
    after = _failures(worker)
    text = httpx.get(f"http://{worker.url}/metrics").text
    # Triton's reason values: bad requests and oversized bodies are OTHER; unknown models are counted
    # under one fixed label, so label sets stay bounded
    assert after.get(("digits_mlp_small", "OTHER"), 0) - before.get(("digits_mlp_small", "OTHER"), 0) == 2
    assert after.get(("(unknown)", "OTHER"), 0) - before.get(("(unknown)", "OTHER"), 0) == 1
    assert "resnet9000" not in text  # unknown names never become label values
