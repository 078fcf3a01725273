"""The three KServe v2 surfaces as test clients: a worker process, the front door, the Lambda handler.

Lambda event builders follow the documented shapes (AWS Lambda docs; Powertools' own test events
``lambdaFunctionUrlEvent.json`` and ``albMultiValueHeadersEvent.json``): a Function URL event has
``version``/``rawPath``/``requestContext.http``, lower-case ``headers`` and a base64 body for binary
content; an ALB event has ``requestContext.elb``, ``httpMethod``/``path`` and either ``headers`` or,
with the target group's multi-value option, ``multiValueHeaders`` (and must be answered in kind).

Every surface answers ``call(method, path, body, headers) -> Resp`` and ``failures()`` (its count
of failed inference requests: Triton's counter on the worker and the front door, the EMF
``InferenceErrorCount`` metric the handler prints on Lambda).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from lambda_fn import handler as fn
from lambda_fn.local_env import LocalContext
from orchestrator.runtime.local_stack import LocalStack, StackConfig

TARGET_GROUP = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/mark-fn/6d0ecf831eec9f09"
JSON = {"content-type": "application/json"}


def _is_text(body: bytes, headers: dict[str, str]) -> bool:
    """What AWS sends as text: JSON without a binary part; everything else arrives base64-encoded."""
    if any(k.lower() == "inference-header-content-length" for k in headers):
        return False
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def function_url_event(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, request_id: str = "fu-req-1"
) -> dict[str, Any]:
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    hdrs |= {"host": "abcdefgh.lambda-url.us-east-1.on.aws", "x-forwarded-proto": "https", "user-agent": "pytest"}
    text = _is_text(body, hdrs)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": hdrs,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefgh",
            "domainName": "abcdefgh.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefgh",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
                "userAgent": "pytest",
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": "22/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795341600000,
        },
        "body": body.decode() if text else base64.b64encode(body).decode(),
        "isBase64Encoded": not text,
    }


def alb_event(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, multi_value: bool = False
) -> dict[str, Any]:
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    hdrs |= {"host": "mark-alb-123456.us-east-1.elb.amazonaws.com", "x-forwarded-for": "198.51.100.7"}
    text = _is_text(body, hdrs)
    event: dict[str, Any] = {
        "requestContext": {"elb": {"targetGroupArn": TARGET_GROUP}},
        "httpMethod": method,
        "path": path,
        "body": body.decode() if text else base64.b64encode(body).decode(),
        "isBase64Encoded": not text,
    }
    if multi_value:
        event["multiValueQueryStringParameters"] = {}
        event["multiValueHeaders"] = {k: [v] for k, v in hdrs.items()}
    else:
        event["queryStringParameters"] = {}
        event["headers"] = hdrs
    return event


def ctx(request_id: str = "5e1b7c0a-0000-4000-8000-000000000001") -> LocalContext:
    return LocalContext(aws_request_id=request_id, function_name="mark-inference", memory_limit_in_mb=2048)


def body_of(response: dict[str, Any]) -> bytes:
    raw = response["body"]
    return base64.b64decode(raw) if response["isBase64Encoded"] else raw.encode()


def header(response: dict[str, Any], name: str) -> str | None:
    for k, v in (response.get("headers") or {}).items():
        if k.lower() == name:
            return str(v)
    for k, vs in (response.get("multiValueHeaders") or {}).items():
        if k.lower() == name:
            return str(vs[-1])
    return None


@dataclass
class Resp:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def _failures_from_metrics(text: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "nv_inference_request_failure"
        for s in f.samples
    )


class HttpSurface:
    """A worker or the front door over real HTTP on loopback."""

    def __init__(self, name: str, url: str, headers: dict[str, str] | None = None) -> None:
        self.name = name
        self.url = url  # host:port
        self.client = httpx.Client(base_url=f"http://{url}", timeout=30, headers=headers or {})

    def call(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Resp:
        r = self.client.request(method, path, content=body or None, headers=headers or {})
        return Resp(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)

    def failures(self) -> float:
        return _failures_from_metrics(self.client.get("/metrics").text)

    def close(self) -> None:
        self.client.close()


@dataclass
class LambdaSurface:
    """The handler called in-process with Function URL events; its EMF output is read for failures."""

    name: str = "lambda"
    failure_count: float = 0.0
    emf: list[dict[str, Any]] = field(default_factory=list)

    def call(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Resp:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            r = fn.handler(function_url_event(method, path, body, headers), ctx())
        for line in out.getvalue().splitlines():
            if line.startswith("{") and '"_aws"' in line:
                doc = json.loads(line)
                self.emf.append(doc)
                self.failure_count += sum(doc.get("InferenceErrorCount", []) or [0])
        hdrs = {k.lower(): str(v) for k, v in (r.get("headers") or {}).items()}
        return Resp(r["statusCode"], hdrs, body_of(r))

    def failures(self) -> float:
        return self.failure_count


class StackThread:
    """Runs a LocalStack on its own event loop in a thread, so sync clients can drive it."""

    def __init__(
        self, config: StackConfig, running: int = 1, function: object | None = None, **stack_kwargs: Any
    ) -> None:
        self.config = config
        self.function = function
        self.stack_kwargs = stack_kwargs  # LocalStack's keyword options: catalog, api_keys
        self.stack: LocalStack | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main(running)), daemon=True)
        self.thread.start()
        if not self._ready.wait(90):
            raise TimeoutError("stack did not start")
        if self.error:
            raise self.error

    async def _main(self, running: int) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            async with LocalStack(self.config, self.function, **self.stack_kwargs) as stack:  # type: ignore[arg-type]
                self.stack = stack
                await stack.wait_running(running)
                self._ready.set()
                while not self._stop.is_set():
                    await asyncio.sleep(0.05)
        except BaseException as e:  # surfaced to the test thread
            self.error = e
            self._ready.set()

    def call(self, coro):  # type: ignore[no-untyped-def]
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(60)

    @property
    def url(self) -> str:
        assert self.stack is not None
        return f"127.0.0.1:{self.stack.port}"
