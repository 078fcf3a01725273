"""What a Lambda Function URL does around the handler: the payload 2.0 event it builds from an HTTP
request, and the HTTP answer it gives for the handler's return (or its error).

The local Lambda pool (``lambda_pool.py``) feeds these events to its environments, so the handler runs
exactly the code path it runs behind a Function URL on AWS.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson


def function_url_event(
    function_name: str, method: str, path: str, body: bytes, headers: dict[str, str], request_id: str
) -> dict[str, Any]:
    """A Lambda Function URL (payload format 2.0) event, body base64-encoded as AWS sends binary.

    Header names are lower-cased as AWS delivers them; ``host`` defaults to the function's URL host.
    The request context's ``time``/``timeEpoch`` are the current wall-clock time.
    """
    now = time.time()
    lowered = {k.lower(): v for k, v in headers.items()}
    lowered.setdefault("host", f"{function_name}.lambda-url.local")
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": lowered,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": function_name,
            "domainName": lowered["host"],
            "domainPrefix": function_name,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }


def http_answer(reply: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, lower-cased headers) a Function URL answers for an environment's result frame.

    ``reply`` is the environment's ``{"result": <handler return> | None, "error": {...} | None, ...}``;
    a function error, or a handler that returned no response, is a 502 with a JSON error body, as on AWS.
    """
    error = reply.get("error")
    result = reply.get("result")
    if error or not isinstance(result, dict):
        what = f"{error['errorType']}: {error['errorMessage']}" if error else "the handler returned no response"
        return 502, orjson.dumps({"error": f"function error: {what}"}), {"content-type": "application/json"}
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    return int(result.get("statusCode", 200)), body, headers
