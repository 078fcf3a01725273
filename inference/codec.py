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
from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

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


# ---- the request header's structure (KServe v2 "$inference_request"), checked before any tensor ----
# Parameter values are strings, numbers or booleans (KServe v2 "$parameters"); a shape has at most
# 64 axes (numpy's limit) of int64 sizes. Checking structure first means no malformed field can
# reach code that assumes its type: every mistake is a 400 naming the field.
_Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
_Parameters = dict[str, _Scalar]
MAX_DIMS = 64
MAX_TENSOR_BYTES = int(np.iinfo(np.intp).max)
_Dim = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]


class _TensorHeader(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    datatype: StrictStr
    shape: list[_Dim] = Field(max_length=MAX_DIMS)
    parameters: _Parameters | None = None
    data: Any = None


class _OutputHeader(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    parameters: _Parameters | None = None


class _RequestHeader(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: StrictStr | StrictInt | None = None
    parameters: _Parameters | None = None
    inputs: list[_TensorHeader] = Field(min_length=1)
    outputs: list[_OutputHeader] | None = None


_SCALAR_MEMBERS = {"bool", "int", "float", "str"}


def _flag(params: dict[str, Any], name: str, where: str) -> bool:
    """A boolean parameter; "false" or 0 must not read as true."""
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}.{name} must be true or false, got {value!r}")
    return value


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _header_error(e: ValidationError) -> BadRequest:
    """The first problem, named by its field path (``outputs[0].parameters``) and what was sent."""
    err = e.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    got = repr(err.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."
    if loc and loc[0] == "id":
        return BadRequest(f"id must be a string (got {got})")
    if loc and loc[-1] in _SCALAR_MEMBERS:  # a parameter value: pydantic names the union member tried
        return BadRequest(f"{_field_path(loc[:-1])}: a parameter value must be a string, number or boolean (got {got})")
    where = _field_path(loc) or "request"
    if loc == ("inputs",):
        return BadRequest(f"request needs a non-empty 'inputs' list (got {got})")
    if err["type"] == "missing":
        return BadRequest(f"{where}: required field is missing")
    return BadRequest(f"{where}: {err['msg']} (got {got})")


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    class_count: Any = None  # Triton's classification extension (as sent), refused by inference/v2.py


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
        """Triton's ``timeout`` request parameter in microseconds; None when absent or 0.

        As in Triton, 0 means "no timeout" (the server's default deadline applies).

        Raises:
            BadRequest: the value is not a non-negative number.
        """
        t = self.parameters.get("timeout")
        if t is None:
            return None
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise BadRequest(f"parameters.timeout must be a non-negative number of microseconds, got {t!r}")
        return int(t) if t > 0 else None


def _decode_bytes_binary(name: str, buf: memoryview, count: int) -> np.ndarray:
    """Triton's BYTES layout: each element is a 4-byte little-endian length then that many bytes.

    The element count is checked against the bytes present (each element needs at least its
    4-byte length) before the object array is allocated: a claimed shape cannot reserve memory
    that the body does not carry.
    """
    if count * 4 > len(buf):
        raise BadRequest(
            f"input {name!r}: its shape has {count} BYTES elements, which need at least {count * 4} bytes "
            f"(a 4-byte length each); binary_data_size is {len(buf)}"
        )
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


def _number_error(where: str, datatype: str, values: list[Any]) -> BadRequest | None:
    """The first element that ``datatype`` cannot hold as sent, checked one Python value at a time
    (the slow path, for data numpy could not type as plain integers or floats)."""
    is_int = V2_TO_NUMPY[datatype].kind in "iu"
    info = np.iinfo(V2_TO_NUMPY[datatype]) if is_int else None
    for x in values:
        if isinstance(x, bool) or not isinstance(x, int | float):
            return BadRequest(f"{where} holds {x!r}; {datatype} needs numbers (null, strings and booleans are refused)")
        if info is not None:
            if isinstance(x, float):
                return BadRequest(f"{where} holds {x!r}; {datatype} needs integers")
            if not info.min <= x <= info.max:
                return BadRequest(f"{where} holds {x}, outside {datatype}'s range [{info.min}, {info.max}]")
    return None


def _json_values(name: str, datatype: str, data: Any, count: int) -> np.ndarray:
    """JSON ``data`` as a flat array of ``datatype``, refusing any value the type cannot hold.

    numpy's casts are silent (1.9 -> INT8 1, 70000 -> FP16 inf, "2" -> FP32 2.0); a changed value is
    a wrong answer, so each kind is checked: integers within the type's range for integer types,
    finite after the cast for float types, true/false for BOOL, strings for BYTES.
    """
    where = f"input {name!r}: 'data'"
    try:
        raw = np.asarray(data, dtype=np.object_ if datatype == "BYTES" else None)
    except (ValueError, TypeError, OverflowError) as e:
        raise BadRequest(f"{where} is not a (nested) list of {datatype} values: {e}") from None
    flat = raw.reshape(-1)
    if flat.size != count:
        raise BadRequest(f"{where} has {flat.size} elements, the shape needs {count}")
    dt = V2_TO_NUMPY[datatype]
    if count == 0:
        return np.empty(0, dtype=dt)
    kind = flat.dtype.kind
    if datatype == "BYTES":
        bad = [x for x in flat.tolist() if not isinstance(x, str)]
        if bad:
            raise BadRequest(f"{where} holds {bad[0]!r}; BYTES elements in JSON are strings")
        return np.array([s.encode() for s in flat.tolist()], dtype=np.object_)
    if datatype == "BOOL":
        if kind != "b":
            sample = next(x for x in np.asarray(data, dtype=np.object_).reshape(-1).tolist() if not isinstance(x, bool))
            raise BadRequest(f"{where} holds {sample!r}; BOOL needs true or false")
        return flat
    if kind in "iuf" and bool in set(map(type, np.asarray(data, dtype=np.object_).reshape(-1).tolist())):
        kind = "O"  # numpy reads true/false among numbers as 1/0: the slow path names the boolean
    if dt.kind in "iu" and kind in "iu":  # fast path: already integers, check the range
        info = np.iinfo(dt)
        lo, hi = int(flat.min()), int(flat.max())
        if lo < info.min or hi > info.max:
            raise BadRequest(
                f"{where} holds {lo if lo < info.min else hi}, outside {datatype}'s range [{info.min}, {info.max}]"
            )
        return flat.astype(dt)
    if dt.kind == "f" and kind in "iuf":  # fast path: numbers, check that the cast stays finite
        with np.errstate(over="ignore"):
            out = flat.astype(dt)
        overflow = ~np.isfinite(out)
        if overflow.any():
            v = flat[int(np.flatnonzero(overflow)[0])].item()
            raise BadRequest(f"{where} holds {v!r}, outside {datatype}'s range ±{float(np.finfo(dt).max):g}")
        return out
    values = np.asarray(data, dtype=np.object_).reshape(-1).tolist()
    err = _number_error(where, datatype, values)
    if err is not None:
        raise err
    if dt.kind in "iu":
        return np.array(values, dtype=dt)  # every value is an int within range: exact
    return _json_values(name, datatype, np.array(values, dtype=np.float64), count)  # now the fast path


def _decode_json_data(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    if data is None:
        raise BadRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    return _json_values(name, datatype, data, math.prod(shape)).reshape(shape)


def decode_raw_binary(body: bytes, name: str, datatype: str, shape: tuple[int, ...]) -> InferRequest:
    """Triton's "raw binary request": ``Inference-Header-Content-Length: 0`` and the body is the one
    input's tensor, little-endian, row major.

    The model's input spec gives name, datatype and shape; a dynamic batch axis (-1 first) is 1, as
    in Triton. Any other dynamic axis cannot be deduced from a byte count, so it is refused.

    Raises:
        BadRequest: BYTES input, another dynamic axis, or a body that is not exactly one tensor.
    """
    if datatype == "BYTES":
        raise BadRequest(
            f"input {name!r} is BYTES, whose element count a raw binary body cannot give; send a JSON header "
            "(Inference-Header-Content-Length > 0) with its shape"
        )
    concrete = tuple(1 if i == 0 and d < 0 else d for i, d in enumerate(shape))
    if any(d < 0 for d in concrete):
        raise BadRequest(
            f"input {name!r} has dynamic axes {list(shape)} beyond the batch axis; a raw binary request cannot "
            "give them: send a JSON header with the shape"
        )
    dt = V2_TO_NUMPY[datatype]
    need = math.prod(concrete) * dt.itemsize
    if len(body) != need:
        raise BadRequest(
            f"raw binary request: the body has {len(body)} bytes, input {name!r} of shape {list(concrete)} "
            f"{datatype} needs {need} (one row; for other shapes send a JSON header)"
        )
    return InferRequest(inputs={name: np.frombuffer(body, dtype=dt).reshape(concrete)}, datatypes={name: datatype})


def decode_request(body: bytes, header_length: int | str | None = None) -> InferRequest:
    """Parse a v2 infer body: JSON, or a JSON header of ``header_length`` bytes + binary tensors.

    Every size is checked against the bytes present before anything is allocated, so memory per
    request stays within a small multiple of the body (a claimed shape reserves nothing).

    Raises:
        BadRequest: naming the field and what is wrong (structure, datatype, shape, sizes, values).
    """
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
    try:
        head = _RequestHeader.model_validate(doc)
    except ValidationError as e:
        raise _header_error(e) from None
    params: dict[str, Any] = dict(head.parameters or {})

    binary = memoryview(body)[hlen:]
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for t in head.inputs:
        name, datatype, shape = t.name, t.datatype, tuple(t.shape)
        if name in inputs:
            raise BadRequest(f"input {name!r} appears twice")
        if datatype not in V2_TO_NUMPY:
            raise BadRequest(f"input {name!r}: unknown datatype {datatype!r}; use one of {sorted(V2_TO_NUMPY)}")
        # numpy refuses any shape whose non-zero axes overflow its index type, even with no elements
        if math.prod(d or 1 for d in shape) * V2_TO_NUMPY[datatype].itemsize > MAX_TENSOR_BYTES:
            raise BadRequest(f"input {name!r}: shape {list(shape)} is larger than any tensor can be")
        size = (t.parameters or {}).get("binary_data_size")
        if size is not None and t.data is not None:
            raise BadRequest(f"input {name!r} has both 'data' and parameters.binary_data_size; send one")
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
            arr = _decode_json_data(name, datatype, shape, t.data)
        inputs[name] = arr
        datatypes[name] = datatype
    if offset != len(binary):
        raise BadRequest(f"body has {len(binary) - offset} binary bytes not claimed by any input's binary_data_size")
    batch_sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
    if len(batch_sizes) > 1:
        raise BadRequest(f"inputs disagree on the batch size (first axis): {sorted(map(str, batch_sizes))}")

    requested: list[RequestedOutput] = []
    seen: set[str] = set()
    for i, o in enumerate(head.outputs or []):  # absent or empty: every output, as when none are named
        op = o.parameters or {}
        if o.name in seen:
            raise BadRequest(f"output {o.name!r} is requested twice")
        seen.add(o.name)
        binary_data = _flag(op, "binary_data", f"outputs[{i}].parameters")
        # Triton's classification extension: "classification" over HTTP (tritonclient), "class_count" in gRPC
        classification = op.get("classification", op.get("class_count"))
        requested.append(RequestedOutput(o.name, binary_data, classification))
    outputs = requested or None
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        id=str(head.id) if head.id is not None else None,
        parameters=params,
        outputs=outputs,
        binary_output=_flag(params, "binary_data_output", "parameters"),
    )


def _bytes_payload(arr: np.ndarray) -> bytes:
    parts = []
    for item in arr.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def _json_data(name: str, arr: np.ndarray) -> list[Any]:
    if arr.dtype == np.object_:
        return [x.decode(errors="replace") if isinstance(x, bytes) else x for x in arr.reshape(-1).tolist()]
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # JSON has no NaN/Infinity: it would read null
        raise BadRequest(
            f"tensor {name!r} holds NaN or Infinity, which JSON cannot carry; ask for it as binary data "
            "(outputs[].parameters.binary_data or parameters.binary_data_output)"
        )
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
            entry["data"] = _json_data(name, arr)
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
