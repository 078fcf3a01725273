"""The parent's side of the protocol on an environment's stdin/stdout (``lambda_fn/local_env.py``):
frames of a 4-byte big-endian length and a JSON document.

- child -> parent, once after INIT: ``{"type": "ready", "pid", "init_ms", "load_error"}``;
- parent -> child: :func:`invocation_frame`, one per invocation;
- child -> parent: ``{"type": "result", "result", "error", "duration_ms"}``, read by :func:`read_frame`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from lambda_fn.local_env import FRAME, MAX_FRAME_BYTES


async def read_frame(stream: asyncio.StreamReader) -> Any:
    """The next JSON document on ``stream``.

    Raises ``asyncio.IncompleteReadError`` (an ``EOFError``) when the stream ends mid-frame or before
    one, ``EOFError`` for a length above ``MAX_FRAME_BYTES`` (a corrupt stream), and orjson's
    ``JSONDecodeError`` (a ``ValueError``) for a document that is not JSON.
    """
    (size,) = FRAME.unpack(await stream.readexactly(FRAME.size))
    if size > MAX_FRAME_BYTES:
        raise EOFError(f"corrupt frame length {size}")
    return orjson.loads(await stream.readexactly(size))


def invocation_frame(event: dict[str, Any], request_id: str, deadline_ms: float) -> bytes:
    """The framed bytes that ask an environment to run the handler on ``event``.

    ``deadline_ms``: wall-clock epoch milliseconds past which the invocation times out (what the
    handler's context reports as its remaining time).
    """
    doc = orjson.dumps({"event": event, "request_id": request_id, "deadline_ms": deadline_ms})
    return FRAME.pack(len(doc)) + doc
