"""Issue 11: one KServe v2 surface, the same answers from a worker process, the front door and Lambda.

Each numbered input of the issue is a test run against all three surfaces (real worker and front
door processes on loopback, the Lambda handler in-process), asserting the right answer.
"""

from __future__ import annotations

import os
import shutil
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient

from inference.codec import decode_response, encode_request
from inference.repository import ModelRepository
from inference.runtime import OnnxModel
from inference.v2 import ROUTES
from lambda_fn import handler as fn
from orchestrator.runtime.local_stack import StackConfig
from tests.conftest import WorkerProcess
from tests.surfaces import HttpSurface, LambdaSurface, Resp, StackThread

pytestmark = pytest.mark.slow

DIGITS = "digits_mlp_small"
MOBILENET = "mobilenet_v2"
MODELS = (DIGITS, MOBILENET)
SURFACES = ("worker", "frontdoor", "lambda")
INFER = f"/v2/models/{DIGITS}/infer"
ROW = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}
IHCL = "Inference-Header-Content-Length"


def _json(doc: object) -> bytes:
    return orjson.dumps(doc)


def _framed(header: dict[str, object], payload: bytes) -> tuple[bytes, dict[str, str]]:
    head = _json(header)
    return head + payload, {IHCL: str(len(head))}


@pytest.fixture(scope="module")
def repo(digits_repo: ModelRepository, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """digits_mlp_small and MobileNetV2 (UINT8 NCHW input) in one repository."""
    pytest.importorskip("torch", reason="MobileNetV2 export needs the zoo extra (torch)")
    from inference.zoo import imagenet

    root = tmp_path_factory.mktemp("v2-repo")
    shutil.copytree(digits_repo.root / DIGITS, root / DIGITS)
    out = ModelRepository(root)
    imagenet.build(out, only=[MOBILENET])
    return out


@pytest.fixture(scope="module")
def surfaces(repo: ModelRepository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A worker process, the front door (over its own local-cloud worker) and the Lambda handler, all
    serving the same models with max_batch_size 8."""
    saved = {k: os.environ.get(k) for k in ("MARK_MODEL_REPO", "MARK_MODELS", "MARK_MAX_BATCH_SIZE", "MODEL_URI")}
    os.environ |= {"MARK_MODEL_REPO": str(repo.root), "MARK_MODELS": ",".join(MODELS), "MARK_MAX_BATCH_SIZE": "8"}
    os.environ.pop("MODEL_URI", None)
    fn._reset_for_tests()
    worker = WorkerProcess(repo, tmp_path_factory.mktemp("w"), models=list(MODELS), threads=1, max_batch_size=8)
    stack = StackThread(StackConfig(models=MODELS, repository=str(repo.root), port=0, threads=1, max_batch=8))
    out: dict[str, object] = {
        "worker": HttpSurface("worker", worker.url),
        "frontdoor": HttpSurface("frontdoor", stack.url),
        "lambda": LambdaSurface(),
        "_worker": worker,
        "_stack": stack,
    }
    try:
        yield out
    finally:
        stack.close()
        worker.stop()
        fn._reset_for_tests()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _surface(surfaces: dict[str, object], name: str) -> HttpSurface | LambdaSurface:
    s = surfaces[name]
    assert isinstance(s, HttpSurface | LambdaSurface)
    return s


def _error(r: Resp, status: int, *fragments: str) -> str:
    assert r.status == status, (r.status, r.body[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    message = r.json()["error"]
    for f in fragments:
        assert f in message, message
    return str(message)


def _outputs(r: Resp) -> dict[str, np.ndarray]:
    assert r.status == 200, r.body[:300]
    return decode_response(r.body, r.headers.get(IHCL.lower()))


# ---- 1. raw binary request ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SURFACES)
def test_raw_binary_request_is_served(surfaces: dict[str, object], repo: ModelRepository, name: str) -> None:
    s = _surface(surfaces, name)
    row = np.random.default_rng(0).random((1, 64), dtype=np.float32) * 16
    r = s.call("POST", INFER, row.tobytes(), {IHCL: "0"})
    got = _outputs(r)["probabilities"]
    want = OnnxModel(repo.onnx_path(DIGITS)).run({"input": row})["probabilities"]
    assert got.shape == (1, 10) and np.allclose(got, want, atol=1e-6)
    zeros = _outputs(s.call("POST", INFER, bytes(256), {IHCL: "0"}))["probabilities"]
    assert zeros.shape == (1, 10)

    image = np.random.default_rng(1).integers(0, 256, size=(1, 3, 224, 224), dtype=np.uint8)
    assert image.nbytes == 150_528
    r = s.call("POST", f"/v2/models/{MOBILENET}/infer", image.tobytes(), {IHCL: "0"})
    logits = _outputs(r)
    (out,) = logits.values()
    assert out.shape == (1, 1000)

    _error(s.call("POST", INFER, bytes(255), {IHCL: "0"}), 400, "255 bytes", "needs 256")


@pytest.mark.parametrize("name", ["worker", "frontdoor"])
def test_raw_binary_request_chunked(surfaces: dict[str, object], name: str) -> None:
    s = _surface(surfaces, name)
    assert isinstance(s, HttpSurface)
    payload = bytes(256)
    chunks = iter([payload[:100], payload[100:]])  # no Content-Length: Transfer-Encoding: chunked
    r = httpx.post(f"http://{s.url}{INFER}", content=chunks, headers={IHCL: "0"})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [1, 10]


# ---- 2. memory from a claimed shape -----------------------------------------------------------------


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("name", SURFACES)
def test_claimed_shape_reserves_no_memory(surfaces: dict[str, object], name: str) -> None:
    s = _surface(surfaces, name)
    huge = {
        "inputs": [
            {"name": "input", "datatype": "BYTES", "shape": [1099511627776], "parameters": {"binary_data_size": 4}}
        ]
    }
    _error(
        s.call("POST", INFER, *_framed(huge, bytes(4))), 400, "1099511627776 BYTES elements", "binary_data_size is 4"
    )

    big = {
        "inputs": [{"name": "input", "datatype": "BYTES", "shape": [30000000], "parameters": {"binary_data_size": 4}}]
    }
    body, headers = _framed(big, bytes(4))
    assert len(body) < 200
    worker = surfaces["_worker"]
    assert isinstance(worker, WorkerProcess)
    before = _peak_rss_kb(worker.proc.pid)
    tracemalloc.start()
    try:
        r = s.call("POST", INFER, body, headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _error(r, 400, "30000000 BYTES elements")
    if name == "worker":  # the old code allocated a 240 MB object array before any size check
        assert _peak_rss_kb(worker.proc.pid) - before < 20_000
    if name == "lambda":  # decoded in this process
        assert peak < 10 * 2**20, peak


# ---- 3. non-object parameters -----------------------------------------------------------------------


PARAMETER_CASES = [
    ({"inputs": [ROW], "outputs": [{"name": "probabilities", "parameters": ["binary_data"]}]}, "outputs[0].parameters"),
    ({"inputs": [ROW], "parameters": "x"}, "parameters: Input should be a valid dictionary"),
    ({"inputs": [dict(ROW, parameters=7)]}, "inputs[0].parameters"),
    ({"inputs": [ROW], "parameters": {"timeout": {"us": 5}}}, "parameters.timeout"),
]


@pytest.mark.parametrize("name", SURFACES)
@pytest.mark.parametrize(("doc", "field"), PARAMETER_CASES, ids=[c[1] for c in PARAMETER_CASES])
def test_non_object_parameters_are_400_naming_the_field(
    surfaces: dict[str, object], name: str, doc: dict[str, object], field: str
) -> None:
    _error(_surface(surfaces, name).call("POST", INFER, _json(doc)), 400, field)


# ---- 4. every failure counted, with Triton's reasons ---------------------------------------------


@pytest.mark.parametrize("name", SURFACES)
def test_every_failed_request_is_counted(surfaces: dict[str, object], name: str) -> None:
    s = _surface(surfaces, name)
    before = s.failures()
    bad_params = {"inputs": [ROW], "outputs": [{"name": "probabilities", "parameters": ["binary_data"]}]}
    _error(s.call("POST", INFER, _json(bad_params)), 400)
    _error(s.call("POST", INFER, _json({"inputs": [dict(ROW, shape=[1, 63], data=[0.0] * 63)]})), 400, "[1, 63]")
    assert s.failures() - before == 2
    if isinstance(s, HttpSurface):
        text = s.client.get("/metrics").text
        assert f'nv_inference_request_failure{{model="{DIGITS}",version="1",reason="OTHER"}}' in text
        assert "BadRequest" not in text  # Triton's reason values, not Python class names
    else:
        assert {d.get("reason") for d in s.emf[-2:]} == {"OTHER"}


# ---- 6. versioned routes, identical everywhere ------------------------------------------------------


def _concrete(path: str) -> str:
    return path.replace("{model}", DIGITS).replace("{version}", "1")


@pytest.mark.parametrize("name", SURFACES)
def test_every_v2_route_exists_on_every_surface(surfaces: dict[str, object], name: str) -> None:
    s = _surface(surfaces, name)
    for route in ROUTES:
        body = _json({"inputs": [ROW]}) if route.method == "POST" else b""
        r = s.call(route.method, _concrete(route.path), body)
        assert r.status == 200, (route, r.status, r.body[:200])
    assert s.call("GET", f"/v2/models/{DIGITS}/versions/1/ready").json() == {"name": DIGITS, "ready": True}
    assert s.call("GET", f"/v2/models/{DIGITS}/versions/1/config").json()["max_batch_size"] == 8
    _error(s.call("GET", f"/v2/models/{DIGITS}/versions/2/ready"), 404, "no version '2'")
    _error(s.call("GET", f"/v2/models/{DIGITS}/stats/nothing"), 404, "no route")
    r = s.call("PUT", INFER)
    _error(r, 405, "use POST")
    assert r.headers["allow"] == "POST"


def test_one_route_table_on_all_three_surfaces(surfaces: dict[str, object]) -> None:
    """The same set of (method, path) answers on worker, front door and Lambda: every v2 route
    answers alike, and paths outside the table are 404 'no route' on all three."""
    probes = [(r.method, _concrete(r.path)) for r in ROUTES] + [
        ("GET", "/v2/models"),
        ("GET", "/v2/repository/index"),
        ("GET", f"/v2/models/{DIGITS}/versions"),
        ("POST", f"/v2/models/{DIGITS}"),
        ("GET", "/v2/health"),
    ]
    answered: dict[str, set[tuple[str, str]]] = {}
    for name in SURFACES:
        s = _surface(surfaces, name)
        statuses = {}
        for method, path in probes:
            r = s.call(method, path, _json({"inputs": [ROW]}) if method == "POST" else b"")
            statuses[(method, path)] = r.status
        answered[name] = {k for k, v in statuses.items() if v not in (404, 405)}
    assert answered["worker"] == answered["frontdoor"] == answered["lambda"]
    assert answered["worker"] == {(r.method, _concrete(r.path)) for r in ROUTES}


def test_tritonclient_versioned_readiness(surfaces: dict[str, object]) -> None:
    for name in ("worker", "frontdoor"):
        s = _surface(surfaces, name)
        assert isinstance(s, HttpSurface)
        client = httpclient.InferenceServerClient(s.url)
        assert client.is_model_ready(DIGITS, "1"), name
        assert not client.is_model_ready(DIGITS, "2"), name
        assert client.get_model_config(DIGITS, "1")["max_batch_size"] == 8


# ---- 7. values the datatype cannot hold -------------------------------------------------------------


VALUE_CASES = [
    (DIGITS, {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [1e39] + [0.0] * 63}, "1e+39"),
    (DIGITS, {"name": "input", "datatype": "FP16", "shape": [1, 64], "data": [70000] + [0] * 63}, "70000"),
    (DIGITS, {"name": "input", "datatype": "INT8", "shape": [1, 64], "data": [1.9] + [0] * 63}, "1.9"),
    (MOBILENET, {"name": "input", "datatype": "UINT8", "shape": [1, 3, 224, 224], "data": [300] + [0] * 150527}, "300"),
    (MOBILENET, {"name": "input", "datatype": "UINT8", "shape": [1, 3, 224, 224], "data": [-1] + [0] * 150527}, "-1"),
]


@pytest.mark.parametrize("name", SURFACES)
@pytest.mark.parametrize(("model", "tensor", "value"), VALUE_CASES, ids=[c[2] for c in VALUE_CASES])
def test_json_values_the_datatype_cannot_hold_are_refused(
    surfaces: dict[str, object], name: str, model: str, tensor: dict[str, object], value: str
) -> None:
    r = _surface(surfaces, name).call("POST", f"/v2/models/{model}/infer", _json({"inputs": [tensor]}))
    _error(r, 400, "input 'input'", value)


# ---- 8. Triton compatibility: timeout 0, max_batch_size --------------------------------------------


def _set_max_batch(surfaces: dict[str, object], size: int) -> None:
    """max_batch_size on all three, as each is configured: the worker's and the front door's
    instance through the internal API, Lambda through its environment."""
    worker = surfaces["_worker"]
    stack = surfaces["_stack"]
    assert isinstance(worker, WorkerProcess) and isinstance(stack, StackThread) and stack.stack is not None
    admins = [worker.admin_url] + [stack.stack.cloud.admin_url(i.id) for i in stack.stack.cloud.instances()]
    for admin in admins:
        r = httpx.put(f"{admin}/internal/models/{DIGITS}/batching", json={"max_batch_size": size})
        assert r.status_code == 200, r.text
    os.environ["MARK_MAX_BATCH_SIZE"] = str(size)


@pytest.mark.parametrize("name", SURFACES)
def test_timeout_zero_means_no_timeout(surfaces: dict[str, object], name: str) -> None:
    r = _surface(surfaces, name).call("POST", INFER, _json({"inputs": [ROW], "parameters": {"timeout": 0}}))
    assert r.status == 200, r.body
    r = _surface(surfaces, name).call("POST", INFER, _json({"inputs": [ROW], "parameters": {"timeout": -1}}))
    _error(r, 400, "parameters.timeout")


@pytest.mark.parametrize("name", SURFACES)
def test_more_rows_than_max_batch_size_is_refused(surfaces: dict[str, object], name: str) -> None:
    s = _surface(surfaces, name)
    four = {"inputs": [dict(ROW, shape=[4, 64], data=[0.0] * 256)]}
    _set_max_batch(surfaces, 1)
    try:
        _error(s.call("POST", INFER, _json(four)), 400, "batch size 4 exceeds max_batch_size 1")
        assert s.call("POST", INFER, _json({"inputs": [ROW]})).status == 200
    finally:
        _set_max_batch(surfaces, 8)
    assert s.call("POST", INFER, _json(four)).status == 200


# ---- 5. a worker's refusal goes back to dispatch ----------------------------------------------------


def test_a_refusing_worker_sends_the_request_elsewhere(repo: ModelRepository) -> None:
    """A worker that starts draining while the front door still counts it as running answers 503
    'worker is draining'; the front door re-dispatches, so the client sees 200 (the old code passed
    the 503 through). Then a real scale-in (the local cloud's terminate) under load: no 503 either."""
    stack = StackThread(
        StackConfig(models=(DIGITS,), repository=str(repo.root), port=0, threads=1, initial_instances=2),
        running=2,
    )
    try:
        assert stack.stack is not None
        cloud, dispatcher = stack.stack.cloud, stack.stack.dispatcher
        first, second = sorted(i.id for i in cloud.instances())
        # Drain the first through its internal API: the cloud still lists it RUNNING (the window
        # between a worker's SIGTERM and the front door's next look at the fleet, held open).
        assert httpx.post(f"{cloud.admin_url(first)}/internal/drain", timeout=30).status_code == 200
        body = _json({"inputs": [ROW]})
        statuses = [httpx.post(f"http://{stack.url}{INFER}", content=body, timeout=30) for _ in range(20)]
        assert [r.status_code for r in statuses] == [200] * 20, [r.text for r in statuses if r.status_code != 200]
        assert all(r.headers["x-mark-route"] == "instance" for r in statuses)
        assert dispatcher.refusals >= 1
        metrics = httpx.get(f"http://{stack.url}/metrics").text
        assert "mark_frontdoor_worker_refusals" in metrics

        # Scale-in under load: terminate the (drained) first worker for real while requests flow.
        import concurrent.futures

        big = _json({"inputs": [dict(ROW, shape=[8, 64], data=[1.0] * 512)]})
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(httpx.post, f"http://{stack.url}{INFER}", content=big, timeout=60) for _ in range(40)
            ]
            time.sleep(0.05)
            stack.call(cloud.terminate([first]))
            codes = [f.result().status_code for f in futures]
        assert codes == [200] * 40, codes
        assert any(i.id == second and i.state.value == "running" for i in cloud.instances())
    finally:
        stack.close()


# ---- found by the property test (tests/integration/test_v2_property.py) ----------------------------------------


@pytest.mark.parametrize("name", SURFACES)
def test_an_empty_tensor_with_a_huge_axis_is_a_400(surfaces: dict[str, object], name: str) -> None:
    doc = {"inputs": [dict(ROW, shape=[0, 2**62], data=[])]}
    _error(_surface(surfaces, name).call("POST", INFER, _json(doc)), 400, "larger than any tensor can be")


@pytest.mark.parametrize("name", SURFACES)
def test_non_finite_outputs_are_never_sent_as_json_null(surfaces: dict[str, object], name: str) -> None:
    s = _surface(surfaces, name)
    row = np.full((1, 64), np.inf, np.float32)
    _error(s.call("POST", INFER, row.tobytes(), {IHCL: "0"}), 400, "NaN or Infinity", "binary")
    body, headers = encode_request({"input": row}, binary=True, binary_output=True)
    probs = _outputs(s.call("POST", INFER, body, headers))["probabilities"]
    assert probs.shape == (1, 10) and not np.isfinite(probs).all()


@pytest.mark.parametrize("name", SURFACES)
def test_an_empty_outputs_list_means_every_output(surfaces: dict[str, object], name: str) -> None:
    r = _surface(surfaces, name).call("POST", INFER, _json({"inputs": [ROW], "outputs": []}))
    assert r.status == 200 and [o["name"] for o in r.json()["outputs"]] == ["probabilities"]


@pytest.mark.parametrize("name", ["worker", "frontdoor"])
def test_a_repeated_header_length_is_a_400(surfaces: dict[str, object], name: str) -> None:
    s = _surface(surfaces, name)
    assert isinstance(s, HttpSurface)
    body, headers = encode_request({"input": np.zeros((1, 64), np.float32)})
    length = headers["inference-header-content-length"]
    twice = [(IHCL, length), (IHCL, length)]
    r = httpx.post(f"http://{s.url}{INFER}", content=body, headers=twice)
    assert r.status_code == 400 and "given 2 times" in r.json()["error"]


# ---- found by trying it as a new user -----------------------------------------------------------


@pytest.mark.parametrize("name", SURFACES)
def test_a_body_bigger_than_any_valid_request_is_refused_unread(surfaces: dict[str, object], name: str) -> None:
    """digits at 8 rows needs at most 64 KiB of header + 8 x 64 elements x 64 bytes: a 5 MB body cannot
    be valid, and parsing it would cost the server ~16x its size in Python objects."""
    s = _surface(surfaces, name)
    doc = {"inputs": [dict(ROW, data=[0.0] * 1_000_000)]}
    body = _json(doc)
    worker = surfaces["_worker"]
    assert isinstance(worker, WorkerProcess)
    before = _peak_rss_kb(worker.proc.pid)
    _error(s.call("POST", INFER, body), 413, "exceeds the limit of 98304 bytes", "up to 8 rows")
    if name == "worker":
        assert _peak_rss_kb(worker.proc.pid) - before < 20_000


@pytest.mark.parametrize("name", SURFACES)
def test_booleans_among_numbers_are_refused(surfaces: dict[str, object], name: str) -> None:
    doc = {"inputs": [dict(ROW, data=[True] + [0.0] * 63)]}
    _error(_surface(surfaces, name).call("POST", INFER, _json(doc)), 400, "holds True")


@pytest.mark.parametrize("name", SURFACES)
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_requests_are_inflated(surfaces: dict[str, object], name: str, encoding: str) -> None:
    import gzip
    import zlib

    s = _surface(surfaces, name)
    body, headers = encode_request({"input": np.ones((2, 64), np.float32)})
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    r = s.call("POST", INFER, packed, headers | {"content-encoding": encoding})
    assert _outputs(r)["probabilities"].shape == (2, 10)
    _error(s.call("POST", INFER, packed, headers | {"content-encoding": "br"}), 415, "'br' is not supported")
    _error(s.call("POST", INFER, packed[:-9], headers | {"content-encoding": encoding}), 400, "truncated")
    bomb = gzip.compress(b" " * 50_000_000) if encoding == "gzip" else zlib.compress(b" " * 50_000_000)
    _error(s.call("POST", INFER, bomb, {"content-encoding": encoding}), 413, "inflates past the limit")


def test_tritonclient_request_compression(surfaces: dict[str, object]) -> None:
    for name in ("worker", "frontdoor"):
        s = _surface(surfaces, name)
        assert isinstance(s, HttpSurface)
        inp = httpclient.InferInput("input", [1, 64], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
        client = httpclient.InferenceServerClient(s.url)
        for algorithm in ("gzip", "deflate"):
            out = client.infer(DIGITS, [inp], request_compression_algorithm=algorithm)
            assert out.as_numpy("probabilities").shape == (1, 10), name


UNSUPPORTED_CASES = [
    ({"inputs": [ROW], "outputs": [{"name": "probabilities", "parameters": {"class_count": 3}}]}, "class_count"),
    ({"inputs": [ROW], "parameters": {"sequence_id": 7, "sequence_start": True}}, "sequence batching"),
    ({"inputs": [ROW], "outputs": [{"name": "probabilities"}, {"name": "probabilities"}]}, "requested twice"),
    ({"inputs": [dict(ROW, parameters={"binary_data_size": 0})]}, "both 'data' and parameters.binary_data_size"),
]


@pytest.mark.parametrize("name", SURFACES)
@pytest.mark.parametrize(("doc", "message"), UNSUPPORTED_CASES, ids=[c[1] for c in UNSUPPORTED_CASES])
def test_what_would_be_silently_ignored_is_refused(
    surfaces: dict[str, object], name: str, doc: dict[str, object], message: str
) -> None:
    headers = {IHCL: str(len(_json(doc)))} if "binary_data_size" in message else {}
    _error(_surface(surfaces, name).call("POST", INFER, _json(doc), headers), 400, message)


@pytest.mark.parametrize("name", SURFACES)
@pytest.mark.parametrize("value", ["+5", "1_0", "0x10", "-0"])
def test_header_length_is_a_plain_integer(surfaces: dict[str, object], name: str, value: str) -> None:
    _error(_surface(surfaces, name).call("POST", INFER, _json({"inputs": [ROW]}), {IHCL: value}), 400, repr(value))


def test_error_messages_are_the_same_everywhere_and_bounded(surfaces: dict[str, object]) -> None:
    def ask(name: str, path: str, body: bytes = b"") -> str:
        r = _surface(surfaces, name).call("POST" if body else "GET", path, body)
        assert r.status in (400, 404), r.status
        assert len(r.body) < 2_000  # what the client sent is quoted, never echoed whole
        return str(r.json()["error"])

    for path, body in (
        ("/v2/models/nope", b""),
        ("/v2/models/nope/infer", _json({"inputs": [ROW]})),
        (INFER, _json({"inputs": [dict(ROW, datatype="X" * 50_000)]})),
        (INFER, _json({"inputs": [dict(ROW, name="x")]})),
    ):
        messages = {name: ask(name, path, body) for name in SURFACES}
        assert len(set(messages.values())) == 1, messages
    assert "got ['x']" in ask("worker", INFER, _json({"inputs": [dict(ROW, name="x")]}))


# ---- found by the second new-user pass ---------------------------------------------------------------


def test_tritonclient_classification_is_refused_not_ignored(surfaces: dict[str, object]) -> None:
    from tritonclient.utils import InferenceServerException

    for name in ("worker", "frontdoor"):
        s = _surface(surfaces, name)
        assert isinstance(s, HttpSurface)
        inp = httpclient.InferInput("input", [1, 64], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
        out = httpclient.InferRequestedOutput("probabilities", class_count=3)  # sends "classification": 3
        with pytest.raises(InferenceServerException, match="classification extension") as e:
            httpclient.InferenceServerClient(s.url).infer(DIGITS, [inp], outputs=[out])
        assert e.value.status() == "400"


STRICT_CASES = [
    ({"inputs": [ROW], "parameters": {"binary_data_output": "false"}}, {}, "binary_data_output must be true or false"),
    (
        {"inputs": [ROW], "outputs": [{"name": "probabilities", "parameters": {"binary_data": 1}}]},
        {},
        "outputs[0].parameters.binary_data must be true or false",
    ),
    ({"inputs": [ROW], "id": 1.5}, {}, "id must be a string"),
    ({"inputs": [ROW]}, {IHCL: "9" * 5000}, "must be a non-negative integer"),
]


@pytest.mark.parametrize("name", SURFACES)
@pytest.mark.parametrize(("doc", "headers", "message"), STRICT_CASES, ids=[c[2][:30] for c in STRICT_CASES])
def test_flags_ids_and_header_lengths_are_strict(
    surfaces: dict[str, object], name: str, doc: dict[str, object], headers: dict[str, str], message: str
) -> None:
    _error(_surface(surfaces, name).call("POST", INFER, _json(doc), headers), 400, message)


@pytest.mark.parametrize("name", SURFACES)
def test_many_output_names_are_refused_quickly_and_before_running(surfaces: dict[str, object], name: str) -> None:
    s = _surface(surfaces, name)
    doc = {"inputs": [ROW], "outputs": [{"name": str(i)} for i in range(5600)]}
    t0 = time.perf_counter()
    _error(s.call("POST", INFER, _json(doc)), 400, "requested output '0' does not exist")
    assert time.perf_counter() - t0 < 0.5  # was 0.6 s of CPU per request (a quadratic duplicate check)


@pytest.mark.parametrize("name", SURFACES)
def test_gzip_members_are_all_inflated_and_trailing_bytes_refused(surfaces: dict[str, object], name: str) -> None:
    import gzip
    import zlib

    s = _surface(surfaces, name)
    body = _json({"inputs": [ROW]})
    two_members = gzip.compress(body[:100]) + gzip.compress(body[100:])
    assert s.call("POST", INFER, two_members, {"content-encoding": "gzip"}).status == 200
    _error(s.call("POST", INFER, gzip.compress(body) + b"GARBAGE", {"content-encoding": "gzip"}), 400, "not valid gzip")
    _error(s.call("POST", INFER, zlib.compress(body) + b"xx", {"content-encoding": "deflate"}), 400, "2 bytes follow")


@pytest.mark.parametrize("name", SURFACES)
def test_percent_escapes_are_routed_as_sent(surfaces: dict[str, object], name: str) -> None:
    r = _surface(surfaces, name).call("POST", "/v2/models/digits%5Fmlp_small/infer", _json({"inputs": [ROW]}))
    _error(r, 400, "invalid model name 'digits%5Fmlp_small'")


def test_capped_messages_stay_within_the_cap(surfaces: dict[str, object]) -> None:
    r = _surface(surfaces, "worker").call("GET", f"/v2/models/{'a' * 2000}")
    assert r.status == 400 and len(r.json()["error"]) <= 1000
