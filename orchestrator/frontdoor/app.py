"""The front door's HTTP face: KServe v2 on 127.0.0.1:8080 by default.

Infer is plain ASGI straight into the dispatcher (the hot path, bodies forwarded untouched);
health, metadata and metrics are FastAPI. Metadata comes from the model cards, so it answers even
while no worker is up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ec2_worker.app_state import check_version
from ec2_worker.infer_route import INFER_PATH, refuse_wrong_method
from ec2_worker.metrics import Counter, Gauge
from inference.asgi import ClientDisconnected, Receive, Scope, Send, error_response, header, read_body, respond
from inference.cards import ModelCard
from inference.codec import HEADER_LENGTH
from inference.errors import InferenceError, ModelNotFound
from inference.repository import ModelRepository
from orchestrator.frontdoor.dispatcher import Dispatcher

_FORWARD = (b"content-type", HEADER_LENGTH.encode())


def request_budget_ms(body: bytes, header_length: str | None, rt_max_ms: float) -> float:
    """RTmax, or the client's tighter Triton ``timeout`` (µs) when it sent one.

    The JSON header is parsed only when it mentions ``"timeout"``: most requests don't, and the
    front door must not pay a JSON parse per request (bodies are forwarded unparsed).
    """
    try:
        head = body[: int(header_length)] if header_length else body
    except ValueError:
        return rt_max_ms  # the worker rejects the bad header with the right message
    if b'"timeout"' not in head:
        return rt_max_ms
    try:
        t = orjson.loads(head).get("parameters", {}).get("timeout")
    except (orjson.JSONDecodeError, AttributeError):
        return rt_max_ms
    if isinstance(t, int | float) and not isinstance(t, bool) and t > 0:
        return min(rt_max_ms, t / 1000.0)
    return rt_max_ms


class FrontDoor:
    def __init__(
        self,
        dispatcher: Dispatcher,
        repo: ModelRepository,
        models: list[str],
        *,
        max_body_bytes: int = 64 * 1024 * 1024,
        cost: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.repo = repo
        self.models = models
        self.max_body_bytes = max_body_bytes
        self.cost = cost
        self.fallback = self._fastapi()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = INFER_PATH.match(scope["path"])
            if match:
                try:
                    body = await read_body(scope, receive, self.max_body_bytes)
                except ClientDisconnected:
                    return
                except InferenceError as e:
                    await respond(send, *error_response(e.status, e.message, e.retry_after_s))
                    return
                headers = {k.decode(): v for k in _FORWARD if (v := header(scope, k)) is not None}
                budget_ms = request_budget_ms(body, headers.get(HEADER_LENGTH), self.dispatcher.config.rt_max_ms)
                answer = await self.dispatcher.handle(match[1], scope["path"], body, headers, budget_ms)
                route = (b"x-mark-route", answer.route.encode())  # instance | lambda | frontdoor
                await respond(send, answer.status, answer.body, [*answer.headers, route])
                return
        if not await refuse_wrong_method(scope, send):
            await self.fallback(scope, receive, send)

    def _fastapi(self) -> FastAPI:
        app = FastAPI(title="mark front door", docs_url=None, redoc_url=None, openapi_url=None)
        d = self.dispatcher

        @app.exception_handler(InferenceError)
        async def _inference_error(_: Request, e: InferenceError) -> JSONResponse:
            return JSONResponse({"error": e.message}, status_code=e.status)

        @app.exception_handler(StarletteHTTPException)
        async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
            msg = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
            return JSONResponse({"error": msg}, status_code=e.status_code)

        @app.get("/v2/health/live")
        async def live() -> Response:
            return JSONResponse({"live": True})

        @app.get("/v2/health/ready")
        async def ready() -> Response:
            ok = bool(d.ready_workers()) or d.function is not None
            return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

        @app.get("/v2")
        async def server_metadata() -> Response:
            return JSONResponse({"name": "mark-frontdoor", "version": "0.1.0", "extensions": ["binary_tensor_data"]})

        @app.get("/v2/models/{model}")
        @app.get("/v2/models/{model}/versions/{version}")
        async def model_metadata(model: str, version: str = "1") -> Response:
            return JSONResponse(self._card(model, version).kserve_metadata())

        @app.get("/v2/models/{model}/config")
        @app.get("/v2/models/{model}/versions/{version}/config")
        async def model_config(model: str, version: str = "1") -> Response:
            cfg = d.config  # what every instance is started with
            return JSONResponse(self._card(model, version).triton_config(cfg.max_batch, cfg.batch_timeout_ms))

        @app.get("/v2/models/{model}/ready")
        async def model_ready(model: str) -> Response:
            self._card(model)
            ok = bool(d.ready_workers()) or d.function is not None
            return JSONResponse({"name": model, "ready": ok}, status_code=200 if ok else 503)

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(self.render_metrics(), media_type="text/plain; version=0.0.4")

        return app

    def _card(self, model: str, version: str = "1") -> ModelCard:
        if model not in self.models:
            raise ModelNotFound(f"unknown model {model!r}; this deployment serves {sorted(self.models)}")
        check_version(model, version)
        return self.repo.card(model)

    def render_metrics(self) -> str:
        d = self.dispatcher
        requests = Counter(
            "mark_frontdoor_requests", "Requests answered, by route (instance, lambda, rejected, failed)"
        )
        for route, n in d.by_route.items():
            requests.inc((("route", route),), n)
        decisions = Counter("mark_dispatch_decisions", "Dispatch decisions by reason (DESIGN.md §3 rule)")
        for reason, n in sorted(d.decisions.items()):
            decisions.inc((("reason", reason),), n)
        retries = Counter("mark_frontdoor_retries", "Requests retried because their worker died mid-flight")
        retries.inc((), d.retries)
        slo = Gauge("mark_slo_attainment", "Share of requests answered within RTmax, over a sliding window")
        p99 = Gauge("mark_latency_p99_ms", "p99 latency through the front door over a sliding window")
        now = time.monotonic()
        for w in d.slo.windows_s:
            stats = d.slo.window(now, w)
            if stats.attainment is not None:
                slo.set((("window", f"{w:g}s"),), stats.attainment)
                p99.set((("window", f"{w:g}s"),), stats.p99_ms or 0.0)
        queue = Gauge("mark_worker_outstanding", "Requests sent to a worker and not yet answered")
        for wid, n in d.outstanding.items():
            queue.set((("instance", wid),), n)
        families = [requests, decisions, retries, slo, p99, queue]
        lambda_stats = getattr(d.function, "stats", None)
        if lambda_stats is not None:
            st = lambda_stats()
            lam = Counter("mark_lambda_cold_starts", "Lambda cold starts (new execution environments)")
            lam.inc((), st.cold_starts)
            inv = Counter("mark_lambda_invocations", "Lambda invocations")
            inv.inc((), st.invocations)
            thr = Counter("mark_lambda_throttles", "Lambda invocations refused at the concurrency limit")
            thr.inc((), st.throttles)
            warm = Gauge("mark_lambda_environments", "Lambda execution environments, by state")
            warm.set((("state", "busy"),), st.busy)
            warm.set((("state", "idle"),), st.idle)
            families += [lam, inv, thr, warm]
        if self.cost:
            cost = Gauge("mark_cost_usd", "Cost so far, by component")
            for k, v in self.cost().items():
                cost.set((("component", k),), v)
            families.append(cost)
        return "\n".join(line for f in families for line in f.render()) + "\n"
