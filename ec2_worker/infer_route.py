"""The worker's infer operation: parse and check (inference/v2.py), admit to the batcher, answer.

Every outcome is counted in Triton's metrics: ``nv_inference_request_success``, or
``nv_inference_request_failure`` with Triton's reason (REJECTED, CANCELED, BACKEND, OTHER). Requests
for a model this worker does not serve are counted under ``model="(unknown)"`` (``UNKNOWN_MODEL``).

Every answer from the model's batcher (200, or 503 when its queue is full) carries the queue state
the front doors fold into their dispatch (``orchestrator/frontdoor/dispatcher.py``), since a front
door sees only the requests it sent itself: ``x-mark-queue-depth`` (requests waiting for a batch
when this answer was written, this one no longer among them) and ``x-mark-queue-bound`` (the
``max_queue`` past which admission answers 503). Two small integers per answer: cheap on the hot path.
"""

from __future__ import annotations

import time

from ec2_worker.app_state import WorkerState
from ec2_worker.batcher import DynamicBatcher
from ec2_worker.metrics import Labels
from inference.asgi import ClientDisconnected, Receive, Scope, read_body
from inference.codec import HEADER_LENGTH, encode_response
from inference.errors import Overloaded
from inference.v2 import (
    Reply,
    Resolved,
    body_limit_reason,
    check_version,
    error_reply,
    failure_reason,
    max_request_bytes,
    metric_labels,
    parse_infer,
    single_header,
)

_IHCL = HEADER_LENGTH.encode()
QUEUE_DEPTH = "x-mark-queue-depth"
QUEUE_BOUND = "x-mark-queue-bound"


def queue_headers(batcher: DynamicBatcher) -> tuple[tuple[str, str], tuple[str, str]]:
    """The batcher's queue state as response headers: depth and bound, in requests."""
    return (QUEUE_DEPTH, str(batcher.queued)), (QUEUE_BOUND, str(batcher.config.max_queue))


class WorkerInfer:
    def __init__(self, state: WorkerState) -> None:
        self.state = state

    async def __call__(self, r: Resolved, scope: Scope, receive: Receive) -> Reply:
        state, m = self.state, self.state.metrics
        model = r.model or ""
        labels: Labels = metric_labels(model, state.models)
        t0 = time.perf_counter()
        pending = False
        batcher: DynamicBatcher | None = None
        try:
            sm = state.get(model)
            check_version(sm.card, r.version)
            labels = metric_labels(model, state.models, sm.card.version)
            if state.draining:
                raise Overloaded("worker is draining and accepts no new requests", retry_after_s=1)
            batcher = state.batcher(model)
            rows, ceiling = batcher.config.max_batch_size, state.settings.max_body_bytes
            limit = max_request_bytes(sm.card, rows, ceiling)
            body = await read_body(scope, receive, limit, body_limit_reason(sm.card, rows))
            req = parse_infer(
                body,
                single_header(scope, _IHCL),
                sm.card,
                rows,
                content_encoding=single_header(scope, b"content-encoding"),
                body_limit=limit,
            )
            fut = batcher.submit(req.inputs, req.timeout_us())
            m.pending.inc(labels)
            pending = True
            outcome = await fut
            out_body, out_headers = encode_response(
                model,
                sm.card.version,
                outcome.outputs,
                req,
                {"batch_rows": outcome.batch_rows, "queue_us": int(outcome.queue_s * 1e6)},
            )
        except ClientDisconnected as e:
            m.request_failure.inc(labels + (("reason", failure_reason(e)),))
            raise
        except Exception as e:  # noqa: BLE001 - every outcome is answered and counted
            m.request_failure.inc(labels + (("reason", failure_reason(e)),))
            reply = error_reply(e)
            if isinstance(e, Overloaded):
                m.rejected.inc(labels)
                if batcher is not None:
                    reply = Reply(reply.status, reply.body, (*reply.headers, *queue_headers(batcher)))
            return reply
        finally:
            if pending:
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
        assert batcher is not None  # set before the batcher was awaited
        return Reply(200, out_body, (*out_headers.items(), *queue_headers(batcher)))
