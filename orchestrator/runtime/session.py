"""``mark run``: the whole local stack under a replayed workload, with live progress and a report.

With a ``controller`` (``mark run``'s default, the ``ours`` policy) the live control loop
(``controller/loop.py``) steps every Δ of the run's clock: it launches instances ahead of the forecast,
pre-warms Lambda, drains and terminates, and writes each tick to a decision log; the report adds its
launches and terminations. Without one (``mark run --static``) the fleet is static and the report shows
what the workload's burst does to it (Lambda share and SLO attainment during the burst).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.codec import encode_request
from inference.repository import ModelRepository
from orchestrator.cloud.base import FunctionBackend, FunctionResult, FunctionStats
from orchestrator.controller.loop import ControlLoop, local_batching_pusher, wall_now
from orchestrator.controller.observe import ArrivalCounter, DispatcherView, LiveObserver
from orchestrator.controller.state import Controller
from orchestrator.economics.catalog import Catalog
from orchestrator.economics.ledger import CostLedger, CostSnapshot
from orchestrator.frontdoor.auth import ApiKeys, hash_key
from orchestrator.frontdoor.upstream import Connection, HttpConnectionError, build_request
from orchestrator.runtime.local_stack import LocalStack, StackConfig
from orchestrator.types import InstanceState
from orchestrator.workload.loadgen import burst_window, replay


@dataclass
class RunStats:
    sent: int = 0
    ok: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    no_retry_after: int = 0  # 503 answers without a Retry-After header (should be none)
    latencies_ms: list[float] = field(default_factory=list)
    by_second: dict[int, list[str]] = field(default_factory=dict)  # virtual second -> routes answered
    in_slo_by_second: dict[int, list[bool]] = field(default_factory=dict)  # sent that second: answered in time?

    def attainment_in(self, seconds: range, inside: bool = True) -> float | None:
        """SLO attainment of the requests sent during ``seconds`` (or outside them)."""
        flags = [f for sec, fs in self.in_slo_by_second.items() if (sec in seconds) == inside for f in fs]
        return sum(flags) / len(flags) if flags else None

    def within(self, rt_max_ms: float) -> float | None:
        if not self.sent:
            return None
        return sum(1 for x in self.latencies_ms if x <= rt_max_ms) / self.sent


@dataclass(frozen=True)
class ControlSummary:
    """What the live controller did in a run: ``launched`` / ``terminated`` instances (its own),
    ``ticks`` steps, ``failures`` actions refused (by reason), where the decision log is."""

    policy: str
    interval_s: float
    ticks: int
    launched: int
    terminated: int
    drained: int
    failures: dict[str, int]
    step_errors: int
    decision_log: str | None


@dataclass(frozen=True)
class RunReport:
    stats: RunStats
    cost: CostSnapshot
    time_factor: float
    rt_max_ms: float
    sl_min: float
    burst: tuple[int, int] | None
    instances_launched: int
    decisions: dict[str, int] = field(default_factory=dict)  # the dispatcher's, by reason
    control: ControlSummary | None = None  # None: a static fleet

    @property
    def virtual_requests(self) -> float:
        return self.stats.sent / self.time_factor

    def lambda_share(self, seconds: range | None = None) -> float:
        routes = [r for s, rs in self.stats.by_second.items() if seconds is None or s in seconds for r in rs]
        return routes.count("lambda") / len(routes) if routes else 0.0

    def _attainment(self, att: float | None) -> str:
        if att is None:
            return "-"
        return f"{att:.2%}  (target {self.sl_min * 100:g}%: {'met' if att >= self.sl_min else 'MISSED'})"

    def render(self) -> str:
        s, c = self.stats, self.cost
        att = s.within(self.rt_max_ms)
        p = np.percentile(s.latencies_ms, [50, 99]) if s.latencies_ms else [float("nan")] * 2
        per_m = c.total_usd / self.virtual_requests * 1e6 if s.sent else float("nan")
        rows = [
            ("requests sent", f"{s.sent}  (each stands for {1 / self.time_factor:g} of the virtual workload)"),
            ("answered 200", f"{s.ok}"),
            ("errors", ", ".join(f"{k}: {v}" for k, v in sorted(s.errors.items())) or "none"),
            (f"SLO attainment (<= {self.rt_max_ms:g} ms)", self._attainment(att)),
            ("latency p50 / p99", f"{p[0]:.1f} / {p[1]:.1f} ms"),
            ("Lambda share (whole run)", f"{self.lambda_share():.1%}"),
        ]
        if self.burst:
            window = range(*self.burst)
            rows.append((f"Lambda share (burst {self.burst[0]}-{self.burst[1]} s)", f"{self.lambda_share(window):.1%}"))
            for label, inside in (("during the burst", True), ("outside the burst", False)):
                a = s.attainment_in(window, inside)
                rows.append((f"SLO attainment {label}", "-" if a is None else f"{a:.2%}"))
        k = self.control
        if k is None:
            rows.append(("instances launched", f"{self.instances_launched} (a static fleet: --static)"))
        else:
            fails = ", ".join(f"{r}: {n}" for r, n in sorted(k.failures.items())) or "none"
            rows += [
                ("controller", f"{k.policy}, a step every {k.interval_s:g} virtual s ({k.ticks} steps)"),
                (
                    "instances launched",
                    f"{self.instances_launched} ({self.instances_launched - k.launched} at the start, "
                    f"{k.launched} by the controller)",
                ),
                ("instances terminated", f"{k.terminated} by the controller ({k.drained} drained first)"),
                ("refused actions", fails + (f"; {k.step_errors} step errors" if k.step_errors else "")),
                ("decision log", k.decision_log or "not written"),
            ]
        rows += [
            ("cost: instances", f"${c.instance_usd:.6f}  ({c.instance_seconds:.0f} billed instance-seconds)"),
            (
                "cost: Lambda",
                f"${c.lambda_usd:.6f}  ({c.lambda_invocations} invocations, {c.lambda_gb_seconds:.2f} GB-s)",
            ),
            ("cost: total", f"${c.total_usd:.6f} over {c.at_s:.0f} virtual seconds"),
            ("cost per 1M requests", f"${per_m:.2f}"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = ["", "run report", "-" * (width + 40)] + [f"{k:<{width}}  {v}" for k, v in rows]
        total = sum(self.decisions.values())
        if total:
            lines.append("dispatch decisions (why each request went where it went)")
            for reason, n in sorted(self.decisions.items(), key=lambda kv: -kv[1]):
                lines.append(f"  {n / total:6.1%}  {n:6d}  {reason}")
        return "\n".join(lines)


class _Sender:
    """Open-loop client: a pool of keep-alive connections to the front door, one request each at a time."""

    def __init__(self, port: int, model: str, payloads: list[tuple[bytes, dict[str, str]]], rt_max_ms: float) -> None:
        self.port = port
        self.rt_max_ms = rt_max_ms
        self.model = model
        self.raw = [build_request("POST", "127.0.0.1", port, f"/v2/models/{model}/infer", b, h) for b, h in payloads]
        self.idle: list[Connection] = []
        self.rng = random.Random(1)
        self.stats = RunStats()
        self.second = 0

    async def send(self) -> None:
        conn = self.idle.pop() if self.idle else Connection("127.0.0.1", self.port)
        second = self.second
        self.stats.sent += 1
        t0 = time.perf_counter()
        try:
            resp = await conn.send(self.raw[self.rng.randrange(len(self.raw))])
        except HttpConnectionError:
            self.stats.errors[0] = self.stats.errors.get(0, 0) + 1
            self.stats.in_slo_by_second.setdefault(second, []).append(False)
            return
        ms = (time.perf_counter() - t0) * 1e3
        self.stats.in_slo_by_second.setdefault(second, []).append(resp.status == 200 and ms <= self.rt_max_ms)
        self.idle.append(conn)
        if resp.status == 200:
            self.stats.ok += 1
            self.stats.latencies_ms.append(ms)
        else:
            self.stats.errors[resp.status] = self.stats.errors.get(resp.status, 0) + 1
            if resp.status == 503 and "retry-after" not in resp.headers:
                self.stats.no_retry_after += 1
        self.stats.by_second.setdefault(second, []).append(resp.headers.get("x-mark-route", "instance"))


def sample_payloads(repo: ModelRepository, model: str, n: int = 32) -> list[tuple[bytes, dict[str, str]]]:
    """Real inputs: held-out digits for the digits family, random pixels of the right shape otherwise."""
    card = repo.card(model)
    rng = np.random.default_rng(0)
    if card.family == "digits":
        from inference.zoo.digits import load_split

        x = load_split()[1][:n]
    else:
        shape = [1 if d < 0 else d for d in card.inputs[0].shape]
        x = rng.integers(0, 256, size=(n, *shape[1:]), dtype=np.uint8)
    return [encode_request({card.inputs[0].name: x[i : i + 1]}) for i in range(len(x))]


def _sync_ledger(ledger: CostLedger, stack: LocalStack, seen: dict[str, str]) -> None:
    """Bill from the cloud's own view: launched instances start the meter, terminated ones stop it."""
    for inst in stack.cloud.instances():
        state = seen.get(inst.id)
        if state is None:
            ledger.instance_started(inst.id, inst.instance_type, inst.market.value, inst.launched_at)
            seen[inst.id] = "started"
        if inst.state == InstanceState.TERMINATED and seen[inst.id] != "stopped":
            ledger.instance_stopped(inst.id, inst.terminated_at or stack.cloud.now())
            seen[inst.id] = "stopped"


async def run_workload(
    config: StackConfig,
    rates: list[float],
    catalog: Catalog,
    *,
    function: FunctionBackend | None = None,
    sl_min: float = 0.98,
    progress: bool = True,
    lambda_prewarm: int = 0,
    api_keys: ApiKeys | None = None,
    controller: Controller | None = None,
    decision_log: Path | str | None = None,
    epoch_at_start_s: float | None = None,
    history: Sequence[int] = (),
) -> RunReport:
    """Replay ``rates`` (requests per virtual second) through the local stack and report.

    ``controller``: the live control loop's policy (None: a static fleet, and ``lambda_prewarm``
    environments warmed once); ``decision_log``: its JSON-lines file; ``epoch_at_start_s``: the calendar
    time of the workload's first second (a trace's; None: now), for the forecaster's time of day;
    ``history``: requests per second before the window (a trace's), given to the first step.

    Raises:
        TimeoutError: the initial instances are not running after 120 s.
        OSError: the front door cannot listen, or a process cannot start.
    """
    ledger = CostLedger(catalog)
    seen: dict[str, str] = {}
    burst = burst_window(rates)
    async with LocalStack(config, function, catalog=catalog, api_keys=api_keys) as stack:
        # each request sent stands for 1 / time_factor of the workload, as instances bill virtual seconds
        weight = 1.0 / config.time_factor
        traffic = _LambdaTally()

        def on_lambda(res: FunctionResult) -> None:
            traffic.invocations += 1
            traffic.billed_ms += res.billed_duration_ms
            ledger.lambda_invocation(res.billed_duration_ms, res.memory_mb, weight=weight)

        stack.dispatcher.on_lambda = on_lambda

        def cost_now() -> dict[str, float]:
            snap = ledger.snapshot(stack.cloud.now())
            return {"instances": snap.instance_usd, "lambda": snap.lambda_usd, "total": snap.total_usd}

        stack.frontdoor.cost = cost_now  # /metrics shows cost so far
        await stack.wait_running(config.initial_instances, timeout_s=120)
        if lambda_prewarm and function is not None and controller is None:  # static: warmed once
            await _prewarm(function, lambda_prewarm, ledger)
        repo = ModelRepository(config.repository)
        payloads = sample_payloads(repo, config.models[0])
        if api_keys is not None:  # the built-in load sender gets a key of its own, for this run only
            key = secrets.token_urlsafe(32)
            api_keys.digests += (hash_key(key),)
            payloads = [(b, h | {"authorization": f"Bearer {key}"}) for b, h in payloads]
        sender = _Sender(stack.port, config.models[0], payloads, config.rt_max_ms)
        t_start = time.monotonic()
        last_progress = [0.0]

        def on_second(i: int) -> None:
            sender.second = i
            _sync_ledger(ledger, stack, seen)
            # A terminal gets a live line twice a second; a log gets one line per virtual minute.
            due = time.monotonic() - last_progress[0] >= 0.5 if sys.stderr.isatty() else i % 60 == 0
            if progress and (due or i == len(rates) - 1):
                last_progress[0] = time.monotonic()
                _progress(i, rates, stack, ledger, time.monotonic() - t_start)

        control = _control_loop(
            controller, stack, function, ledger, decision_log, epoch_at_start_s, history, config.time_factor, traffic
        )
        control_task = asyncio.get_running_loop().create_task(control.run()) if control is not None else None
        try:
            await replay(rates, sender.send, time_factor=config.time_factor, on_second=on_second)
        finally:
            if control_task is not None:
                control_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await control_task
        _sync_ledger(ledger, stack, seen)
        now = stack.cloud.now()
        for route, n in stack.dispatcher.by_route.items():
            if route in ("instance", "lambda"):
                ledger.requests(route, n)
        for inst in stack.cloud.instances():
            if seen.get(inst.id) == "started":
                ledger.instance_stopped(inst.id, now)
                seen[inst.id] = "stopped"
        snapshot = ledger.snapshot(now)
        for c in sender.idle:
            await c.close()
    if progress and sys.stderr.isatty():
        print(file=sys.stderr)
    return RunReport(
        sender.stats,
        snapshot,
        config.time_factor,
        config.rt_max_ms,
        sl_min,
        burst,
        len(stack.cloud.instances()),
        dict(stack.dispatcher.decisions),
        _summary(control, decision_log),
    )


def _control_loop(
    controller: Controller | None,
    stack: LocalStack,
    function: FunctionBackend | None,
    ledger: CostLedger,
    decision_log: Path | str | None,
    epoch_at_start_s: float | None,
    history: Sequence[int],
    time_factor: float,
    traffic: _LambdaTally,
) -> ControlLoop | None:
    """The live loop over the stack: arrivals counted per virtual second at the front door (each
    request standing for ``1 / time_factor``), batching pushed through the workers' admin endpoints,
    pre-warm pings billed in the run's ledger."""
    if controller is None:
        return None
    counter = ArrivalCounter(stack.cloud.now, weight=1.0 / time_factor)
    stack.frontdoor.on_arrival = counter.record
    epoch = (epoch_at_start_s if epoch_at_start_s is not None else wall_now()) - stack.cloud.now()
    observer = LiveObserver(
        stack.cloud,
        counter,
        serving=DispatcherView(stack.dispatcher),
        function=function,
        epoch0_s=epoch,
        history=history,
    )
    return ControlLoop(
        controller,
        stack.cloud,
        observer,
        decision_log=decision_log,
        push_batching=local_batching_pusher(stack.cloud.admin_url, stack.config.models),
        wall_seconds_per_second=time_factor,
        on_prewarm=_ping_biller(function, ledger, traffic) if function is not None else None,
    )


@dataclass
class _LambdaTally:
    """Invocations of the request path (not pings) and their billed ms, as the dispatcher reports them."""

    invocations: int = 0
    billed_ms: int = 0


def _ping_biller(
    function: FunctionBackend, ledger: CostLedger, traffic: _LambdaTally
) -> Callable[[], Callable[[], None]]:
    """Bill a top-up's pings: the function's invocations and billed ms during the top-up, less those of
    the requests it served meanwhile (billed per request already)."""

    def start() -> Callable[[], None]:
        before, seen = function.stats(), (traffic.invocations, traffic.billed_ms)

        def done() -> None:
            after = function.stats()
            pings = after.invocations - before.invocations - (traffic.invocations - seen[0])
            billed = after.billed_ms - before.billed_ms - (traffic.billed_ms - seen[1])
            _bill_calls(ledger, pings, billed, after.memory_mb)

        return done

    return start


def _summary(control: ControlLoop | None, decision_log: Path | str | None) -> ControlSummary | None:
    if control is None:
        return None
    c = control.counts
    return ControlSummary(
        control.controller.name,
        float(control.controller.interval_s),
        c.ticks,
        c.launched,
        c.terminated,
        c.drained,
        dict(c.by_reason),
        c.step_errors,
        str(decision_log) if decision_log is not None else None,
    )


async def _prewarm(function: FunctionBackend, count: int, ledger: CostLedger) -> None:
    """Warm ``count`` environments and bill the pings (each INIT + 1 ms) in the run's ledger. Not scaled
    by the time factor: a deployment pays them once, whatever its traffic."""
    before = function.stats()
    await function.prewarm(count)
    _bill_pings(ledger, before, function.stats())


def _bill_pings(ledger: CostLedger, before: FunctionStats, after: FunctionStats) -> None:
    """Bill the pre-warm pings between two stats of the function (each INIT + 1 ms), once each."""
    _bill_calls(ledger, after.invocations - before.invocations, after.billed_ms - before.billed_ms, after.memory_mb)


def _bill_calls(ledger: CostLedger, pings: int, billed_ms: int, memory_mb: int) -> None:
    """Bill ``pings`` invocations of ``billed_ms`` in all, whole ms each, summing exactly."""
    if pings <= 0:
        return
    billed_ms = max(0, billed_ms)
    for i in range(pings):
        ledger.lambda_invocation(billed_ms // pings + (1 if i < billed_ms % pings else 0), memory_mb)


def _progress(i: int, rates: list[float], stack: LocalStack, ledger: CostLedger, wall: float) -> None:
    d = stack.dispatcher
    window = d.slo.window(time.monotonic(), 10.0)
    states = [x.state for x in stack.cloud.instances()]
    routed = d.by_route["instance"] + d.by_route["lambda"]
    lam = d.by_route["lambda"] / routed if routed else 0.0
    cost = ledger.snapshot(stack.cloud.now()).total_usd
    att = window.attainment
    line = (
        f"\r[run] t={i:4d}s/{len(rates)} ({wall:5.0f}s real)  offered {rates[i]:6.1f}/s  "
        f"p99 {window.p99_ms or 0:6.1f} ms  SLO {'-' if att is None else f'{att:6.1%}'}  "
        f"instances {states.count(InstanceState.PENDING)} booting / {states.count(InstanceState.RUNNING)} ready  "
        f"Lambda {lam:5.1%}  cost ${cost:.5f}  rejected {d.by_route['rejected']}"
    )
    if sys.stderr.isatty():
        print(line, end="", file=sys.stderr, flush=True)
    else:
        print(line.lstrip("\r"), file=sys.stderr, flush=True)
