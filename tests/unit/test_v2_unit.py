"""inference/v2.py without processes: routing, error bodies, raw binary rules, internal errors."""

from __future__ import annotations

import asyncio
import logging

import httpx
import numpy as np
import orjson
import pytest

from inference.cards import ModelCard, TensorSpec
from inference.errors import BadRequest, MethodNotAllowed, NoRoute
from inference.v2 import ROUTES, Readiness, Reply, Resolved, V2App, error_reply, parse_infer, resolve


def _card(*inputs: TensorSpec) -> ModelCard:
    return ModelCard(
        name="m",
        family="f",
        version="1",
        framework="onnx",
        inputs=inputs,
        outputs=(TensorSpec("y", "FP32", (-1, 2)),),
        preprocessing="none",
        accuracy=(),
        file_bytes=1,
        sha256="0" * 64,
    )


def test_every_route_resolves_to_its_operation_and_model() -> None:
    for route in ROUTES:
        path = route.path.replace("{model}", "m.v-2_x").replace("{version}", "7")
        r = resolve(route.method, path)
        assert r.op == route.op
        if "{model}" in route.path:
            assert r.model == "m.v-2_x"
        assert r.version == ("7" if "{version}" in route.path else None)
    assert {r.op for r in ROUTES} == {
        "live",
        "ready",
        "server_metadata",
        "model_metadata",
        "model_ready",
        "model_config",
        "infer",
    }


def test_unknown_paths_are_404_and_wrong_methods_405_with_allow() -> None:
    with pytest.raises(NoRoute, match="no route GET /v2/models/m/infer/x"):
        resolve("GET", "/v2/models/m/infer/x")
    with pytest.raises(MethodNotAllowed) as e:
        resolve("GET", "/v2/models/m/infer")
    assert e.value.headers == (("allow", "POST"),)
    with pytest.raises(MethodNotAllowed) as e:
        resolve("POST", "/v2/models/m/ready")
    assert e.value.headers == (("allow", "GET"),)


def test_an_unexpected_error_is_a_logged_json_500_without_internals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="mark.v2")
    reply = error_reply(KeyError("secret internal detail"))
    assert reply.status == 500 and dict(reply.headers)["content-type"] == "application/json"
    message = orjson.loads(reply.body)["error"]
    assert "secret" not in message and "Traceback" not in message
    ref = message.split("ref ")[1].split(")")[0]
    assert ref in caplog.text and "secret internal detail" in caplog.text  # the log has what the client lacks


class _Server:
    name = "test"

    def server_ready(self) -> Readiness:
        return Readiness(True)

    def card(self, model: str) -> ModelCard:
        return _card(TensorSpec("x", "FP32", (-1, 4)))

    def model_ready(self, model: str) -> Readiness:
        return Readiness(False, "still loading")

    def batching(self, model: str) -> tuple[int, float]:
        return 4, 2.0


def test_the_asgi_surface_answers_every_failure_as_json() -> None:
    async def broken_infer(r: Resolved, scope: object, receive: object) -> Reply:
        raise RuntimeError("boom")

    async def main() -> None:
        app = V2App(_Server(), broken_infer)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.post("/v2/models/m/infer", content=b"{}")
            assert r.status_code == 500 and r.headers["content-type"] == "application/json"
            assert "internal error (ref " in r.json()["error"] and "boom" not in r.text
            r = await c.get("/v2/models/m/versions/1/ready")
            assert r.status_code == 503 and r.json() == {"name": "m", "ready": False, "error": "still loading"}
            r = await c.get("/v2/models/m/versions/1/config")
            assert r.json()["max_batch_size"] == 4
            assert r.json()["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
            r = await c.get("/v2/models/m/versions/3")
            assert r.status_code == 404 and "no version '3'" in r.json()["error"]
            r = await c.get("/v2")
            assert r.json()["extensions"] == ["binary_tensor_data", "parameters", "model_configuration"]

    asyncio.run(main())


def test_raw_binary_needs_one_fixed_shape_input() -> None:
    two = _card(TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "FP32", (-1, 2)))
    with pytest.raises(BadRequest, match="needs a model with one input"):
        parse_infer(bytes(8), "0", two, 8)
    with pytest.raises(BadRequest, match="BYTES"):
        parse_infer(bytes(8), "0", _card(TensorSpec("s", "BYTES", (-1,))), 8)
    with pytest.raises(BadRequest, match="dynamic axes"):
        parse_infer(bytes(8), "0", _card(TensorSpec("x", "FP32", (-1, -1))), 8)
    req = parse_infer(np.arange(4, dtype=np.float32).tobytes(), " 0 ", _card(TensorSpec("x", "FP32", (-1, 4))), 1)
    assert req.inputs["x"].tolist() == [[0.0, 1.0, 2.0, 3.0]] and req.timeout_us() is None
