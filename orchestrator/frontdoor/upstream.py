"""A minimal keep-alive HTTP/1.1 client over asyncio streams, for load generation.

Load generators share the machine with the server they measure, so the client must cost as little
CPU per request as possible: requests are pre-encoded bytes, responses are parsed only as far as
status, headers and a Content-Length body. General-purpose clients (httpx, aiohttp) spend several
times more CPU per request, which on a 2-core machine would be measured as server slowness.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class HttpConnectionError(ConnectionError):
    pass


def build_request(method: str, host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """Encode one request once; the load generator sends the same bytes many times."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One persistent connection; ``send`` writes a request and reads exactly one response."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def send(self, raw_request: bytes) -> HttpResponse:
        reused = self._writer is not None and not self._writer.is_closing()
        try:
            head = await self._send_head(raw_request)
        except HttpConnectionError:
            if not reused:
                raise
            # The server may close an idle keep-alive connection at any time (its keep-alive
            # timeout); a request that got no response byte on a reused connection is safe to
            # send again on a fresh one, as every HTTP client does.
            head = await self._send_head(raw_request)
        assert self._reader is not None
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        try:
            body = await self._reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            await self.close()
            raise HttpConnectionError(f"connection to {self.host}:{self.port} closed mid-body: {e}") from e
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return HttpResponse(status, headers, body)

    async def _send_head(self, raw_request: bytes) -> bytes:
        if self._writer is None or self._writer.is_closing():
            try:
                await self._connect()
            except OSError as e:
                raise HttpConnectionError(f"cannot connect to {self.host}:{self.port}: {e}") from e
        assert self._reader is not None and self._writer is not None
        try:
            self._writer.write(raw_request)
            return await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError) as e:
            await self.close()
            raise HttpConnectionError(f"connection to {self.host}:{self.port} failed: {e}") from e

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except ConnectionError:
                pass
        self._reader = self._writer = None
