"""The transport contract: what gossip code talks to, what a transport counts, error mapping.

This module owns the interface every transport keeps and nothing about the bytes (those are
:mod:`.envelope`, re-exported here for the callers that import them from this module):

- :class:`Transport` / :class:`Stream` are what gossip code talks to; ``net.py`` implements them
  on trio sockets, ``memnet.py`` in memory for simulations.
- :class:`TransportStats`: every dropped input lands in exactly one counter, and
  :meth:`TransportStats.count_rejection` keeps peers heard in a foreign protocol version in
  ``stats.foreign`` for the node to report.
- :func:`map_network_errors` is the one place where trio and OS errors become TransportError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import trio

from peerfarm.errors import (
    AuthenticationError,
    RemoteProtocolError,
    TransportError,
    VersionMismatchError,
)
from peerfarm.gossip.envelope import (
    ENVELOPE_OVERHEAD,
    HEADER_LEN,
    MAGIC,
    MAX_DATAGRAM,
    MAX_DATAGRAM_PAYLOAD,
    MAX_STREAM_FRAME,
    MIN_PROTOCOL_VERSION,
    SESSION_NONCE_LEN,
    SPOKEN_VERSION,
    STREAM_FRAME_OVERHEAD,
    SUPPORTED_VERSIONS,
    TEST_PROTOCOL_ENV,
    Address,
    EncodeError,
    ForeignPeer,
    ForeignVersion,
    FrameBuffer,
    Kind,
    OversizedFrame,
    ReplayedMessage,
    ReplayFilter,
    Role,
    StreamSession,
    client_finish,
    client_hello,
    decode_datagram,
    encode_datagram,
    foreign_peer,
    pack_message,
    protocol_range,
    server_accept,
    unpack_message,
    versions_text,
)

__all__ = [
    "ENVELOPE_OVERHEAD",
    "HEADER_LEN",
    "MAGIC",
    "MAX_DATAGRAM",
    "MAX_DATAGRAM_PAYLOAD",
    "MAX_FOREIGN",
    "MAX_STREAM_FRAME",
    "MIN_PROTOCOL_VERSION",
    "SESSION_NONCE_LEN",
    "SPOKEN_VERSION",
    "STREAM_FRAME_OVERHEAD",
    "SUPPORTED_VERSIONS",
    "TEST_PROTOCOL_ENV",
    "Address",
    "Datagram",
    "EncodeError",
    "ForeignPeer",
    "ForeignVersion",
    "FrameBuffer",
    "Kind",
    "OversizedFrame",
    "ReplayFilter",
    "ReplayedMessage",
    "Role",
    "Stream",
    "StreamClosed",
    "StreamSession",
    "Transport",
    "TransportStats",
    "client_finish",
    "client_hello",
    "decode_datagram",
    "encode_datagram",
    "foreign_peer",
    "map_network_errors",
    "pack_message",
    "protocol_range",
    "server_accept",
    "unpack_message",
    "versions_text",
]


class StreamClosed(TransportError):
    """The peer closed the stream cleanly between frames."""


@dataclass(frozen=True, slots=True)
class Datagram:
    """One authenticated, decoded datagram and who sent it."""

    sender: Address
    version: int
    message: Any


#: Foreign peers remembered between two reads by the node (a bound: peers are few).
MAX_FOREIGN = 64


@dataclass(slots=True)
class TransportStats:
    """Counters a transport keeps; every dropped input lands in exactly one of them."""

    datagrams_sent: int = 0
    datagrams_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    auth_failures: int = 0
    decode_failures: int = 0
    oversized: int = 0
    version_rejected: int = 0
    replayed: int = 0
    streams_opened: int = 0
    streams_accepted: int = 0
    streams_refused: int = 0
    #: Connections dropped while still in their handshake, for a newer one (pool full).
    handshakes_dropped: int = 0
    send_errors: int = 0
    #: Peers heard in a protocol version we do not speak, by node id (the node drains it).
    foreign: dict[str, ForeignPeer] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, int]:
        """The counters (``foreign`` is not a counter and is left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "foreign"}

    def count_rejection(self, exc: RemoteProtocolError) -> str:
        """Count a rejected input under its cause; return the counter's name (for logs)."""
        if isinstance(exc, VersionMismatchError):
            name = "version_rejected"
            peer = exc.peer if isinstance(exc, ForeignVersion) else None
            if peer is not None and (
                peer.node_id in self.foreign or len(self.foreign) < MAX_FOREIGN
            ):
                self.foreign[peer.node_id] = peer
        elif isinstance(exc, AuthenticationError):
            name = "auth_failures"
        elif isinstance(exc, ReplayedMessage):
            name = "replayed"
        elif isinstance(exc, OversizedFrame):
            name = "oversized"
        else:
            name = "decode_failures"
        setattr(self, name, getattr(self, name) + 1)
        return name


class Stream(Protocol):
    """A reliable, ordered, authenticated message pipe to one peer."""

    @property
    def remote(self) -> Address: ...

    @property
    def version(self) -> int: ...

    async def send(self, message: Any) -> None:
        """Send one message; TransportError if the stream is broken, MessageTooLarge if huge."""

    async def receive(self, *, timeout: float | None = None) -> Any:
        """Next message. StreamClosed on clean EOF, TransportError on reset or timeout,
        RemoteProtocolError on bad bytes (the stream is then unusable: close it)."""

    async def aclose(self) -> None: ...


class Transport(Protocol):
    """Datagrams for gossip, streams for push-pull and file transfer."""

    @property
    def local_address(self) -> Address: ...

    @property
    def stats(self) -> TransportStats: ...

    async def send_datagram(self, to: Address, message: Any) -> None:
        """Best effort: network errors are counted, never raised. MessageTooLarge if oversize."""

    async def send_datagrams(self, to: Sequence[Address], message: Any) -> None:
        """``send_datagram`` to each of ``to``, the message encoded and sealed once (a ledger
        push goes to every peer: 31 seals of the same bytes at 32 peers)."""

    async def receive_datagram(self) -> Datagram:
        """Next authenticated, decoded datagram; everything else is counted and dropped."""

    async def connect(self, to: Address, *, timeout: float = 5.0) -> Stream:
        """Open an authenticated stream to ``to``; TransportError on failure or timeout."""

    async def serve_streams(
        self,
        handler: Callable[[Stream], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept streams forever, one ``handler`` task each; report ``started`` when ready."""


# --- error mapping ----------------------------------------------------------------------------


@contextlib.contextmanager
def map_network_errors(action: str) -> Iterator[None]:
    """Turn trio and OS errors raised inside the block into TransportError (the one place)."""
    try:
        yield
    except trio.TooSlowError:
        raise TransportError(f"{action}: timed out") from None
    except trio.BrokenResourceError as exc:
        raise TransportError(f"{action}: connection broken ({exc.__cause__ or exc})") from None
    except trio.ClosedResourceError:
        raise TransportError(f"{action}: already closed") from None
    except OSError as exc:
        raise TransportError(f"{action}: {exc.strerror or exc}") from None
