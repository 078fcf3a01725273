"""The serving model of the simulator: per request, event-driven, on virtual seconds (DESIGN.md §3, §6).

What happens to every request of a trace, in time order (one ``heapq`` of events, one per *batch*,
not per request, plus the arrivals in a sorted array):

- **Dispatch** at the front door, per request, with the semantics of ``policy/dispatch.decide``:
  the ready, non-draining worker that meets the deadline at the lowest marginal cost (ties: the
  earliest completion, then the id); else Lambda if a warm environment, a cold start or a busy
  environment that frees in time fits; else whichever answers earliest (a worker late, or Lambda);
  with every worker queue at its bound and Lambda unable to take it, an explicit rejection (503).
  The worker views are exactly ``WorkerView``'s (its ``predicted_completion_ms`` and
  ``marginal_usd``, tabulated once per worker layout by outstanding count, so no view object is
  built per request), and :meth:`ServingModel.choose` is ``decide`` evaluated on those numbers;
  ``tests/sim/test_engine.py`` checks it against ``decide`` itself on random states.
- **Workers**: one FIFO queue, ``slots`` servers; a batch goes by the worker's own rule,
  ``ec2_worker/discipline.batch_due`` (full, closing, backlog, timeout, deadline = arrival + RTmax,
  with the worker's EWMA ``ServiceTimeEstimate`` of completed batches). A batch of n rows takes a
  lognormal time with the profile's p50 and p99 at n (``sim/batch_queue._per_size``, the batch-queue
  simulation's fit). Where the head has already waited the batch timeout, ``batch_due`` always says
  "go now" (its planned time is min(timeout, deadline) <= now), so that case skips the call.
- **Draining** workers (a ``Drain`` or a spot notice) get no new work and send what they hold at
  once (``closing``); a worker **killed** (spot reclaim, or terminated with work) hands its queued
  and in-flight requests back to dispatch at that moment: nothing is lost.
- **Lambda**: one request per environment. Warm service time: the model's single-thread profile
  at b=1 (``latency_profiles.single_thread_batches``), lognormal, times max(1, 1769 / memory_mb)
  (AWS: "At 1,769 MB, a function has the equivalent of one vCPU", Lambda Developer Guide,
  "Configuring function memory"; one onnxruntime thread gains nothing above one vCPU). A new
  environment first pays its cold start: ``platform_init_ms`` (sandbox, not billed) + ``init_ms``
  (INIT: interpreter, imports, model load; billed since 2025-08-01, AWS Compute Blog "AWS Lambda
  standardizes billing for INIT Phase"). Idle environments expire after ``idle_ttl_s``. At the
  concurrency limit the front door holds requests for a free environment, as the live front door's
  gate does, up to ``limit x max_waiting_per_env`` waiting (``LambdaView``); Lambda itself then
  never throttles what it is sent, and past that bound dispatch rejects. ``prewarm(n)`` holds n
  environments: missing ones are started (billed as a warm-up ping: INIT + 1 ms, as the local pool
  bills ``prewarm``), and idle held ones are pinged every ``keepalive_s`` (1 ms each) so they do
  not expire. Every invocation is billed by the ledger (billed duration, memory).

Every arrival ends exactly once: answered by an instance or by Lambda (on time or late), or
rejected; ``done_s[i]`` is when request i was answered, ``route[i]`` how (0 instance, 1 Lambda,
2 rejected). Times are seconds on the virtual clock; the profile figures are in ms.
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ec2_worker.discipline import DISPATCH_MARGIN_MS, ServiceTimeEstimate, batch_due
from orchestrator.economics.ledger import CostLedger
from orchestrator.policy.dispatch import LambdaView, WorkerView
from orchestrator.sim.batch_queue import _per_size

INSTANCE, LAMBDA, REJECTED = 0, 1, 2  # route codes
_DONE, _WAKE, _LDONE, _LREADY = 0, 1, 2, 3  # event kinds
_LN_MS = math.log(1000.0)
_exp, _heappush = math.exp, heapq.heappush  # a lognormal in ms, drawn in seconds: mu - ln(1000)

# Lambda figures (defaults of LambdaModel; each is a choice, with its source):
ONE_VCPU_MB = 1769  # AWS Lambda Developer Guide, "Configuring function memory": 1,769 MB = one vCPU
INIT_MS = 1000.0  # INIT of the handler (Python, numpy, onnxruntime, model load): the local Lambda pool
# measures ~1 s per cold start on this 2-core VM (orchestrator/cloud/local/lambda_pool.py); AWS
# publishes no figure for a given package, so this is an estimate
PLATFORM_INIT_MS = 150.0  # sandbox creation before INIT (not billed): the local pool's emulated default
IDLE_TTL_S = 600.0  # AWS does not document it; measured "every instance lives for precisely 10 minutes
# after the last request" (Mikhail Shilkov, "AWS Lambda Cold Starts After 10 Minutes", mikhail.io, 2019)
KEEPALIVE_S = 300.0  # held (prewarmed) environments are pinged at half the TTL: a choice, with margin
MAX_WAITING_PER_ENV = 4  # LambdaView's default: past limit x this, the front door does not wait


@dataclass(frozen=True)
class WorkerModel:
    """How instances of one type serve the model: T(b) rows (b, p50 ms, p99 ms) per slot, slots, and
    the batching they run with (``max_batch`` rows, ``batch_timeout_ms``)."""

    instance_type: str
    slots: int
    batches: tuple[tuple[int, float, float], ...]
    max_batch: int
    batch_timeout_ms: float

    def __post_init__(self) -> None:
        if self.slots < 1 or self.max_batch < 1 or not self.batches:
            raise ValueError(f"{self.instance_type}: slots and max_batch must be >= 1 and batches non-empty")
        if not (math.isfinite(self.batch_timeout_ms) and self.batch_timeout_ms >= 0):
            raise ValueError(f"{self.instance_type}: batch_timeout_ms must be >= 0, got {self.batch_timeout_ms}")

    def dispatch_line(self) -> tuple[float, float]:
        """(T(1) p99 ms, extra ms per extra row): the front door's view of a worker, fitted as
        ``frontdoor.dispatcher.profile_line`` fits it (p99 at b=1; p50 slope from first to last row)."""
        (b1, p50_1, p99_1), (bn, p50_n, _) = self.batches[0], self.batches[-1]
        return p99_1, max(0.0, (p50_n - p50_1) / max(1, bn - b1))


@dataclass(frozen=True)
class LambdaModel:
    """The Lambda function as the simulator runs it (see the module docstring for each figure).

    ``batches``: (1, p50 ms, p99 ms) of one warm request, before the memory factor.
    """

    enabled: bool = True
    memory_mb: int = 2048
    concurrency_limit: int = 1000
    batches: tuple[tuple[int, float, float], ...] = ((1, 10.0, 12.0),)
    init_ms: float = INIT_MS
    platform_init_ms: float = PLATFORM_INIT_MS
    idle_ttl_s: float = IDLE_TTL_S
    keepalive_s: float = KEEPALIVE_S
    architecture: str = "x86_64"
    max_waiting_per_env: int = MAX_WAITING_PER_ENV

    def __post_init__(self) -> None:
        if self.enabled and self.concurrency_limit < 1:
            raise ValueError(f"lambda concurrency_limit must be >= 1, got {self.concurrency_limit}")
        if self.idle_ttl_s <= 0 or self.keepalive_s <= 0 or self.init_ms < 0 or self.platform_init_ms < 0:
            raise ValueError("lambda idle_ttl_s and keepalive_s must be > 0, init_ms and platform_init_ms >= 0")

    @property
    def cpu_factor(self) -> float:
        """Service-time multiplier of the memory's vCPU share (1 at or above 1,769 MB)."""
        return max(1.0, ONE_VCPU_MB / self.memory_mb)

    def warm_p99_ms(self) -> float:
        """The dispatcher's prediction of a warm invocation: p99 at b=1 times the CPU factor."""
        return self.batches[0][2] * self.cpu_factor

    def cold_ms(self) -> float:
        return self.platform_init_ms + self.init_ms + self.warm_p99_ms()


class _Worker:
    """One serving instance's state (mutable; the engine's own)."""

    __slots__ = (
        "index",
        "instance_id",
        "instance_type",
        "market",
        "usd_per_hour",
        "slots",
        "b",
        "w_s",
        "mu",
        "sig",
        "est",
        "queue",
        "out",
        "nfree",
        "free_since",
        "inflight",
        "tab",
        "marg",
        "floor",
        "line",
        "bound",
        "draining",
        "alive",
        "wake_at",
    )

    def __init__(self, index: int, instance_id: str, market: str, usd_per_hour: float, bound: int) -> None:
        self.index = index
        self.instance_id = instance_id
        self.market = market
        self.usd_per_hour = usd_per_hour
        self.bound = bound
        self.queue: deque[int] = deque()
        self.out = 0  # requests sent and not yet answered (queued + in service)
        self.inflight: dict[int, list[int]] = {}  # event seq -> request ids of batches in service
        self.est = ServiceTimeEstimate()  # seconds, from completed batches (the worker's deadline rule)
        self.draining = False
        self.alive = True
        self.wake_at = math.inf
        self.instance_type = ""
        self.slots = self.b = self.nfree = 0
        self.w_s = 0.0
        self.mu: list[float] = []
        self.sig: list[float] = []
        self.free_since: deque[float] = deque()
        self.tab: list[float] = []
        self.marg = 0.0
        self.floor = 0.0  # the lowest predicted completion of any serving worker with this marginal cost
        self.line = (0.0, 0.0)


def _normals(rng: np.random.Generator, chunk: int = 1 << 18) -> Iterator[float]:
    """Standard normal draws forever, generated a chunk at a time (a Python float each)."""
    while True:
        yield from rng.standard_normal(chunk).tolist()


class ServingModel:
    """Workers, Lambda and the front door over one trace's arrivals.

    Args:
        arrivals_s: arrival times (s), non-decreasing; request i arrives at ``arrivals_s[i]``.
        rt_max_ms: RTmax: each request's deadline is arrival + RTmax.
        lam: the Lambda function (``enabled=False``: none).
        ledger: bills every Lambda invocation (instances are billed by the cloud).
        seed: of the service-time draws.
        queue_bound: outstanding requests per worker past which dispatch leaves it out.
        dispatch_margin_ms: the workers' slack between predicted completion and deadline.
    """

    def __init__(
        self,
        arrivals_s: Sequence[float] | np.ndarray,
        rt_max_ms: float,
        lam: LambdaModel,
        ledger: CostLedger,
        *,
        seed: int = 0,
        queue_bound: int = 256,
        dispatch_margin_ms: float = DISPATCH_MARGIN_MS,
    ) -> None:
        if queue_bound < 1:
            raise ValueError(f"queue_bound must be >= 1, got {queue_bound}")
        self.at = array("d", np.asarray(arrivals_s, dtype=np.float64).tobytes())
        n = len(self.at)
        self.n = n
        self.done_s = array("d", [math.nan]) * n
        self.route = bytearray(n)
        self.rt_s = rt_max_ms / 1000.0
        self.rt_ms = float(rt_max_ms)
        self.margin_s = dispatch_margin_ms / 1000.0
        self.queue_bound = queue_bound
        self.ledger = ledger
        rng = np.random.default_rng(seed)
        self._z = _normals(rng).__next__
        self.heap: list[tuple] = []  # (time s, seq, kind, ...): seq unique, so tuples never compare further
        self.seq = 0
        self.next_i = 0  # the next arrival to dispatch
        self.now = 0.0
        self.workers: dict[str, _Worker] = {}
        self.disp: list[_Worker] = []  # serving workers, by (marginal cost, id): the dispatch order
        self._tabs: dict[tuple[int, int, float, float, float, float], tuple[list[float], float]] = {}
        # counters (cumulative): what the controller observes as differences
        self.answered = 0
        self.answered_ok = 0
        self.redispatched = 0
        self.killed_with_work = 0
        # Lambda
        self.lam = lam
        self.l_enabled = lam.enabled
        self.l_limit = lam.concurrency_limit
        self.l_warm_ms = lam.warm_p99_ms()
        self.l_cold_ms = lam.cold_ms()
        self.l_wait_cap = lam.concurrency_limit * lam.max_waiting_per_env
        mu, sig = _per_size(lam.batches, 1)
        self.l_mu = mu[1] + math.log(lam.cpu_factor) - _LN_MS
        self.l_sig = sig[1]
        self.l_init_s = (lam.platform_init_ms + lam.init_ms) / 1000.0
        self.l_idle: deque[float] = deque()  # last-used times of idle environments, oldest first
        self.l_busy = 0  # environments serving a request (cold starts included)
        self.l_starting = 0  # prewarm environments in their cold start
        self.l_waiting: deque[int] = deque()  # requests held at the front door for a free environment
        self.l_target = 0  # environments held warm (Prewarm)
        self.l_billed: dict[int, int] = {}  # billed ms -> invocations, flushed to the ledger
        self.l_cold_starts = 0
        self.l_pings = 0

    # --- the fleet -----------------------------------------------------------------------------

    def add_worker(self, instance_id: str, model: WorkerModel, market: str, usd_per_hour: float, now: float) -> None:
        """A worker that is ready to serve from ``now`` on."""
        wk = _Worker(len(self.workers), instance_id, market, usd_per_hour, self.queue_bound)
        self._configure(wk, model)
        wk.nfree = wk.slots
        wk.free_since.extend([now] * wk.slots)
        self.workers[instance_id] = wk
        self._resort()

    def has_worker(self, instance_id: str) -> bool:
        wk = self.workers.get(instance_id)
        return wk is not None and wk.alive

    def outstanding(self, instance_id: str) -> int:
        wk = self.workers.get(instance_id)
        return wk.out if wk is not None and wk.alive else 0

    def serving(self) -> list[_Worker]:
        """Workers taking new work (alive, not draining)."""
        return list(self.disp)

    def drain(self, instance_id: str, now: float) -> None:
        """No new work for this worker; it sends what it holds at once (the discipline's ``closing``)."""
        wk = self.workers.get(instance_id)
        if wk is None or not wk.alive or wk.draining:
            return
        wk.draining = True
        self._resort()
        self._try_start(wk, now)

    def kill(self, instance_id: str, now: float) -> int:
        """The instance is gone at ``now``: its queued and in-flight requests go back to dispatch.
        Returns how many were re-dispatched."""
        wk = self.workers.get(instance_id)
        if wk is None or not wk.alive:
            return 0
        wk.alive = False
        ids = [i for batch in wk.inflight.values() for i in batch]
        ids.extend(wk.queue)
        wk.inflight.clear()
        wk.queue.clear()
        wk.out = 0
        self._resort()
        if ids:
            self.killed_with_work += 1
            self.redispatched += len(ids)
            for i in sorted(ids):
                self._route(i, now, (self.at[i] + self.rt_s - now) * 1000.0)
        return len(ids)

    def set_batching(self, model: WorkerModel, now: float) -> None:
        """Workers of ``model.instance_type`` run with its batching from ``now`` on."""
        for wk in self.workers.values():
            if wk.alive and wk.instance_type == model.instance_type:
                self._configure(wk, model)
        self._resort()
        for wk in self.workers.values():
            if wk.alive and wk.instance_type == model.instance_type:
                self._try_start(wk, now)

    def _configure(self, wk: _Worker, model: WorkerModel) -> None:
        wk.instance_type = model.instance_type
        if wk.slots == 0:  # a new worker; a type's slots never change later (SetBatching keeps them)
            wk.slots = model.slots
        wk.b = model.max_batch
        wk.w_s = model.batch_timeout_ms / 1000.0
        mu, sig = _per_size(model.batches, model.max_batch)
        wk.mu = [m - _LN_MS for m in mu]
        wk.sig = sig
        t1_ms, per_row_ms = wk.line = model.dispatch_line()
        key = (model.slots, model.max_batch, model.batch_timeout_ms, t1_ms, per_row_ms, wk.usd_per_hour)
        if key not in self._tabs:
            views = [
                WorkerView("", o, model.slots, model.max_batch, model.batch_timeout_ms, t1_ms, per_row_ms,
                           wk.usd_per_hour, self.queue_bound)
                for o in range(self.queue_bound)
            ]  # fmt: skip
            self._tabs[key] = ([v.predicted_completion_ms() for v in views], views[0].marginal_usd())
        wk.tab, wk.marg = self._tabs[key]

    def _resort(self) -> None:
        live = [w for w in self.workers.values() if w.alive and not w.draining]
        live.sort(key=lambda w: (w.marg, w.instance_id))
        floor: dict[float, float] = {}
        for w in live:
            floor[w.marg] = min(floor.get(w.marg, math.inf), min(w.tab))
        for w in live:
            w.floor = floor[w.marg]
        self.disp = live

    # --- Lambda --------------------------------------------------------------------------------

    def lambda_counts(self, now: float) -> tuple[int, int]:
        """(idle warm environments, busy environments) at ``now``."""
        self._expire(now)
        return len(self.l_idle), self.l_busy + self.l_starting

    def prewarm(self, environments: int, now: float) -> None:
        """Hold ``environments`` warm from now on (see the module docstring)."""
        self.l_target = max(0, int(environments))
        self.maintain_lambda(now)

    def maintain_lambda(self, now: float) -> None:
        """Expire idle environments, start held ones that are missing, ping idle held ones due a ping."""
        if not self.l_enabled:
            return
        self._expire(now)
        total = len(self.l_idle) + self.l_busy + self.l_starting
        start = min(self.l_target - total, self.l_limit - total)
        for _ in range(max(0, start)):
            self.l_starting += 1
            self.l_cold_starts += 1
            self._bill_lambda(math.ceil(self.lam.init_ms) + 1)  # a warm-up ping: INIT + 1 ms
            self._push(now + self.l_init_s, _LREADY, 0)
        fresh = self.l_busy + self.l_starting + sum(1 for t in self.l_idle if t > now - self.lam.keepalive_s)
        if fresh < self.l_target and self.l_idle:
            idle = sorted(self.l_idle)
            pinged = 0
            for k, t in enumerate(idle):  # oldest first: they are the ones about to expire
                if fresh + pinged >= self.l_target:
                    break
                if t <= now - self.lam.keepalive_s:
                    idle[k] = now
                    pinged += 1
                    self._bill_lambda(1)
            self.l_pings += pinged
            self.l_idle = deque(sorted(idle))

    def flush_lambda_billing(self) -> None:
        """Hand the invocations counted so far to the ledger (grouped by billed duration: exact)."""
        for ms, count in self.l_billed.items():
            self.ledger.lambda_invocation(ms, self.lam.memory_mb, self.lam.architecture, weight=count)
        self.l_billed.clear()

    def _bill_lambda(self, billed_ms: int) -> None:
        self.l_billed[billed_ms] = self.l_billed.get(billed_ms, 0) + 1

    def _expire(self, now: float) -> None:
        idle, ttl = self.l_idle, self.lam.idle_ttl_s
        while idle and idle[0] + ttl < now:
            idle.popleft()

    def _to_lambda(self, i: int, now: float) -> None:
        self.route[i] = LAMBDA
        if self.l_idle:
            self.l_idle.pop()  # the most recently used: the others age out
            self._invoke(i, now, 0.0)
        elif len(self.l_idle) + self.l_busy + self.l_starting < self.l_limit:
            self.l_cold_starts += 1
            self._invoke(i, now, self.l_init_s)
        else:
            self.l_waiting.append(i)

    def _invoke(self, i: int, now: float, cold_s: float) -> None:
        self.l_busy += 1
        s = math.exp(self.l_mu + self.l_sig * self._z())
        billed = math.ceil((s + cold_s) * 1000.0 - self.lam.platform_init_ms * (cold_s > 0))
        self._bill_lambda(max(1, billed))
        self._push(now + cold_s + s, _LDONE, i)

    def _lambda_free(self, now: float) -> None:
        """An environment has just become free at ``now``: the next waiting request, or idle."""
        if self.l_waiting:
            j = self.l_waiting.popleft()
            self.l_busy -= 1
            self._invoke(j, now, 0.0)
        else:
            self.l_busy -= 1
            self.l_idle.append(now)

    # --- the event loop ------------------------------------------------------------------------

    def _push(self, t: float, kind: int, a: object, b: object = None, c: float = 0.0) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, a, b, c))

    def run_until(self, t_end: float, *, arrivals: bool = True) -> None:
        """Dispatch every arrival before ``t_end`` and handle every event at or before it, in time order
        (an event at the very time of an arrival goes first). ``arrivals=False``: events only."""
        heap = self.heap
        at = self.at
        i = self.next_i
        hi = bisect_left(at, t_end, i) if arrivals else i
        route = self._route
        handle = self._handle
        rt_ms = self.rt_ms
        heappop = heapq.heappop
        while i < hi:
            t = at[i]
            while heap and heap[0][0] <= t:
                handle(heappop(heap))
            self.now = t
            route(i, t, rt_ms)
            i += 1
        self.next_i = i
        while heap and heap[0][0] <= t_end:
            handle(heappop(heap))
        self.now = max(self.now, t_end) if math.isfinite(t_end) else self.now

    def finish(self) -> float:
        """Handle every event left (no more arrivals): every request gets its answer. Returns the time
        of the last event."""
        heap = self.heap
        last = self.now
        while heap:
            ev = heapq.heappop(heap)
            last = ev[0]
            self._handle(ev)
        self.now = last
        return last

    def _handle(self, ev: tuple) -> None:
        t, seq, kind, a, b, c = ev
        self.now = t
        if kind == _DONE:
            wk = a
            if not wk.alive:
                return  # killed: its requests were re-dispatched
            del wk.inflight[seq]
            wk.nfree += 1
            wk.free_since.append(t)
            wk.out -= len(b)
            done, at, rt = self.done_s, self.at, self.rt_s
            ok = 0
            for i in b:
                done[i] = t
                if t - at[i] <= rt:
                    ok += 1
            self.answered += len(b)
            self.answered_ok += ok
            if wk.w_s > 0:  # the estimate only feeds batch_due, which W = 0 never needs (see _try_start)
                wk.est = wk.est.observe(len(b), c)
            if wk.queue:
                self._try_start(wk, t)
        elif kind == _WAKE:
            wk = a
            if wk.wake_at == t:
                wk.wake_at = math.inf
            if wk.alive:
                self._try_start(wk, t)
        elif kind == _LDONE:
            self.done_s[a] = t
            self.answered += 1
            if t - self.at[a] <= self.rt_s:
                self.answered_ok += 1
            self._lambda_free(t)
        else:  # _LREADY: a prewarmed environment finished its cold start
            self.l_starting -= 1
            self.l_busy += 1
            self._lambda_free(t)

    def _try_start(self, wk: _Worker, now: float) -> None:
        """Start every batch the discipline says is due at ``now`` on ``wk``'s free slots; else wake it
        when the head batch falls due."""
        q = wk.queue
        at = self.at
        while wk.nfree and q:
            nq = len(q)
            b = wk.b
            if nq >= b:
                n = b
            else:
                n = nq
                head = at[q[0]]
                if head + wk.w_s > now and not wk.draining:
                    # Not trivially due (see the module docstring): the worker's own rule decides.
                    # (Draining: batch_due says "closing", go now, whatever it holds.)
                    sf = wk.free_since[0]
                    d = batch_due(
                        now,
                        slot_free_at=head if head > sf else sf,
                        head_arrival=head,
                        earliest_deadline=head + self.rt_s,  # FIFO, one budget: the head is the most urgent
                        rows=n,
                        left_over=False,
                        max_batch_size=b,
                        batch_timeout=wk.w_s,
                        dispatch_margin=self.margin_s,
                        predicted_service=wk.est.predict(n),
                        closing=False,
                    )
                    if d.reason is None:
                        if d.due_at < wk.wake_at or wk.wake_at <= now:
                            wk.wake_at = d.due_at
                            self._push(d.due_at, _WAKE, wk)
                        return
            ids = [q.popleft()] if n == 1 else [q.popleft() for _ in range(n)]
            wk.nfree -= 1
            wk.free_since.popleft()
            s = _exp(wk.mu[n] + wk.sig[n] * self._z())
            self.seq = seq = self.seq + 1
            wk.inflight[seq] = ids
            _heappush(self.heap, (now + s, seq, _DONE, wk, ids, s))

    # --- dispatch ------------------------------------------------------------------------------

    def choose(self, now: float, budget_ms: float) -> tuple[int, _Worker | None]:
        """``policy/dispatch.decide`` for a request at ``now`` with ``budget_ms`` left, on this state:
        ``(INSTANCE, worker)``, ``(LAMBDA, None)`` or ``(REJECTED, None)``. Equal to
        ``decide(budget_ms, self.worker_views(), self.lambda_view(now))`` (a test checks it)."""
        best: _Worker | None = None
        bc = bm = 0.0
        for wk in self.disp:  # by (marginal, id): the first group with a worker that meets it wins
            if best is not None and wk.marg != bm:
                break
            o = wk.out
            if o < wk.bound:
                c = wk.tab[o]
                if c <= budget_ms and (best is None or c < bc):
                    best, bc, bm = wk, c, wk.marg
                    if c <= wk.floor:
                        break  # no worker of this price group can do better; ties go to the lower id: this one
        if best is not None:
            return INSTANCE, best
        lam_ms: float | None = None
        if self.l_enabled:
            self._expire(now)
            idle = len(self.l_idle)
            left = self.l_limit - idle - self.l_busy - self.l_starting
            waiting = len(self.l_waiting)
            if idle > 0:
                lam_ms = self.l_warm_ms
            elif left > 0:
                lam_ms = self.l_cold_ms
            elif waiting < self.l_wait_cap:
                lam_ms = self.l_warm_ms * (waiting + 1) / max(1, self.l_limit) + self.l_warm_ms
            if lam_ms is not None and lam_ms <= budget_ms:
                return LAMBDA, None  # warm fits, or a cold start fits, or a busy one frees in time
        late: _Worker | None = None
        lc = 0.0
        for wk in self.disp:
            o = wk.out
            if o < wk.bound:
                c = wk.tab[o]
                if late is None or c < lc or (c == lc and wk.instance_id < late.instance_id):
                    late, lc = wk, c
        if late is not None and (lam_ms is None or lc <= lam_ms):
            return INSTANCE, late
        if lam_ms is not None:
            return LAMBDA, None
        return REJECTED, None

    def _route(self, i: int, now: float, budget_ms: float) -> None:
        """Dispatch request i at ``now`` (:meth:`choose`) and apply the decision."""
        kind, wk = self.choose(now, budget_ms)
        if wk is not None:
            wk.queue.append(i)
            wk.out += 1
            if wk.nfree:
                self._try_start(wk, now)
        elif kind == LAMBDA:
            self._to_lambda(i, now)
        else:
            self.route[i] = REJECTED
            self.done_s[i] = now
            self.answered += 1

    def worker_views(self) -> tuple[WorkerView, ...]:
        """The dispatch policy's view of every serving worker now (as the live front door builds it)."""
        out = []
        for wk in self.disp:
            t1_ms, per_row_ms = wk.line
            out.append(
                WorkerView(wk.instance_id, wk.out, wk.slots, wk.b, wk.w_s * 1000.0, t1_ms, per_row_ms,
                           wk.usd_per_hour, wk.bound)
            )  # fmt: skip
        return tuple(out)

    def lambda_view(self, now: float) -> LambdaView:
        """The dispatch policy's view of Lambda at ``now``."""
        if not self.l_enabled:
            return LambdaView(False, 0, 0, 0.0, 0.0)
        self._expire(now)
        return LambdaView(
            True,
            len(self.l_idle),
            self.l_limit - len(self.l_idle) - self.l_busy - self.l_starting,
            self.l_warm_ms,
            self.l_cold_ms,
            limit=self.l_limit,
            waiting=len(self.l_waiting),
            max_waiting_per_env=self.lam.max_waiting_per_env,
        )
