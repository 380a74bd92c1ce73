"""The real trio transport on 127.0.0.1: UDP datagrams and TCP streams, keys, caps and bad input."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from peerfarm import PROTOCOL_VERSION
from peerfarm.errors import (
    MessageTooLarge,
    TransportError,
    UsageError,
)
from peerfarm.gossip import net
from peerfarm.gossip.crypto import Keyring
from peerfarm.gossip.net import NetLimits, NetTransport, open_transport
from peerfarm.gossip.transport import (
    ENVELOPE_OVERHEAD,
    MAX_DATAGRAM,
    Stream,
    StreamClosed,
    Transport,
    client_hello,
    encode_datagram,
)

OLD = bytes(range(32))

NEW = bytes(range(50, 82))

RING = Keyring([OLD])

LOCAL = ("127.0.0.1", 0)


async def wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await trio.sleep(0.01)


async def echo(stream: Stream) -> None:
    while True:
        try:
            message = await stream.receive(timeout=5)
        except StreamClosed:
            return
        await stream.send(message)


@asynccontextmanager
async def serving(
    handler: Callable[[Stream], Awaitable[None]],
    *,
    server_ring: Keyring = RING,
    client_ring: Keyring = RING,
    limits: NetLimits | None = None,
) -> AsyncIterator[tuple[NetTransport, NetTransport]]:
    """A server transport serving ``handler`` and a client transport, both on 127.0.0.1."""
    async with (
        open_transport(server_ring, LOCAL, limits=limits) as server,
        open_transport(client_ring, LOCAL) as client,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(server.serve_streams, handler)
        try:
            yield server, client
        finally:
            nursery.cancel_scope.cancel()


async def raw_udp() -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(LOCAL)
    return sock


async def drained(stream: trio.SocketStream) -> bool:
    """Read until the peer closes; True if it did within the caller's deadline."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass
    return True


async def test_datagram_roundtrip_over_udp() -> None:
    with trio.fail_after(5):
        async with open_transport(RING, LOCAL) as a, open_transport(RING, LOCAL) as b:
            as_protocol: Transport = a  # mypy checks NetTransport against the protocol
            assert as_protocol.local_address == a.local_address
            assert a.local_address[0] == "127.0.0.1" and a.local_address[1] > 0
            await a.send_datagram(b.local_address, {"hello": b"\x00\xff", "n": [1, 2.5]})
            got = await b.receive_datagram()
            assert got.message == {"hello": b"\x00\xff", "n": [1, 2.5]}
            assert got.sender == a.local_address
            assert got.version == PROTOCOL_VERSION
            assert a.stats.datagrams_sent == 1 and b.stats.datagrams_received == 1
            assert a.stats.bytes_sent == b.stats.bytes_received > ENVELOPE_OVERHEAD


async def test_one_message_to_several_peers_is_sealed_once_and_each_accepts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ledger push goes to every peer: one encoding and one seal for all of them, and the
    same sealed bytes pass each receiver's replay filter once (a second copy is a replay)."""
    sealed: list[bytes] = []
    real = net.encode_datagram

    def counted(*args: Any, **kwargs: Any) -> bytes:
        sealed.append(real(*args, **kwargs))
        return sealed[-1]

    monkeypatch.setattr(net, "encode_datagram", counted)
    with trio.fail_after(5):
        async with (
            open_transport(RING, LOCAL) as a,
            open_transport(RING, LOCAL) as b,
            open_transport(RING, LOCAL) as c,
        ):
            await a.send_datagrams([b.local_address, c.local_address], {"d": [1, 2]})
            for receiver in (b, c):
                got = await receiver.receive_datagram()
                assert got.message == {"d": [1, 2]} and got.sender == a.local_address
            assert len(sealed) == 1
            assert a.stats.datagrams_sent == 2
            # the same bytes again, to b: refused as a replay, and b keeps working
            await a._send_sealed(b.local_address, sealed[0])
            await a.send_datagram(b.local_address, "after")
            assert (await b.receive_datagram()).message == "after"
            assert b.stats.replayed == 1


async def test_udp_and_tcp_share_the_port_and_advertise_host() -> None:
    with trio.fail_after(5):
        async with open_transport(RING, LOCAL, advertise_host="10.9.8.7") as t:
            host, port = t.local_address
            assert host == "10.9.8.7"
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.aclose()
            with pytest.raises(TransportError):
                async with open_transport(RING, ("127.0.0.1", port)):
                    pass


async def test_send_datagram_errors() -> None:
    with trio.fail_after(5):
        async with open_transport(RING, LOCAL) as a:
            with pytest.raises(MessageTooLarge):
                await a.send_datagram(("127.0.0.1", 9), b"x" * MAX_DATAGRAM)
            await a.send_datagram(("127.0.0.1", 0), "port zero is invalid")  # must not raise
            assert a.stats.send_errors == 1 and a.stats.datagrams_sent == 0


async def test_bad_datagrams_are_counted_dropped_and_transport_keeps_working() -> None:
    with trio.fail_after(5):
        async with open_transport(RING, LOCAL) as b:
            raw = await raw_udp()
            to = b.local_address
            good = encode_datagram(RING, {"n": 1})
            await raw.sendto(b"garbage", to)
            await raw.sendto(good[:20], to)  # truncated
            await raw.sendto(b"PF\x01\x00" + b"\0" * 2000, to)  # oversized
            await raw.sendto(encode_datagram(Keyring([NEW]), {"n": 0}), to)  # wrong key
            await raw.sendto(good[:2] + b"\x09" + good[3:], to)  # unknown version
            await raw.sendto(good, to)
            await raw.sendto(good, to)  # replayed
            await raw.sendto(encode_datagram(RING, {"n": 2}), to)
            first = await b.receive_datagram()
            second = await b.receive_datagram()
            raw.close()
            assert [first.message, second.message] == [{"n": 1}, {"n": 2}]
            assert first.sender[0] == "127.0.0.1"
            stats = b.stats.as_dict()
            assert {k: v for k, v in stats.items() if k != "bytes_received" and v} == {
                "datagrams_received": 2,
                "decode_failures": 1,
                "auth_failures": 2,
                "oversized": 1,
                "version_rejected": 1,
                "replayed": 1,
            }


async def test_stream_roundtrip_many_messages() -> None:
    sent: list[Any] = [{"i": i, "blob": bytes([i % 256]) * i} for i in range(150)]
    sent += [b"", "", [], {}, None, b"\x00" * 1_000_000, {"nested": [[1, {"k": b"v"}]]}]
    with trio.fail_after(10):
        async with serving(echo) as (server, client):
            stream = await client.connect(server.local_address)
            assert stream.remote == server.local_address
            assert stream.version == PROTOCOL_VERSION
            for message in sent:
                await stream.send(message)
                assert await stream.receive(timeout=5) == message
            await stream.aclose()
            assert client.stats.streams_opened == 1 and server.stats.streams_accepted == 1


async def test_stream_receive_timeout_and_peer_close() -> None:
    async def silent_then_close(stream: Stream) -> None:
        await trio.sleep(0.3)
        await stream.aclose()

    with trio.fail_after(5):
        async with serving(silent_then_close) as (server, client):
            stream = await client.connect(server.local_address)
            with pytest.raises(TransportError, match="timed out"):
                await stream.receive(timeout=0.05)
            with pytest.raises(StreamClosed):
                await stream.receive(timeout=2)
            await stream.aclose()


async def test_bad_stream_bytes_are_counted_and_server_keeps_serving() -> None:
    limits = NetLimits(handshake_timeout=0.3)
    with trio.fail_after(8):
        async with serving(echo, limits=limits) as (server, client):
            port = server.local_address[1]
            junk = [
                b"hello, not a frame",  # reads as a ~1.7 GB length: oversized
                struct.pack("!I", 2**30),  # announces 1 GiB and stops: oversized, no wait
                struct.pack("!I", 60) + b"\x01" * 60,  # bad magic
                client_hello(Keyring([NEW]), b"n" * 16),  # wrong key
                client_hello(RING, b"n" * 16)[:30],  # truncated: handshake times out
                b"",  # says nothing: handshake times out
            ]
            for data in junk:
                raw = await trio.open_tcp_stream("127.0.0.1", port)
                if data:
                    await raw.send_all(data)
                with trio.fail_after(2):
                    assert await drained(raw)  # the server hung up on us
                await raw.aclose()
            stream = await client.connect(server.local_address)
            await stream.send("still alive")
            assert await stream.receive(timeout=2) == "still alive"
            await stream.aclose()
            stats = server.stats
            assert (stats.oversized, stats.decode_failures, stats.auth_failures) == (2, 1, 1)
            assert stats.streams_accepted == 1


async def test_key_rotation_datagrams_and_streams() -> None:
    with trio.fail_after(5):
        async with (
            open_transport(Keyring([OLD]), LOCAL) as old,
            open_transport(Keyring([NEW, OLD]), LOCAL) as rotated,
            open_transport(Keyring([OLD, NEW]), LOCAL) as adding,
            trio.open_nursery() as nursery,
        ):
            await old.send_datagram(rotated.local_address, "old to rotated")
            assert (await rotated.receive_datagram()).message == "old to rotated"
            await adding.send_datagram(old.local_address, "adding to old")
            assert (await old.receive_datagram()).message == "adding to old"
            await rotated.send_datagram(adding.local_address, "rotated to adding")
            assert (await adding.receive_datagram()).message == "rotated to adding"
            await rotated.send_datagram(old.local_address, "lost: old lacks the new key")
            await adding.send_datagram(old.local_address, "marker")
            assert (await old.receive_datagram()).message == "marker"
            assert old.stats.auth_failures == 1

            await nursery.start(rotated.serve_streams, echo)
            stream = await old.connect(rotated.local_address)
            await stream.send({"both": "ways"})
            assert await stream.receive(timeout=2) == {"both": "ways"}
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_wrong_key_connect_fails() -> None:
    with trio.fail_after(5):
        async with serving(echo, client_ring=Keyring([NEW])) as (server, client):
            with pytest.raises(TransportError):
                await client.connect(server.local_address)
            await wait_until(lambda: server.stats.auth_failures == 1)
            assert server.stats.streams_accepted == 0


async def test_connect_failures_raise_transport_error() -> None:
    with trio.fail_after(5):
        async with open_transport(RING, LOCAL) as client:
            closed = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            await closed.bind(LOCAL)
            port = closed.getsockname()[1]
            closed.close()
            with pytest.raises(TransportError):
                await client.connect(("127.0.0.1", port), timeout=1)
            mute = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            await mute.bind(LOCAL)
            mute.listen(1)  # accepts TCP but never says hello
            with trio.fail_after(2), pytest.raises(TransportError, match="timed out"):
                await client.connect(mute.getsockname()[:2], timeout=0.2)
            mute.close()


async def recording_proxy(
    target: tuple[str, int], recorded: bytearray, *, task_status: trio.TaskStatus[int]
) -> None:
    """Forward TCP to ``target``, keeping a copy of every client-to-server byte."""

    async def pipe(src: trio.SocketStream, dst: trio.SocketStream, record: bool) -> None:
        try:
            async for chunk in src:
                if record:
                    recorded.extend(chunk)
                await dst.send_all(chunk)
        except trio.BrokenResourceError:
            pass
        await dst.send_eof()

    async def handle(client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream(*target)
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(pipe, client, upstream, True)
            nursery.start_soon(pipe, upstream, client, False)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_stream_frames_replayed_into_new_connection_are_rejected() -> None:
    received: list[Any] = []

    async def collect(stream: Stream) -> None:
        while True:
            try:
                received.append(await stream.receive(timeout=2))
            except StreamClosed:
                return

    recorded = bytearray()
    with trio.fail_after(5):
        async with serving(collect) as (server, client), trio.open_nursery() as nursery:
            port = await nursery.start(recording_proxy, server.local_address, recorded)
            stream = await client.connect(("127.0.0.1", port))
            await stream.send({"cmd": "cancel job", "job": "j1"})
            await stream.send({"cmd": "delete", "job": "j2"})
            await stream.aclose()
            await wait_until(lambda: len(received) == 2 and server.active_connections == 0)

            raw = await trio.open_tcp_stream(*server.local_address)
            await raw.send_all(bytes(recorded))
            assert await drained(raw)
            await raw.aclose()
            await wait_until(lambda: server.active_connections == 0)
            nursery.cancel_scope.cancel()
            assert received == [{"cmd": "cancel job", "job": "j1"}, {"cmd": "delete", "job": "j2"}]
            assert server.stats.auth_failures == 1
            assert server.stats.streams_accepted == 2  # the replayed hello itself is harmless


@pytest.mark.parametrize(
    "limits", [NetLimits(max_per_host=2), NetLimits(max_connections=2, max_per_host=8)]
)
async def test_connection_cap(limits: NetLimits) -> None:
    release = trio.Event()

    async def hold(stream: Stream) -> None:
        await release.wait()
        await stream.send("bye")

    with trio.fail_after(5):
        async with serving(hold, limits=limits) as (server, client):
            held = [await client.connect(server.local_address) for _ in range(2)]
            with pytest.raises(TransportError):
                await client.connect(server.local_address, timeout=2)
            assert server.stats.streams_refused == 1
            assert server.active_connections == 2
            release.set()
            for stream in held:
                assert await stream.receive(timeout=2) == "bye"
                await stream.aclose()
            await wait_until(lambda: server.active_connections == 0)
            again = await client.connect(server.local_address)
            assert await again.receive(timeout=2) == "bye"  # release is set: served at once
            await again.aclose()


async def test_handler_error_closes_only_that_connection() -> None:
    async def picky(stream: Stream) -> None:
        message = await stream.receive(timeout=2)
        if message == "bad":
            raise UsageError("handler refuses")
        await stream.send("ok")

    with trio.fail_after(5):
        async with serving(picky) as (server, client):
            bad = await client.connect(server.local_address)
            await bad.send("bad")
            with pytest.raises(StreamClosed):
                await bad.receive(timeout=2)
            await bad.aclose()
            good = await client.connect(server.local_address)
            await good.send("good")
            assert await good.receive(timeout=2) == "ok"
            await good.aclose()


async def test_receive_after_close_raises_transport_error() -> None:
    with trio.fail_after(5):
        async with open_transport(RING, LOCAL) as t:
            assert isinstance(t, NetTransport)
            t.close()
            with pytest.raises(TransportError):
                await t.receive_datagram()
