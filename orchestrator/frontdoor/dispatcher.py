"""The front door's mechanism: track workers, apply the dispatch policy, forward, retry, account.

Bodies are forwarded byte for byte (no decode, no re-encode) over pooled keep-alive connections;
the worker or the Lambda handler does the validation, so the front door rejects exactly what they
reject, with the same status and message. A request whose worker dies mid-flight is retried once
on another worker or on Lambda; if that is impossible it is answered with an explicit 502/503,
never dropped. A request Lambda throttles (429) goes back to the policy without Lambda: a worker,
or 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from inference.v2 import json_reply
from orchestrator.cloud.base import Cloud, FunctionBackend, FunctionError, Instance
from orchestrator.economics.latency_profiles import layout_batches
from orchestrator.frontdoor.slo import SloTracker
from orchestrator.frontdoor.upstream import Connection, HttpConnectionError, build_request
from orchestrator.policy.dispatch import (
    LambdaView,
    QueueReport,
    Route,
    WorkerView,
    decide,
    fold_report,
    parse_queue_report,
)
from orchestrator.policy.estimators import Slowdown, observe_slowdown
from orchestrator.types import InstanceState

log = logging.getLogger("mark.frontdoor")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]
    route: str  # instance | lambda | frontdoor


@dataclass(frozen=True)
class FrontDoorConfig:
    rt_max_ms: float = 200.0
    queue_bound: int = 256  # outstanding requests per worker before it counts as full (the worker's max_queue)
    max_batch: int = 8
    batch_timeout_ms: float = 5.0
    slots: int = 1
    threads: int = 2
    # Fold each worker's reported queue (x-mark-queue-depth/-bound on its answers) into dispatch, so
    # that several front doors over the same workers keep each under its bound; off: own view only.
    fold_queue_reports: bool = True
    # A report counts, decaying linearly, for at least this long (ms) even where the profile says the
    # worker drains it faster: the profile times the model alone, not the worker's HTTP handling.
    report_min_drain_ms: float = 50.0
    # Requests kept free below a worker's reported bound (None: one batch, max_batch): the other front
    # doors send to it while its report travels.
    report_headroom: int | None = None


def profile_line(model: str, threads: int, slots: int = 1) -> tuple[float, float]:
    """(T(1) p99 ms, extra ms per extra row) fitted from this machine's measured profile of the layout
    every instance runs (economics/latency_profiles.py reads it; a missing one is an error there)."""
    rows = layout_batches(model, threads, slots)
    (b1, p50_1, p99_1), (bn, p50_n, _) = rows[0], rows[-1]
    return p99_1, max(0.0, (p50_n - p50_1) / max(1, bn - b1))


@dataclass
class _Pool:
    host: str
    port: int
    idle: list[Connection] = field(default_factory=list)

    def get(self) -> Connection:
        return self.idle.pop() if self.idle else Connection(self.host, self.port)

    def put(self, c: Connection) -> None:
        if len(self.idle) < 256:
            self.idle.append(c)


class Dispatcher:
    def __init__(
        self,
        cloud: Cloud,
        config: FrontDoorConfig,
        function: FunctionBackend | None = None,
        prices: Callable[[Instance], float] | None = None,
        models: Sequence[str] = (),
    ) -> None:
        """``models``: read their latency profiles now, so a missing one fails the start (ProfileError
        naming the file), not the first request."""
        self.cloud = cloud
        self.config = config
        self.function = function
        self.prices = prices or (lambda _: 0.0)
        self.outstanding: dict[str, int] = {}
        # Instances the controller drained: no new work goes to them; what they hold finishes.
        self.draining: set[str] = set()
        self._pools: dict[str, _Pool] = {}
        self.slo = SloTracker(config.rt_max_ms)
        self.by_route: dict[str, int] = {"instance": 0, "lambda": 0, "rejected": 0, "failed": 0}
        self.retries = 0  # requests re-dispatched because their worker died mid-flight
        self.refusals = 0  # requests re-dispatched because a worker refused them (503: draining, full)
        self.lambda_throttled = 0  # requests re-dispatched because Lambda throttled them (429)
        self.decisions: dict[str, int] = {}  # dispatch decisions by reason: why traffic went where it went
        self._profiles: dict[str, tuple[float, float]] = {
            m: profile_line(m, config.threads, config.slots) for m in models
        }
        self.on_lambda: Callable[[Any], None] | None = None  # e.g. the cost ledger, per invocation
        # Observed / predicted latency per worker (policy/estimators.py): profiles are measured on an
        # idle machine, and a worker sharing its cores (or a noisy neighbour) is slower and jittery.
        self.slowdowns: dict[str, Slowdown] = {}
        # Each worker's latest report of its queue for a model, by (instance id, model): what other
        # front doors sent it shows up here, so dispatch does not rely on this one's view alone.
        self.queue_reports: dict[tuple[str, str], QueueReport] = {}
        self._sent_since_report: dict[tuple[str, str], int] = {}  # requests sent after that report
        # Requests waiting here for a Lambda environment (all busy at the concurrency limit): at most
        # `limit` are in Lambda at once, so Lambda never throttles what we chose to send it.
        self.lambda_waiting = 0
        self._lambda_gate = asyncio.Semaphore(function.concurrency_limit()) if function is not None else None

    @property
    def slowdown(self) -> dict[str, float]:
        """Each worker's current slowdown factor (1 = as profiled), by instance id; a copy."""
        return {wid: s.factor for wid, s in self.slowdowns.items()}

    def ready_workers(self) -> list[Instance]:
        """Running instances with an endpoint that are not draining: those dispatch may choose."""
        return [
            i
            for i in self.cloud.instances()
            if i.state == InstanceState.RUNNING and i.endpoint and i.id not in self.draining
        ]

    def _view(self, inst: Instance, model: str, fold: bool = True) -> WorkerView:
        """What dispatch knows of ``inst`` for ``model``: its profile (times this worker's slowdown), its
        price, the requests outstanding on it; with ``fold`` (and ``fold_queue_reports``), its latest
        report of its own queue folded in (policy/dispatch.py: ``fold_report``)."""
        if model not in self._profiles:
            self._profiles[model] = profile_line(model, self.config.threads, self.config.slots)
        t1, per_row = self._profiles[model]
        k = self.slowdowns.get(inst.id, _AS_PROFILED).factor
        t1, per_row = t1 * k, per_row * k
        c = self.config
        view = WorkerView(
            inst.id,
            self.outstanding.get(inst.id, 0),
            c.slots,
            c.max_batch,
            c.batch_timeout_ms,
            t1,
            per_row,
            self.prices(inst),
            c.queue_bound,
        )
        if not (fold and c.fold_queue_reports):
            return view
        key = (inst.id, model)
        report, since = self.queue_reports.get(key), self._sent_since_report.get(key, 0)
        headroom = c.max_batch if c.report_headroom is None else c.report_headroom
        return fold_report(view, report, time.monotonic(), c.report_min_drain_ms / 1e3, since, headroom)

    def _lambda_view(self, model: str) -> LambdaView:
        f = self.function
        if f is None:
            return LambdaView(False, 0, 0, 0.0, 0.0)
        return LambdaView(
            True,
            f.warm_idle(),
            f.concurrency_left(),
            f.predicted_latency_ms(model, cold=False),
            f.predicted_latency_ms(model, cold=True),
            limit=f.concurrency_limit(),
            waiting=self.lambda_waiting,
        )

    async def handle(self, model: str, path: str, body: bytes, headers: dict[str, str], budget_ms: float) -> Answer:
        """Dispatch one request until something serves it.

        A worker that refuses (503: draining, queue at its bound, still loading; nothing ran) or dies
        mid-request is left out and the request goes back to the dispatch policy: another worker or
        Lambda. The client sees 503 only when the policy itself rejects (every queue at its bound and
        Lambda at its limit), 502 only when a worker died and nothing else could take the request.
        Each worker is tried at most once, so the loop ends.
        """
        t0 = time.perf_counter()
        excluded: set[str] = set()
        died = False
        lambda_refused = False  # Lambda throttled this request: it is not offered again
        while True:
            ready = {i.id: i for i in self.ready_workers() if i.id not in excluded}
            workers = tuple(self._view(i, model) for i in ready.values())
            elapsed = (time.perf_counter() - t0) * 1e3
            lam = _NO_LAMBDA if lambda_refused else self._lambda_view(model)
            decision = decide(budget_ms - elapsed, workers, lam)
            if decision.route == Route.REJECT and self.config.fold_queue_reports and workers:
                # Full by the reports only: the worker's admission is the authority; try on our own view
                # (a refusal comes back as a 503 and is re-dispatched below).
                own = tuple(self._view(i, model, fold=False) for i in ready.values())
                decision = decide(budget_ms - elapsed, own, lam)
            self.decisions[decision.reason] = self.decisions.get(decision.reason, 0) + 1
            if decision.route == Route.REJECT:
                self.slo.record(time.monotonic(), (time.perf_counter() - t0) * 1e3, ok=False)
                if died:
                    self.by_route["failed"] += 1
                    return _error(
                        502, "the worker serving this request died and no other worker or Lambda could take it"
                    )
                self.by_route["rejected"] += 1
                return _error(503, f"overloaded: {decision.reason}", decision.retry_after_s)
            if decision.route == Route.LAMBDA:
                answer = await self._to_lambda(model, body, headers)
                if answer.status == 429 and not lambda_refused:
                    # Throttled (every environment busy at the concurrency limit, e.g. while the
                    # controller pre-warms): nothing ran, so the request goes back to the policy
                    # without Lambda: a worker, or 503 + Retry-After. A client never sees Lambda's 429.
                    log.info("Lambda throttled a request (429); re-dispatching it without Lambda")
                    lambda_refused = True
                    self.lambda_throttled += 1
                    continue
                break
            assert decision.worker_id is not None
            sent = time.perf_counter()
            worker_answer = await self._to_worker(ready[decision.worker_id], model, path, body, headers)
            if worker_answer is None:  # the worker died mid-request: retry elsewhere
                log.warning("instance %s dropped a request mid-flight; re-dispatching it", decision.worker_id)
                excluded.add(decision.worker_id)
                died = True
                self.retries += 1
                continue
            if worker_answer.status == 503:  # refused before running (draining, full, loading)
                log.info("instance %s refused a request (503); re-dispatching it", decision.worker_id)
                excluded.add(decision.worker_id)
                self.refusals += 1
                continue
            if decision.predicted_ms:
                self._observe(decision.worker_id, (time.perf_counter() - sent) * 1e3, decision.predicted_ms)
            answer = worker_answer
            break
        if answer.status < 500 or answer.status == 503:
            self.by_route[answer.route] += 1
        self.slo.record(time.monotonic(), (time.perf_counter() - t0) * 1e3, ok=answer.status < 500)
        return answer

    def _observe(self, worker_id: str, actual_ms: float, predicted_ms: float) -> None:
        """Fold one answer's latency (``predicted_ms`` as predicted, slowdown included) into its worker's
        slowdown factor."""
        state = self.slowdowns.get(worker_id, _AS_PROFILED)
        self.slowdowns[worker_id] = observe_slowdown(state, actual_ms, predicted_ms)

    async def _to_worker(
        self, inst: Instance, model: str, path: str, body: bytes, headers: dict[str, str]
    ) -> Answer | None:
        wid = inst.id
        if inst.endpoint is None:
            return None
        pool = self._pools.get(inst.endpoint)
        if pool is None:
            host, port = inst.endpoint.rsplit(":", 1)
            pool = self._pools[inst.endpoint] = _Pool(host, int(port))
        conn = pool.get()
        raw = build_request("POST", pool.host, pool.port, path, body, headers)
        self.outstanding[wid] = self.outstanding.get(wid, 0) + 1
        key = (wid, model)
        self._sent_since_report[key] = self._sent_since_report.get(key, 0) + 1
        try:
            resp = await conn.send(raw)
        except HttpConnectionError:
            return None
        finally:
            self.outstanding[wid] -= 1
        pool.put(conn)
        h = resp.headers
        report = parse_queue_report(h.get(_QUEUE_DEPTH), h.get(_QUEUE_BOUND), time.monotonic())
        if report is not None:
            self.queue_reports[key] = report
            # the report counts what was sent before it; of ours, what is still outstanding may not be
            # in it yet (in transit), but the own-outstanding floor of fold_report covers that
            self._sent_since_report[key] = 0
        out_headers = [(k.encode(), v.encode()) for k, v in resp.headers.items() if k in _PASS_HEADERS]
        return Answer(resp.status, resp.body, out_headers, "instance")

    async def _to_lambda(self, model: str, body: bytes, headers: dict[str, str]) -> Answer:
        assert self.function is not None and self._lambda_gate is not None
        self.lambda_waiting += 1
        try:
            await self._lambda_gate.acquire()
        finally:
            self.lambda_waiting -= 1
        try:
            res = await self.function.invoke(model, body, headers)
        except Exception as e:  # noqa: BLE001 - throttled or environment died: answer explicitly
            status = e.status if isinstance(e, FunctionError) else 502
            return replace(_error(status, f"Lambda could not serve the request: {e}", 1), route="lambda")
        finally:
            self._lambda_gate.release()
        if self.on_lambda is not None:
            self.on_lambda(res)
        out_headers = [(k.lower().encode(), v.encode()) for k, v in res.headers.items() if k.lower() in _PASS_HEADERS]
        return Answer(res.status, res.body, out_headers, "lambda")


_AS_PROFILED = Slowdown()  # a worker with no answers yet
_QUEUE_DEPTH, _QUEUE_BOUND = "x-mark-queue-depth", "x-mark-queue-bound"  # ec2_worker/infer_route.py
_NO_LAMBDA = LambdaView(False, 0, 0, 0.0, 0.0)  # what dispatch sees once Lambda has throttled a request
_PASS_HEADERS = {"content-type", "inference-header-content-length", "retry-after"}


def _error(status: int, message: str, retry_after_s: int | None = None) -> Answer:
    extra = (("retry-after", str(retry_after_s)),) if retry_after_s is not None else ()
    reply = json_reply(status, {"error": message}, extra)  # the one error body (inference/v2.py)
    return Answer(reply.status, reply.body, reply.asgi_headers(), "frontdoor")
