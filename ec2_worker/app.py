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
from dataclasses import asdict

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ec2_worker.app_state import VERSION, WorkerState, check_version
from ec2_worker.batcher import BatchingConfig, BatchRecord, DynamicBatcher
from ec2_worker.infer_route import InferRoute
from inference.errors import BadRequest, InferenceError
from inference.runtime import OnnxModel

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
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(e).__name__}: {e}")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(400, f"{where}: {first.get('msg')}" if where else str(first.get("msg")))


def create_public_app(state: WorkerState) -> InferRoute:
    """FastAPI for health, metadata and metrics, behind the plain-ASGI infer route (the hot path)."""
    app = FastAPI(title="mark ec2 worker", docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_handlers(app)
    m = state.metrics

    @app.get("/v2/health/live")
    async def live() -> Response:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)

    @app.get("/v2")
    async def server_metadata() -> Response:
        return JSONResponse(
            {"name": "mark-ec2-worker", "version": "0.1.0", "extensions": ["binary_tensor_data", "parameters"]}
        )

    @app.get("/v2/models/{model}")
    @app.get("/v2/models/{model}/versions/{version}")
    async def model_metadata(model: str, version: str = VERSION) -> Response:
        sm = state.get(model)
        check_version(model, version)
        return JSONResponse(sm.card.kserve_metadata(VERSION))

    @app.get("/v2/models/{model}/config")
    @app.get("/v2/models/{model}/versions/{version}/config")
    async def model_config(model: str, version: str = VERSION) -> Response:
        sm = state.get(model)
        check_version(model, version)
        cfg = sm.batcher.config if sm.batcher is not None else state.settings  # loading: as configured
        return JSONResponse(sm.card.triton_config(cfg.max_batch_size, cfg.batch_timeout_ms))

    @app.get("/v2/models/{model}/ready")
    @app.get("/v2/models/{model}/versions/{version}/ready")
    async def model_ready(model: str, version: str = VERSION) -> Response:
        sm = state.get(model)
        check_version(model, version)
        ok = sm.ready and not state.draining
        body = {"name": model, "ready": ok} | ({"error": sm.error} if sm.error else {})
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(m.render(), media_type="text/plain; version=0.0.4")

    return InferRoute(state, app)


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
    labels = (("model", model), ("version", VERSION))
    state.metrics.exec_count.inc(labels)
    state.metrics.inference_count.inc(labels, rec.rows)
    state.metrics.batch_size.observe(labels, rec.rows)
    state.metrics.compute_duration.observe(labels, rec.compute_s)
