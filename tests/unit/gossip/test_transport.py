"""The envelope, pure: sealed datagrams, stream frames and handshakes, and hostile bytes."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm import PROTOCOL_VERSION
from peerfarm.errors import (
    AuthenticationError,
    DecodeError,
    MessageTooLarge,
    RemoteProtocolError,
    VersionMismatchError,
)
from peerfarm.gossip import envelope as tp
from peerfarm.gossip.crypto import Keyring
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
    StreamSession,
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


def test_roles_are_wire_values() -> None:
    assert (Role.CLIENT, Role.SERVER) == (0, 1)
