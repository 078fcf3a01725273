"""The infer route as plain ASGI, in front of the FastAPI app that serves everything else.

Inference is the one hot path: FastAPI's middleware stack, routing and dependency solving cost
about 0.1 ms of event-loop CPU per request, and on a small instance that CPU is taken from the
model (measured by ``benchmarks/worker_throughput.py``). Everything else (health, metadata,
metrics, errors for unknown routes) stays in FastAPI, where clarity matters more than microseconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from ec2_worker.app_state import VERSION, WorkerState, check_version
from inference.codec import HEADER_LENGTH, decode_request, encode_response
from inference.errors import BadRequest, InferenceError, ModelNotFound, Overloaded, PayloadTooLarge

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing was accepted, nothing to answer."""


def error_body(status: int, message: str, retry_after_s: float | None = None) -> tuple[int, bytes, list]:
    headers = [(b"content-type", b"application/json")]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, int(retry_after_s))).encode()))
    return status, orjson.dumps({"error": message}), headers


class InferRoute:
    def __init__(self, state: WorkerState, fallback: ASGIApp) -> None:
        self.state = state
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = INFER_PATH.match(scope["path"])
            if match:
                try:
                    status, body, headers = await self.handle(match[1], match[2] or VERSION, scope, receive)
                except _Disconnected:
                    return
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.fallback(scope, receive, send)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        """The body, refusing (413) as soon as it passes the limit: never buffers an oversized upload."""
        limit = self.state.settings.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise BadRequest(f"Content-Length must be an integer, got {declared!r}") from None
            if size > limit:
                raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _Disconnected
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def handle(self, model: str, version: str, scope: Scope, receive: Receive) -> tuple[int, bytes, list]:
        state, m = self.state, self.state.metrics
        t0 = time.perf_counter()
        labels = (("model", model), ("version", VERSION))
        try:
            sm = state.get(model)
            check_version(model, version)
            batcher = state.batcher(model)
            body = await self._body(scope, receive)
            req = decode_request(body, _header(scope, HEADER_LENGTH.encode()))
            assert sm.model is not None
            sm.model.check_inputs(req.inputs, req.datatypes)
            fut = batcher.submit(req.inputs, req.timeout_us())
        except InferenceError as e:
            if isinstance(e, Overloaded):
                m.rejected.inc(labels)
            if not isinstance(e, ModelNotFound):  # unknown names would grow label sets without bound
                m.request_failure.inc(labels + (("reason", e.__class__.__name__),))
            return error_body(e.status, e.message, e.retry_after_s)
        m.pending.inc(labels)
        try:
            outcome = await fut
            out_body, out_headers = encode_response(
                model,
                VERSION,
                outcome.outputs,
                req,
                {"batch_rows": outcome.batch_rows, "queue_us": int(outcome.queue_s * 1e6)},
            )
        except InferenceError as e:
            m.request_failure.inc(labels + (("reason", e.__class__.__name__),))
            return error_body(e.status, e.message, e.retry_after_s)
        except Exception as e:  # noqa: BLE001 - an accepted request always gets an answer
            m.request_failure.inc(labels + (("reason", "InternalError"),))
            return error_body(500, f"internal error: {type(e).__name__}: {e}")
        finally:
            m.pending.inc(labels, -1)
        elapsed = time.perf_counter() - t0
        m.request_success.inc(labels)
        m.request_duration_us.inc(labels, elapsed * 1e6)
        m.queue_duration_us.inc(labels, outcome.queue_s * 1e6)
        m.compute_infer_duration_us.inc(labels, outcome.compute_s * 1e6)
        m.request_duration.observe(labels, elapsed)
        m.queue_duration.observe(labels, outcome.queue_s)
        if outcome.late:
            m.late.inc(labels)
        return 200, out_body, [(k.encode(), v.encode()) for k, v in out_headers.items()]


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return bytes(v).decode("latin-1")
    return None
