"""The AWS Lambda handler: KServe v2 over a Function URL or an ALB, answered like the EC2 worker.

The Lambda function is where bursts go while instances boot, so a client (or the front door) must
not be able to tell it from a worker: same routes, same codec (JSON and Triton's binary tensors),
same error statuses and messages. What differs is the shape of the transport: a Function URL sends
payload format 2.0 events, an ALB sends its own (``multiValueHeaders`` when that target-group
option is on); both carry binary bodies base64-encoded, and binary answers must go back the same way.

One execution environment serves one request at a time, so there is no batcher: the request's
``timeout`` parameter is validated (and a late answer counted) but never waited on.

Models are loaded once per execution environment (module-level cache): from the repository packaged
with the function (``MARK_MODEL_REPO`` + ``MARK_MODELS``), or from ``MODEL_URI``, a local model folder
or ``s3://bucket/prefix/`` downloaded to ``/tmp`` once. On AWS they load during INIT (import time).

Observability: Powertools Logger (JSON, ``cold_start``, correlation id = ``x-request-id`` or the
platform's request id), Metrics (EMF, namespace ``Mark``: ColdStart, InferenceCount,
InferenceLatencyMs, InferenceLate, InferenceErrorCount) and Tracer when ``aws-xray-sdk`` is installed
(the ``tracer`` extra). Request and response bodies are never logged or traced.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.util
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import ALBResolver, LambdaFunctionUrlResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from inference.cards import CARD_FILE, MODEL_FILE, ModelCard
from inference.codec import HEADER_LENGTH, encode_response
from inference.errors import BadRequest, InferenceError
from inference.repository import ModelRepository, validate_name
from inference.runtime import OnnxModel
from inference.v2 import (
    Readiness,
    Reply,
    Resolved,
    answer,
    check_version,
    error_reply,
    failure_reason,
    parse_infer,
    resolve,
    unknown_model,
)

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "mark-inference")
NAMESPACE = "Mark"
THREADS_ENV = "MARK_ORT_THREADS"
MODELS_ENV = "MARK_MODELS"
MODEL_URI_ENV = "MODEL_URI"
MAX_BATCH_ENV = "MARK_MAX_BATCH_SIZE"  # rows per request, as the deployment's workers are started with
DEFAULT_MAX_BATCH = 8
CACHE_ENV = "MARK_MODEL_CACHE"  # where s3:// models are downloaded; Lambda's only writable disk is /tmp
DEFAULT_CACHE = "/tmp/mark-models"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# Health and metadata requests publish no application metric; Powertools warns about each one.
warnings.filterwarnings("ignore", message="No application metrics to publish")

F = TypeVar("F", bound=Callable[..., Any])


def _make_tracer() -> Any | None:
    """A Powertools Tracer when aws-xray-sdk is importable and tracing is not disabled, else None.

    Tracer imports aws-xray-sdk on construction, so without the ``tracer`` extra it must not be built.
    Outside Lambda (no ``LAMBDA_TASK_ROOT``) Powertools disables it by itself.
    """
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    if importlib.util.find_spec("aws_xray_sdk") is None:
        return None
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE, patch_modules=("botocore",))


tracer = _make_tracer()


def _traced(fn: F) -> F:
    if tracer is None:
        return fn
    # capture_response=False: the response is inference output, which must not land in traces.
    traced: F = tracer.capture_lambda_handler(fn, capture_response=False)
    return traced


class ModelsUnavailable(InferenceError):
    """The function could not load its models (bad configuration, missing artifact, S3 error)."""

    status = 503


@dataclass(frozen=True)
class ServedModel:
    card: ModelCard
    model: OnnxModel


# The per-environment cache: filled on the first successful load, reused by every later invocation.
_served: dict[str, ServedModel] | None = None


def _positive_env(name: str, default: int) -> int:
    """A positive integer setting from the environment; ValueError names the variable and the value."""
    raw = os.environ.get(name, str(default))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return n


def _threads() -> int:
    return _positive_env(THREADS_ENV, 1)


def _download_s3(uri: str) -> Path:
    """Fetch ``model.onnx`` and ``card.json`` under an ``s3://bucket/prefix/`` once per environment.

    The folder is written under a temporary name and renamed, so a crash mid-download never leaves
    a half model that a later invocation would take as complete.
    """
    bucket, _, key_prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{MODEL_URI_ENV} {uri!r} names no bucket; use s3://bucket/prefix/")
    prefix = key_prefix.strip("/") + "/" if key_prefix.strip("/") else ""
    dest = Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE)) / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if (dest / MODEL_FILE).is_file() and (dest / CARD_FILE).is_file():
        return dest
    import boto3  # only needed for s3:// models (always present in the Lambda Python runtime)
    from botocore.exceptions import ClientError

    partial = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    s3 = boto3.client("s3")
    for name in (MODEL_FILE, CARD_FILE):
        try:
            s3.download_file(bucket, prefix + name, str(partial / name))
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            raise FileNotFoundError(f"s3://{bucket}/{prefix}{name}: {code or e}") from None
    if dest.exists():  # another process finished first; its copy is as good as ours
        for f in partial.iterdir():
            f.unlink()
        partial.rmdir()
        return dest
    partial.rename(dest)
    return dest


def _model_dirs() -> dict[str, Path]:
    """Model name -> folder, from ``MODEL_URI`` (one model) or the packaged repository."""
    uri = os.environ.get(MODEL_URI_ENV, "").strip()
    if uri:
        if uri.startswith("s3://"):
            folder = _download_s3(uri)
        else:
            folder = Path(uri.removeprefix("file://")).expanduser()
            if not ((folder / MODEL_FILE).is_file() and (folder / CARD_FILE).is_file()):
                raise FileNotFoundError(f"{MODEL_URI_ENV} {uri!r} is not a folder with {MODEL_FILE} and {CARD_FILE}")
        return {validate_name(ModelCard.read(folder).name): folder}
    repo = ModelRepository(os.environ.get("MARK_MODEL_REPO") or None)
    names = [n.strip() for n in os.environ.get(MODELS_ENV, "").split(",") if n.strip()] or repo.names()
    if not names:
        raise FileNotFoundError(f"no models in repository {repo.root} and {MODELS_ENV} names none")
    return {name: repo.onnx_path(name).parent for name in names}


def load_models() -> dict[str, ServedModel]:
    """The environment's models, loaded on first use; a failure is not cached, so the next call retries."""
    global _served
    if _served is None:
        t0 = time.perf_counter()
        try:
            threads = _threads()
            loaded = {
                name: ServedModel(ModelCard.read(folder), OnnxModel(folder / MODEL_FILE, intra_op_threads=threads))
                for name, folder in _model_dirs().items()
            }
        except Exception as e:  # noqa: BLE001 - any load failure becomes one clear 503
            raise ModelsUnavailable(f"the function could not load its models: {type(e).__name__}: {e}") from e
        _served = loaded
        logger.info(
            "models loaded",
            extra={"models": sorted(loaded), "threads": threads, "load_ms": round((time.perf_counter() - t0) * 1e3, 1)},
        )
    return _served


def preload() -> str | None:
    """Load during INIT so the first request does not pay for it; returns the error message, if any."""
    try:
        load_models()
    except InferenceError as e:
        logger.error("model preload failed", extra={"error": e.message})
        return e.message
    return None


def _reset_for_tests() -> None:
    """Forget loaded models and Powertools' cold-start flags: the next call behaves like a new environment."""
    global _served
    _served = None
    import aws_lambda_powertools.logging.logger as powertools_logger
    from aws_lambda_powertools.metrics.provider import cold_start

    powertools_logger.is_cold_start = True
    cold_start.is_cold_start = True
    metrics.clear_metrics()


def _served_model(name: str) -> ServedModel:
    validate_name(name)
    served = load_models()
    if name not in served:
        raise unknown_model(name, served)
    return served[name]


def _max_batch_size() -> int:
    try:
        return _positive_env(MAX_BATCH_ENV, DEFAULT_MAX_BATCH)
    except ValueError as e:
        raise ModelsUnavailable(str(e)) from None


class LambdaServer:
    """The function's side of the v2 surface (inference/v2.py): one request per environment, no batcher."""

    name = SERVICE

    def server_ready(self) -> Readiness:
        try:
            load_models()
        except InferenceError as e:
            return Readiness(False, e.message)
        return Readiness(True)

    def card(self, model: str) -> ModelCard:
        return _served_model(model).card

    def model_ready(self, model: str) -> Readiness:
        _served_model(model)
        return Readiness(True)

    def batching(self, model: str) -> tuple[int, float]:
        return _max_batch_size(), 0.0


_SERVER = LambdaServer()


def _header(event: Mapping[str, Any], name: str, *, once: bool = False) -> str | None:
    """A request header from either event shape (ALB's multi-value form keeps the last value).

    ``once``: a header that must not repeat (as on the worker): several values are a 400. A Function
    URL joins repeats with commas, which the header's own parsing then refuses.
    """
    for field in ("headers", "multiValueHeaders"):
        for key, value in (event.get(field) or {}).items():
            if key.lower() == name:
                if isinstance(value, list):
                    if once and len(value) > 1:
                        raise BadRequest(f"header {name} is given {len(value)} times; send it once")
                    return str(value[-1]) if value else None
                return str(value)
    return None


def _body(event: Mapping[str, Any]) -> bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("request body is marked isBase64Encoded but is not valid base64") from None
    return body.encode() if isinstance(body, str) else bytes(body)


def _response(reply: Reply) -> Response:
    """JSON stays text; anything else (Triton binary) is bytes, which Powertools base64-encodes."""
    headers = dict(reply.headers)
    content_type = headers.pop("content-type", "application/json")
    correlation_id = logger.get_correlation_id()
    if correlation_id:
        headers["x-request-id"] = correlation_id
    payload: str | bytes = reply.body.decode() if content_type == "application/json" else reply.body
    return Response(status_code=reply.status, content_type=content_type, body=payload, headers=headers)


def _infer(event: Mapping[str, Any], r: Resolved) -> Reply:
    """The worker's infer minus the batcher: the same parsing and checks (inference/v2.py), one run.

    Every failure is counted (EMF ``InferenceErrorCount`` with Triton's ``reason`` dimension).
    """
    t0 = time.perf_counter()
    try:
        served = _served_model(r.model or "")
        check_version(served.card, r.version)
        req = parse_infer(
            _body(event),
            _header(event, HEADER_LENGTH, once=True),
            served.card,
            _max_batch_size(),
            content_encoding=_header(event, "content-encoding", once=True),
        )
        timeout_us = req.timeout_us()
        outputs = served.model.run(req.inputs)
        params = {"batch_rows": req.batch_size, "queue_us": 0}
        body, headers = encode_response(served.card.name, served.card.version, outputs, req, params)
    except Exception as e:  # noqa: BLE001 - answered as JSON and counted, whatever it is
        metrics.add_dimension(name="reason", value=failure_reason(e))
        metrics.add_metric(name="InferenceErrorCount", unit=MetricUnit.Count, value=1)
        return error_reply(e)
    elapsed_ms = (time.perf_counter() - t0) * 1e3
    late = timeout_us is not None and elapsed_ms * 1e3 > timeout_us
    metrics.add_dimension(name="model", value=served.card.name)
    metrics.add_metric(name="InferenceCount", unit=MetricUnit.Count, value=req.batch_size)
    metrics.add_metric(name="InferenceLatencyMs", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    if late:
        metrics.add_metric(name="InferenceLate", unit=MetricUnit.Count, value=1)
    logger.append_keys(model=served.card.name, rows=req.batch_size, late=late)
    return Reply(200, body, tuple(headers.items()))


def _serve(event: Mapping[str, Any]) -> Reply:
    """Any request: resolved by the one v2 route table, as on the worker and the front door."""
    try:
        r = resolve(_method(event), str(event.get("rawPath") or event.get("path") or "/"))
        return _infer(event, r) if r.op == "infer" else answer(_SERVER, r)
    except Exception as e:  # noqa: BLE001 - every request gets a JSON answer
        return error_reply(e)


_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


def _make_resolver(cls: type[ApiGatewayResolver]) -> ApiGatewayResolver:
    """Powertools shapes the event and the response (Function URL or ALB, base64 for binary); the
    routing is inference/v2.py's, through one catch-all route."""
    app = cls()
    app.route(".+", method=_METHODS)(lambda: _response(_serve(app.current_event.raw_event)))
    return app


_function_url = _make_resolver(LambdaFunctionUrlResolver)
_alb = _make_resolver(ALBResolver)


def _resolver_for(event: Mapping[str, Any]) -> ApiGatewayResolver | None:
    context = event.get("requestContext") or {}
    if "elb" in context:
        return _alb
    if event.get("version") == "2.0" and "http" in context:
        return _function_url
    return None


def _correlation_id(event: Mapping[str, Any], context: LambdaContext) -> str:
    """The client's ``x-request-id`` when given (it spans front door, worker and Lambda), else the platform's."""
    return str(
        _header(event, "x-request-id")
        or (event.get("requestContext") or {}).get("requestId")
        or getattr(context, "aws_request_id", "")
    )


@_traced
@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(log_event=False, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    t0 = time.perf_counter()
    logger.set_correlation_id(_correlation_id(event, context))
    app = _resolver_for(event)
    if app is None:
        logger.warning("unsupported event shape", extra={"keys": sorted(event)[:20]})
        return {
            "statusCode": 400,
            "headers": {"content-type": "application/json"},
            "body": orjson.dumps({"error": "unsupported event: expected a Lambda Function URL or ALB event"}).decode(),
            "isBase64Encoded": False,
        }
    response = app.resolve(event, context)
    logger.info(
        "request",
        extra={
            "method": _method(event),
            "path": event.get("rawPath") or event.get("path"),
            "status": response.get("statusCode"),
            "duration_ms": round((time.perf_counter() - t0) * 1e3, 3),
        },
    )
    return response


def _method(event: Mapping[str, Any]) -> str:
    return str(event.get("httpMethod") or ((event.get("requestContext") or {}).get("http") or {}).get("method", ""))


if os.environ.get("AWS_LAMBDA_RUNTIME_API"):  # on AWS: load during INIT, not in the first request
    preload()
