"""Blob transfer over real TCP on 127.0.0.1: the same protocol the memory-stream tests drive."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from peerfarm.errors import RemoteProtocolError, TransportError
from peerfarm.files.store import ContentStore
from peerfarm.files.transfer import (
    MessageStream,
    fetch_blob,
    serve_blob,
)

MAX_FRAME = 4 * 1024 * 1024

MIB = 1024 * 1024


@pytest.fixture
def server_store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "server")


@pytest.fixture
def client_store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "client")


class TcpMessageStream:
    """Length-prefixed (4-byte big-endian) msgpack frames over a trio TCP stream, no crypto."""

    def __init__(self, sock: trio.SocketStream, remote: str) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self.remote = remote

    async def send(self, message: Any) -> None:
        payload = msgpack.packb(message)
        assert len(payload) <= MAX_FRAME
        try:
            await self._sock.send_all(len(payload).to_bytes(4, "big") + payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportError(f"send to {self.remote} failed") from exc

    async def _read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            try:
                data = await self._sock.receive_some(256 * 1024)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise TransportError(f"receive from {self.remote} failed") from exc
            if not data:
                raise TransportError(f"{self.remote} closed the stream")
            self._buffer += data
        out = bytes(self._buffer[:count])
        del self._buffer[:count]
        return out

    async def receive(self, *, timeout: float | None = None) -> Any:
        with trio.move_on_after(math.inf if timeout is None else timeout):
            length = int.from_bytes(await self._read_exactly(4), "big")
            if length > MAX_FRAME:
                raise RemoteProtocolError(f"frame of {length} bytes from {self.remote}")
            payload = await self._read_exactly(length)
            try:
                return msgpack.unpackb(payload)
            except ValueError as exc:
                raise RemoteProtocolError(f"bad msgpack from {self.remote}") from exc
        raise TransportError(f"no message from {self.remote} within {timeout} s")

    async def aclose(self) -> None:
        await self._sock.aclose()


async def test_roundtrip_over_tcp_loopback(
    server_store: ContentStore, client_store: ContentStore
) -> None:
    data = random.Random(7).randbytes(3 * MIB + 1)
    digest = server_store.put_bytes(data)
    served: list[Any] = []

    async def handler(sock: trio.SocketStream) -> None:
        stream = TcpMessageStream(sock, "client")
        try:
            request = await stream.receive(timeout=5)
            served.append(request)
            await serve_blob(stream, server_store, request, timeout=5)
        finally:
            await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            await nursery.start(trio.serve_listeners, handler, listeners)

            async def connect() -> MessageStream:
                sock = await trio.open_tcp_stream("127.0.0.1", port)
                return TcpMessageStream(sock, f"127.0.0.1:{port}")

            path = await fetch_blob(connect, digest, client_store)
            nursery.cancel_scope.cancel()
    assert path.read_bytes() == data
    assert served == [{"t": "get", "digest": digest, "offset": 0}]
