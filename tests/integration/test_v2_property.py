"""Property-based fuzzing of the KServe v2 infer route on all three surfaces.

Hypothesis generates infer requests (JSON and Triton binary, valid and malformed) and sends each one
to a real worker process, to the real front door (which forwards to its own worker process) and to
the Lambda handler in-process. For every answer on every surface:

1. the status is 200, or a 4xx with a JSON ``{"error": "<non-empty str>"}`` body, or a 503 with
   ``Retry-After`` and a JSON error body; never another 5xx, never text/plain. Where a request's
   outcome is known (a valid request, more rows than max_batch_size, an unknown model...) the status
   must be that one, and the three surfaces must agree on it (they share inference/v2.py's parser);
   400 answers must carry the same message everywhere;
2. the surface is still ready and still serves a good request (checked after every example and at
   the end);
3. its failure counter (``nv_inference_request_failure``; EMF ``InferenceErrorCount`` on Lambda)
   grows by exactly the number of non-200 answers to infer requests;
4. peak memory stays bounded: the worker processes' ``VmHWM`` grows < 64 MB over the run, the test
   process's (front door and Lambda handler run in it) < 128 MB.

Examples are split evenly over the kinds of request in ``KINDS`` (so a CI-sized run covers each)
and derandomized (every run sends the same requests). CI runs ``MARK_V2_FUZZ_EXAMPLES`` (default 60)
examples in a few seconds; a longer run: ``MARK_V2_FUZZ_EXAMPLES=2000 pytest tests/integration/test_v2_property.py
-s`` (``-s`` prints the status counts per kind at the end). The module trains its own copy of the
one model it fuzzes rather than the session's ``digits_repo`` (whole family, up to a minute).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from inference.codec import encode_request
from inference.repository import ModelRepository
from inference.runtime import OnnxModel
from lambda_fn import handler as fn
from orchestrator.runtime.local_stack import StackConfig
from tests.conftest import WorkerProcess
from tests.surfaces import HttpSurface, LambdaSurface, Resp, StackThread

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("MARK_V2_FUZZ_EXAMPLES", "60"))
MODEL = "digits_mlp_small"
MAX_BATCH = 8
ROW_BYTES = 64 * 4  # one FP32 row of the model's input
INFER = f"/v2/models/{MODEL}/infer"
PATHS = [INFER] * 12 + [
    f"/v2/models/{MODEL}/versions/1/infer",
    f"/v2/models/{MODEL}/versions/1/infer",
    f"/v2/models/{MODEL}/versions/7/infer",
    "/v2/models/no_such_model/infer",
]
NOT_FOUND_PATHS = {f"/v2/models/{MODEL}/versions/7/infer", "/v2/models/no_such_model/infer"}
IHCL = "inference-header-content-length"  # lower case, as encode_request writes it
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32"]
DATATYPES += ["FP64", "BYTES"]
JUNK_DATATYPES = ["fp32", "FLOAT32", "", "TYPE_FP32", "BF16", "STRING", "FP32 ", "INT128"]
MEMORY_LIMIT_WORKER = 64 * 2**20
MEMORY_LIMIT_SELF = 128 * 2**20


def _good() -> tuple[bytes, dict[str, str]]:
    return encode_request({"input": np.zeros((1, 64), np.float32)})


# ---------------------------------------------------------------- requests -----------------------


@dataclass(frozen=True)
class Case:
    """One generated infer request; ``expect`` is its status when the request decides it, else None."""

    kind: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    expect: int | None = None
    path: str = INFER
    rows: int | None = None  # a valid request's batch rows, which its outputs must have
    request_id: str | None = None  # a valid request's id, which its answer must repeat
    inputs: np.ndarray | None = field(default=None, compare=False)  # a valid request's tensor
    json_output: bool = False  # a valid request asks for its output as JSON

    def expected(self, model: OnnxModel) -> int | None:
        """``expect``, except that a valid request whose output holds NaN/Infinity (possible from
        extreme finite inputs, or from raw bytes that are NaN) cannot be answered in JSON: 400."""
        if self.expect == 200 and self.json_output and self.inputs is not None:
            out = model.run({"input": self.inputs})["probabilities"]
            if not np.isfinite(out).all():
                return 400
        return self.expect

    def __repr__(self) -> str:  # hypothesis prints this for a failing example: keep it reproducible
        return (
            f"Case(kind={self.kind!r}, expect={self.expect!r}, path={self.path!r}, headers={self.headers!r}, "
            f"body={self.body!r})"
        )


def _dumps(doc: Any) -> bytes:
    """Any JSON value as bytes (stdlib: keeps ints beyond 64 bits, which orjson refuses to write)."""
    return json.dumps(doc, separators=(",", ":")).encode()


def _input(arr: np.ndarray, nested: bool = False, **over: Any) -> dict[str, Any]:
    data = arr.tolist() if nested else arr.reshape(-1).tolist()
    return {"name": "input", "datatype": "FP32", "shape": list(arr.shape), "data": data} | over


def _binary(doc: Any, payload: bytes, ihcl: str | None = None) -> tuple[bytes, dict[str, str]]:
    head = _dumps(doc)
    headers = {"content-type": "application/octet-stream", IHCL: str(len(head)) if ihcl is None else ihcl}
    return head + payload, headers


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
row_counts = st.integers(1, MAX_BATCH)


@st.composite
def batches(draw: st.DrawFn, n: st.SearchStrategy[int] = row_counts) -> np.ndarray:
    """An FP32 batch of the model's input; sometimes integer-valued (JSON ints are valid FP32 data)."""
    count = draw(n)
    if draw(st.booleans()):
        return draw(arrays(np.float32, (count, 64), elements=finite32))
    return draw(arrays(np.int32, (count, 64), elements=st.integers(-(2**24), 2**24))).astype(np.float32)


request_params = st.fixed_dictionaries(
    {},
    optional={
        "binary_data_output": st.booleans(),
        "timeout": st.one_of(st.integers(0, 10**7), st.integers(0, 2**63 - 1)),
    },
)
outputs_field = st.lists(
    st.fixed_dictionaries(
        {"name": st.just("probabilities")},
        optional={"parameters": st.just({}) | st.fixed_dictionaries({"binary_data": st.booleans()})},
    ),
    max_size=1,
)
ids = st.text(max_size=20)


@st.composite
def valid_json(draw: st.DrawFn) -> Case:
    arr = draw(batches())
    doc: dict[str, Any] = {"inputs": [_input(arr, nested=draw(st.booleans()))]}
    if draw(st.booleans()):
        doc["outputs"] = draw(outputs_field)
    if draw(st.booleans()):
        doc["parameters"] = draw(request_params)
    if draw(st.booleans()):
        doc["id"] = draw(ids)
    body = orjson.dumps(doc)
    headers = {"content-type": "application/json"}
    if draw(st.integers(0, 4)) == 0:  # a JSON-only body may still name its header length: all of it
        headers[IHCL] = str(len(body))
    binary_out = bool((doc.get("parameters") or {}).get("binary_data_output")) or any(
        (o.get("parameters") or {}).get("binary_data") for o in doc.get("outputs") or []
    )
    return Case(
        "json-valid",
        body,
        headers,
        200,
        rows=len(arr),
        request_id=doc.get("id"),
        inputs=arr,
        json_output=not binary_out,
    )


@st.composite
def valid_binary(draw: st.DrawFn) -> Case:
    arr = draw(batches())
    params = draw(st.none() | st.fixed_dictionaries({"timeout": st.integers(0, 10**7)}))
    binary_out = draw(st.booleans())
    body, headers = encode_request(
        {"input": arr},
        binary=True,
        binary_output=binary_out,
        request_id=(request_id := draw(st.none() | ids)),
        parameters=params,
    )
    return Case(
        "binary-valid",
        body,
        headers,
        200,
        rows=len(arr),
        request_id=request_id,
        inputs=arr,
        json_output=not binary_out,
    )


@st.composite
def raw_binary(draw: st.DrawFn) -> Case:
    """Triton's raw binary request: the body is one row of the one input."""
    if draw(st.booleans()):
        row = draw(st.binary(min_size=ROW_BYTES, max_size=ROW_BYTES))
        arr = np.frombuffer(row, dtype="<f4").reshape(1, 64)
        return Case("raw-row", row, {IHCL: "0"}, 200, rows=1, inputs=arr, json_output=True)
    body = draw(st.binary(max_size=3 * ROW_BYTES).filter(lambda b: len(b) != ROW_BYTES))
    return Case("raw-bad-length", body, {IHCL: "0"}, 400)


@st.composite
def too_many_rows(draw: st.DrawFn) -> Case:
    arr = draw(batches(st.integers(MAX_BATCH + 1, 64)))
    if draw(st.booleans()):
        return Case("too-many-rows", orjson.dumps({"inputs": [_input(arr)]}), {}, 400)
    body, headers = encode_request({"input": arr}, binary=True, binary_output=False)
    return Case("too-many-rows", body, headers, 400)


@st.composite
def bad_datatype(draw: st.DrawFn) -> Case:
    dt = draw(st.sampled_from(DATATYPES + JUNK_DATATYPES) | st.text(max_size=8))
    arr = draw(batches(st.just(1)))
    data: Any = arr.reshape(-1).tolist()
    if dt == "BOOL":
        data = [bool(x) for x in data]
    elif dt == "BYTES":
        data = [str(x) for x in data]
    elif dt[:3] in ("INT", "UIN"):
        data = [0] * 64
    doc = {"inputs": [_input(arr, datatype=dt, data=data)]}
    return Case("datatype", orjson.dumps(doc), {}, 200 if dt == "FP32" else 400)


dims = st.one_of(
    st.integers(-3, 80),
    st.sampled_from([0, 1, 64, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64, -(2**63)]),
)
shapes = st.one_of(
    st.lists(dims, max_size=6),
    st.lists(st.sampled_from([0, 1, 2**63 - 1]), min_size=60, max_size=70),  # many axes, around numpy's 64
    st.just([2**63 - 1, 2**63 - 1]),
    st.sampled_from([None, "1,64", 64, {"0": 1}, [1.0, 64.0], [True, 64], ["1", "64"], [[1], [64]]]),
)


@st.composite
def bad_shape(draw: st.DrawFn) -> Case:
    """A random shape, with the data of a valid batch or with none at all (which a shape with a zero
    axis claims: zero elements, whatever its other axes)."""
    arr = draw(batches(st.integers(0, 2)))
    shape = draw(shapes)
    valid = len(arr) > 0 and isinstance(shape, list) and all(type(d) is int for d in shape) and shape == list(arr.shape)
    expect = 200 if valid else 400
    if draw(st.booleans()):
        return Case("shape", _dumps({"inputs": [_input(arr, shape=shape)]}), {}, expect)
    entry = {"name": "input", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": arr.nbytes}}
    body, headers = _binary({"inputs": [entry]}, arr.tobytes())
    return Case("shape-binary", body, headers, expect)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)
non_scalar = st.one_of(
    st.lists(json_values, max_size=3),
    st.dictionaries(st.text(max_size=4), json_values, max_size=2),
)
bad_parameters = st.one_of(
    st.lists(json_values, max_size=3),
    st.text(max_size=8),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.dictionaries(st.text(max_size=6), non_scalar, min_size=1, max_size=2),  # nested object/list values
)


@st.composite
def bad_params(draw: st.DrawFn) -> Case:
    arr = draw(batches(st.just(1)))
    where = draw(st.sampled_from(["request", "input", "output", "outputs", "timeout", "output-name"]))
    inp = _input(arr)
    doc: dict[str, Any] = {"inputs": [inp]}
    if where == "request":
        doc["parameters"] = draw(bad_parameters)
    elif where == "input":
        inp["parameters"] = draw(bad_parameters)
    elif where == "output":
        doc["outputs"] = [{"name": "probabilities", "parameters": draw(bad_parameters)}]
    elif where == "outputs":
        doc["outputs"] = draw(
            st.one_of(
                st.text(max_size=6),
                st.integers(),
                st.dictionaries(st.text(max_size=4), json_values, max_size=2),
                st.lists(st.integers() | st.text(max_size=4) | st.none(), min_size=1, max_size=3),
            )
        )
    elif where == "timeout":
        doc["parameters"] = {
            "timeout": draw(
                st.integers(max_value=-1) | st.text(max_size=6) | st.booleans() | st.floats(max_value=-1e-9)
            )
        }
    else:
        doc["outputs"] = [{"name": draw(st.text(max_size=12).filter(lambda s: s != "probabilities"))}]
    return Case(f"params-{where}", _dumps(doc), {}, 400)


@st.composite
def bad_binary_size(draw: st.DrawFn) -> Case:
    arr = draw(batches(st.integers(1, 2)))
    payload = arr.tobytes()
    size = draw(
        st.one_of(
            st.integers(max_value=-1),
            st.booleans(),
            st.integers(len(payload) + 1, 2**63),
            st.integers(0, len(payload) - 1),
            st.just(float(len(payload))),
            st.just(str(len(payload))),
            st.none() | st.lists(st.integers(), max_size=2),
        )
    )
    extra = draw(st.sampled_from([b"", b"\0" * 4, payload]))
    entry = {"name": "input", "datatype": "FP32", "shape": list(arr.shape), "parameters": {"binary_data_size": size}}
    body, headers = _binary({"inputs": [entry]}, payload + extra if size is not None else payload)
    return Case("binary-size", body, headers, 400)


@st.composite
def truncated(draw: st.DrawFn) -> Case:
    valid = draw(valid_json() | valid_binary())
    cut = draw(st.integers(0, len(valid.body) - 1))
    return Case(f"truncated-{valid.kind.split('-')[0]}", valid.body[:cut], valid.headers, 400)


ihcl_values = st.one_of(
    st.integers(-(10**6), 10**20).map(str),
    st.sampled_from(["", "x", "1.5", "1e3", "0x10", "+12", "1_0", "-0", "00", "NaN", "-1", "9" * 40]),
    st.text(alphabet="0123456789+-_.xe", min_size=1, max_size=10),
)


@st.composite
def bad_header_length(draw: st.DrawFn) -> Case:
    """A valid binary or JSON body with a wrong, negative, non-numeric or too large header length."""
    valid = draw(valid_binary() | valid_json())
    value = draw(ihcl_values)
    return Case(f"ihcl-{valid.kind.split('-')[0]}", valid.body, valid.headers | {IHCL: value}, None)


@st.composite
def bad_data(draw: st.DrawFn) -> Case:
    n = draw(st.integers(1, 2))
    fixed = st.sampled_from(
        [
            ["x"] * 64,
            [None] * 64,
            [True] * 64,
            [1e39] * 64,
            [-1e39] + [0.0] * 63,
            [0.0] * 63 + ["1"],
            [[0.0] * 64, [0.0] * 63],  # ragged
            [[[0.0]] * 32, [0.0] * 32],
            [2**130] + [0] * 63,  # beyond FP32 (and 64 bits: parsed as a float)
            [],
            None,
            "0" * 64,
            {"a": 1},
        ]
    )
    if draw(st.booleans()):
        data, expect = draw(fixed), 400
    else:
        data, expect = draw(json_values), None  # could, in principle, be 64 numbers
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 64], "data": data}]}
    return Case("data", _dumps(doc), {}, expect)


@st.composite
def bytes_huge(draw: st.DrawFn) -> Case:
    shape = draw(
        st.sampled_from([[2**40], [2**62], [1, 2**40], [2**31, 2**31], [2**63 - 1], [3], [1, 64], [0, 2**62], [0]])
    )
    payload = draw(st.sampled_from([b"\0" * 4, b"\x01\0\0\0a", b"\xff\xff\xff\xff", b"", b"\0" * 4 * 64]))
    entry = {"name": "input", "datatype": "BYTES", "shape": shape, "parameters": {"binary_data_size": len(payload)}}
    body, headers = _binary({"inputs": [entry]}, payload)
    return Case("bytes-huge", body, headers, 400)


@st.composite
def structural(draw: st.DrawFn) -> Case:
    arr = np.zeros((1, 64), np.float32)
    doc = draw(
        st.sampled_from(
            [
                {},
                {"inputs": []},
                {"inputs": None},
                {"inputs": {}},
                {"inputs": [None]},
                {"inputs": [{}]},
                {"outputs": [{"name": "probabilities"}]},
                {"inputs": [_input(arr), _input(arr)]},  # the same input twice
                {"inputs": [_input(arr), _input(arr, name="extra")]},
                {"inputs": [_input(arr, name="other")]},
                {"inputs": [_input(arr)], "id": 1.5},
                {"inputs": [_input(arr)], "id": [1]},
                [],
                [{"inputs": []}],
                "inputs",
                0,
                None,
            ]
        )
        | json_values.filter(lambda v: not isinstance(v, dict))
    )
    return Case("structure", _dumps(doc), {}, 400)


@st.composite
def random_bytes(draw: st.DrawFn) -> Case:
    body = draw(st.binary(max_size=600))
    headers = draw(st.just({}) | ihcl_values.map(lambda v: {IHCL: v}))
    return Case("random-bytes", body, headers, None)


# Each kind gets its share of the examples, so that even a CI-sized run covers every one of them.
KINDS: dict[str, st.SearchStrategy[Case]] = {
    "json-valid": valid_json(),
    "binary-valid": valid_binary(),
    "raw-binary": raw_binary(),
    "too-many-rows": too_many_rows(),
    "datatype": bad_datatype(),
    "shape": bad_shape(),
    "parameters": bad_params(),
    "binary-data-size": bad_binary_size(),
    "truncated": truncated(),
    "header-length": bad_header_length(),
    "data": bad_data(),
    "bytes-huge": bytes_huge(),
    "structure": structural(),
    "random-bytes": random_bytes(),
}


@st.composite
def requests(draw: st.DrawFn, kind: st.SearchStrategy[Case]) -> Case:
    """A case of ``kind``, usually sent to the model's infer path, sometimes to its versioned path, to
    a version it does not have or to an unknown model (404 whatever the body)."""
    case = draw(kind)
    path = draw(st.sampled_from(PATHS))
    if path == INFER:
        return case
    expect = 404 if path in NOT_FOUND_PATHS else case.expect
    return dataclasses.replace(case, expect=expect, path=path)


# ---------------------------------------------------------------- surfaces -----------------------


def vm_hwm(pid: int | str = "self") -> int:
    """Peak resident set of a process, in bytes (Linux ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


@pytest.fixture(scope="module")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """Only the fuzzed model (about a second to train), not the whole digits family of ``digits_repo``."""
    from inference.zoo import digits

    repo = ModelRepository(tmp_path_factory.mktemp("fuzz-repo"))
    digits.build(repo, only=[MODEL])
    return repo


@pytest.fixture(scope="module")
def worker(model_repo: ModelRepository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = WorkerProcess(model_repo, tmp_path_factory.mktemp("fuzz"), models=[MODEL], threads=1, max_batch_size=MAX_BATCH)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def stack(model_repo: ModelRepository) -> Iterator[StackThread]:
    s = StackThread(
        StackConfig(models=(MODEL,), repository=str(model_repo.root), port=0, threads=1, max_batch=MAX_BATCH)
    )
    yield s
    s.close()


@pytest.fixture(scope="module")
def lambda_env(model_repo: ModelRepository) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(MARK_MODEL_REPO=str(model_repo.root), MARK_MODELS=MODEL, MARK_MAX_BATCH_SIZE=str(MAX_BATCH))
    os.environ.pop("MODEL_URI", None)
    fn._reset_for_tests()
    yield
    fn._reset_for_tests()
    os.environ.clear()
    os.environ.update(saved)


def check_answer(surface: str, case: Case, r: Resp) -> bool:
    """Invariant 1 for one answer; True when a 200's JSON output holds null (a NaN or infinity, which
    JSON cannot carry: e.g. from infinite raw binary input or FP32 values near the type's limit)."""
    where = f"{surface}: {case!r} -> {r.status} {r.headers} {r.body[:300]!r}"
    ctype = r.headers.get("content-type", "")
    if r.status == 200:
        assert ctype in ("application/json", "application/octet-stream"), where
        hlen = int(r.headers.get("inference-header-content-length", len(r.body)))
        doc = orjson.loads(r.body[:hlen])
        assert doc["model_name"] == MODEL and doc["model_version"] == "1", where
        assert case.request_id is None or doc.get("id") == case.request_id, where
        binary, nulls = 0, False
        assert len(doc["outputs"]) == 1, where  # absent or empty "outputs": every output
        for out in doc["outputs"]:
            assert out["name"] == "probabilities" and out["datatype"] == "FP32", where
            assert len(out["shape"]) == 2 and out["shape"][1] == 10, where
            assert case.rows is None or out["shape"][0] == case.rows, where
            size = (out.get("parameters") or {}).get("binary_data_size")
            if size is None:
                assert len(out["data"]) == out["shape"][0] * 10, where
                # JSON has no NaN/Infinity: such outputs must be refused (400), never sent as null
                nulls = nulls or any(x is None for x in out["data"])
                assert not nulls, where
            else:
                assert size == out["shape"][0] * 10 * 4, where
                binary += size
        assert len(r.body) == hlen + binary, where
        return nulls
    assert 400 <= r.status < 500 or r.status == 503, where
    assert ctype == "application/json", where
    doc = orjson.loads(r.body)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], where
    if r.status == 503:
        assert r.headers.get("retry-after", "").isdigit(), where
    return False


@dataclass
class Surface:
    name: str
    client: HttpSurface | LambdaSurface
    pid: int | None  # the worker process whose memory is bounded; None: in-process (the test's own)
    failures: float = 0.0  # non-200 answers to infer since ``base`` was read
    base: float = 0.0  # the failure counter when the run started

    def call(self, case: Case) -> tuple[Resp, float]:
        """The answer, and how much the failure counter moved for it (read around this one request,
        so that a failing example stands alone and shrinks to itself)."""
        before = self.client.failures()
        r = self.client.call("POST", case.path, case.body, case.headers)
        if r.status != 200:
            self.failures += 1
        return r, self.client.failures() - before

    def check_serving(self) -> None:
        """Invariant 2: ready, and a good request is served."""
        r = self.client.call("GET", "/v2/health/ready")
        assert r.status == 200, f"{self.name} not ready: {r}"
        body, headers = _good()
        r = self.client.call("POST", INFER, body, headers)
        assert r.status == 200, f"{self.name} no longer serves a good request: {r}"

    def check_failures(self) -> None:
        """Invariant 3 over the whole run: the counter moved by exactly the non-200 answers."""
        got = self.client.failures() - self.base
        assert got == self.failures, (
            f"{self.name}: failure counter grew by {got} over the run, expected {self.failures}"
        )


def test_infer_fuzz_on_all_surfaces(
    worker: WorkerProcess, stack: StackThread, lambda_env: None, model_repo: ModelRepository
) -> None:
    assert stack.stack is not None
    model = OnnxModel(model_repo.onnx_path(MODEL))  # what a valid request's output will be
    (fd_worker,) = [i for i in stack.stack.cloud.instances() if i.state.value == "running"]
    surfaces = [
        Surface("worker", HttpSurface("worker", worker.url), worker.proc.pid),
        Surface("frontdoor", HttpSurface("frontdoor", stack.url), stack.stack.cloud.process_id(fd_worker.id)),
        Surface("lambda", LambdaSurface(), None),
    ]
    # warm up every surface (allocator arenas, batch sizes, first-call imports) before measuring memory
    for n in range(1, MAX_BATCH + 1):
        for binary in (False, True):
            body, headers = encode_request({"input": np.zeros((n, 64), np.float32)}, binary=binary)
            for s in surfaces:
                assert s.client.call("POST", INFER, body, headers).status == 200
    for s in surfaces:
        s.check_serving()
        s.base = s.client.failures()
    fuzz_settings = settings(
        max_examples=max(1, -(-EXAMPLES // len(KINDS))),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    # Hypothesis builds its own caches (e.g. constants collected from source) on the first run in a
    # fresh checkout: ~200 MB of the test process that are not the servers'. Generate every example
    # once without sending it, so the memory measured below is the servers'.
    for kind in KINDS.values():

        @fuzz_settings
        @given(requests(kind))
        def draw_only(case: Case) -> None:
            pass

        draw_only()
    hwm_before = {s.name: vm_hwm(s.pid) for s in surfaces if s.pid is not None} | {"self": vm_hwm()}
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    nulls: collections.Counter[str] = collections.Counter()
    t0 = time.perf_counter()

    def send(case: Case) -> None:
        answers = {}
        for s in surfaces:
            r, counted = s.call(case)
            if check_answer(s.name, case, r):
                nulls[s.name] += 1
            want = 0 if r.status == 200 else 1
            assert counted == want, f"{s.name}: failure counter moved by {counted} for a {r.status}; {case!r}"
            answers[s.name] = r
        statuses = {name: r.status for name, r in answers.items()}
        assert len(set(statuses.values())) == 1, f"surfaces disagree: {statuses} on {case!r}"
        status = statuses["worker"]
        expect = case.expected(model)
        if expect is not None:
            assert status == expect, f"expected {expect}, got {statuses} on {case!r}"
        if status == 400:
            messages = {name: orjson.loads(r.body)["error"] for name, r in answers.items()}
            assert len(set(messages.values())) == 1, f"surfaces name the problem differently: {messages}"
        for s in surfaces:
            s.check_serving()
        seen[(case.kind, status)] += 1

    for kind in KINDS.values():

        @fuzz_settings
        @given(requests(kind))
        def fuzz(case: Case) -> None:
            send(case)

        fuzz()
    elapsed = time.perf_counter() - t0

    for s in surfaces:
        s.check_serving()
        s.check_failures()
        if isinstance(s.client, HttpSurface):
            s.client.close()
    hwm_after = {s.name: vm_hwm(s.pid) for s in surfaces if s.pid is not None} | {"self": vm_hwm()}
    growth = {k: hwm_after[k] - hwm_before[k] for k in hwm_before}
    by_status = collections.Counter(status for (_, status), n in seen.items() for _ in range(n))
    print(f"\n{sum(seen.values())} examples in {elapsed:.1f}s; statuses {dict(sorted(by_status.items()))}")
    for (kind, status), n in sorted(seen.items()):
        print(f"  {kind:24} {status}  x{n}")
    print(f"  200s whose JSON output holds null (NaN/inf): {dict(nulls)}")
    print(f"  failures counted: { {s.name: s.failures for s in surfaces} }; VmHWM growth (bytes): {growth}")
    for name, g in growth.items():
        limit = MEMORY_LIMIT_SELF if name == "self" else MEMORY_LIMIT_WORKER
        assert g < limit, f"{name}: peak memory grew by {g / 2**20:.1f} MB (limit {limit / 2**20:.0f} MB)"
