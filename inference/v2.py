"""The one KServe v2 / Triton HTTP surface, served alike by the EC2 worker, the front door and Lambda.

What lives here, once: the route table (``ROUTES``), path resolution (404 for an unknown path, 405
with ``Allow`` for a known path asked with the wrong method), version handling, the health,
metadata, readiness and Triton model-configuration answers, the infer request's parsing and
checks against the model card, the error body (``{"error": "..."}``, the shape tritonclient
decodes), and the failure reasons of Triton's ``nv_inference_request_failure``.

What each surface brings: a :class:`Server` (readiness, cards, batching limits) and its own way of
executing an infer request (the worker's batcher, the front door's dispatch, Lambda's one-shot run).
The worker and the front door are plain ASGI (:class:`V2App`); the Lambda handler calls
:func:`resolve` and :func:`answer` from its event. A test asserts the three expose the same routes.

Sources: KServe v2 / Open Inference Protocol REST spec (health, server and model metadata, model
ready, infer, versioned forms); Triton's HTTP API (model configuration extension
``/v2/models/{m}[/versions/{v}]/config``, binary tensor data extension incl. the raw binary request,
``timeout`` parameter where 0 means none, ``max_batch_size`` limit, failure reasons REJECTED /
CANCELED / BACKEND / OTHER in its metrics documentation).
"""

from __future__ import annotations

import logging
import math
import re
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from inference.asgi import ClientDisconnected, Receive, Scope, Send, respond
from inference.cards import ModelCard, TensorSpec
from inference.codec import V2_TO_NUMPY, InferRequest, decode_raw_binary, decode_request
from inference.errors import (
    BadRequest,
    InferenceError,
    MethodNotAllowed,
    ModelFailed,
    ModelNotFound,
    NoRoute,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
)

log = logging.getLogger("mark.v2")
MAX_ERROR_CHARS = 1000

SERVER_VERSION = "0.1.0"
# Triton's extension names (server metadata). "model_configuration": GET .../config.
EXTENSIONS = ("binary_tensor_data", "parameters", "model_configuration")

# Triton's nv_inference_request_failure reasons.
REJECTED, CANCELED, BACKEND, OTHER = "REJECTED", "CANCELED", "BACKEND", "OTHER"
# The model label of requests for a model that is not served: client-chosen names never become
# label values, so label sets stay bounded (parentheses cannot appear in a model name).
UNKNOWN_MODEL = "(unknown)"


@dataclass(frozen=True)
class Route:
    """One route: HTTP method, path template (``{model}``, ``{version}``) and the operation it runs."""

    method: str
    path: str
    op: str


_UNVERSIONED, _VERSIONED = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2/health/live", "live"),
    Route("GET", "/v2/health/ready", "ready"),
    Route("GET", "/v2", "server_metadata"),
    *(
        Route(method, base + suffix, op)
        for base in (_UNVERSIONED, _VERSIONED)
        for method, suffix, op in (
            ("GET", "", "model_metadata"),
            ("GET", "/ready", "model_ready"),
            ("GET", "/config", "model_config"),
            ("POST", "/infer", "infer"),
        )
    ),
)
HEALTH_OPS = frozenset({"live", "ready"})  # open to load balancers even when API keys are required


def _compile(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")


_COMPILED = tuple((r, _compile(r.path)) for r in ROUTES)
HEALTH_PATHS = frozenset(r.path for r in ROUTES if r.op in HEALTH_OPS)


@dataclass(frozen=True)
class Resolved:
    op: str
    model: str | None = None
    version: str | None = None  # None: the path names no version (the served one)


def resolve(method: str, path: str) -> Resolved:
    """The operation for ``method path``.

    Raises:
        NoRoute: no v2 route has this path (404).
        MethodNotAllowed: the path exists for other methods (405, ``Allow`` lists them).
    """
    allowed: list[str] = []
    for route, pattern in _COMPILED:
        m = pattern.match(path)
        if m is None:
            continue
        if route.method == method:
            return Resolved(route.op, m.groupdict().get("model"), m.groupdict().get("version"))
        allowed.append(route.method)
    if allowed:
        allow = ", ".join(sorted(set(allowed)))
        raise MethodNotAllowed(f"{method} is not allowed on {path}: use {allow}", headers=(("allow", allow),))
    raise NoRoute(f"no route {method} {path}")


@dataclass(frozen=True)
class Readiness:
    ready: bool
    error: str | None = None


class Server(Protocol):
    """What a surface knows; :func:`answer` builds every non-infer answer from it."""

    name: str

    def server_ready(self) -> Readiness: ...

    def card(self, model: str) -> ModelCard:
        """The served model's card. Raises ModelNotFound (naming what is served) or BadRequest (bad name)."""
        ...

    def model_ready(self, model: str) -> Readiness: ...

    def batching(self, model: str) -> tuple[int, float]:
        """(max_batch_size rows, batch timeout ms) as requests are held to now."""
        ...


def metric_labels(model: str, served: Iterable[str], version: str = "1") -> tuple[tuple[str, str], ...]:
    """Triton's (model, version) labels; a model not served is ``UNKNOWN_MODEL``, so client-chosen
    names never become label values."""
    return (("model", model if model in served else UNKNOWN_MODEL), ("version", version))


def unknown_model(name: str, served: Iterable[str]) -> ModelNotFound:
    """The one 404 for a model this server does not serve, worded alike on every surface."""
    return ModelNotFound(f"unknown model {name!r}; served here: {sorted(served)}")


def check_version(card: ModelCard, version: str | None) -> None:
    """Raises ModelNotFound when the path names a version this card is not."""
    if version is not None and version != card.version:
        raise ModelNotFound(f"model {card.name!r} has no version {version!r}; available: [{card.version!r}]")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)

    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.encode(), v.encode("latin-1")) for k, v in self.headers]


def json_reply(status: int, doc: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, orjson.dumps(doc), (("content-type", "application/json"), *headers))


def answer(server: Server, r: Resolved) -> Reply:
    """The answer to any operation but ``infer``.

    Raises:
        InferenceError: unknown model or version (404), bad name (400).
    """
    if r.op == "live":
        return json_reply(200, {"live": True})
    if r.op == "ready":
        st = server.server_ready()
        return json_reply(200 if st.ready else 503, {"ready": st.ready} | ({"error": st.error} if st.error else {}))
    if r.op == "server_metadata":
        return json_reply(200, {"name": server.name, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)})
    assert r.model is not None
    card = server.card(r.model)
    check_version(card, r.version)
    if r.op == "model_metadata":
        return json_reply(200, card.kserve_metadata(card.version))
    if r.op == "model_config":
        return json_reply(200, card.triton_config(*server.batching(r.model)))
    if r.op == "model_ready":
        st = server.model_ready(r.model)
        body = {"name": r.model, "ready": st.ready} | ({"error": st.error} if st.error else {})
        return json_reply(200 if st.ready else 503, body)
    raise NoRoute(f"operation {r.op!r} has no answer here")  # infer is the surface's own


def check_inputs(req: InferRequest, specs: Sequence[TensorSpec]) -> None:
    """Raise BadRequest naming the first missing/extra input, wrong datatype or wrong shape."""
    by_name = {s.name: s for s in specs}
    missing = [n for n in by_name if n not in req.inputs]
    extra = [n for n in req.inputs if n not in by_name]
    if missing:
        got = f", got {extra}" if extra else ""
        raise BadRequest(f"missing input(s) {missing}; the model expects {list(by_name)}{got}")
    if extra:
        raise BadRequest(f"unexpected input(s) {extra}; the model expects {list(by_name)}")
    for name, arr in req.inputs.items():
        spec = by_name[name]
        dt = req.datatypes.get(name, spec.datatype)
        if dt != spec.datatype:
            raise BadRequest(f"input {name!r} has datatype {dt}, the model expects {spec.datatype}")
        if len(arr.shape) != len(spec.shape) or any(
            want != -1 and got != want for got, want in zip(arr.shape, spec.shape, strict=True)
        ):
            raise BadRequest(
                f"input {name!r} has shape {list(arr.shape)}, the model expects {list(spec.shape)} (-1 = any)"
            )
        if arr.shape and arr.shape[0] == 0:
            raise BadRequest(f"input {name!r} has an empty batch axis")


# The largest body a valid request can need: a JSON header, plus per element the longest JSON number
# with separators and indentation (binary needs at most the item size). A bigger body cannot be a
# valid request, and refusing it unread bounds what a request costs (a JSON list of floats becomes
# ~16-32 bytes of Python objects per text byte while it is parsed).
HEADER_ALLOWANCE_BYTES = 64 * 1024
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
JSON_BYTES_PER_ELEMENT = 64


def max_request_bytes(card: ModelCard, max_batch_size: int, ceiling: int) -> int:
    """The body limit for ``card`` at ``max_batch_size`` rows, at most ``ceiling`` (the server's own).

    Models with a BYTES input or a dynamic axis besides the batch axis have no computable bound: the
    ceiling applies.
    """
    per_request = 0
    for spec in card.inputs:
        if spec.datatype == "BYTES" or spec.datatype not in V2_TO_NUMPY or any(d < 0 for d in spec.shape[1:]):
            return ceiling
        rows = max_batch_size if not spec.shape or spec.shape[0] < 0 else spec.shape[0]
        elements = math.prod(spec.shape[1:]) if spec.shape else 1
        per_request += rows * elements * max(JSON_BYTES_PER_ELEMENT, V2_TO_NUMPY[spec.datatype].itemsize)
    return min(ceiling, HEADER_ALLOWANCE_BYTES + per_request)


def body_limit_reason(card: ModelCard, max_batch_size: int) -> str:
    return f" (the most a request for {card.name!r} of up to {max_batch_size} rows can need)"


_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "identity": 0}


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body with its ``Content-Encoding`` undone (gzip, deflate: what tritonclient's
    ``request_compression_algorithm`` sends), never inflating past ``limit`` bytes.

    Raises:
        UnsupportedMediaType: another encoding (415, naming it).
        BadRequest: the data is not what the header says.
        PayloadTooLarge: the decoded body would pass ``limit``.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in _DECODERS:
        raise UnsupportedMediaType(
            f"Content-Encoding {content_encoding!r} is not supported; send gzip, deflate or an uncompressed body"
        )
    if encoding == "identity":
        return body
    wbits = _DECODERS[encoding] if encoding == "gzip" else _DECODERS[encoding] | 32  # deflate: zlib or gzip
    out = bytearray()
    rest = body
    try:
        while True:  # gzip may hold several members back to back (RFC 1952 2.2): inflate each
            d = zlib.decompressobj(wbits)
            out += d.decompress(rest, limit + 1 - len(out))
            if len(out) > limit or d.unconsumed_tail:
                raise PayloadTooLarge(f"the {encoding} body inflates past the limit of {limit} bytes")
            if not d.eof:
                raise BadRequest(f"the {encoding} body is truncated")
            rest = d.unused_data
            if not rest:
                return bytes(out)
            if encoding != "gzip":
                raise BadRequest(f"{len(rest)} bytes follow the end of the {encoding} data")
    except zlib.error as e:
        raise BadRequest(f"the body is not valid {encoding} data: {e}") from None


_IHCL_VALUE = re.compile(r"^[ \t]*[0-9]{1,18}[ \t]*$")  # HTTP's optional whitespace; at most 18 digits


def parse_infer(
    body: bytes,
    header_length: str | None,
    card: ModelCard,
    max_batch_size: int,
    *,
    content_encoding: str | None = None,
    body_limit: int | None = None,
) -> InferRequest:
    """Decode and check an infer body against the model: the same rules on every surface.

    ``Inference-Header-Content-Length: 0`` is Triton's raw binary request (the body is the single
    input's tensor, batch 1). A request with more rows than ``max_batch_size`` is refused, as Triton
    does, rather than run as one oversized batch. The ``timeout`` parameter is validated here.
    Compressed bodies (``content_encoding``) are inflated within ``body_limit`` (default: the model's
    ``max_request_bytes`` under the 64 MiB server ceiling; surfaces that read the body pass the limit
    they read it with).

    Raises:
        BadRequest: naming the field, the input or the limit.
        PayloadTooLarge: the body (or what it inflates to) passes the model's limit.
        UnsupportedMediaType: an unknown Content-Encoding.
    """
    limit = body_limit if body_limit is not None else max_request_bytes(card, max_batch_size, DEFAULT_MAX_BODY_BYTES)
    if len(body) > limit:
        raise PayloadTooLarge(
            f"request body of {len(body)} bytes exceeds the limit of {limit} bytes"
            + body_limit_reason(card, max_batch_size)
        )
    body = decode_content(body, content_encoding, limit)
    if header_length is not None and not _IHCL_VALUE.match(header_length):
        raise BadRequest(f"Inference-Header-Content-Length must be a non-negative integer, got {header_length!r}")
    if header_length is not None and int(header_length) == 0:
        if len(card.inputs) != 1:
            raise BadRequest(
                f"a raw binary request (Inference-Header-Content-Length: 0) needs a model with one input; "
                f"{card.name!r} has {[s.name for s in card.inputs]}: send a JSON header"
            )
        spec = card.inputs[0]
        req = decode_raw_binary(body, spec.name, spec.datatype, spec.shape)
    else:
        req = decode_request(body, header_length)
    check_inputs(req, card.inputs)
    if req.batch_size > max_batch_size:
        raise BadRequest(
            f"inference request batch size {req.batch_size} exceeds max_batch_size {max_batch_size} of model "
            f"{card.name!r}; split it into requests of at most {max_batch_size} rows"
        )
    req.timeout_us()
    check_outputs(req, card.outputs)
    check_unsupported(req)
    return req


def check_outputs(req: InferRequest, specs: Sequence[TensorSpec]) -> None:
    """Requested outputs must exist: refused before the model runs, not after."""
    names = {s.name for s in specs}
    for o in req.outputs or []:
        if o.name not in names:
            raise BadRequest(f"requested output {o.name!r} does not exist; the model has {sorted(names)}")


def check_unsupported(req: InferRequest) -> None:
    """Refuse what would otherwise be silently ignored and change the answer's meaning: Triton's
    sequence batching (stateful models) and classification extension (top-k labels)."""
    p = req.parameters
    if p.get("sequence_id") not in (None, 0, "") or p.get("sequence_start") or p.get("sequence_end"):
        raise BadRequest(
            "sequence batching (sequence_id/sequence_start/sequence_end) is not supported: models are stateless"
        )
    for o in req.outputs or []:
        if o.class_count not in (None, 0, False):
            raise BadRequest(
                f"output {o.name!r}: the classification extension (classification / class_count) is not supported; "
                "ask for the tensor and take the top-k on the client"
            )


def failure_reason(e: BaseException) -> str:
    """Triton's failure reason for an exception: refused before running (REJECTED), the client went
    away (CANCELED), the model failed (BACKEND), anything else, bad requests included (OTHER)."""
    if isinstance(e, Overloaded):
        return REJECTED
    if isinstance(e, ClientDisconnected):
        return CANCELED
    if isinstance(e, ModelFailed):
        return BACKEND
    return OTHER


def status_reason(status: int) -> str:
    """The failure reason for an answer known only by its status (a forwarded reply)."""
    if status in (429, 503):
        return REJECTED
    if status == 499:
        return CANCELED
    if status == 500:
        return BACKEND
    return OTHER


def error_reply(e: BaseException) -> Reply:
    """``{"error": ...}`` with the error's status and headers; anything unexpected is a logged JSON 500
    that names a reference to find it in the log, never a stack trace or a text/plain body."""
    if isinstance(e, InferenceError):
        headers = tuple(e.headers)
        if e.retry_after_s is not None:
            headers += (("retry-after", str(max(1, int(e.retry_after_s)))),)
        message = e.message
        if len(message) > MAX_ERROR_CHARS:  # messages quote what the client sent: never echo megabytes
            suffix = f"... ({len(message) - MAX_ERROR_CHARS + 40} more characters)"
            message = message[: MAX_ERROR_CHARS - 40] + suffix
        return json_reply(e.status, {"error": message}, headers)
    ref = uuid.uuid4().hex[:12]
    log.error("internal error ref=%s", ref, exc_info=e)
    return json_reply(500, {"error": f"internal error (ref {ref}); the server log has the details"})


def single_header(scope: Scope, name: bytes) -> str | None:
    """A header that must appear at most once; sent twice it is ambiguous, so it is refused (400)."""
    values = [bytes(v).decode("latin-1") for k, v in scope["headers"] if k == name]
    if len(values) > 1:
        raise BadRequest(f"header {name.decode()} is given {len(values)} times; send it once")
    return values[0] if values else None


InferHandler = Callable[[Resolved, Scope, Receive], Awaitable[Reply]]


class V2App:
    """The v2 surface as plain ASGI (no framework on the hot path: routing is a few regex matches).

    ``infer`` executes infer requests and must answer every outcome as a Reply (it owns its failure
    counting); ``extra`` adds GET routes outside v2 (``/metrics``); ``authorize`` (front door) is
    called for every path but the health routes, before routing, and raises ``Unauthorized``.
    """

    def __init__(
        self,
        server: Server,
        infer: InferHandler,
        *,
        extra: dict[str, Callable[[], Reply]] | None = None,
        authorize: Callable[[Scope], None] | None = None,
    ) -> None:
        self.server = server
        self.infer = infer
        self.extra = extra or {}
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; websockets are not served
        try:
            reply = await self._reply(scope, receive)
        except ClientDisconnected:
            return
        await respond(send, reply.status, reply.body, reply.asgi_headers())

    async def _reply(self, scope: Scope, receive: Receive) -> Reply:
        method = scope["method"]
        # Route on the path as sent (percent-escapes kept), as Lambda sees it: "%5F" is not "_".
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else scope["path"]
        try:
            if self.authorize is not None and path not in HEALTH_PATHS:
                self.authorize(scope)  # before routing: without a key, not even which paths exist
            if path in self.extra and method == "GET":
                return self.extra[path]()
            r = resolve(method, path)
            if r.op == "infer":
                return await self.infer(r, scope, receive)
            return answer(self.server, r)
        except ClientDisconnected:
            raise
        except Exception as e:  # noqa: BLE001 - every request gets a JSON answer
            return error_reply(e)
