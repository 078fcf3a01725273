"""The front door's HTTP face: KServe v2 on 127.0.0.1:8080 by default.

The v2 surface is inference/v2.py's (the same routes as the worker and Lambda); infer bodies go to
the dispatcher untouched (the worker or Lambda decodes them, so the front door refuses exactly what
they refuse). Metadata comes from the model cards, so it answers even while no worker is up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from ec2_worker.metrics import Counter, Gauge, Labels
from inference.asgi import ClientDisconnected, Receive, Scope, Send, header, read_body
from inference.cards import ModelCard
from inference.codec import HEADER_LENGTH
from inference.repository import ModelRepository, validate_name
from inference.v2 import (
    Readiness,
    Reply,
    Resolved,
    V2App,
    body_limit_reason,
    check_version,
    error_reply,
    failure_reason,
    max_request_bytes,
    metric_labels,
    single_header,
    status_reason,
    unknown_model,
)
from orchestrator.frontdoor.arrivals import ArrivalRecorder
from orchestrator.frontdoor.auth import ApiKeys
from orchestrator.frontdoor.dispatcher import Dispatcher

_SINGLE = (HEADER_LENGTH.encode(), b"content-encoding")  # forwarded; ambiguous when repeated
_FORWARD = (b"content-type",)


BUDGET_PARSE_MAX_BYTES = 1024 * 1024


def request_budget_ms(body: bytes, headers: dict[str, str], rt_max_ms: float) -> float:
    """RTmax, or the client's tighter Triton ``timeout`` (µs) when it sent one.

    The JSON header is parsed only when it mentions ``"timeout"`` and is at most 1 MiB: most requests
    don't, and the front door must not pay a JSON parse per request (bodies are forwarded unparsed),
    nor a large one on its event loop. A compressed body is not inflated here. Where the front door
    does not read the timeout, the worker's batcher still holds the request to it.
    """
    if headers.get("content-encoding", "identity").strip().lower() != "identity":
        return rt_max_ms
    header_length = headers.get(HEADER_LENGTH)
    try:
        head = body[: int(header_length)] if header_length else body
    except ValueError:
        return rt_max_ms  # the worker rejects the bad header with the right message
    if len(head) > BUDGET_PARSE_MAX_BYTES or b'"timeout"' not in head:
        return rt_max_ms
    try:
        t = orjson.loads(head).get("parameters", {}).get("timeout")
    except (orjson.JSONDecodeError, AttributeError):
        return rt_max_ms
    if isinstance(t, int | float) and not isinstance(t, bool) and t > 0:
        return min(rt_max_ms, t / 1000.0)
    return rt_max_ms


class FrontDoorServer:
    """The front door's side of the v2 surface: metadata from the model cards (it answers while no
    worker is up), readiness from the fleet and Lambda, batching as every instance is started with.

    Cards are read once, here: a missing one fails the start, and no request reads the disk.
    """

    name = "mark-frontdoor"

    def __init__(self, dispatcher: Dispatcher, repo: ModelRepository, models: list[str]) -> None:
        self.dispatcher = dispatcher
        self.models = models
        self.cards = {m: repo.card(m) for m in models}

    def server_ready(self) -> Readiness:
        d = self.dispatcher
        return Readiness(bool(d.ready_workers()) or d.function is not None)

    def card(self, model: str) -> ModelCard:
        validate_name(model)
        if model not in self.cards:
            raise unknown_model(model, self.models)
        return self.cards[model]

    def model_ready(self, model: str) -> Readiness:
        self.card(model)
        return self.server_ready()

    def batching(self, model: str) -> tuple[int, float]:
        return self.dispatcher.config.max_batch, self.dispatcher.config.batch_timeout_ms


class FrontDoor:
    """The front door's ASGI app: the v2 surface (inference/v2.py) with infer forwarded by the
    dispatcher, ``/metrics``, and API keys on every route but health when ``api_keys`` is set.

    ``arrivals``, when set, counts each inference request admitted to dispatch (known model and version,
    body read: the demand the forecaster learns, whatever the fleet then answers) per second;
    ``on_arrival``, when set, is called for each of the same requests (the live controller's counter
    of arrivals per second of the run's clock, ``controller/observe.py``)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        repo: ModelRepository,
        models: list[str],
        *,
        max_body_bytes: int = 64 * 1024 * 1024,
        cost: Callable[[], dict[str, float]] | None = None,
        api_keys: ApiKeys | None = None,
        arrivals: ArrivalRecorder | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.arrivals = arrivals
        self.on_arrival: Callable[[], None] | None = None
        self.server = FrontDoorServer(dispatcher, repo, models)
        self.models = models
        self.max_body_bytes = max_body_bytes
        self.cost = cost
        self.api_keys = api_keys
        self.success = Counter("nv_inference_request_success", "Inference requests answered 200, by model")
        self.failure = Counter(
            "nv_inference_request_failure", "Inference requests answered with an error, by model and Triton reason"
        )
        self.app = V2App(self.server, self.infer, extra={"/metrics": self._metrics}, authorize=api_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def infer(self, r: Resolved, scope: Scope, receive: Receive) -> Reply:
        model = r.model or ""
        labels: Labels = metric_labels(model, self.models)
        try:
            card = self.server.card(model)
            check_version(card, r.version)
            labels = metric_labels(model, self.models, card.version)
            rows = self.dispatcher.config.max_batch  # what every instance is started with
            limit = max_request_bytes(card, rows, self.max_body_bytes)
            body = await read_body(scope, receive, limit, body_limit_reason(card, rows))
            headers = {k.decode(): v for k in _FORWARD if (v := header(scope, k)) is not None}
            for name in _SINGLE:  # refused when sent twice, as by the worker
                if (value := single_header(scope, name)) is not None:
                    headers[name.decode()] = value
            budget_ms = request_budget_ms(body, headers, self.dispatcher.config.rt_max_ms)
            if self.arrivals is not None:
                self.arrivals.record()
            if self.on_arrival is not None:
                self.on_arrival()
            answer = await self.dispatcher.handle(model, scope["path"], body, headers, budget_ms)
        except ClientDisconnected as e:
            self.failure.inc(labels + (("reason", failure_reason(e)),))
            raise
        except Exception as e:  # noqa: BLE001 - answered and counted like every other failure
            self.failure.inc(labels + (("reason", failure_reason(e)),))
            reply = error_reply(e)
            return Reply(reply.status, reply.body, (*reply.headers, ("x-mark-route", "frontdoor")))
        if answer.status == 200:
            self.success.inc(labels)
        else:
            self.failure.inc(labels + (("reason", status_reason(answer.status)),))
        headers_out = tuple((k.decode(), v.decode("latin-1")) for k, v in answer.headers)
        return Reply(answer.status, answer.body, (*headers_out, ("x-mark-route", answer.route)))

    def _metrics(self) -> Reply:
        return Reply(200, self.render_metrics().encode(), (("content-type", "text/plain; version=0.0.4"),))

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
        refusals = Counter(
            "mark_frontdoor_worker_refusals",
            "Requests a worker refused (503: draining, queue full, loading) and dispatch sent elsewhere",
        )
        refusals.inc((), d.refusals)
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
        families = [self.success, self.failure, requests, decisions, retries, refusals, slo, p99, queue]
        if self.api_keys is not None:
            auth = Counter("mark_frontdoor_auth_failures", "Requests refused with 401: missing or wrong API key")
            auth.inc((), self.api_keys.failures)
            families.append(auth)
        if d.function is not None:
            st = d.function.stats()
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
