"""The embedded Lambda service: a pool of real execution-environment processes on this machine.

The dispatcher sends a request to Lambda only when Lambda can meet its deadline, so what matters
here is what makes Lambda fast or slow on AWS: a warm environment answers in milliseconds, a new
one first pays a cold start (sandbox creation, emulated by ``platform_init_ms``, then INIT: the
interpreter, the handler's imports and the model load, all real), environments serve one request
at a time, idle ones are shut down after ``idle_ttl_s``, and past ``concurrency_limit`` environments
a request is throttled (``FunctionThrottled``, AWS's 429 TooManyRequestsException).

Each environment is ``python -m lambda_fn.local_env`` (started by ``lambda_process.py``), fed
Function URL payload 2.0 events (``function_url.py``) in frames over its pipes (``lambda_wire.py``),
so the handler runs exactly the code path it runs behind a Function URL. This module is the pool:
which environment serves, cold starts, throttling, idle expiry, billing and the latency estimates.

Billing follows AWS: duration rounded up to the next millisecond × memory. Since 2025-08-01 the
INIT phase of on-demand functions is billed as well (AWS Compute Blog, "AWS Lambda standardizes
billing for INIT Phase"), so a cold start bills its measured INIT duration too. The sandbox creation
before INIT (``platform_init_ms``) is neither reported as Init Duration nor billed by AWS, and is
not billed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.repository import ModelRepository
from orchestrator.cloud.base import FunctionError, FunctionResult, FunctionStats, FunctionThrottled
from orchestrator.cloud.local.function_url import function_url_event, http_answer
from orchestrator.cloud.local.lambda_process import (
    Environment,
    exit_code,
    function_environment,
    kill,
    log_tail,
    spawn,
)
from orchestrator.cloud.local.lambda_wire import invocation_frame, read_frame
from orchestrator.policy.estimators import ewma

INIT_TIMEOUT_S = 60.0  # an environment that is not ready by then is killed (AWS: 10 s, then retried in INVOKE)
# Priors for predicted_latency_ms before anything was observed: assumptions, replaced by the first
# observation (a warm digits invoke measures ~1 ms here, a cold start ~1 s on 2 cores).
PRIOR_WARM_MS = 100.0
PRIOR_INIT_MS = 2000.0


class LambdaEnvironmentDied(FunctionError):
    """The environment's process exited during INIT or mid-invocation; it was removed from the pool."""


class LambdaTimedOut(LambdaEnvironmentDied):
    """The invocation ran past ``timeout_s``; like AWS, the environment was shut down."""


@dataclass(frozen=True)
class LocalLambdaConfig:
    models: list[str]
    repository: str
    memory_mb: int = 2048
    concurrency_limit: int = 10
    idle_ttl_s: float = 300.0
    platform_init_ms: float = 150.0
    threads: int = 1
    time_factor: float = 1.0  # scales platform_init_ms (the emulated part); real work is never scaled
    function_name: str = "mark-inference"
    timeout_s: float = 30.0  # the function's configured timeout
    log_dir: str | None = None  # one stderr log per environment; None: a fresh temporary folder
    max_batch_size: int = 8  # rows per request, as the deployment's workers are started with

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("models: name at least one model")
        if self.concurrency_limit < 1:
            raise ValueError(f"concurrency_limit must be >= 1, got {self.concurrency_limit}")
        if not 128 <= self.memory_mb <= 10240:
            raise ValueError(f"memory_mb must be within Lambda's 128-10240 MB, got {self.memory_mb}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.idle_ttl_s <= 0 or self.timeout_s <= 0 or self.time_factor < 0 or self.platform_init_ms < 0:
            raise ValueError("idle_ttl_s and timeout_s must be > 0, time_factor and platform_init_ms >= 0")


class LocalLambda:
    """The local Lambda service for one function. Use ``async with`` or ``start()``/``stop()``."""

    def __init__(self, config: LocalLambdaConfig) -> None:
        self.config = config
        self._envs: list[Environment] = []  # ready environments, busy or idle
        self._starting = 0  # environments in their cold start: they count against the limit
        self._procs: dict[int, asyncio.subprocess.Process] = {}  # every live child, by PID
        self._invocations = 0
        self._cold_starts = 0
        self._throttles = 0
        self._deaths = 0
        self._billed_ms = 0
        self._billed_gb_s = 0.0
        self._warm_ms: dict[str, float] = {}
        self._cold_start_ms: float | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self.log_dir: Path | None = None

    async def __aenter__(self) -> LocalLambda:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Check that the models exist (a clear error now, not at the first burst) and start the reaper."""
        if self._started:
            return
        repo = ModelRepository(self.config.repository)
        for name in self.config.models:
            repo.onnx_path(name)  # raises ModelNotFound naming the model and the repository
        self.log_dir = Path(self.config.log_dir or tempfile.mkdtemp(prefix=f"{self.config.function_name}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._reaper = asyncio.create_task(self._reap_idle_forever())
        self._started = True

    async def stop(self) -> None:
        """Shut down every environment (SIGTERM, then SIGKILL after 2 s); kills them even if cancelled."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        procs = list(self._procs.values())
        self._envs.clear()
        self._procs.clear()
        try:
            for p in procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.terminate()
            if procs:
                await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 2.0)
        except TimeoutError:
            pass
        finally:
            for p in procs:
                kill(p)
        for p in procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.wait(), 2.0)
        if self.config.log_dir is None and self.log_dir is not None:  # our temporary folder, not the user's
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def pids(self) -> list[int]:
        """PIDs of every live environment process (tests and `mark run` check nothing leaks)."""
        return sorted(self._procs)

    def stats(self) -> FunctionStats:
        busy = sum(1 for e in self._envs if e.busy) + self._starting
        return FunctionStats(
            environments=len(self._envs) + self._starting,
            busy=busy,
            idle=len(self._envs) + self._starting - busy,
            invocations=self._invocations,
            cold_starts=self._cold_starts,
            throttles=self._throttles,
            deaths=self._deaths,
            billed_ms=self._billed_ms,
            billed_gb_seconds=self._billed_gb_s,
            memory_mb=self.config.memory_mb,
        )

    def warm_idle(self) -> int:
        now = time.monotonic()
        return sum(1 for e in self._envs if not e.busy and now - e.last_used < self.config.idle_ttl_s)

    def concurrency_limit(self) -> int:
        return self.config.concurrency_limit

    def concurrency_left(self) -> int:
        """Environments that may still be started before requests are throttled."""
        return max(0, self.config.concurrency_limit - len(self._envs) - self._starting)

    def predicted_latency_ms(self, model: str, cold: bool) -> float:
        """EWMA of observed warm round trips for ``model``, plus the EWMA cold start when ``cold``."""
        warm = self._warm_ms.get(model, PRIOR_WARM_MS)
        if not cold:
            return warm
        cold_start = self._cold_start_ms
        if cold_start is None:
            cold_start = self._platform_init_s() * 1e3 + PRIOR_INIT_MS
        return cold_start + warm

    async def invoke(self, model: str, body: bytes, headers: dict[str, str]) -> FunctionResult:
        """``POST /v2/models/{model}/infer`` on a warm environment, or on a new one (cold start)."""
        if not self._started or self._closed:
            raise RuntimeError("LocalLambda is not running: call start() first (and not after stop())")
        env = self._take_idle()
        cold = env is None
        if env is None:
            if len(self._envs) + self._starting >= self.config.concurrency_limit:
                self._throttles += 1
                raise FunctionThrottled(
                    f"Rate Exceeded: all {self.config.concurrency_limit} environments of "
                    f"{self.config.function_name} are busy (concurrency limit)"
                )
            self._starting += 1
            try:
                env = await self._start_environment()
            finally:
                self._starting -= 1
        self._invocations += 1
        request_id = str(uuid.uuid4())
        event = function_url_event(
            self.config.function_name, "POST", f"/v2/models/{model}/infer", body, headers, request_id
        )
        t0 = time.perf_counter()
        reply = await self._round_trip(env, event, request_id)
        round_trip_ms = (time.perf_counter() - t0) * 1e3
        status, out_body, out_headers = http_answer(reply)
        duration_ms = float(reply["duration_ms"])
        init_ms = env.init_ms if cold else 0.0
        billed_ms = math.ceil(duration_ms + init_ms)  # INIT billed on cold starts (see the module docstring)
        self._bill(billed_ms)
        if status == 200 and not cold:
            self._warm_ms[model] = ewma(self._warm_ms.get(model), round_trip_ms)
        return FunctionResult(
            status=status,
            body=out_body,
            headers=out_headers,
            cold_start=cold,
            init_ms=init_ms,
            duration_ms=duration_ms,
            billed_duration_ms=billed_ms,
            memory_mb=self.config.memory_mb,
        )

    async def prewarm(self, count: int) -> int:
        """Start up to ``count`` environments ahead of traffic (as a warm-up ping would on AWS).

        Each costs what a ping costs there: its INIT (billed since 2025-08) plus a 1 ms
        invocation. Returns how many were started (bounded by the concurrency limit).
        """
        if not self._started or self._closed:
            raise RuntimeError("LocalLambda is not running: call start() first (and not after stop())")
        room = self.config.concurrency_limit - len(self._envs) - self._starting
        n = max(0, min(count, room))
        self._starting += n
        try:
            envs = await asyncio.gather(*(self._start_environment() for _ in range(n)))
        finally:
            self._starting -= n
        for env in envs:
            self._invocations += 1
            self._bill(math.ceil(env.init_ms) + 1)
            env.busy = False
            env.last_used = time.monotonic()
        return n

    def _bill(self, billed_ms: int) -> None:
        """Account one invocation's billed duration (ms) and its GB-seconds at the function's memory."""
        self._billed_ms += billed_ms
        self._billed_gb_s += billed_ms / 1000.0 * self.config.memory_mb / 1024.0

    def _take_idle(self) -> Environment | None:
        """The most recently used idle environment (so the others age out), marked busy."""
        self._reap_idle()
        idle = [e for e in self._envs if not e.busy]
        if not idle:
            return None
        env = max(idle, key=lambda e: e.last_used)
        env.busy = True
        return env

    def _platform_init_s(self) -> float:
        return self.config.platform_init_ms * self.config.time_factor / 1e3

    async def _start_environment(self) -> Environment:
        """Cold start: emulated sandbox creation, then a real process through INIT until it reports ready."""
        t0 = time.monotonic()
        await asyncio.sleep(self._platform_init_s())
        if self._closed:
            raise LambdaEnvironmentDied("the local Lambda service is stopping")
        assert self.log_dir is not None
        log_path = self.log_dir / f"env-{time.time_ns()}.log"
        cfg = self.config
        proc = await spawn(
            function_environment(
                repository=cfg.repository,
                models=cfg.models,
                threads=cfg.threads,
                max_batch_size=cfg.max_batch_size,
                function_name=cfg.function_name,
                memory_mb=cfg.memory_mb,
            ),
            log_path,
        )
        self._procs[proc.pid] = proc
        if self._closed:  # stop() ran while we were spawning: it could not have seen this child
            self._forget(proc)
            kill(proc)
            raise LambdaEnvironmentDied("the local Lambda service is stopping")
        try:
            assert proc.stdout is not None
            ready = await asyncio.wait_for(read_frame(proc.stdout), INIT_TIMEOUT_S)
        except (EOFError, OSError, TimeoutError, ValueError) as e:
            self._forget(proc)
            kill(proc)
            code = await exit_code(proc)
            self._deaths += 1
            raise LambdaEnvironmentDied(
                f"environment {proc.pid} failed during INIT ({type(e).__name__}, exit code {code}); "
                f"see {log_path}: {log_tail(log_path)}"
            ) from None
        except BaseException:  # cancelled: the environment's state is unknown, so it goes
            self._forget(proc)
            kill(proc)
            raise
        self._cold_start_ms = ewma(self._cold_start_ms, (time.monotonic() - t0) * 1e3)
        self._cold_starts += 1
        env = Environment(proc=proc, init_ms=float(ready["init_ms"]))
        self._envs.append(env)
        return env

    async def _round_trip(self, env: Environment, event: dict[str, Any], request_id: str) -> dict[str, Any]:
        proc = env.proc
        assert proc.stdin is not None and proc.stdout is not None
        frame = invocation_frame(event, request_id, time.time() * 1e3 + self.config.timeout_s * 1e3)
        try:
            proc.stdin.write(frame)
            await proc.stdin.drain()
            reply: dict[str, Any] = await asyncio.wait_for(read_frame(proc.stdout), self.config.timeout_s)
        except TimeoutError:
            self._discard(env)
            raise LambdaTimedOut(
                f"invocation {request_id} ran past the {self.config.timeout_s} s timeout; "
                f"environment {env.pid} was shut down"
            ) from None
        except (EOFError, OSError, ValueError) as e:
            self._discard(env)
            self._deaths += 1
            code = await exit_code(proc)
            raise LambdaEnvironmentDied(
                f"environment {env.pid} died during invocation {request_id} ({type(e).__name__}, exit code {code})"
            ) from None
        except BaseException:  # cancelled mid-invocation: its reply would desynchronise the pipe
            self._discard(env)
            raise
        env.busy = False
        env.last_used = time.monotonic()
        return reply

    def _forget(self, proc: asyncio.subprocess.Process) -> None:
        self._procs.pop(proc.pid, None)

    def _discard(self, env: Environment, graceful: bool = False) -> None:
        """Remove an environment from the pool and end its process (SIGTERM when idle, else SIGKILL)."""
        if env in self._envs:
            self._envs.remove(env)
        self._forget(env.proc)
        if graceful and env.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                env.proc.terminate()
        else:
            kill(env.proc)

    def _reap_idle(self) -> None:
        now = time.monotonic()
        for env in [e for e in self._envs if not e.busy and now - e.last_used >= self.config.idle_ttl_s]:
            self._discard(env, graceful=True)

    async def _reap_idle_forever(self) -> None:
        period = min(1.0, max(0.02, self.config.idle_ttl_s / 4))
        while True:
            await asyncio.sleep(period)
            self._reap_idle()
