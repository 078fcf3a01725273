"""The front door's listening socket: connections it accepts get TCP_NODELAY (without it every small
answer waited for the client's delayed ACK: p50 6.6 ms became 47.5 ms in `mark run`)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from orchestrator.runtime.local_stack import _listening_socket


def test_accepted_connections_have_nodelay() -> None:
    async def main() -> int:
        sock = _listening_socket("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                s = transport.get_extra_info("socket")
                seen.set_result(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        try:
            return await asyncio.wait_for(seen, 5)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(main()) != 0


def test_a_taken_port_is_an_os_error() -> None:
    first = _listening_socket("127.0.0.1", 0)
    first.listen()
    try:
        with pytest.raises(OSError):
            _listening_socket("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()
