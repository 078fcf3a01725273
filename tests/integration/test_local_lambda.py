"""The local Lambda service with real execution-environment processes and the digits models:
cold then warm, throttling past the concurrency limit, idle expiry, an environment killed
mid-invocation, and no process left behind by stop()."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.codec import decode_response, encode_request
from inference.errors import ModelNotFound
from inference.repository import ModelRepository
from inference.zoo.digits import load_split
from orchestrator.cloud.base import FunctionThrottled
from orchestrator.cloud.local.lambda_pool import (
    LambdaEnvironmentDied,
    LocalLambda,
    LocalLambdaConfig,
)

pytestmark = pytest.mark.slow

Factory = Callable[..., LocalLambdaConfig]


@pytest.fixture
def config(digits_repo: ModelRepository, tmp_path: Path) -> Factory:
    def make(**overrides: Any) -> LocalLambdaConfig:
        base: dict[str, Any] = {
            "models": ["digits_mlp_small", "digits_mlp_large"],
            "repository": str(digits_repo.root),
            "platform_init_ms": 50.0,
            "log_dir": str(tmp_path / "lambda-logs"),
            "max_batch_size": 4096,  # LARGE is one 4096-row request (slow enough to overlap)
        }
        return LocalLambdaConfig(**(base | overrides))

    return make


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_dead(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


SMALL = encode_request({"input": np.zeros((1, 64), np.float32)})
LARGE = encode_request({"input": np.random.default_rng(0).random((4096, 64), dtype=np.float32) * 16})


def test_cold_start_then_warm_reuse_and_billing(config: Factory) -> None:
    _, x_test, _, y_test = load_split()
    body, headers = encode_request({"input": x_test})

    async def main() -> None:
        async with LocalLambda(config()) as lam:
            assert lam.stats().environments == 0 and lam.warm_idle() == 0
            t0 = time.perf_counter()
            cold = await lam.invoke("digits_mlp_small", body, headers)
            cold_ms = (time.perf_counter() - t0) * 1e3
            warm = await lam.invoke("digits_mlp_small", body, headers)
            stats = lam.stats()

            assert cold.status == warm.status == 200
            assert cold.cold_start and cold.init_ms > 0 and cold_ms >= 50 + cold.init_ms
            # INIT is billed on cold starts (on-demand functions, since 2025-08-01), rounded up to the ms.
            assert cold.billed_duration_ms == math.ceil(cold.init_ms + cold.duration_ms)
            assert not warm.cold_start and warm.init_ms == 0
            assert warm.billed_duration_ms == math.ceil(warm.duration_ms) and warm.memory_mb == 2048
            probs = decode_response(warm.body, warm.headers["inference-header-content-length"])["probabilities"]
            assert (probs.argmax(axis=1) == y_test).mean() >= 0.95

            assert (stats.environments, stats.busy, stats.idle) == (1, 0, 1)
            assert (stats.invocations, stats.cold_starts, stats.throttles) == (2, 1, 0)
            billed = cold.billed_duration_ms + warm.billed_duration_ms
            assert stats.billed_gb_seconds == pytest.approx(billed / 1000 * 2048 / 1024)
            assert lam.warm_idle() == 1 and lam.concurrency_left() == 9
            warm_ms = lam.predicted_latency_ms("digits_mlp_small", cold=False)
            assert 0 < warm_ms < 1000
            assert lam.predicted_latency_ms("digits_mlp_small", cold=True) >= warm_ms + 50 + cold.init_ms * 0.9

    run(main())


def test_concurrency_limit_throttles_and_warm_envs_are_reused(config: Factory) -> None:
    async def main() -> None:
        async with LocalLambda(config(concurrency_limit=2)) as lam:
            results = await asyncio.gather(
                *(lam.invoke("digits_mlp_large", *LARGE) for _ in range(4)), return_exceptions=True
            )
            served = [r for r in results if not isinstance(r, BaseException)]
            throttled = [r for r in results if isinstance(r, FunctionThrottled)]
            assert len(served) == 2 and len(throttled) == 2, results
            assert all(r.status == 200 and r.cold_start for r in served)
            assert throttled[0].status == 429
            assert lam.stats().throttles == 2 and lam.stats().environments == 2 and lam.concurrency_left() == 0

            again = await asyncio.gather(*(lam.invoke("digits_mlp_large", *LARGE) for _ in range(2)))
            assert [r.cold_start for r in again] == [False, False]
            assert lam.stats().cold_starts == 2

    run(main())


def test_idle_environments_expire_after_the_ttl(config: Factory) -> None:
    async def main() -> None:
        async with LocalLambda(config(idle_ttl_s=0.5)) as lam:
            first = await lam.invoke("digits_mlp_small", *SMALL)
            (pid,) = lam.pids()
            await asyncio.sleep(1.0)
            assert lam.stats().environments == 0 and lam.warm_idle() == 0
            assert await asyncio.to_thread(wait_dead, pid)
            second = await lam.invoke("digits_mlp_small", *SMALL)
            assert first.cold_start and second.cold_start and lam.stats().cold_starts == 2

    run(main())


def test_environment_killed_mid_invocation_raises_and_is_replaced(config: Factory) -> None:
    async def main() -> None:
        async with LocalLambda(config()) as lam:
            await lam.invoke("digits_mlp_small", *SMALL)
            (pid,) = lam.pids()
            os.kill(pid, signal.SIGSTOP)  # frozen: the invocation below is surely in flight when it dies
            task = asyncio.create_task(lam.invoke("digits_mlp_large", *LARGE))
            await asyncio.sleep(0.3)
            assert lam.stats().busy == 1
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(LambdaEnvironmentDied, match=f"environment {pid} died during invocation"):
                await task
            stats = lam.stats()
            assert stats.environments == 0 and stats.deaths == 1 and lam.pids() == []
            after = await lam.invoke("digits_mlp_small", *SMALL)
            assert after.status == 200 and after.cold_start

    run(main())


def test_stop_leaves_no_process_even_mid_invocation(config: Factory) -> None:
    async def main() -> list[int]:
        lam = LocalLambda(config(concurrency_limit=3))
        await lam.start()
        try:
            await asyncio.gather(*(lam.invoke("digits_mlp_small", *SMALL) for _ in range(3)))
            pids = lam.pids()
            assert len(pids) == 3 and all(alive(p) for p in pids)
            for p in pids:  # frozen ones ignore SIGTERM: stop() must fall back to SIGKILL
                os.kill(p, signal.SIGSTOP)
            busy = asyncio.create_task(lam.invoke("digits_mlp_large", *LARGE))
            await asyncio.sleep(0.1)
        finally:
            await lam.stop()
        with pytest.raises(LambdaEnvironmentDied):
            await busy
        with pytest.raises(RuntimeError, match="not running"):
            await lam.invoke("digits_mlp_small", *SMALL)
        return pids

    pids = run(main())
    assert not any(alive(p) for p in pids)


def test_unknown_model_fails_at_start(config: Factory) -> None:
    async def main() -> None:
        lam = LocalLambda(config(models=["resnet9000"]))
        with pytest.raises(ModelNotFound, match="resnet9000"):
            await lam.start()
        await lam.stop()

    run(main())


def test_prewarm_starts_idle_environments_billed_like_a_ping(config: Factory) -> None:
    body, headers = encode_request({"input": load_split()[1][:1]})

    async def main() -> None:
        async with LocalLambda(config(concurrency_limit=2)) as lam:
            assert await lam.prewarm(5) == 2  # bounded by the concurrency limit
            stats = lam.stats()
            assert (stats.environments, stats.idle, stats.cold_starts, stats.invocations) == (2, 2, 2, 2)
            assert stats.billed_ms > 2  # INIT + 1 ms each
            first = await lam.invoke("digits_mlp_small", body, headers)
            assert first.status == 200 and not first.cold_start  # the burst's first request is warm
            assert await lam.prewarm(1) == 0  # no room left

    run(main())


def test_a_temporary_log_folder_is_removed_on_stop(config: Factory) -> None:
    async def main() -> Path:
        async with LocalLambda(config(log_dir=None)) as lam:
            await lam.invoke("digits_mlp_small", *SMALL)
            assert lam.log_dir is not None and any(lam.log_dir.iterdir())
            return lam.log_dir

    assert not run(main()).exists()
