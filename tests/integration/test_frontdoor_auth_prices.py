"""The front door's API keys (Authorization: Bearer) and the catalog prices behind dispatch."""

from __future__ import annotations

import logging

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from inference.repository import ModelRepository
from orchestrator.cloud.local.instances import InstanceTypeSpec
from orchestrator.economics.catalog import load_catalog
from orchestrator.frontdoor.auth import ApiKeys, hash_key, parse_digests
from orchestrator.runtime.local_stack import StackConfig
from orchestrator.types import Market
from tests.surfaces import StackThread

pytestmark = pytest.mark.slow

KEY = "mk_test_0123456789abcdef"
MODEL = "digits_mlp_small"


@pytest.fixture(scope="module")
def keyed(digits_repo: ModelRepository) -> StackThread:
    s = StackThread(
        StackConfig(models=(MODEL,), repository=str(digits_repo.root), port=0, threads=1),
        api_keys=ApiKeys([hash_key(KEY), hash_key("another-key")]),
    )
    yield s
    s.close()


def _infer_input() -> httpclient.InferInput:
    inp = httpclient.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
    return inp


def test_no_key_and_wrong_key_get_401_with_a_challenge(keyed: StackThread) -> None:
    base = f"http://{keyed.url}"
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
    for headers, what in (({}, "missing API key"), ({"Authorization": "Bearer nope"}, "wrong API key")):
        for method, path in (("POST", f"/v2/models/{MODEL}/infer"), ("GET", f"/v2/models/{MODEL}"), ("GET", "/v2")):
            r = httpx.request(method, base + path, json=body if method == "POST" else None, headers=headers)
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"] == 'Bearer realm="mark"'
            assert what in r.json()["error"] and KEY not in r.text
    assert httpx.get(base + "/metrics").status_code == 401
    assert httpx.get(base + "/metrics", headers={"Authorization": "Basic " + KEY}).status_code == 401
    assert keyed.stack is not None and keyed.stack.frontdoor.api_keys is not None
    assert keyed.stack.frontdoor.api_keys.failures >= 8


def test_health_stays_open_for_load_balancers(keyed: StackThread) -> None:
    assert httpx.get(f"http://{keyed.url}/v2/health/live").status_code == 200
    assert httpx.get(f"http://{keyed.url}/v2/health/ready").status_code == 200


def test_tritonclient_with_the_right_key(keyed: StackThread) -> None:
    client = httpclient.InferenceServerClient(keyed.url)
    auth = {"Authorization": f"Bearer {KEY}"}  # tritonclient adds to the dict it is given: pass copies
    assert client.is_server_ready()  # health: no key needed
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [_infer_input()])
    assert e.value.status() == "401"
    assert client.is_model_ready(MODEL, headers=dict(auth))
    out = client.infer(MODEL, [_infer_input()], headers=dict(auth)).as_numpy("probabilities")
    assert out.shape == (1, 10)
    other = client.infer(MODEL, [_infer_input()], headers={"Authorization": "Bearer another-key"})
    assert other.as_numpy("probabilities").shape == (1, 10)
    metrics = httpx.get(f"http://{keyed.url}/metrics", headers=auth).text
    (family,) = [f for f in text_string_to_metric_families(metrics) if f.name == "mark_frontdoor_auth_failures"]
    assert family.samples[0].value >= 1


def test_digest_configuration_is_checked_without_echoing_secrets() -> None:
    assert parse_digests([hash_key(KEY).upper(), " "]) == (hash_key(KEY),)
    with pytest.raises(ValueError, match="^--api-key-sha256: API key digest #1 is not a SHA-256") as e:
        parse_digests([KEY])
    assert KEY not in str(e.value)
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 example


def test_keys_never_reach_the_log(keyed: StackThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    httpx.get(f"http://{keyed.url}/v2", headers={"Authorization": f"Bearer {KEY}"})
    httpx.get(f"http://{keyed.url}/v2", headers={"Authorization": "Bearer wrong-secret"})
    assert KEY not in caplog.text and "wrong-secret" not in caplog.text


def _served_by(stack: StackThread) -> dict[str, float]:
    """Requests each instance answered, from the workers' own Triton counters."""
    assert stack.stack is not None
    out = {}
    for inst in stack.stack.cloud.instances():
        text = httpx.get(f"http://{inst.endpoint}/metrics").text
        fams = [f for f in text_string_to_metric_families(text) if f.name == "nv_inference_request_success"]
        out[inst.instance_type] = sum(s.value for f in fams for s in f.samples)
    return out


def test_dispatch_prefers_the_cheaper_worker_at_catalog_prices(digits_repo: ModelRepository) -> None:
    """Two idle workers that both meet the deadline: the cheaper type takes the work. The dearer one
    is launched first, so it has the lower id that breaks ties when prices are missing (all zero)."""
    catalog = load_catalog()
    # 36x the price: more than the dispatcher's largest slowdown factor (20x, on the cheap worker; the
    # dear one is never dispatched to, so its factor stays 1), so a noisy machine cannot flip the choice
    cheap, dear = "c5.large", "p3.2xlarge"
    assert catalog.price_usd_per_hour(cheap, "on-demand") < catalog.price_usd_per_hour(dear, "on-demand")
    s = StackThread(
        StackConfig(
            models=(MODEL,),
            repository=str(digits_repo.root),
            port=0,
            threads=1,
            instance_type=dear,
            types=(InstanceTypeSpec(dear, 1, 0.0), InstanceTypeSpec(cheap, 1, 0.0)),
        ),
        catalog=catalog,
    )
    try:
        assert s.stack is not None
        s.call(s.stack.cloud.launch(cheap, Market.ON_DEMAND, 1))
        s.call(s.stack.wait_running(2))
        for inst in s.stack.cloud.instances():  # warm each session up directly: a cold first run is slow,
            for _ in range(3):  # and the dispatcher rightly prices in the slowness it observes
                httpclient.InferenceServerClient(inst.endpoint).infer(MODEL, [_infer_input()])
        client = httpclient.InferenceServerClient(s.url)
        for _ in range(20):  # one at a time: the cheap worker is always idle and in time
            client.infer(MODEL, [_infer_input()])
        served = _served_by(s)
        assert served == {cheap: 23, dear: 3}, (served, s.stack.dispatcher.slowdown)
        assert s.stack.dispatcher.prices(s.stack.cloud.instances()[0]) == catalog.price_usd_per_hour(dear, "on-demand")
    finally:
        s.close()


def test_a_type_missing_from_the_catalog_fails_at_start(digits_repo: ModelRepository) -> None:
    from orchestrator.economics.catalog import UnknownInstanceTypeError
    from orchestrator.runtime.local_stack import LocalStack

    config = StackConfig(models=(MODEL,), repository=str(digits_repo.root), instance_type="z9.nonsense")
    with pytest.raises(UnknownInstanceTypeError, match="z9.nonsense"):
        LocalStack(config)


def test_mark_run_warns_loudly_without_keys_beyond_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:

    from orchestrator.cli.main import _api_keys

    monkeypatch.delenv("MARK_API_KEY_SHA256", raising=False)
    assert _api_keys("127.0.0.1", None) is None
    assert "WARNING" not in capsys.readouterr().err
    assert _api_keys("0.0.0.0", None) is None
    assert "WARNING: the front door listens on 0.0.0.0 and accepts ANY caller" in capsys.readouterr().err
    monkeypatch.setenv("MARK_API_KEY_SHA256", hash_key(KEY))
    keys = _api_keys("0.0.0.0", [hash_key("x")])
    assert keys is not None and set(keys.digests) == {hash_key(KEY), hash_key("x")}
    err = capsys.readouterr().err
    assert "WARNING" not in err and KEY not in err and hash_key(KEY) not in err


def test_without_a_key_not_even_the_routes_can_be_probed(keyed: StackThread) -> None:
    base = f"http://{keyed.url}"
    for method, path in (("DELETE", "/v2"), ("GET", "/nowhere"), ("GET", "/v2/models/nope/ready")):
        r = httpx.request(method, base + path)
        assert r.status_code == 401, (method, path, r.text)
    r = httpx.get(base + "/v2", headers={"Authorization": f"Basic {KEY}"})
    assert r.status_code == 401 and "must be 'Bearer <key>'" in r.json()["error"] and KEY not in r.text
    r = httpx.get(base + "/v2", headers={"Authorization": KEY})  # a key without a scheme is not echoed
    assert r.status_code == 401 and KEY not in r.text
    twice = [("Authorization", f"Bearer {KEY}"), ("Authorization", "Bearer other")]
    r = httpx.get(base + "/v2", headers=twice)
    assert r.status_code == 401 and "given 2 times" in r.json()["error"]
    r = httpx.delete(base + "/v2", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 405  # with the key, the usual answers


def test_a_key_variable_without_digests_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.frontdoor.auth import digests_from_env

    monkeypatch.setenv("MARK_API_KEY_SHA256", ",, ,")
    with pytest.raises(ValueError, match="set but holds no digest"):
        digests_from_env()
    monkeypatch.setenv("MARK_API_KEY_SHA256", "not-a-hash")
    with pytest.raises(ValueError, match=r"^MARK_API_KEY_SHA256: .*sha256sum \| cut -d' ' -f1") as e:
        digests_from_env()
    assert "not-a-hash" not in str(e.value)
    monkeypatch.setenv("MARK_API_KEY_SHA256", "")
    assert digests_from_env() == ()


def test_the_front_door_counts_a_worker_full_where_the_worker_does(digits_repo: ModelRepository) -> None:
    """One queue bound for worker and front door: concurrency the worker absorbs gets no 503 from the
    front door (it used to count a worker full at 64 outstanding while the worker queued 256)."""
    from concurrent.futures import ThreadPoolExecutor

    s = StackThread(StackConfig(models=(MODEL,), repository=str(digits_repo.root), port=0, threads=1))
    try:
        assert s.stack is not None
        (inst,) = s.stack.cloud.instances()
        admin = s.stack.cloud.admin_url(inst.id)
        worker_bound = httpx.get(f"{admin}/internal/models/{MODEL}/batching").json()["max_queue"]
        assert s.stack.dispatcher.config.queue_bound == worker_bound == 256
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
        with httpx.Client(limits=httpx.Limits(max_connections=160)) as client:

            def one(_: int) -> int:
                return client.post(f"http://{s.url}/v2/models/{MODEL}/infer", json=body, timeout=60).status_code

            with ThreadPoolExecutor(150) as pool:
                codes = list(pool.map(one, range(900)))
        assert codes.count(200) == 900, {c: codes.count(c) for c in set(codes)}
    finally:
        s.close()


def test_whitespace_keys_variable_is_an_error_and_utf8_keys_match(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.frontdoor.auth import digests_from_env

    monkeypatch.setenv("MARK_API_KEY_SHA256", " ")
    with pytest.raises(ValueError, match="set but holds no digest"):
        digests_from_env()
    keys = ApiKeys([hash_key("clé")])  # printf %s clé | sha256sum, on a UTF-8 terminal
    keys({"headers": [(b"authorization", "Bearer clé".encode())]})  # as a client sends it: UTF-8 bytes
    with pytest.raises(Exception, match="wrong API key"):
        keys({"headers": [(b"authorization", "Bearer clé".encode("latin-1"))]})
