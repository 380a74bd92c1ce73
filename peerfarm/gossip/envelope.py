"""The wire envelope: protocol versions, sealed datagrams and stream frames. Pure, no sockets.

This module owns the bytes on the wire (the contract around them is :mod:`.transport`):

- The envelope: ``MAGIC + u8 version + u8 kind`` followed by the message sealed with the farm
  :class:`~peerfarm.gossip.crypto.Keyring`. The header is the AEAD's associated data, so the
  version is readable before decryption yet authenticated. The plaintext is msgpack.
- Streams: a ``u32`` big-endian length prefix before each envelope. A handshake swaps random
  16-byte session nonces; every later frame's associated data binds both nonces, the sender's
  role and a sequence number, so a recorded frame is useless in another stream or position.
- Mixed versions: a build speaks every protocol in :data:`SUPPORTED_VERSIONS`. Datagrams are
  sealed at the *oldest* version it speaks and streams at the highest both ends speak, so two
  builds work together when each one's oldest version is in the other's range. An authentic
  datagram in a version outside our range raises :class:`ForeignVersion` naming the sender
  (every datagram map of every version carries ``"f"``: the sender's node id).

Decoding raises only :class:`~peerfarm.errors.RemoteProtocolError` subclasses: whatever a peer
sends, the caller logs, counts and drops it.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from peerfarm import PROTOCOL_VERSION
from peerfarm.errors import (
    DecodeError,
    MessageTooLarge,
    PeerfarmError,
    RemoteProtocolError,
    VersionMismatchError,
)
from peerfarm.gossip.crypto import NONCE_LEN, SEAL_OVERHEAD, Keyring

Address = tuple[str, int]

MAGIC = b"PF"
#: Oldest protocol version this build still speaks. Raise it only after a release that speaks
#: the new version runs on every peer (two-step rolling upgrade: see docs/operators.md).
#: 2 since the ledger gained entries protocol-1 peers refuse (notices, host holds, peak memory):
#: old and new peers refuse each other loudly instead of failing to sync in silence.
MIN_PROTOCOL_VERSION = 2
#: Hidden test hook: ``MAX`` or ``MIN-MAX`` fakes the protocol versions this process speaks,
#: so tests can run an older and a newer build side by side. Never set it in production.
TEST_PROTOCOL_ENV = "PEERFARM_TEST_PROTOCOL"


def protocol_range(build: int, minimum: int, override: str | None = None) -> range:
    """The protocol versions a process speaks: ``minimum..build`` unless ``override`` says."""
    if not override:
        return range(minimum, build + 1)
    low, _, high = override.strip().rpartition("-")
    try:
        top = int(high)
        bottom = int(low) if low else min(minimum, top)
    except ValueError:
        raise ValueError(f"{TEST_PROTOCOL_ENV} must be MAX or MIN-MAX, not {override!r}") from None
    if not 1 <= bottom <= top <= 255:
        raise ValueError(f"{TEST_PROTOCOL_ENV}={override!r} is not a range within 1..255")
    return range(bottom, top + 1)


#: Protocol versions this build accepts on the wire.
SUPPORTED_VERSIONS = protocol_range(
    PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, os.environ.get(TEST_PROTOCOL_ENV)
)
#: The newest version this process speaks, what its alive messages advertise: the build's
#: :data:`peerfarm.PROTOCOL_VERSION` unless the test hook says otherwise.
SPOKEN_VERSION = SUPPORTED_VERSIONS.stop - 1

_HEADER = struct.Struct("!2sBB")  # magic, protocol version, kind
HEADER_LEN = _HEADER.size
#: Bytes the envelope adds around a msgpack plaintext: header + AEAD nonce + tag.
ENVELOPE_OVERHEAD = HEADER_LEN + SEAL_OVERHEAD
#: Cap on a whole sealed datagram (fits an Ethernet MTU with IP/UDP headers to spare).
MAX_DATAGRAM = 1400
#: Cap on the msgpack plaintext of one datagram.
MAX_DATAGRAM_PAYLOAD = MAX_DATAGRAM - ENVELOPE_OVERHEAD
#: Cap on one stream frame (the envelope after the length prefix).
MAX_STREAM_FRAME = 4 * 1024 * 1024
_LENGTH = struct.Struct("!I")
#: Bytes a stream frame adds around a msgpack plaintext: length prefix + envelope.
STREAM_FRAME_OVERHEAD = _LENGTH.size + ENVELOPE_OVERHEAD
#: Bytes of the random session nonce each side of a stream contributes.
SESSION_NONCE_LEN = 16

_HELLO_LABEL = b"peerfarm stream hello"
_SEQ = struct.Struct("!BQ")  # sender role, sequence number


class Kind(IntEnum):
    """What an envelope carries. Wire values: append only, never renumber."""

    DATAGRAM = 0
    STREAM_FRAME = 1


class Role(IntEnum):
    """Which end of a stream sent a frame. Wire values: append only, never renumber."""

    CLIENT = 0
    SERVER = 1


class EncodeError(PeerfarmError, TypeError):
    """A message that msgpack cannot encode (our own bug, not the peer's)."""


class ReplayedMessage(RemoteProtocolError):
    """An authentic datagram we have already accepted once."""


class OversizedFrame(RemoteProtocolError):
    """A peer announced or sent more bytes than a frame may hold."""


class ForeignVersion(VersionMismatchError):
    """An authentic datagram in a protocol version we do not speak, and who sent it."""

    def __init__(self, message: str, *, version: int, peer: ForeignPeer | None) -> None:
        super().__init__(message, version=version)
        self.peer = peer


@dataclass(frozen=True, slots=True)
class ForeignPeer:
    """A peer whose authentic datagrams carry a protocol version this process does not speak."""

    node_id: str
    version: int  # the envelope's version
    protocol: int | None = None  # the newest version it speaks, if its alive message said
    name: str | None = None
    address: Address | None = None

    def describe(self) -> str:
        """``speaks protocol 2, this peer 1`` (the words the logs and ``peers`` use)."""
        theirs = self.protocol if self.protocol is not None else self.version
        return f"speaks protocol {theirs}, this peer {versions_text()}"


def versions_text(versions: range | None = None) -> str:
    """``1`` or ``1-2``: the protocol versions this process speaks."""
    span = SUPPORTED_VERSIONS if versions is None else versions
    low, high = span.start, span.stop - 1
    return str(high) if low == high else f"{low}-{high}"


# --- msgpack ----------------------------------------------------------------------------------


def pack_message(message: Any) -> bytes:
    """msgpack-encode ``message`` (bin type for bytes); EncodeError if it cannot be encoded."""
    try:
        return msgpack.packb(message, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"message cannot be encoded with msgpack: {exc}") from None


def unpack_message(data: bytes) -> Any:
    """Decode msgpack from a peer; DecodeError for anything malformed or oversized."""
    limit = len(data)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            max_bin_len=limit,
            max_str_len=limit,
            max_array_len=limit,
            max_map_len=limit,
            max_ext_len=limit,
        )
    except Exception as exc:  # untrusted bytes: any failure of the decoder is the peer's fault
        raise DecodeError(f"bad msgpack payload: {type(exc).__name__}: {exc}") from None


# --- datagrams --------------------------------------------------------------------------------


def _header(version: int, kind: Kind) -> bytes:
    return _HEADER.pack(MAGIC, version, kind)


def _parse_header(data: bytes, kind: Kind) -> tuple[int, bytes]:
    """Return (version, header bytes); checks magic, kind and the supported versions."""
    if len(data) < HEADER_LEN:
        raise DecodeError(f"envelope too short ({len(data)} bytes)")
    magic, version, got_kind = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError("bad magic: not a peerfarm envelope")
    if got_kind != kind:
        raise DecodeError(f"unexpected envelope kind {got_kind} (wanted {kind.name})")
    if version not in SUPPORTED_VERSIONS:
        raise VersionMismatchError(
            f"protocol version {version} not supported (we speak {SUPPORTED_VERSIONS.start}"
            f"..{SUPPORTED_VERSIONS.stop - 1})",
            version=version,
        )
    return version, data[:HEADER_LEN]


def encode_datagram(keyring: Keyring, message: Any, version: int | None = None) -> bytes:
    """Seal ``message`` into one datagram; MessageTooLarge if it exceeds MAX_DATAGRAM.

    The default version is the oldest we speak, so every peer that speaks it can read us.
    """
    if version is None:
        version = SUPPORTED_VERSIONS.start
    plaintext = pack_message(message)
    if len(plaintext) > MAX_DATAGRAM_PAYLOAD:
        raise MessageTooLarge(
            f"datagram payload of {len(plaintext)} bytes exceeds {MAX_DATAGRAM_PAYLOAD}"
        )
    header = _header(version, Kind.DATAGRAM)
    return header + keyring.seal(plaintext, header)


def decode_datagram(
    keyring: Keyring, data: bytes, *, replay: ReplayFilter | None = None
) -> tuple[int, Any]:
    """Open one datagram: (protocol version, message). Raises only RemoteProtocolError kinds.

    With a ``replay`` filter, an authentic datagram seen before raises ReplayedMessage.
    """
    if len(data) > MAX_DATAGRAM:
        raise OversizedFrame(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    try:
        version, header = _parse_header(data, Kind.DATAGRAM)
    except VersionMismatchError as exc:
        raise _foreign(keyring, data, exc) from None
    sealed = data[HEADER_LEN:]
    plaintext = keyring.open(sealed, header)
    if replay is not None and not replay.first_sight(sealed[:NONCE_LEN]):
        raise ReplayedMessage("datagram already received once (replay)")
    return version, unpack_message(plaintext)


def _foreign(keyring: Keyring, data: bytes, exc: VersionMismatchError) -> VersionMismatchError:
    """``exc`` as a ForeignVersion naming the sender if the datagram is authentic (the key
    proves it comes from our farm), else ``exc`` unchanged: forged bytes name nobody."""
    try:
        message = unpack_message(keyring.open(data[HEADER_LEN:], data[:HEADER_LEN]))
    except RemoteProtocolError:
        return exc
    peer = foreign_peer(message, exc.version)
    return ForeignVersion(str(exc), version=exc.version, peer=peer)


def foreign_peer(message: Any, version: int) -> ForeignPeer | None:
    """Who sent ``message`` (a datagram map of any version): its ``"f"``, and its name,
    address and protocol when it also carries its own alive item. None if it names nobody."""
    if not isinstance(message, dict):
        return None
    node_id = message.get("f")
    if not isinstance(node_id, str) or not 0 < len(node_id) <= 128:
        return None
    items = message.get("b")
    for item in items if isinstance(items, list) else []:
        if not (isinstance(item, dict) and item.get("t") == "alive" and item.get("n") == node_id):
            continue
        meta, addr, proto = item.get("m"), item.get("a"), item.get("p")
        name = meta.get("name") if isinstance(meta, dict) else None
        address: Address | None = None
        if (
            isinstance(addr, list)
            and len(addr) == 2
            and isinstance(addr[0], str)
            and isinstance(addr[1], int)
            and 0 < addr[1] < 65536
        ):
            address = (addr[0][:255], addr[1])
        return ForeignPeer(
            node_id,
            version,
            proto if isinstance(proto, int) and 0 <= proto < 65536 else None,
            name[:64] if isinstance(name, str) else None,
            address,
        )
    return ForeignPeer(node_id, version)


class ReplayFilter:
    """Remembers the AEAD nonces of the last ``capacity`` authentic datagrams.

    Nonces are random per seal, so an authentic repeat is a replay. Only authenticated nonces
    enter, so forged traffic cannot flush the memory; a replay older than the window passes,
    which the idempotent layers above (CRDT merges, probe sequence numbers) tolerate.
    """

    __slots__ = ("_capacity", "_seen")

    def __init__(self, capacity: int = 16384) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def first_sight(self, nonce: bytes) -> bool:
        """True (and remember it) the first time ``nonce`` is offered, False after."""
        if nonce in self._seen:
            return False
        self._seen[nonce] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


# --- stream frames ----------------------------------------------------------------------------


class FrameBuffer:
    """Splits a byte stream into length-prefixed frames (the sans-I/O half of a stream reader).

    A length over MAX_STREAM_FRAME raises before any of the body is buffered.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or None until more bytes arrive."""
        if len(self._buf) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buf)
        if length > MAX_STREAM_FRAME:
            raise OversizedFrame(f"peer announced a {length}-byte frame (cap {MAX_STREAM_FRAME})")
        if length < ENVELOPE_OVERHEAD:
            raise DecodeError(f"peer announced a {length}-byte frame, shorter than any envelope")
        end = _LENGTH.size + length
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[_LENGTH.size : end])
        del self._buf[:end]
        return body


def _frame(body: bytes) -> bytes:
    if len(body) > MAX_STREAM_FRAME:
        raise MessageTooLarge(f"stream frame of {len(body)} bytes exceeds {MAX_STREAM_FRAME}")
    return _LENGTH.pack(len(body)) + body


def _hello_aad(header: bytes, sender: Role, client_nonce: bytes) -> bytes:
    return header + _HELLO_LABEL + bytes([sender]) + client_nonce


def client_hello(keyring: Keyring, client_nonce: bytes, version: int = SPOKEN_VERSION) -> bytes:
    """The client's first frame (length-prefixed): its session nonce and highest version.

    The hello's header carries the lowest version we speak, so an older server can read it
    and answer with the highest version both sides speak (rolling upgrades).
    """
    header = _header(SUPPORTED_VERSIONS.start, Kind.STREAM_FRAME)
    plaintext = client_nonce + bytes([version])
    return _frame(header + keyring.seal(plaintext, _hello_aad(header, Role.CLIENT, b"")))


def server_accept(
    keyring: Keyring, hello: bytes, server_nonce: bytes, version: int = SPOKEN_VERSION
) -> tuple[bytes, StreamSession]:
    """Answer a client hello: (framed reply, session). The session keeps the key the client
    proved, so a peer still on the old key of a rotation is answered in that key."""
    _, header = _parse_header(hello, Kind.STREAM_FRAME)
    index, plaintext = keyring.open_with_index(
        hello[HEADER_LEN:], _hello_aad(header, Role.CLIENT, b"")
    )
    if len(plaintext) != SESSION_NONCE_LEN + 1:
        raise DecodeError(f"client hello has {len(plaintext)} bytes, not {SESSION_NONCE_LEN + 1}")
    client_nonce, client_version = plaintext[:SESSION_NONCE_LEN], plaintext[SESSION_NONCE_LEN]
    agreed = min(client_version, version)
    if agreed not in SUPPORTED_VERSIONS:
        raise VersionMismatchError(f"client speaks up to version {client_version}", version=agreed)
    session_keyring = keyring.narrowed(index)
    reply_header = _header(agreed, Kind.STREAM_FRAME)
    reply = reply_header + session_keyring.seal(
        server_nonce, _hello_aad(reply_header, Role.SERVER, client_nonce)
    )
    session = StreamSession(session_keyring, Role.SERVER, client_nonce, server_nonce, agreed)
    return _frame(reply), session


def client_finish(
    keyring: Keyring, client_nonce: bytes, reply: bytes, version: int = SPOKEN_VERSION
) -> StreamSession:
    """Check the server's reply to our hello and return the client's session."""
    agreed, header = _parse_header(reply, Kind.STREAM_FRAME)
    if agreed > version:
        raise VersionMismatchError(f"server chose version {agreed} above ours", version=agreed)
    index, server_nonce = keyring.open_with_index(
        reply[HEADER_LEN:], _hello_aad(header, Role.SERVER, client_nonce)
    )
    if len(server_nonce) != SESSION_NONCE_LEN:
        raise DecodeError(f"server session nonce has {len(server_nonce)} bytes")
    return StreamSession(keyring.narrowed(index), Role.CLIENT, client_nonce, server_nonce, agreed)


class StreamSession:
    """Seals and opens the frames of one stream after its handshake (pure, no I/O).

    Associated data of frame n = header + client nonce + server nonce + sender role + n, so
    frames cannot be replayed into another stream, reflected back, reordered or dropped
    unnoticed. After one bad frame the session refuses everything: the caller must close.
    """

    __slots__ = ("_broken", "_keyring", "_nonces", "_recv_seq", "_role", "_send_seq", "version")

    def __init__(
        self,
        keyring: Keyring,
        role: Role,
        client_nonce: bytes,
        server_nonce: bytes,
        version: int,
    ) -> None:
        self._keyring = keyring
        self._role = role
        self._nonces = client_nonce + server_nonce
        self.version = version
        self._send_seq = 0
        self._recv_seq = 0
        self._broken = False

    @property
    def broken(self) -> bool:
        return self._broken

    def _aad(self, header: bytes, sender: Role, seq: int) -> bytes:
        return header + self._nonces + _SEQ.pack(sender, seq)

    def seal(self, message: Any) -> bytes:
        """The next frame (length prefix included) carrying ``message``."""
        plaintext = pack_message(message)
        if len(plaintext) + ENVELOPE_OVERHEAD > MAX_STREAM_FRAME:
            raise MessageTooLarge(
                f"stream message of {len(plaintext)} bytes exceeds the {MAX_STREAM_FRAME} cap"
            )
        header = _header(self.version, Kind.STREAM_FRAME)
        body = header + self._keyring.seal(plaintext, self._aad(header, self._role, self._send_seq))
        self._send_seq += 1
        return _frame(body)

    def open(self, body: bytes) -> Any:
        """Decode the next frame body from the peer; RemoteProtocolError breaks the session."""
        if self._broken:
            raise RemoteProtocolError("stream is unusable after an earlier bad frame")
        try:
            version, header = _parse_header(body, Kind.STREAM_FRAME)
            if version != self.version:
                raise VersionMismatchError(
                    f"frame version {version} differs from the stream's {self.version}",
                    version=version,
                )
            peer = Role.SERVER if self._role is Role.CLIENT else Role.CLIENT
            aad = self._aad(header, peer, self._recv_seq)
            plaintext = self._keyring.open(body[HEADER_LEN:], aad)
            self._recv_seq += 1
            return unpack_message(plaintext)
        except RemoteProtocolError:
            self._broken = True
            raise
