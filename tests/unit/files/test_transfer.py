"""Blob transfer: roundtrips, corruption, broken streams, hostile requests, bounded memory.

The peer on the other end is a real ``serve_blob`` behind an in-memory message stream (trio
memory channels, msgpack round trip, small buffers so back-pressure is real); fault wrappers
corrupt or cut that stream. tests/real/files runs the same protocol over real TCP on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import msgpack
import pytest

try:
    import resource
except ImportError:  # Windows: no getrusage; the memory test is skipped there
    resource = None  # type: ignore[assignment]
import trio

from peerfarm.errors import PeerfarmError, RemoteProtocolError, StoreError, TransportError
from peerfarm.files.store import BlobMissing, ContentStore
from peerfarm.files.transfer import (
    CHUNK_SIZE,
    BadRequest,
    FetchFailed,
    MessageStream,
    fetch_blob,
    serve_blob,
)

MAX_FRAME = 4 * 1024 * 1024
MIB = 1024 * 1024


# -- in-memory and TCP message streams implementing the transport's Stream contract ----------


class MemoryStream:
    """One end of an in-memory stream: msgpack-encoded messages over bounded channels."""

    def __init__(
        self,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
        remote: str,
    ) -> None:
        self._send = send
        self._receive = receive
        self.remote = remote

    async def send(self, message: Any) -> None:
        try:
            await self._send.send(msgpack.packb(message))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportError(f"stream to {self.remote} is closed") from exc

    async def receive(self, *, timeout: float | None = None) -> Any:
        with trio.move_on_after(math.inf if timeout is None else timeout):
            try:
                return msgpack.unpackb(await self._receive.receive())
            except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
                raise TransportError(f"stream from {self.remote} ended") from exc
        raise TransportError(f"no message from {self.remote} within {timeout} s")

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def memory_stream_pair(capacity: int = 2) -> tuple[MemoryStream, MemoryStream]:
    a_send, b_receive = trio.open_memory_channel[bytes](capacity)
    b_send, a_receive = trio.open_memory_channel[bytes](capacity)
    return MemoryStream(a_send, a_receive, "server"), MemoryStream(b_send, b_receive, "client")


# -- fault injection on the server side -------------------------------------------------------


class CorruptChunk:
    """Flips one byte of the ``index``-th chunk the server sends."""

    def __init__(self, inner: MessageStream, index: int) -> None:
        self.inner = inner
        self.index = index
        self.remote = inner.remote
        self.chunks = 0

    async def send(self, message: Any) -> None:
        if message.get("t") == "chunk":
            if self.chunks == self.index:
                data = bytearray(message["data"])
                data[len(data) // 2] ^= 0xFF
                message = {**message, "data": bytes(data)}
            self.chunks += 1
        await self.inner.send(message)

    async def receive(self, *, timeout: float | None = None) -> Any:
        return await self.inner.receive(timeout=timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()


class DieAfterChunks(CorruptChunk):
    """Closes the stream after the server has sent ``index`` chunks (a dropped connection)."""

    async def send(self, message: Any) -> None:
        if message.get("t") == "chunk":
            if self.chunks == self.index:
                await self.inner.aclose()
                raise TransportError("connection reset (injected)")
            self.chunks += 1
        await self.inner.send(message)


Fault = Callable[[MessageStream], MessageStream]


def no_fault(stream: MessageStream) -> MessageStream:
    return stream


class FakePeer:
    """Answers each new stream with serve_blob, behind that connection's fault (if any)."""

    def __init__(
        self, nursery: trio.Nursery, store: ContentStore, faults: dict[int, Fault]
    ) -> None:
        self.nursery = nursery
        self.store = store
        self.faults = faults
        self.requests: list[Any] = []
        self.errors: list[PeerfarmError] = []
        self.connections = 0

    async def connect(self) -> MessageStream:
        client, server = memory_stream_pair()
        fault = self.faults.get(self.connections, no_fault)
        self.connections += 1
        self.nursery.start_soon(self._handle, fault(server))
        return client

    async def _handle(self, stream: MessageStream) -> None:
        try:
            request = await stream.receive(timeout=5)
            self.requests.append(request)
            await serve_blob(stream, self.store, request, timeout=5)
        except PeerfarmError as exc:
            self.errors.append(exc)
        finally:
            with contextlib.suppress(PeerfarmError):
                await stream.aclose()


@contextlib.asynccontextmanager
async def fake_peer(
    store: ContentStore, faults: dict[int, Fault] | None = None
) -> AsyncIterator[FakePeer]:
    async with trio.open_nursery() as nursery:
        yield FakePeer(nursery, store, faults or {})
        nursery.cancel_scope.cancel()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def offsets(peer: FakePeer) -> list[int]:
    return [request["offset"] for request in peer.requests]


@pytest.fixture
def server_store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "server")


@pytest.fixture
def client_store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "client")


@pytest.fixture
def blob(server_store: ContentStore) -> tuple[str, bytes]:
    data = random.Random(42).randbytes(5 * MIB + 12345)
    return server_store.put_bytes(data), data


def assert_clean(store: ContentStore) -> None:
    assert list(store.tmp_dir.iterdir()) == []


# -- tests ------------------------------------------------------------------------------------


async def test_roundtrip_multi_megabyte_blob(
    server_store: ContentStore, client_store: ContentStore, blob: tuple[str, bytes]
) -> None:
    digest, data = blob
    progress: list[tuple[int, int]] = []
    with trio.fail_after(10):
        async with fake_peer(server_store) as peer:
            path = await fetch_blob(
                peer.connect, digest, client_store, on_progress=lambda *p: progress.append(p)
            )
    assert path == client_store.path(digest)
    assert path.read_bytes() == data
    assert offsets(peer) == [0]
    assert progress[-1] == (len(data), len(data))
    assert [done for done, _ in progress] == sorted({done for done, _ in progress})
    assert len(progress) == math.ceil(len(data) / CHUNK_SIZE)
    assert peer.errors == []
    assert_clean(client_store)


async def test_a_blob_of_one_chunk_takes_one_thread_hop_on_each_side(
    server_store: ContentStore, client_store: ContentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scene or a frame is usually one chunk: the server opens, sizes and reads it in one
    trip to a worker thread, the client writes and commits it in one. On a loaded machine
    each trip is a wait in the CPU's queue (31 peers fetching a new job's scene from its
    submitter at once waited 0.3-0.5 s each when it took five)."""
    data = b"#!/bin/sh\necho frame\n" * 40
    digest = server_store.put_bytes(data)
    hops: list[str] = []
    real = trio.to_thread.run_sync

    async def counted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    with trio.fail_after(5):
        async with fake_peer(server_store) as peer:
            path = await fetch_blob(peer.connect, digest, client_store)
    assert path.read_bytes() == data
    assert peer.errors == []
    assert len(hops) == 2, hops
    assert_clean(client_store)


async def test_already_stored_blob_needs_no_peer(client_store: ContentStore) -> None:
    digest = client_store.put_bytes(b"local")

    async def no_peer() -> MessageStream:
        raise AssertionError("connected although the blob is local")

    with trio.fail_after(5):
        assert await fetch_blob(no_peer, digest, client_store) == client_store.path(digest)


async def test_corrupted_chunk_is_detected_and_refetched_from_zero(
    server_store: ContentStore, client_store: ContentStore, blob: tuple[str, bytes]
) -> None:
    digest, data = blob
    with trio.fail_after(10):
        async with fake_peer(server_store, {0: lambda s: CorruptChunk(s, 3)}) as peer:
            path = await fetch_blob(peer.connect, digest, client_store)
    assert offsets(peer) == [0, 0]
    assert path.read_bytes() == data
    assert client_store.verify(digest)
    assert server_store.has(digest)  # corrupted in transit, the server's copy is fine
    assert_clean(client_store)


async def test_broken_stream_resumes_from_the_received_offset(
    server_store: ContentStore, client_store: ContentStore, blob: tuple[str, bytes]
) -> None:
    digest, data = blob
    faults: dict[int, Fault] = {
        0: lambda s: DieAfterChunks(s, 7),
        1: lambda s: DieAfterChunks(s, 4),
    }
    with trio.fail_after(10):
        async with fake_peer(server_store, faults) as peer:
            path = await fetch_blob(peer.connect, digest, client_store)
    assert offsets(peer) == [0, 7 * CHUNK_SIZE, 11 * CHUNK_SIZE]
    assert path.read_bytes() == data
    assert_clean(client_store)


async def test_gives_up_after_the_allowed_attempts(
    server_store: ContentStore, client_store: ContentStore, blob: tuple[str, bytes]
) -> None:
    digest, _ = blob
    faults: dict[int, Fault] = {i: lambda s: CorruptChunk(s, 0) for i in range(3)}
    with trio.fail_after(10):
        async with fake_peer(server_store, faults) as peer:
            with pytest.raises(FetchFailed, match="hash mismatch") as info:
                await fetch_blob(peer.connect, digest, client_store, attempts=3)
    assert peer.connections == 3
    assert digest in str(info.value)
    assert not client_store.has(digest)
    assert_clean(client_store)


async def test_missing_blob_is_a_clear_store_error(
    server_store: ContentStore, client_store: ContentStore
) -> None:
    digest = sha(b"nobody has this")
    with trio.fail_after(5):
        async with fake_peer(server_store) as peer:
            with pytest.raises(BlobMissing, match=f"does not have blob {digest}") as info:
                await fetch_blob(peer.connect, digest, client_store)
    assert isinstance(info.value, StoreError)
    assert peer.connections == 1  # asking the same peer again would not help
    assert_clean(client_store)


async def test_corrupt_blob_on_the_server_is_removed_there(
    server_store: ContentStore, client_store: ContentStore, blob: tuple[str, bytes]
) -> None:
    digest, _ = blob
    on_disk = server_store.path(digest)
    on_disk.chmod(0o644)
    with on_disk.open("r+b") as f:
        f.seek(1000)
        f.write(b"rot")
    with trio.fail_after(10):
        async with fake_peer(server_store) as peer:
            with pytest.raises(BlobMissing):
                await fetch_blob(peer.connect, digest, client_store)
    assert offsets(peer) == [0, 0]
    assert not server_store.has(digest)
    assert not client_store.has(digest)


async def test_concurrent_fetches_share_one_download(
    server_store: ContentStore, client_store: ContentStore, blob: tuple[str, bytes]
) -> None:
    digest, data = blob
    paths: list[Path] = []

    async def fetch(peer: FakePeer) -> None:
        paths.append(await fetch_blob(peer.connect, digest, client_store))

    with trio.fail_after(10):
        async with fake_peer(server_store) as peer, trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(fetch, peer)
    assert peer.connections == 1
    assert paths == [client_store.path(digest)] * 3
    assert paths[0].read_bytes() == data


async def test_unresponsive_peer_times_out(client_store: ContentStore) -> None:
    streams: list[MemoryStream] = []

    async def silent_peer() -> MessageStream:
        client, server = memory_stream_pair()
        streams.append(server)  # kept open, never answers
        return client

    with trio.fail_after(5):
        with pytest.raises(FetchFailed, match="interrupted"):
            await fetch_blob(silent_peer, sha(b"x"), client_store, attempts=2, timeout=0.1)
    assert len(streams) == 2


@pytest.mark.parametrize(
    "replies",
    [
        [{"t": "blob", "size": 3}, {"t": "chunk", "data": b"abcd"}],
        [{"t": "blob", "size": -1}],
        [{"t": "blob", "size": 3}, {"t": "chunk", "data": "abc"}],
        [{"t": "blob", "size": 3}, {"t": "chunk", "data": b"ab"}, {"t": "end"}],
        [{"t": "surprise"}],
        ["not a dict"],
    ],
)
async def test_malformed_replies_are_refused(
    client_store: ContentStore, replies: list[Any]
) -> None:
    async def scripted_peer() -> MessageStream:
        client, server = memory_stream_pair(capacity=10)
        for reply in replies:
            await server.send(reply)
        return client

    with trio.fail_after(5), pytest.raises(FetchFailed, match="bad reply"):
        await fetch_blob(scripted_peer, sha(b"abc"), client_store, timeout=0.5)
    assert_clean(client_store)
    assert not client_store.has(sha(b"abc"))


class UntouchableStore:
    """Any use of this store fails the test: hostile requests must be refused before it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"store.{name} used for a hostile request")


HOSTILE_REQUESTS: list[Any] = [
    {"t": "get", "digest": "../../etc/passwd", "offset": 0},
    {"t": "get", "digest": "../" * 21 + "a", "offset": 0},
    {"t": "get", "digest": "/" + "a" * 63, "offset": 0},
    {"t": "get", "digest": "A" * 64, "offset": 0},
    {"t": "get", "digest": "a" * 63, "offset": 0},
    {"t": "get", "digest": "a" * 64 + "/", "offset": 0},
    {"t": "get", "digest": b"a" * 64, "offset": 0},
    {"t": "get", "digest": None, "offset": 0},
    {"t": "get", "offset": 0},
    {"t": "get", "digest": "a" * 64, "offset": -1},
    {"t": "get", "digest": "a" * 64, "offset": True},
    {"t": "get", "digest": "a" * 64, "offset": "0"},
    {"t": "get", "digest": "a" * 64, "offset": 1.5},
    {"t": "put", "digest": "a" * 64, "offset": 0},
    ["get", "a" * 64, 0],
    None,
]


@pytest.mark.parametrize("request_", HOSTILE_REQUESTS)
async def test_hostile_requests_are_refused_without_touching_the_store(request_: Any) -> None:
    client, server = memory_stream_pair()
    with trio.fail_after(5):
        with pytest.raises(BadRequest) as info:
            await serve_blob(server, cast(ContentStore, UntouchableStore()), request_)
        await server.aclose()
        with pytest.raises(TransportError):  # nothing was sent before the refusal
            await client.receive(timeout=1)
    assert isinstance(info.value, RemoteProtocolError)


async def test_offset_beyond_the_blob_is_refused(server_store: ContentStore) -> None:
    digest = server_store.put_bytes(b"short")
    client, server = memory_stream_pair()
    with trio.fail_after(5):
        with pytest.raises(BadRequest, match="beyond the end"):
            await serve_blob(server, server_store, {"t": "get", "digest": digest, "offset": 6})
        await server.aclose()
        with pytest.raises(TransportError):
            await client.receive(timeout=1)


async def test_serve_from_an_offset_sends_the_tail(server_store: ContentStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    digest = server_store.put_bytes(data)
    client, server = memory_stream_pair(capacity=100)
    offset = CHUNK_SIZE + 17
    with trio.fail_after(5):
        await serve_blob(server, server_store, {"t": "get", "digest": digest, "offset": offset})
        messages = [await client.receive(timeout=1) for _ in range(5)]
    assert messages[0] == {"t": "blob", "size": len(data)}
    assert messages[-1] == {"t": "end"}
    assert b"".join(m["data"] for m in messages[1:-1]) == data[offset:]


def _store_repeated(store: ContentStore, block: bytes, count: int) -> str:
    hasher = hashlib.sha256()
    for _ in range(count):
        hasher.update(block)
    digest = hasher.hexdigest()
    with store.open_writer(digest, len(block) * count) as writer:
        for _ in range(count):
            writer.write(block)
        writer.commit()
    return digest


@pytest.mark.skipif(resource is None, reason="needs resource.getrusage (POSIX)")
async def test_200_mb_blob_with_bounded_memory(
    server_store: ContentStore, client_store: ContentStore
) -> None:
    count = 200
    digest = _store_repeated(server_store, random.Random(3).randbytes(MIB), count)
    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        with trio.fail_after(120):
            async with fake_peer(server_store) as peer:
                path = await fetch_blob(peer.connect, digest, client_store)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib) * 1024
    assert path.stat().st_size == count * MIB
    assert client_store.verify(digest)
    assert traced_peak < 20 * MIB, traced_peak
    assert rss_growth < 50 * MIB, rss_growth
