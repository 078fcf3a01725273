"""The KServe v2 codec: JSON (flat and nested) and binary tensors, strict errors, round trips."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from inference.codec import decode_request, decode_response, encode_request, encode_response
from inference.errors import BadRequest


def _json_body(inputs: list[dict]) -> bytes:
    return orjson.dumps({"inputs": inputs})


def test_json_flat_and_nested_give_the_same_tensor() -> None:
    flat = decode_request(_json_body([{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]))
    nested = decode_request(
        _json_body([{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}])
    )
    assert flat.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(flat.inputs["x"], nested.inputs["x"])
    assert flat.inputs["x"].shape == (2, 3)
    assert flat.batch_size == 2


def test_binary_request_is_decoded_without_json_data() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = np.array([[1], [2], [3]], dtype=np.int64)
    body, headers = encode_request({"x": x, "y": y}, binary=True)
    req = decode_request(body, headers["inference-header-content-length"])
    np.testing.assert_array_equal(req.inputs["x"], x)
    np.testing.assert_array_equal(req.inputs["y"], y)
    assert req.binary_output is True


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"{not json", None, "malformed JSON"),
        (b"[1,2]", None, "JSON object"),
        (b'{"inputs": []}', None, "non-empty 'inputs'"),
        (_json_body([{"name": "x", "datatype": "FP33", "shape": [1], "data": [1]}]), None, "unknown datatype 'FP33'"),
        (
            _json_body([{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}]),
            None,
            "the shape needs 4",
        ),
        (
            _json_body([{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]),
            None,
            "Input should be greater than or equal to 0",
        ),
        (
            _json_body([{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]),
            None,
            "holds 'a'; FP32 needs numbers",
        ),
        (_json_body([{"name": "x", "datatype": "FP32", "shape": [1]}]), None, "neither 'data'"),
        (
            _json_body([{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, None]}]),
            None,
            "holds None; FP32 needs numbers",
        ),
        (
            _json_body(
                [
                    {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
                    {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
                ]
            ),
            None,
            "appears twice",
        ),
        (
            _json_body(
                [
                    {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
                    {"name": "y", "datatype": "FP32", "shape": [2], "data": [1, 2]},
                ]
            ),
            None,
            "disagree on the batch size",
        ),
    ],
)
def test_malformed_requests_name_the_problem(body: bytes, header: str | None, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_request(body, header)


def _binary(header: dict, payload: bytes) -> tuple[bytes, str]:
    h = orjson.dumps(header)
    return h + payload, str(len(h))


def test_binary_sizes_that_do_not_add_up_are_rejected() -> None:
    one = {"name": "x", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
    body, hl = _binary({"inputs": [one]}, b"\0" * 4)
    with pytest.raises(BadRequest, match="runs past the body"):
        decode_request(body, hl)
    body, hl = _binary({"inputs": [one]}, b"\0" * 12)
    with pytest.raises(BadRequest, match="4 binary bytes not claimed"):
        decode_request(body, hl)
    wrong = dict(one, parameters={"binary_data_size": 4})
    body, hl = _binary({"inputs": [wrong]}, b"\0" * 4)
    with pytest.raises(BadRequest, match="needs 8 bytes, binary_data_size is 4"):
        decode_request(body, hl)
    with pytest.raises(BadRequest, match="outside the body"):
        decode_request(body, "100000")
    with pytest.raises(BadRequest, match="no Inference-Header-Content-Length"):
        decode_request(body[: int(hl)], None)


def test_response_honours_requested_outputs_and_binary_flags() -> None:
    req = decode_request(
        orjson.dumps(
            {
                "id": "r1",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
                "outputs": [{"name": "b", "parameters": {"binary_data": True}}, {"name": "a"}],
            }
        )
    )
    outs = {"a": np.array([[1.5, 2.5]], dtype=np.float32), "b": np.array([[7]], dtype=np.int64), "c": np.zeros(1)}
    body, headers = encode_response("m", "1", outs, req)
    hl = int(headers["inference-header-content-length"])
    doc = orjson.loads(body[:hl])
    assert doc["id"] == "r1"
    assert [o["name"] for o in doc["outputs"]] == ["b", "a"]
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert doc["outputs"][1]["data"] == [1.5, 2.5]
    decoded = decode_response(body, hl)
    np.testing.assert_array_equal(decoded["b"], outs["b"])
    req.outputs = [type(req.outputs[0])("zzz", False)]
    with pytest.raises(BadRequest, match="requested output 'zzz' does not exist"):
        encode_response("m", "1", outs, req)


def test_timeout_parameter_is_validated() -> None:
    req = decode_request(
        orjson.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "parameters": {"timeout": 1500}}
        )
    )
    assert req.timeout_us() == 1500
    req.parameters["timeout"] = -3
    with pytest.raises(BadRequest, match="non-negative number of microseconds"):
        req.timeout_us()


def test_bytes_tensors_round_trip_in_binary_and_json() -> None:
    words = np.array([b"alpha", b"", b"\xff\x00"], dtype=np.object_)
    body, headers = encode_request({"s": words}, binary=True)
    np.testing.assert_array_equal(decode_request(body, headers["inference-header-content-length"]).inputs["s"], words)
    req = decode_request(_json_body([{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "bc"]}]))
    assert list(req.inputs["s"]) == [b"a", b"bc"]


_dtypes = st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8, np.int8, np.float16, np.bool_])


@settings(max_examples=60, deadline=None)
@given(
    data=_dtypes.flatmap(
        lambda dt: arrays(
            dt,
            st.tuples(st.integers(1, 4), st.integers(0, 5)),
            elements={"allow_nan": False, "allow_infinity": False} if np.dtype(dt).kind == "f" else None,
        )
    ),
    binary=st.booleans(),
)
def test_any_tensor_round_trips_through_request_and_response(data: np.ndarray, binary: bool) -> None:
    body, headers = encode_request({"t": data}, binary=binary, binary_output=binary)
    req = decode_request(body, headers.get("inference-header-content-length"))
    got = req.inputs["t"]
    assert got.dtype == data.dtype and got.shape == data.shape
    np.testing.assert_array_equal(got, data)
    out_body, out_headers = encode_response("m", "1", {"t": got}, req)
    back = decode_response(out_body, out_headers.get("inference-header-content-length"))["t"]
    np.testing.assert_array_equal(back.astype(data.dtype), data)


def test_non_finite_values_travel_exactly_as_binary() -> None:
    """JSON has no NaN/Infinity, so non-finite outputs need the binary extension (JSON sends null)."""
    data = np.array([[np.inf, -np.inf, np.nan, 1.5]], dtype=np.float32)
    body, headers = encode_request({"t": data}, binary=True)
    got = decode_request(body, headers["inference-header-content-length"]).inputs["t"]
    np.testing.assert_array_equal(got, data)
