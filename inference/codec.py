"""KServe v2 (Open Inference Protocol) tensor codec: JSON tensors and Triton's binary extension.

One codec for the worker, the Lambda function, the front door and our own clients, so that a body
accepted by one is accepted by all. Decoding is strict (every error names the tensor and what is
wrong) because a silently reshaped tensor is a wrong answer, not an error.

Binary extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by
raw little-endian tensors, in input order, for each input whose ``parameters.binary_data_size`` is
set. Responses use the same layout for outputs the client asked to receive as binary.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from inference.errors import BadRequest

HEADER_LENGTH = "inference-header-content-length"

V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_V2 = {v: k for k, v in V2_TO_NUMPY.items() if k != "BYTES"}


def v2_datatype(arr: np.ndarray) -> str:
    if arr.dtype == np.object_ or arr.dtype.kind in ("S", "U"):
        return "BYTES"
    try:
        return NUMPY_TO_V2[arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype]
    except KeyError:
        raise BadRequest(f"numpy dtype {arr.dtype} has no KServe v2 datatype") from None


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    """A decoded request: arrays by input name, plus what the client asked for in return."""

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None  # None: all outputs
    binary_output: bool = False  # default for outputs not listed (Triton's binary_data_output)

    @property
    def batch_size(self) -> int:
        """Rows along the batch axis (all inputs must agree; checked by ``decode_request``)."""
        first = next(iter(self.inputs.values()))
        return int(first.shape[0]) if first.ndim else 1

    def timeout_us(self) -> int | None:
        """Triton's ``timeout`` request parameter, in microseconds, if the client set one."""
        t = self.parameters.get("timeout")
        if t is None:
            return None
        if isinstance(t, bool) or not isinstance(t, int | float) or t <= 0:
            raise BadRequest(f"parameter 'timeout' must be a positive number of microseconds, got {t!r}")
        return int(t)


def _shape(name: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of non-negative integers, got {raw!r}")
    return tuple(raw)


def _decode_bytes_binary(name: str, buf: memoryview, count: int) -> np.ndarray:
    """Triton's BYTES layout: each element is a 4-byte little-endian length then that many bytes."""
    out = np.empty(count, dtype=np.object_)
    off = 0
    for i in range(count):
        if off + 4 > len(buf):
            raise BadRequest(f"input {name!r}: BYTES data ends inside element {i}")
        (n,) = struct.unpack_from("<I", buf, off)
        off += 4
        if off + n > len(buf):
            raise BadRequest(f"input {name!r}: BYTES element {i} runs past the tensor's binary data")
        out[i] = bytes(buf[off : off + n])
        off += n
    if off != len(buf):
        raise BadRequest(f"input {name!r}: {len(buf) - off} bytes left over after {count} BYTES elements")
    return out


def _decode_json_data(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    count = math.prod(shape)
    if data is None:
        raise BadRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    try:
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=np.object_).reshape(-1)
            flat = np.array([s.encode() if isinstance(s, str) else s for s in flat], dtype=np.object_)
        else:
            flat = np.asarray(data, dtype=V2_TO_NUMPY[datatype]).reshape(-1)
    except (ValueError, TypeError, OverflowError) as e:
        raise BadRequest(f"input {name!r}: 'data' is not a (nested) list of {datatype} values: {e}") from None
    if flat.size != count:
        raise BadRequest(f"input {name!r}: shape {list(shape)} needs {count} elements, 'data' has {flat.size}")
    if flat.dtype.kind == "f" and np.isnan(flat).any():  # JSON has no NaN token: these were nulls
        raise BadRequest(f"input {name!r}: 'data' contains null; send numbers (NaN/Infinity need binary data)")
    return flat.reshape(shape)


def decode_request(body: bytes, header_length: int | str | None = None) -> InferRequest:
    """Parse a v2 infer body (JSON, or JSON header + binary tensors)."""
    if header_length is not None:
        try:
            hlen = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        if not 0 < hlen <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {hlen} is outside the body's {len(body)} bytes")
    else:
        hlen = len(body)
    try:
        doc = orjson.loads(body[:hlen])
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"malformed JSON in request: {e}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("request needs a non-empty 'inputs' list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be a JSON object")

    binary = memoryview(body)[hlen:]
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for i, t in enumerate(raw_inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise BadRequest(f"inputs[{i}] must be an object with a string 'name'")
        name = t["name"]
        if name in inputs:
            raise BadRequest(f"input {name!r} appears twice")
        datatype = t.get("datatype")
        if datatype not in V2_TO_NUMPY:
            raise BadRequest(f"input {name!r}: unknown datatype {datatype!r}; use one of {sorted(V2_TO_NUMPY)}")
        shape = _shape(name, t.get("shape"))
        tparams = t.get("parameters") or {}
        size = tparams.get("binary_data_size") if isinstance(tparams, dict) else None
        if size is not None:
            if header_length is None:
                raise BadRequest(f"input {name!r} has binary_data_size but no Inference-Header-Content-Length header")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
            if offset + size > len(binary):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size} runs past the body "
                    f"({len(binary) - offset} binary bytes left)"
                )
            chunk = binary[offset : offset + size]
            offset += size
            count = math.prod(shape)
            if datatype == "BYTES":
                arr = _decode_bytes_binary(name, chunk, count).reshape(shape)
            else:
                dt = V2_TO_NUMPY[datatype]
                if size != count * dt.itemsize:
                    raise BadRequest(
                        f"input {name!r}: shape {list(shape)} of {datatype} needs {count * dt.itemsize} bytes, "
                        f"binary_data_size is {size}"
                    )
                arr = np.frombuffer(chunk, dtype=dt).reshape(shape)
        else:
            arr = _decode_json_data(name, datatype, shape, t.get("data"))
        inputs[name] = arr
        datatypes[name] = datatype
    if offset != len(binary):
        raise BadRequest(f"body has {len(binary) - offset} binary bytes not claimed by any input's binary_data_size")
    batch_sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
    if len(batch_sizes) > 1:
        raise BadRequest(f"inputs disagree on the batch size (first axis): {sorted(map(str, batch_sizes))}")

    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise BadRequest("'outputs' must be a list")
        outputs = []
        for o in doc["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise BadRequest("each entry of 'outputs' must be an object with a string 'name'")
            op = o.get("parameters") or {}
            outputs.append(RequestedOutput(o["name"], bool(op.get("binary_data", False))))
    req_id = doc.get("id")
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        id=str(req_id) if req_id is not None else None,
        parameters=params,
        outputs=outputs,
        binary_output=bool(params.get("binary_data_output", False)),
    )


def _bytes_payload(arr: np.ndarray) -> bytes:
    parts = []
    for item in arr.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def _json_data(arr: np.ndarray) -> list[Any]:
    if arr.dtype == np.object_:
        return [x.decode(errors="replace") if isinstance(x, bytes) else x for x in arr.reshape(-1).tolist()]
    return arr.reshape(-1).tolist()


def encode_tensors(
    tensors: Mapping[str, np.ndarray], binary: Mapping[str, bool]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Tensor entries for a v2 document, and the binary chunks that follow it, in order."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, arr in tensors.items():
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr), "shape": list(arr.shape)}
        if binary.get(name, False):
            raw = _bytes_payload(arr) if entry["datatype"] == "BYTES" else np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(arr)
        entries.append(entry)
    return entries, chunks


def _assemble(doc: dict[str, Any], chunks: list[bytes]) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"content-type": "application/json"}
    return b"".join([header, *chunks]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def encode_response(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray],
    request: InferRequest,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers for a v2 response, honouring the request's output selection and binary flags."""
    if request.outputs is None:
        selected = dict(outputs)
        binary = {n: request.binary_output for n in selected}
    else:
        selected = {}
        binary = {}
        for o in request.outputs:
            if o.name not in outputs:
                raise BadRequest(f"requested output {o.name!r} does not exist; the model has {list(outputs)}")
            selected[o.name] = outputs[o.name]
            binary[o.name] = o.binary or request.binary_output
    entries, chunks = encode_tensors(selected, binary)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": entries}
    if request.id is not None:
        doc["id"] = request.id
    if parameters:
        doc["parameters"] = dict(parameters)
    return _assemble(doc, chunks)


def encode_request(
    inputs: Mapping[str, np.ndarray],
    *,
    binary: bool = True,
    binary_output: bool = True,
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Client side: a v2 infer body (used by our load generators and benchmarks)."""
    entries, chunks = encode_tensors(inputs, {n: binary for n in inputs})
    params = dict(parameters or {})
    if binary_output:
        params["binary_data_output"] = True
    doc: dict[str, Any] = {"inputs": entries}
    if request_id is not None:
        doc["id"] = request_id
    if params:
        doc["parameters"] = params
    return _assemble(doc, chunks)


def decode_response(body: bytes, header_length: int | str | None = None) -> dict[str, np.ndarray]:
    """Client side: output arrays by name from a v2 response (JSON or binary)."""
    hlen = int(header_length) if header_length is not None else len(body)
    doc = orjson.loads(body[:hlen])
    if "error" in doc:
        raise BadRequest(str(doc["error"]))
    binary = memoryview(body)[hlen:]
    offset = 0
    out: dict[str, np.ndarray] = {}
    for t in doc["outputs"]:
        shape = tuple(t["shape"])
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = binary[offset : offset + size]
            offset += size
            if t["datatype"] == "BYTES":
                out[t["name"]] = _decode_bytes_binary(t["name"], chunk, math.prod(shape)).reshape(shape)
            else:
                out[t["name"]] = np.frombuffer(chunk, dtype=V2_TO_NUMPY[t["datatype"]]).reshape(shape)
        else:
            out[t["name"]] = _decode_json_data(t["name"], t["datatype"], shape, t.get("data"))
    return out
