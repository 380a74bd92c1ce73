"""The envelope (pure) and the real trio transport on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from peerfarm import PROTOCOL_VERSION
from peerfarm.errors import (
    AuthenticationError,
    DecodeError,
    MessageTooLarge,
    RemoteProtocolError,
    TransportError,
    UsageError,
    VersionMismatchError,
)
from peerfarm.gossip import transport as tp
from peerfarm.gossip.crypto import Keyring
from peerfarm.gossip.net import NetLimits, NetTransport, open_transport
from peerfarm.gossip.transport import (
    ENVELOPE_OVERHEAD,
    MAX_DATAGRAM,
    MAX_DATAGRAM_PAYLOAD,
    MAX_STREAM_FRAME,
    EncodeError,
    FrameBuffer,
    ReplayedMessage,
    ReplayFilter,
    Role,
    Stream,
    StreamClosed,
    StreamSession,
    Transport,
    client_finish,
    client_hello,
    decode_datagram,
    encode_datagram,
    pack_message,
    server_accept,
    unpack_message,
)

OLD = bytes(range(32))
NEW = bytes(range(50, 82))
RING = Keyring([OLD])
LOCAL = ("127.0.0.1", 0)

messages = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


# --- pure: datagrams ------------------------------------------------------------------------


@given(messages)
def test_datagram_roundtrip(message: Any) -> None:
    data = encode_datagram(RING, message)
    assert data[:4] == b"PF" + bytes([PROTOCOL_VERSION, 0])
    assert len(data) == len(pack_message(message)) + ENVELOPE_OVERHEAD
    assert decode_datagram(RING, data) == (PROTOCOL_VERSION, message)


def test_envelope_overhead_is_header_nonce_and_tag() -> None:
    assert ENVELOPE_OVERHEAD == 4 + 12 + 16
    assert MAX_DATAGRAM_PAYLOAD == MAX_DATAGRAM - ENVELOPE_OVERHEAD


def test_datagram_size_cap() -> None:
    fits = b"x" * (MAX_DATAGRAM_PAYLOAD - 3)  # bin 16 header is 3 bytes
    assert len(encode_datagram(RING, fits)) == MAX_DATAGRAM
    with pytest.raises(MessageTooLarge):
        encode_datagram(RING, fits + b"x")
    with pytest.raises(RemoteProtocolError):
        decode_datagram(RING, b"PF\x01\x00" + b"\0" * MAX_DATAGRAM)


def test_unencodable_message_raises_encode_error() -> None:
    with pytest.raises(EncodeError):
        encode_datagram(RING, {"x": object()})
    with pytest.raises(TypeError):  # EncodeError is also a TypeError
        pack_message(2**70)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda d: b"XX" + d[2:], DecodeError),  # bad magic
        (lambda d: d[:2] + b"\x07" + d[3:], VersionMismatchError),
        (lambda d: d[:2] + b"\x00" + d[3:], VersionMismatchError),
        (lambda d: d[:3] + b"\x01" + d[4:], DecodeError),  # stream-frame kind
        (lambda d: d[:3], DecodeError),
        (lambda d: d[:20], AuthenticationError),  # truncated
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), AuthenticationError),
        (lambda d: d[:10] + bytes([d[10] ^ 0x80]) + d[11:], AuthenticationError),
    ],
)
def test_decode_datagram_rejects_bad_input(
    mutate: Callable[[bytes], bytes], error: type[RemoteProtocolError]
) -> None:
    with pytest.raises(error):
        decode_datagram(RING, mutate(encode_datagram(RING, {"ok": 1})))


def test_version_mismatch_carries_version() -> None:
    data = encode_datagram(RING, 1)
    with pytest.raises(VersionMismatchError) as info:
        decode_datagram(RING, data[:2] + b"\x09" + data[3:])
    assert info.value.version == 9


def test_header_is_authenticated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tp, "SUPPORTED_VERSIONS", range(1, 3))
    data = encode_datagram(RING, {"a": 1}, version=1)
    with pytest.raises(AuthenticationError):
        decode_datagram(RING, data[:2] + b"\x02" + data[3:])
    assert decode_datagram(RING, encode_datagram(RING, 5, version=2)) == (2, 5)


def test_wrong_key_and_authentic_non_msgpack() -> None:
    with pytest.raises(AuthenticationError):
        decode_datagram(Keyring([NEW]), encode_datagram(RING, 1))
    header = b"PF" + bytes([PROTOCOL_VERSION, 0])
    bogus = header + RING.seal(b"\xc1", header)  # 0xc1 is never valid msgpack
    with pytest.raises(DecodeError):
        decode_datagram(RING, bogus)
    trailing = header + RING.seal(pack_message(1) + b"\x01", header)
    with pytest.raises(DecodeError):
        decode_datagram(RING, trailing)


@given(st.binary(max_size=1600))
def test_decode_datagram_arbitrary_bytes_only_remote_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_datagram(RING, data)


@given(st.data())
def test_any_single_byte_change_is_rejected(data: st.DataObject) -> None:
    wire = encode_datagram(RING, {"frame": 7, "node": "abc"})
    index = data.draw(st.integers(0, len(wire) - 1))
    flip = data.draw(st.integers(1, 255))
    mutated = wire[:index] + bytes([wire[index] ^ flip]) + wire[index + 1 :]
    with pytest.raises(RemoteProtocolError):
        decode_datagram(RING, mutated)


@given(st.binary(max_size=200))
def test_unpack_message_arbitrary_bytes_returns_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        unpack_message(data)


def test_unpack_message_limits_announced_lengths() -> None:
    huge_array = b"\xdd" + struct.pack("!I", 2**31)  # array32 announcing 2**31 items
    with pytest.raises(DecodeError):
        unpack_message(huge_array)


def test_replay_filter() -> None:
    replay = ReplayFilter(capacity=2)
    data = encode_datagram(RING, "once")
    assert decode_datagram(RING, data, replay=replay) == (PROTOCOL_VERSION, "once")
    with pytest.raises(ReplayedMessage):
        decode_datagram(RING, data, replay=replay)
    with pytest.raises(AuthenticationError):  # forged nonces never enter the filter
        decode_datagram(RING, data[:-1] + b"\0", replay=replay)
    for _ in range(2):
        decode_datagram(RING, encode_datagram(RING, "other"), replay=replay)
    assert decode_datagram(RING, data, replay=replay)[1] == "once"  # evicted: window is finite


# --- pure: stream frames --------------------------------------------------------------------


def handshake(
    client_ring: Keyring = RING, server_ring: Keyring = RING, tag: int = 0
) -> tuple[StreamSession, StreamSession]:
    client_nonce, server_nonce = bytes([tag]) * 16, bytes([tag + 1]) * 16
    buffer = FrameBuffer()
    buffer.feed(client_hello(client_ring, client_nonce))
    hello = buffer.next_frame()
    assert hello is not None
    reply, server = server_accept(server_ring, hello, server_nonce)
    buffer.feed(reply)
    reply_body = buffer.next_frame()
    assert reply_body is not None
    return client_finish(client_ring, client_nonce, reply_body), server


def body(frame: bytes) -> bytes:
    buffer = FrameBuffer()
    buffer.feed(frame)
    result = buffer.next_frame()
    assert result is not None and buffer.pending == 0
    return result


def test_stream_session_roundtrip_both_ways() -> None:
    client, server = handshake()
    for i in range(5):
        assert server.open(body(client.seal({"i": i, "b": b"\0" * i}))) == {"i": i, "b": b"\0" * i}
        assert client.open(body(server.seal([i]))) == [i]
    assert client.version == server.version == PROTOCOL_VERSION


def test_stream_frames_cannot_be_replayed_reordered_or_reflected() -> None:
    client, server = handshake(tag=0)
    first, second = body(client.seal("first")), body(client.seal("second"))
    _, other_server = handshake(tag=10)
    with pytest.raises(AuthenticationError):  # another stream
        other_server.open(first)
    with pytest.raises(AuthenticationError):  # out of order
        server.open(second)
    with pytest.raises(RemoteProtocolError, match="unusable"):  # session is now broken
        server.open(first)
    assert server.broken
    client2, _ = handshake(tag=20)
    own = body(client2.seal("mine"))
    with pytest.raises(AuthenticationError):  # reflected back at the sender
        client2.open(own)


def test_stream_handshake_rotation_answers_in_the_clients_key() -> None:
    client, server = handshake(client_ring=Keyring([OLD]), server_ring=Keyring([NEW, OLD]))
    assert client.open(body(server.seal("in old key"))) == "in old key"
    assert server.open(body(client.seal("hi"))) == "hi"


def test_stream_handshake_negotiates_highest_common_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tp, "SUPPORTED_VERSIONS", range(1, 3))
    nonce_c, nonce_s = b"c" * 16, b"s" * 16

    def connect(client_version: int, server_version: int) -> tuple[int, int]:
        hello = body(client_hello(RING, nonce_c, version=client_version))
        assert hello[2] == 1  # readable by the oldest peer
        reply, server = server_accept(RING, hello, nonce_s, version=server_version)
        client = client_finish(RING, nonce_c, body(reply), version=client_version)
        return client.version, server.version

    assert connect(2, 1) == (1, 1)  # new client, old server
    assert connect(1, 2) == (1, 1)
    assert connect(2, 2) == (2, 2)
    hello = body(client_hello(RING, nonce_c, version=9))
    assert server_accept(RING, hello, nonce_s, version=2)[1].version == 2
    monkeypatch.setattr(tp, "SUPPORTED_VERSIONS", range(2, 3))
    with pytest.raises(VersionMismatchError):
        server_accept(RING, body(client_hello(RING, nonce_c, version=1)), nonce_s, version=2)


def test_stream_handshake_wrong_key() -> None:
    with pytest.raises(AuthenticationError):
        handshake(client_ring=Keyring([NEW]), server_ring=Keyring([OLD]))


def test_frame_buffer_partial_feeds() -> None:
    client, server = handshake()
    wire = client.seal("a") + client.seal(b"b" * 1000)
    buffer = FrameBuffer()
    got = []
    for i in range(0, len(wire), 7):
        buffer.feed(wire[i : i + 7])
        while (frame := buffer.next_frame()) is not None:
            got.append(server.open(frame))
    assert got == ["a", b"b" * 1000]
    assert buffer.pending == 0


def test_frame_buffer_rejects_oversized_announcement_without_body() -> None:
    buffer = FrameBuffer()
    buffer.feed(struct.pack("!I", MAX_STREAM_FRAME + 1))
    with pytest.raises(RemoteProtocolError, match="announced"):
        buffer.next_frame()
    short = FrameBuffer()
    short.feed(struct.pack("!I", 3) + b"abc")
    with pytest.raises(DecodeError):
        short.next_frame()


def test_stream_message_size_cap() -> None:
    client, _ = handshake()
    with pytest.raises(MessageTooLarge):
        client.seal(b"x" * MAX_STREAM_FRAME)


# --- real sockets on 127.0.0.1 ----------------------------------------------------------------


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


def test_roles_are_wire_values() -> None:
    assert (Role.CLIENT, Role.SERVER) == (0, 1)
