"""The live control loop (DESIGN.md §3 "Controller"): every Δ on the run's clock, observe, call the
pure step, apply its actions through the cloud, log the tick.

The simulator (``sim/runner.py``) drives the same ``Controller.step`` on a virtual clock; this loop
does what it does against the real interfaces:

- steps fall at t0, t0 + Δ, t0 + 2Δ, … on the cloud's clock (``Cloud.now``: virtual seconds, which a
  time factor compresses; one missed because a step ran long is skipped, not bunched);
- the observation is :class:`~orchestrator.controller.observe.LiveObserver`'s (the simulator's
  conventions, documented there);
- ``Launch`` -> ``Cloud.launch`` (the token is remembered per instance id: the local cloud and the
  ``Cloud`` interface take none, so the loop is what makes a launch seen twice count once); ``Drain``
  -> the front door sends the instance no new work; ``Terminate`` -> ``Cloud.terminate`` (graceful);
  ``Prewarm`` -> the level is held: at each step the function is topped up to it
  (``FunctionBackend.prewarm`` starts environments; idle ones age out); ``SetBatching`` -> pushed to
  every running worker of the type (and to each that becomes ready later) through its admin endpoint,
  and to the front door's completion-time predictions;
- a refused action (``CapacityError``, an unknown instance, a worker that exits before it is ready,
  any other exception of the cloud) becomes an :class:`ActionFailure` in the next observation; the
  loop never dies of a cloud error. A step that raises (a bug) is logged as an ``error`` line and the
  loop goes on with the state it had;
- each tick is one JSON line of the decision log (``Tick.record()``), flushed as written;
- cancelling :meth:`ControlLoop.run` stops it cleanly: background actions are awaited briefly then
  cancelled, the log is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from orchestrator.cloud.base import CapacityError, Cloud, FunctionBackend, Instance, InstanceNotFound
from orchestrator.controller.actions import (
    Action,
    ActionFailure,
    Drain,
    Launch,
    Prewarm,
    SetBatching,
    Terminate,
)
from orchestrator.controller.observe import LiveObserver, ServingView
from orchestrator.controller.state import Controller, Tick
from orchestrator.frontdoor.upstream import Connection, HttpConnectionError, build_request
from orchestrator.types import InstanceState

log = logging.getLogger("mark.controller")

# Pushes (b, W) to one worker; raises on failure (the message becomes the ActionFailure's).
BatchingPusher = Callable[[Instance, int, float], Awaitable[None]]
# Called just before a top-up; what it returns is called just after it (e.g. to bill the pings).
PrewarmHook = Callable[[], Callable[[], None]]

ADMIN_TOKEN_ENV = "MARK_WORKER_ADMIN_TOKEN"  # ec2_worker.app's (not imported: it pulls FastAPI in)


def failure_reason(error: BaseException) -> str:
    """An exception of the cloud as an ``ActionFailure.reason``: ``capacity``, ``not_found`` or ``error``."""
    if isinstance(error, CapacityError):
        return "capacity"
    if isinstance(error, InstanceNotFound):
        return "not_found"
    return "error"


def _finite(value: Any) -> Any:
    """A decision-log value as strict JSON: non-finite floats as null, numpy scalars as Python's."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def tick_line(tick: Tick) -> str:
    """One decision-log line (no newline): ``Tick.record()`` as strict JSON."""
    return json.dumps(_finite(tick.record()), separators=(",", ":"))


def local_batching_pusher(admin_url: Callable[[str], str | None], models: tuple[str, ...]) -> BatchingPusher:
    """A :data:`BatchingPusher` for local workers: ``PUT /internal/models/{model}/batching`` on the
    worker's admin endpoint (``admin_url(instance_id)``, e.g. ``LocalCloud.admin_url``), for every model,
    with ``X-Mark-Admin-Token`` from ``$MARK_WORKER_ADMIN_TOKEN`` when set (never logged).

    The pusher raises RuntimeError when the worker has no admin endpoint or answers other than 200."""

    async def push(inst: Instance, max_batch_size: int, batch_timeout_ms: float) -> None:
        url = admin_url(inst.id)
        if url is None:
            raise RuntimeError(f"{inst.id} has no admin endpoint yet")
        host, port = url.removeprefix("http://").rsplit(":", 1)
        body = json.dumps({"max_batch_size": max_batch_size, "batch_timeout_ms": batch_timeout_ms}).encode()
        headers = {"content-type": "application/json"}
        token = os.environ.get(ADMIN_TOKEN_ENV)
        if token:
            headers["x-mark-admin-token"] = token
        conn = Connection(host, int(port))
        try:
            for model in models:
                raw = build_request("PUT", host, int(port), f"/internal/models/{model}/batching", body, headers)
                try:
                    resp = await conn.send(raw)
                except HttpConnectionError as e:
                    raise RuntimeError(f"{inst.id}: admin endpoint unreachable: {e}") from None
                if resp.status != 200:
                    raise RuntimeError(f"{inst.id}: batching for {model} refused ({resp.status}): {resp.body[:200]!r}")
        finally:
            await conn.close()

    return push


@dataclass
class LoopCounts:
    """What the loop did, for the run report."""

    ticks: int = 0
    launched: int = 0  # instances launched by the controller
    terminated: int = 0  # instances terminated by the controller
    drained: int = 0
    failures: int = 0  # actions refused
    step_errors: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class ControlLoop:
    """Drives ``controller`` against ``cloud`` (see the module docstring).

    ``observer`` builds observations (its ``serving`` drains and reports queues; its ``function`` is
    pre-warmed); ``decision_log``: the JSON-lines file ticks are appended to (None: not written);
    ``push_batching``: how ``SetBatching`` reaches a worker (None: such actions fail as ``error``:
    this cloud cannot reconfigure its workers); ``wall_seconds_per_second``: real seconds per second of
    the cloud's clock (the time factor), for sleeping between steps; ``on_prewarm``: called before each
    top-up, and what it returns after it (the run bills the pings).
    """

    def __init__(
        self,
        controller: Controller,
        cloud: Cloud,
        observer: LiveObserver,
        *,
        decision_log: Path | str | None = None,
        push_batching: BatchingPusher | None = None,
        wall_seconds_per_second: float = 1.0,
        on_prewarm: PrewarmHook | None = None,
    ) -> None:
        if not (math.isfinite(wall_seconds_per_second) and wall_seconds_per_second > 0):
            raise ValueError(f"wall_seconds_per_second must be finite and > 0, got {wall_seconds_per_second}")
        self.controller = controller
        self.cloud = cloud
        self.observer = observer
        self.serving: ServingView | None = observer.serving
        self.function: FunctionBackend | None = observer.function
        self.decision_log = Path(decision_log) if decision_log is not None else None
        self.push_batching = push_batching
        self.wall_per_s = wall_seconds_per_second
        self.on_prewarm = on_prewarm
        self.state: Any = controller.initial_state()
        self.counts = LoopCounts()
        self.tokens: dict[str, str] = {}  # instance id -> launch token
        self.launches: dict[str, Launch] = {}  # instance id -> the Launch that made it
        self.draining: set[str] = set()
        self.terminating: set[str] = set()
        self.prewarm_target = 0
        self.batching: dict[str, tuple[int, float]] = {}  # type -> (b, W) asked
        self._batching_on: dict[str, tuple[int, float]] = {}  # instance id -> (b, W) pushed
        self._reported_lost: set[str] = set()
        self._failures: list[ActionFailure] = []
        self._background: set[asyncio.Task[None]] = set()
        self._prewarming: asyncio.Task[None] | None = None
        self._log: IO[str] | None = None

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Step every ``controller.interval_s`` seconds of the cloud's clock until cancelled; the first
        step is now. Cancelling stops it cleanly (see :meth:`close`)."""
        interval = float(self.controller.interval_s)
        t0 = self.cloud.now()
        k = 0
        try:
            while True:
                await self.tick()
                now = self.cloud.now()
                k = max(k + 1, math.floor((now - t0) / interval) + 1)  # skip steps already past
                due = t0 + k * interval
                await asyncio.sleep(max(0.0, (due - now) * self.wall_per_s))
        finally:
            await self.close()

    async def tick(self) -> Tick | None:
        """One step now: observe, step, log, apply. Returns the tick (None when the step raised)."""
        failures, self._failures = self._failures, []
        try:
            failures += self._lost_launches()
            obs = self.observer.observe(draining=frozenset(self.draining), tokens=dict(self.tokens), failures=failures)
        except Exception as e:  # noqa: BLE001 - a cloud that cannot be read: logged, tried again next step
            self._failures = failures
            self._error_line("observe", e)
            return None
        try:
            tick = self.controller.step(self.state, obs)
        except Exception as e:  # noqa: BLE001 - a bug in a step must not stop serving; logged loudly
            log.exception("controller step failed at t=%.0f s", obs.now_s)
            self._error_line("step", e, obs.now_s)
            return None
        self.state = tick.state
        self.counts.ticks += 1
        self._write(tick_line(tick))
        await self.apply(tick.actions, obs.now_s)
        await self._maintain(obs.now_s)
        return tick

    async def apply(self, actions: tuple[Action, ...], now_s: float) -> None:
        """Apply a tick's actions in order; each refusal is kept for the next observation."""
        for a in actions:
            try:
                if isinstance(a, Launch):
                    launched = await self.cloud.launch(a.instance_type, a.market, a.count)
                    for inst in launched:
                        self.tokens[inst.id] = a.token
                        self.launches[inst.id] = a
                    self.counts.launched += len(launched)
                elif isinstance(a, Drain):
                    self._instance(a.instance_id)  # unknown -> not_found, before any effect
                    self.draining.add(a.instance_id)
                    if self.serving is not None:
                        self.serving.drain(a.instance_id)
                    self.counts.drained += 1
                elif isinstance(a, Terminate):
                    self._instance(a.instance_id)
                    self.terminating.add(a.instance_id)
                    self._spawn(self._terminate(a), f"terminate {a.instance_id}")
                elif isinstance(a, Prewarm):
                    if self.function is None:
                        raise RuntimeError("this run has no Lambda function to pre-warm")
                    self.prewarm_target = max(0, a.environments)
                elif isinstance(a, SetBatching):
                    if self.push_batching is None:
                        raise RuntimeError("this cloud's workers cannot be reconfigured (no admin endpoint)")
                    self.batching[a.instance_type] = (a.max_batch_size, a.batch_timeout_ms)
                    if self.serving is not None:
                        self.serving.set_batching(a.max_batch_size, a.batch_timeout_ms)
            except Exception as e:  # noqa: BLE001 - every refusal comes back as an observation
                self._fail(a, e, now_s)

    # --- what is held between steps -------------------------------------------------------------

    async def _maintain(self, now_s: float) -> None:
        """Hold the pre-warm level and the batching settings (workers that became ready since)."""
        if self.function is not None and self.prewarm_target > 0 and self._prewarming is None:
            missing = self.prewarm_target - self.function.stats().environments
            if missing > 0:
                self._prewarming = self._spawn(self._prewarm(missing, now_s), "prewarm")
        if self.batching and self.push_batching is not None:
            for inst in self.cloud.instances():
                want = self.batching.get(inst.instance_type)
                if want is None or inst.state != InstanceState.RUNNING or self._batching_on.get(inst.id) == want:
                    continue
                try:
                    await self.push_batching(inst, *want)
                    self._batching_on[inst.id] = want
                except Exception as e:  # noqa: BLE001 - reported, tried again next step
                    self._fail(SetBatching(inst.instance_type, *want), e, now_s)

    async def _prewarm(self, count: int, now_s: float) -> None:
        assert self.function is not None
        try:
            done = self.on_prewarm() if self.on_prewarm is not None else None
            await self.function.prewarm(count)
            if done is not None:
                done()
        except Exception as e:  # noqa: BLE001
            self._fail(Prewarm(self.prewarm_target), e, now_s)
        finally:
            self._prewarming = None

    async def _terminate(self, a: Terminate) -> None:
        try:
            await self.cloud.terminate([a.instance_id])
            self.counts.terminated += 1
        except Exception as e:  # noqa: BLE001
            self.terminating.discard(a.instance_id)
            self._fail(a, e, self.cloud.now())

    def _lost_launches(self) -> list[ActionFailure]:
        """Instances this loop launched that ended before they ever ran (their worker exited while
        booting), reported once each as a failed launch of one."""
        out = []
        for inst in self.cloud.instances():
            a = self.launches.get(inst.id)
            if (
                a is None
                or inst.state != InstanceState.TERMINATED
                or inst.ready_at is not None
                or inst.id in self.terminating
                or inst.id in self._reported_lost
            ):
                continue
            self._reported_lost.add(inst.id)
            lost = Launch(a.instance_type, a.market, 1, a.token)
            at = inst.terminated_at if inst.terminated_at is not None else self.cloud.now()
            out.append(ActionFailure(lost, "error", f"{inst.id} exited before it was ready", at))
            self._count_failure("error")
        return out

    # --- plumbing -------------------------------------------------------------------------------

    def _instance(self, instance_id: str) -> Instance:
        for inst in self.cloud.instances():
            if inst.id == instance_id:
                return inst
        raise InstanceNotFound(f"unknown instance {instance_id!r}")

    def _fail(self, action: Action, error: BaseException, at_s: float) -> None:
        reason = failure_reason(error)
        message = str(error) or type(error).__name__
        log.warning("%s refused (%s): %s", type(action).__name__, reason, message)
        self._failures.append(ActionFailure(action, reason, message, float(at_s)))
        self._count_failure(reason)

    def _count_failure(self, reason: str) -> None:
        self.counts.failures += 1
        self.counts.by_reason[reason] = self.counts.by_reason.get(reason, 0) + 1

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(f"controller: {name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _write(self, line: str) -> None:
        if self.decision_log is None:
            return
        if self._log is None:
            self.decision_log.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.decision_log.open("a", encoding="utf-8")
        self._log.write(line + "\n")
        self._log.flush()

    def _error_line(self, where: str, error: BaseException, at_s: float | None = None) -> None:
        self.counts.step_errors += 1
        at = at_s if at_s is not None else _safe_now(self.cloud)
        self._write(json.dumps({"error": where, "at_s": at, "message": f"{type(error).__name__}: {error}"}))

    async def close(self, grace_s: float = 5.0) -> None:
        """Let background actions (terminations, pre-warms) finish for up to ``grace_s`` real seconds,
        cancel the rest, close the decision log. Safe to call twice."""
        pending = list(self._background)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_s)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._log is not None:
            self._log.close()
            self._log = None


def _safe_now(cloud: Cloud) -> float | None:
    with contextlib.suppress(Exception):
        return cloud.now()
    return None


def wall_now() -> float:
    """The calendar time (POSIX s) at a whole minute: a default ``epoch0_s`` for a live run."""
    return math.floor(time.time() / 60.0) * 60.0
