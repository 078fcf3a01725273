"""tritonclient -> front door -> a real worker process of the local cloud, JSON and binary; faults."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from inference.codec import encode_request
from inference.repository import ModelRepository
from inference.zoo.digits import load_split
from orchestrator.runtime.local_stack import StackConfig
from tests.surfaces import StackThread

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(digits_repo: ModelRepository) -> Iterator[StackThread]:
    s = StackThread(
        StackConfig(models=("digits_mlp_small",), repository=str(digits_repo.root), port=0, threads=1, max_batch=32)
    )
    yield s
    s.close()
    assert s.stack is not None
    assert all(i.state.value == "terminated" for i in s.stack.cloud.instances())  # nothing left running
    assert not s.stack.cloud._workdir.exists()  # nor any temporary file


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_through_the_front_door(stack: StackThread, binary: bool) -> None:
    _, x_test, _, y_test = load_split()
    client = httpclient.InferenceServerClient(stack.url)
    assert client.is_server_ready() and client.is_model_ready("digits_mlp_small")
    assert client.get_model_metadata("digits_mlp_small")["inputs"][0]["shape"] == [-1, 64]
    cfg = client.get_model_config("digits_mlp_small")  # the batching every instance is started with
    assert (cfg["max_batch_size"], cfg["input"][0]["dims"]) == (stack.config.max_batch, [64])
    inp = httpclient.InferInput("input", [32, 64], "FP32")
    inp.set_data_from_numpy(x_test[:32], binary_data=binary)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
    probs = client.infer("digits_mlp_small", [inp], outputs=[out]).as_numpy("probabilities")
    assert (probs.argmax(1) == y_test[:32]).mean() >= 0.9


def test_front_door_rejects_like_the_worker(stack: StackThread) -> None:
    client = httpclient.InferenceServerClient(stack.url)
    bad = httpclient.InferInput("input", [1, 63], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 63), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer("digits_mlp_small", [bad])
    assert e.value.status() == "400" and "shape [1, 63]" in e.value.message()
    r = httpx.get(f"http://{stack.url}/v2/models/nope")
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]
    assert httpx.get(f"http://{stack.url}/nowhere").status_code == 404
    r = httpx.put(f"http://{stack.url}/v2/models/digits_mlp_small/infer")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and "use POST" in r.json()["error"]
    metrics = httpx.get(f"http://{stack.url}/metrics").text
    assert 'mark_frontdoor_requests{route="instance"}' in metrics


def test_killing_a_worker_under_load_loses_no_request(digits_repo: ModelRepository) -> None:
    s = StackThread(
        StackConfig(
            models=("digits_mlp_large",),
            repository=str(digits_repo.root),
            port=0,
            threads=1,
            initial_instances=2,
            max_batch=2048,
        ),
        running=2,
    )
    try:
        x = np.random.default_rng(0).integers(0, 17, size=(2048, 64)).astype(np.float32)
        body, headers = encode_request({"input": x})
        url = f"http://{s.url}/v2/models/digits_mlp_large/infer"

        assert s.stack is not None
        cloud, dispatcher = s.stack.cloud, s.stack.dispatcher
        victim = cloud.instances()[0].id

        def one(_: int) -> int:
            return httpx.post(url, content=body, headers=headers, timeout=30).status_code

        def kill_once_requests_are_in_flight() -> None:
            deadline = time.monotonic() + 10
            while dispatcher.outstanding.get(victim, 0) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            cloud.kill(victim)

        # Freeze the victim before any request is sent (requests pile up on it instead of finishing
        # before the fault lands on a fast machine), then kill it with them in flight.
        os.kill(cloud.process_id(victim), signal.SIGSTOP)
        killer = threading.Thread(target=kill_once_requests_are_in_flight)
        killer.start()
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(one, range(200)))
        killer.join(15)
        assert not killer.is_alive()
        # Every request got a response: a result, or an explicit error (never a hang or a drop).
        assert len(codes) == 200
        assert all(c in (200, 502, 503) for c in codes), codes
        assert codes.count(200) >= 190
        # The cloud notices the dead process on its next watch tick (every 50 ms).
        deadline = time.monotonic() + 5
        while next(i for i in cloud.instances() if i.id == victim).state.value != "terminated":
            assert time.monotonic() < deadline, "the killed worker was never marked terminated"
            time.sleep(0.05)
        assert dispatcher.retries >= 2  # the kill hit requests in flight, and they were retried
    finally:
        s.close()


def test_saturated_workers_and_a_booting_instance_send_the_burst_to_lambda(
    digits_repo: ModelRepository, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.cloud.local.instances import InstanceTypeSpec
    from orchestrator.cloud.local.lambda_pool import LocalLambda, LocalLambdaConfig
    from orchestrator.types import Market

    function = LocalLambda(
        LocalLambdaConfig(
            models=["digits_mlp_small"], repository=str(digits_repo.root), concurrency_limit=2, log_dir=str(tmp_path)
        )
    )
    types = (InstanceTypeSpec("c5.large", 1, 0.0), InstanceTypeSpec("c5.xlarge", 1, 3600.0))
    s = StackThread(
        StackConfig(
            models=("digits_mlp_small",),
            repository=str(digits_repo.root),
            port=0,
            threads=1,
            queue_bound=2,
            types=types,
        ),
        function=function,
    )
    try:
        assert s.stack is not None
        cloud = s.stack.cloud
        worker = cloud.instances()[0]
        s.call(cloud.launch("c5.xlarge", Market.ON_DEMAND, 1))  # a launch in progress: booting for an hour
        os.kill(cloud.process_id(worker.id), signal.SIGSTOP)  # the only worker is saturated: it answers nothing
        x = np.zeros((1, 64), dtype=np.float32)
        body, headers = encode_request({"input": x})
        url = f"http://{s.url}/v2/models/digits_mlp_small/infer"

        def one(_: int) -> tuple[int, float, str]:
            t0 = time.perf_counter()
            r = httpx.post(url, content=body, headers=headers, timeout=60)
            return r.status_code, (time.perf_counter() - t0) * 1e3, r.headers.get("x-mark-route", "")

        with ThreadPoolExecutor(2) as pool:
            stuck = [pool.submit(one, i) for i in range(2)]  # fill the frozen worker's queue bound
            time.sleep(0.5)
            burst = [one(i) for i in range(30)]  # sequential: one warm environment serves them
            os.kill(cloud.process_id(worker.id), signal.SIGCONT)
            late = [f.result() for f in stuck]
        assert [r[2] for r in burst] == ["lambda"] * 30, burst
        assert all(code == 200 for code, _, _ in burst)
        warm = [ms for _, ms, _ in burst[1:]]
        assert max(warm) <= s.config.rt_max_ms, warm  # once warm, Lambda answers within RTmax
        assert all(code == 200 for code, _, _ in late)  # the frozen worker's requests: late, not lost
        stats = function.stats()
        assert stats.cold_starts >= 1 and stats.invocations >= 30
        metrics = httpx.get(f"http://{s.url}/metrics").text
        assert 'mark_frontdoor_requests{route="lambda"} 30' in metrics
        assert "mark_lambda_cold_starts" in metrics
    finally:
        s.close()


def test_spot_interruption_drains_then_terminates(digits_repo: ModelRepository) -> None:
    from orchestrator.cloud.base import InstanceNotFound
    from orchestrator.types import InstanceState, Market

    s = StackThread(
        StackConfig(
            models=("digits_mlp_small",), repository=str(digits_repo.root), port=0, threads=1, market=Market.SPOT
        )
    )
    try:
        assert s.stack is not None
        cloud = s.stack.cloud
        inst = cloud.instances()[0]
        notice = cloud.inject_interruption(inst.id, notice_seconds=1.0)
        assert cloud.interruption_notices() == [notice]
        assert notice.terminate_at == notice.noticed_at + 1.0
        deadline = time.monotonic() + 30
        while cloud.instances()[0].state != InstanceState.TERMINATED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cloud.instances()[0].state == InstanceState.TERMINATED
        assert cloud.interruption_notices() == []
        with pytest.raises(InstanceNotFound, match="no live instance"):
            cloud.inject_interruption(inst.id)
    finally:
        s.close()
