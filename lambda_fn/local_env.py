"""One local Lambda execution environment: ``python -m lambda_fn.local_env``.

It plays the Lambda runtime's part for ``orchestrator.cloud.local.lambda_pool``: INIT (interpreter start,
importing the handler, loading the models) once, then one invocation at a time for as long as the
parent keeps it, exactly the lifecycle that makes cold starts and warm reuse what they are on AWS.

Protocol on stdin/stdout: frames of a 4-byte big-endian length and a JSON document.
- child -> parent, once after INIT: ``{"type": "ready", "pid", "init_ms", "load_error"}``
- parent -> child: ``{"event": <Function URL v2.0 event>, "request_id", "deadline_ms", ...}``
- child -> parent: ``{"type": "result", "result": <handler return> | null, "error": {...} | null,
  "duration_ms"}``
End of stdin is the SHUTDOWN phase: the process exits. The handler's own stdout (Powertools logs and
EMF metrics) is moved to stderr first, so nothing it prints can corrupt the protocol.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

FRAME = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024  # far above Lambda's 6 MB payloads; a larger length means a corrupt stream


@dataclass
class LocalContext:
    """The attributes of ``LambdaContext`` that the handler and Powertools read."""

    aws_request_id: str
    function_name: str = "mark-inference"
    memory_limit_in_mb: int = 2048
    function_version: str = "$LATEST"
    region: str = "us-east-1"
    account_id: str = "000000000000"
    deadline_ms: float = field(default_factory=lambda: time.time() * 1e3 + 30_000)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/[{self.function_version}]{os.getpid()}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.deadline_ms - time.time() * 1e3))


def write_frame(stream: IO[bytes], doc: Any) -> None:
    data = orjson.dumps(doc)
    stream.write(FRAME.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any | None:
    """The next document, or None at end of stream (the parent closed it: shut down)."""
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    (size,) = FRAME.unpack(head)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    data = stream.read(size)
    if len(data) < size:
        return None
    return orjson.loads(data)


def _protocol_streams() -> tuple[IO[bytes], IO[bytes]]:
    """Keep private copies of stdin/stdout for the protocol; point fd 1 at stderr and fd 0 at /dev/null."""
    proto_in = os.fdopen(os.dup(0), "rb")  # buffered: read(n) returns n bytes unless the stream ends
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    return proto_in, proto_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spawned-at", type=float, default=None, help="parent's time.time() at spawn (INIT start)")
    args = parser.parse_args(argv)
    init_started = args.spawned_at if args.spawned_at is not None else time.time()
    proto_in, proto_out = _protocol_streams()

    from lambda_fn import handler as function  # INIT: runtime + function code

    load_error = function.preload()
    init_ms = (time.time() - init_started) * 1e3
    write_frame(proto_out, {"type": "ready", "pid": os.getpid(), "init_ms": init_ms, "load_error": load_error})

    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "mark-inference")
    memory_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048"))
    while True:
        msg = read_frame(proto_in)
        if msg is None:
            return 0
        context = LocalContext(
            aws_request_id=str(msg["request_id"]),
            function_name=function_name,
            memory_limit_in_mb=memory_mb,
            deadline_ms=float(msg["deadline_ms"]),
        )
        t0 = time.perf_counter()
        result: Any = None
        error: dict[str, str] | None = None
        try:
            result = function.handler(msg["event"], context)
        except Exception as e:  # noqa: BLE001 - an unhandled function error is a reply, as on AWS
            traceback.print_exc()
            error = {"errorType": type(e).__name__, "errorMessage": str(e)}
        duration_ms = (time.perf_counter() - t0) * 1e3
        write_frame(proto_out, {"type": "result", "result": result, "error": error, "duration_ms": duration_ms})


if __name__ == "__main__":
    sys.exit(main())
