"""The worker's two HTTP apps: the public KServe v2 API and the internal control API.

The public app is what clients and the front door call. The internal app changes batching at run
time and exposes batch records; it is a separate app bound to a separate (loopback by default)
port, and when ``MARK_WORKER_ADMIN_TOKEN`` is set it also requires that token, so reaching the
public port never lets anyone reconfigure the worker.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import os
import threading
from dataclasses import asdict, dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ec2_worker.app_state import WorkerState
from ec2_worker.batcher import BatchingConfig, BatchRecord, DynamicBatcher
from ec2_worker.infer_route import WorkerInfer
from inference.cards import ModelCard
from inference.errors import BadRequest, InferenceError
from inference.runtime import OnnxModel
from inference.v2 import Readiness, Reply, V2App, error_reply

ADMIN_TOKEN_ENV = "MARK_WORKER_ADMIN_TOKEN"


def _error(status: int, message: str, retry_after_s: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, int(retry_after_s)))} if retry_after_s is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": "..."}``: the shape tritonclient decodes."""

    @app.exception_handler(InferenceError)
    async def _inference_error(_: Request, e: InferenceError) -> JSONResponse:
        return _error(e.status, e.message, e.retry_after_s)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        msg = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return _error(e.status_code, msg)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> Response:
        reply = error_reply(e)  # logged with a reference; no internals in the body
        return Response(reply.body, reply.status, media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(400, f"{where}: {first.get('msg')}" if where else str(first.get("msg")))


@dataclass
class WorkerServer:
    """The worker's side of the v2 surface (inference/v2.py): readiness, cards and batching limits."""

    state: WorkerState
    name: str = "mark-ec2-worker"

    def server_ready(self) -> Readiness:
        return Readiness(self.state.ready)

    def card(self, model: str) -> ModelCard:
        return self.state.get(model).card

    def model_ready(self, model: str) -> Readiness:
        sm = self.state.get(model)
        return Readiness(sm.ready and not self.state.draining, sm.error)

    def batching(self, model: str) -> tuple[int, float]:
        sm = self.state.get(model)
        cfg = sm.batcher.config if sm.batcher is not None else self.state.settings  # loading: as configured
        return cfg.max_batch_size, cfg.batch_timeout_ms


def create_public_app(state: WorkerState) -> V2App:
    """The public port: the v2 surface plus ``/metrics`` (Triton's metric names)."""

    def metrics() -> Reply:
        return Reply(200, state.metrics.render().encode(), (("content-type", "text/plain; version=0.0.4"),))

    return V2App(WorkerServer(state), WorkerInfer(state), extra={"/metrics": metrics})


class BatchingUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    batch_timeout_ms: float | None = Field(default=None, ge=0, le=60_000)
    max_queue: int | None = Field(default=None, ge=1, le=1_000_000)
    default_deadline_ms: float | None = Field(default=None, gt=0, le=3_600_000)


def create_admin_app(state: WorkerState) -> FastAPI:
    app = FastAPI(title="mark ec2 worker (internal)", docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_handlers(app)
    token = os.environ.get(ADMIN_TOKEN_ENV)

    @app.middleware("http")
    async def _auth(request: Request, call_next):  # type: ignore[no-untyped-def]
        if token and not hmac.compare_digest(request.headers.get("x-mark-admin-token", ""), token):
            return _error(401, "missing or wrong X-Mark-Admin-Token")
        return await call_next(request)

    @app.get("/internal/models/{model}/batching")
    async def get_batching(model: str) -> Response:
        return JSONResponse(asdict(state.batcher(model).config))

    @app.put("/internal/models/{model}/batching")
    async def put_batching(model: str, request: Request) -> Response:
        try:  # parse the body as JSON whatever the Content-Type (curl -d sends a form type)
            update = BatchingUpdate.model_validate_json(await request.body())
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise BadRequest(f"{where + ': ' if where else ''}{err['msg']}") from None
        changes = update.model_dump(exclude_none=True)
        if not changes:
            raise BadRequest("give at least one of max_batch_size, batch_timeout_ms, max_queue, default_deadline_ms")
        return JSONResponse(asdict(state.batcher(model).reconfigure(**changes)))

    @app.get("/internal/models/{model}/batches")
    async def batches(model: str, limit: int = 1000) -> Response:
        records = list(state.batcher(model).records)[-max(1, min(limit, 100_000)) :]
        return JSONResponse({"model": model, "batches": [r.to_json() for r in records]})

    @app.post("/internal/drain")
    async def drain() -> Response:
        """Stop accepting work (readiness goes false) and finish what was accepted."""
        state.draining = True
        await asyncio.gather(*(sm.batcher.close() for sm in state.models.values() if sm.batcher))
        return JSONResponse({"drained": True})

    return app


def load_models(state: WorkerState, loop: asyncio.AbstractEventLoop) -> None:
    """Load every model in a background thread; each becomes ready (batcher started) when loaded.

    Liveness answers from the first moment; readiness only once all models are loaded, which is
    what the front door waits for after an instance boots.
    """
    s = state.settings
    cfg = BatchingConfig(
        max_batch_size=s.max_batch_size,
        batch_timeout_ms=s.batch_timeout_ms,
        max_queue=s.max_queue,
        default_deadline_ms=s.rt_max_ms,
    )

    def _start(name: str, model: OnnxModel) -> None:
        sm = state.models[name]
        sm.model = model
        batcher = DynamicBatcher(model, cfg, slots=s.slots, on_batch=functools.partial(_record, state, name))
        batcher.start()
        sm.batcher = batcher

    def _work() -> None:
        for name, sm in state.models.items():
            try:
                model = OnnxModel(state.repo.onnx_path(name), intra_op_threads=s.threads, spin=s.spin)
                loop.call_soon_threadsafe(_start, name, model)
            except Exception as e:  # noqa: BLE001 - reported through readiness, not a crash
                sm.error = f"failed to load: {e}"

    threading.Thread(target=_work, name="model-loader", daemon=True).start()


def _record(state: WorkerState, model: str, rec: BatchRecord) -> None:
    labels = (("model", model), ("version", state.models[model].card.version))
    state.metrics.exec_count.inc(labels)
    state.metrics.inference_count.inc(labels, rec.rows)
    state.metrics.batch_size.observe(labels, rec.rows)
    state.metrics.compute_duration.observe(labels, rec.compute_s)
