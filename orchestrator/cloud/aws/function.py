"""``AwsFunction``: the burst function on AWS Lambda, behind the ``FunctionBackend`` protocol.

- ``invoke``: Lambda ``Invoke`` (``RequestResponse``, ``LogType=Tail``) of the function's alias with
  the same Function URL 2.0 event the local pool sends, so the handler runs its Function URL code path.
  The tail of the log (last 4 KB, base64) carries the ``REPORT`` line, from which this reads
  ``Duration``, ``Billed Duration`` and, on a cold start, ``Init Duration``
  (https://docs.aws.amazon.com/lambda/latest/dg/python-logging.html, "REPORT" fields).
- ``TooManyRequestsException`` (429: the function's reserved or the account's concurrency is used up,
  https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html#API_Invoke_Errors) →
  :class:`FunctionThrottled`, at once: the Lambda client is built with a single attempt, because a
  front door with a deadline must route elsewhere rather than wait for a retry. A function error
  (``X-Amz-Function-Error``: an unhandled exception, a timeout, out of memory) and any other API error
  → :class:`FunctionError`.
- ``prewarm(count)``: provisioned concurrency on the alias (``PutProvisionedConcurrencyConfig``;
  ``count`` 0 deletes it): environments initialised ahead of traffic, billed while configured
  (https://docs.aws.amazon.com/lambda/latest/dg/provisioned-concurrency.html). It returns how many
  are ready now (``AvailableProvisionedConcurrentExecutions``); allocation takes minutes.

IAM actions: ``lambda:InvokeFunction``, ``lambda:PutProvisionedConcurrencyConfig``,
``lambda:GetProvisionedConcurrencyConfig``, ``lambda:DeleteProvisionedConcurrencyConfig`` on the
function's alias ARN.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import uuid
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from orchestrator.cloud.aws.session import AwsSession
from orchestrator.cloud.base import FunctionError, FunctionResult, FunctionStats, FunctionThrottled
from orchestrator.cloud.local.function_url import function_url_event, http_answer
from orchestrator.policy.estimators import ewma

log = logging.getLogger(__name__)

PRIOR_WARM_MS = 100.0  # before any invocation is observed
PRIOR_INIT_MS = 2000.0  # a Python function loading an ONNX model: seconds, not milliseconds
EWMA_ALPHA = 0.2
_REPORT = re.compile(
    r"REPORT RequestId:.*?Duration: (?P<duration>[\d.]+) ms\s+Billed Duration: (?P<billed>\d+) ms"
    r"(?:.*?Init Duration: (?P<init>[\d.]+) ms)?",
    re.S,
)


@dataclass(frozen=True)
class AwsFunctionConfig:
    """The deployed function: name, alias (provisioned concurrency lives on an alias or version, not
    on ``$LATEST``), memory in MB and the reserved concurrency it was deployed with."""

    function_name: str
    alias: str = "live"
    memory_mb: int = 2048
    concurrency_limit: int = 2


@dataclass(frozen=True)
class Report:
    """The figures of a ``REPORT`` log line (milliseconds)."""

    duration_ms: float
    billed_ms: int
    init_ms: float


def parse_report(log_tail: str) -> Report | None:
    """The ``REPORT`` line in a decoded log tail, or None when there is none (e.g. an emulator)."""
    m = _REPORT.search(log_tail)
    if m is None:
        return None
    return Report(float(m["duration"]), int(m["billed"]), float(m["init"] or 0.0))


class AwsFunction:
    """AWS Lambda as the front door's burst function (see the module docstring)."""

    def __init__(self, config: AwsFunctionConfig, session: AwsSession) -> None:
        self.config = config
        self.client = session.client("lambda", max_attempts=1)
        self.control = session.client("lambda")  # provisioned concurrency: retried as usual
        self._in_flight = 0
        self._invocations = 0
        self._cold_starts = 0
        self._throttles = 0
        self._errors = 0
        self._billed_ms = 0
        self._provisioned_ready = 0
        self._warm_ms: dict[str, float] = {}
        self._init_ms: float | None = None

    async def start(self) -> None:
        """Nothing to start: the function is deployed by the infrastructure stack."""

    async def stop(self) -> None:
        """Nothing to stop (provisioned concurrency stays as configured: ``prewarm(0)`` removes it)."""

    def _invoke_sync(self, model: str, body: bytes, headers: dict[str, str]) -> FunctionResult:
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        event = function_url_event(
            self.config.function_name, "POST", f"/v2/models/{model}/infer", body, headers, request_id
        )
        try:
            out = self.client.invoke(
                FunctionName=self.config.function_name,
                Qualifier=self.config.alias,
                InvocationType="RequestResponse",
                LogType="Tail",
                Payload=json.dumps(event).encode(),
            )
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code == "TooManyRequestsException":
                self._throttles += 1
                raise FunctionThrottled(f"lambda {self.config.function_name}: throttled ({code})") from e
            self._errors += 1
            raise FunctionError(f"lambda {self.config.function_name}: {code}: {e}") from e
        except BotoCoreError as e:  # connection errors, timeouts
            self._errors += 1
            raise FunctionError(f"lambda {self.config.function_name}: {e}") from e
        payload = out["Payload"].read()
        tail = base64.b64decode(out.get("LogResult") or "").decode(errors="replace")
        report = parse_report(tail)
        self._invocations += 1
        cold = bool(report and report.init_ms > 0)
        if report is not None:
            self._billed_ms += report.billed_ms
            self._warm_ms[model] = ewma(self._warm_ms.get(model), report.duration_ms, EWMA_ALPHA)
            if cold:
                self._cold_starts += 1
                self._init_ms = ewma(self._init_ms, report.init_ms, EWMA_ALPHA)
        if out.get("FunctionError"):
            self._errors += 1
            raise FunctionError(f"lambda {self.config.function_name}: function error ({out['FunctionError']})")
        try:
            result = json.loads(payload)
        except ValueError:
            result = None
        status, answer, answer_headers = http_answer({"result": result, "error": None})
        return FunctionResult(
            status=status,
            body=answer,
            headers=answer_headers,
            cold_start=cold,
            init_ms=report.init_ms if report else 0.0,
            duration_ms=report.duration_ms if report else 0.0,
            billed_duration_ms=report.billed_ms if report else 0,
            memory_mb=self.config.memory_mb,
        )

    async def invoke(self, model: str, body: bytes, headers: dict[str, str]) -> FunctionResult:
        """``POST /v2/models/{model}/infer`` on the function.

        Raises:
            FunctionThrottled: Lambda answered 429 TooManyRequestsException.
            FunctionError: the function failed (error, timeout) or the API refused the call.
        """
        self._in_flight += 1
        try:
            return await asyncio.to_thread(self._invoke_sync, model, body, headers)
        finally:
            self._in_flight -= 1

    def _prewarm_sync(self, count: int) -> int:
        name, alias = self.config.function_name, self.config.alias
        if count <= 0:
            try:
                self.control.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=alias)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "ProvisionedConcurrencyConfigNotFoundException":
                    raise
            self._provisioned_ready = 0
            return 0
        self.control.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier=alias, ProvisionedConcurrentExecutions=count
        )
        got = self.control.get_provisioned_concurrency_config(FunctionName=name, Qualifier=alias)
        self._provisioned_ready = int(got.get("AvailableProvisionedConcurrentExecutions", 0))
        log.info("lambda %s:%s provisioned concurrency %d (%d ready)", name, alias, count, self._provisioned_ready)
        return self._provisioned_ready

    async def prewarm(self, count: int) -> int:
        """Set provisioned concurrency on the alias to ``count`` environments (0: remove it); returns
        how many are ready now (allocation takes minutes; call again to see progress).

        Raises:
            ValueError: ``count`` exceeds the function's concurrency limit.
            botocore.exceptions.ClientError: Lambda refused (after botocore's retries).
        """
        if count > self.config.concurrency_limit:
            raise ValueError(f"prewarm {count} exceeds the concurrency limit {self.config.concurrency_limit}")
        return await asyncio.to_thread(self._prewarm_sync, count)

    def stats(self) -> FunctionStats:
        """Counts seen by this process (AWS's own figures are in CloudWatch); ``environments`` is the
        provisioned environments ready plus invocations in flight, a lower bound."""
        billed_gb_s = self._billed_ms / 1e3 * self.config.memory_mb / 1024
        return FunctionStats(
            environments=max(self._provisioned_ready, self._in_flight),
            busy=self._in_flight,
            idle=max(0, self._provisioned_ready - self._in_flight),
            invocations=self._invocations,
            cold_starts=self._cold_starts,
            throttles=self._throttles,
            deaths=self._errors,
            billed_ms=self._billed_ms,
            billed_gb_seconds=billed_gb_s,
            memory_mb=self.config.memory_mb,
        )

    def warm_idle(self) -> int:
        """Provisioned environments not busy with this process's invocations (on-demand warm
        environments are invisible to the API, so they are not counted)."""
        return max(0, self._provisioned_ready - self._in_flight)

    def concurrency_limit(self) -> int:
        return self.config.concurrency_limit

    def concurrency_left(self) -> int:
        return max(0, self.config.concurrency_limit - self._in_flight)

    def predicted_latency_ms(self, model: str, cold: bool) -> float:
        """EWMA of reported durations for ``model``, plus the EWMA init duration when ``cold``."""
        warm = self._warm_ms.get(model, PRIOR_WARM_MS)
        return warm + ((self._init_ms if self._init_ms is not None else PRIOR_INIT_MS) if cold else 0.0)
