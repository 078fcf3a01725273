"""The infer route as plain ASGI, in front of the FastAPI app that serves everything else.

Inference is the one hot path: FastAPI's middleware stack, routing and dependency solving cost
about 0.1 ms of event-loop CPU per request, and on a small instance that CPU is taken from the
model (measured by ``benchmarks/worker_throughput.py``). Everything else (health, metadata,
metrics, errors for unknown routes) stays in FastAPI, where clarity matters more than microseconds.
"""

from __future__ import annotations

import re
import time

from ec2_worker.app_state import VERSION, WorkerState, check_version
from inference.asgi import (
    ASGIApp,
    ClientDisconnected,
    Headers,
    Receive,
    Scope,
    Send,
    error_response,
    header,
    read_body,
    respond,
)
from inference.codec import HEADER_LENGTH, decode_request, encode_response
from inference.errors import InferenceError, ModelNotFound, Overloaded

INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


async def refuse_wrong_method(scope: Scope, send: Send) -> bool:
    """An infer path asked with another method than POST: 405 with ``Allow: POST`` (the path exists;
    "no route" would send the user looking for a typo). Returns whether it answered."""
    if scope["type"] != "http" or scope["method"] == "POST" or not INFER_PATH.match(scope["path"]):
        return False
    status, body, headers = error_response(405, f"{scope['method']} is not allowed on {scope['path']}: use POST")
    await respond(send, status, body, [*headers, (b"allow", b"POST")])
    return True


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
                except ClientDisconnected:
                    return
                await respond(send, status, body, headers)
                return
        if not await refuse_wrong_method(scope, send):
            await self.fallback(scope, receive, send)

    async def handle(self, model: str, version: str, scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
        state, m = self.state, self.state.metrics
        t0 = time.perf_counter()
        labels = (("model", model), ("version", VERSION))
        try:
            sm = state.get(model)
            check_version(model, version)
            batcher = state.batcher(model)
            body = await read_body(scope, receive, state.settings.max_body_bytes)
            req = decode_request(body, header(scope, HEADER_LENGTH.encode()))
            assert sm.model is not None
            sm.model.check_inputs(req.inputs, req.datatypes)
            fut = batcher.submit(req.inputs, req.timeout_us())
        except InferenceError as e:
            if isinstance(e, Overloaded):
                m.rejected.inc(labels)
            if not isinstance(e, ModelNotFound):  # unknown names would grow label sets without bound
                m.request_failure.inc(labels + (("reason", e.__class__.__name__),))
            return error_response(e.status, e.message, e.retry_after_s)
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
            return error_response(e.status, e.message, e.retry_after_s)
        except Exception as e:  # noqa: BLE001 - an accepted request always gets an answer
            m.request_failure.inc(labels + (("reason", "InternalError"),))
            return error_response(500, f"internal error: {type(e).__name__}: {e}")
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
