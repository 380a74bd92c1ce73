"""The streams of the in-memory network: one connection's two bounded, ordered pipes.

This module owns what a stream does on :class:`~peerfarm.gossip.memnet.MemoryNetwork`: each
message is msgpack-encoded with the real frame caps, spends the link's stream delay in flight
(streams stay ordered and are never lossy), and a partition, a crash or either end closing
breaks the connection for both ends. The network opens connections; :class:`MemoryStream` is
the :class:`~peerfarm.gossip.transport.Stream` a node holds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import trio

from peerfarm import PROTOCOL_VERSION
from peerfarm.errors import MessageTooLarge, TransportError
from peerfarm.gossip.transport import (
    MAX_STREAM_FRAME,
    STREAM_FRAME_OVERHEAD,
    Address,
    StreamClosed,
    TransportStats,
    map_network_errors,
    pack_message,
    unpack_message,
)

if TYPE_CHECKING:
    from peerfarm.gossip.memnet import MemoryNetwork


class MemoryConnection:
    """Both directions of one stream: two bounded channels of (deliver-at, bytes)."""

    def __init__(self, net: MemoryNetwork, client: Address, server: Address) -> None:
        self.net = net
        self.ends = (client, server)
        self.broken_reason: str | None = None
        self._up = trio.open_memory_channel[tuple[float, bytes]](net.stream_buffer)
        self._down = trio.open_memory_channel[tuple[float, bytes]](net.stream_buffer)

    def streams(
        self, client_stats: TransportStats, server_stats: TransportStats
    ) -> tuple[MemoryStream, MemoryStream]:
        client, server = self.ends
        return (
            MemoryStream(self, client, server, self._up[0], self._down[1], client_stats),
            MemoryStream(self, server, client, self._down[0], self._up[1], server_stats),
        )

    def break_(self, reason: str) -> None:
        if self.broken_reason is None:
            self.broken_reason = reason
        self.retire()
        for send, receive in (self._up, self._down):
            send.close()
            receive.close()

    def retire(self) -> None:
        self.net._connections.discard(self)


class MemoryStream:
    """One end of an in-memory stream (see :class:`~peerfarm.gossip.transport.Stream`)."""

    def __init__(
        self,
        conn: MemoryConnection,
        local: Address,
        remote: Address,
        outgoing: trio.MemorySendChannel[tuple[float, bytes]],
        incoming: trio.MemoryReceiveChannel[tuple[float, bytes]],
        stats: TransportStats,
    ) -> None:
        self._conn = conn
        self._local = local
        self._remote = remote
        self._outgoing = outgoing
        self._incoming = incoming
        self._stats = stats
        self._last_arrival = -math.inf
        self._closed = False

    @property
    def remote(self) -> Address:
        return self._remote

    @property
    def version(self) -> int:
        return PROTOCOL_VERSION

    def _check_broken(self, action: str) -> None:
        if self._conn.broken_reason is not None:
            raise TransportError(f"{action}: connection broken ({self._conn.broken_reason})")

    async def send(self, message: Any) -> None:
        payload = pack_message(message)
        if len(payload) + STREAM_FRAME_OVERHEAD > MAX_STREAM_FRAME:
            raise MessageTooLarge(f"stream message of {len(payload)} bytes exceeds the cap")
        action = f"send to {self._remote}"
        self._check_broken(action)
        delay = self._conn.net._stream_delay(self._local, self._remote)
        arrival = max(self._last_arrival, trio.current_time() + delay)  # streams stay ordered
        self._last_arrival = arrival
        try:
            with map_network_errors(action):
                await self._outgoing.send((arrival, payload))
        except TransportError:
            self._check_broken(action)
            raise
        self._stats.bytes_sent += len(payload) + STREAM_FRAME_OVERHEAD

    async def receive(self, *, timeout: float | None = None) -> Any:
        limit = self._conn.net.stream_idle_timeout if timeout is None else timeout
        action = f"receive from {self._remote}"
        try:
            with map_network_errors(action), trio.fail_after(limit):
                try:
                    arrival, payload = await self._incoming.receive()
                except trio.EndOfChannel:
                    raise StreamClosed("connection closed by peer") from None
                await trio.sleep_until(arrival)
        except TransportError as exc:
            if isinstance(exc, StreamClosed):
                raise
            self._check_broken(action)
            raise
        self._check_broken(action)
        self._stats.bytes_received += len(payload) + STREAM_FRAME_OVERHEAD
        return unpack_message(payload)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._outgoing.close()
            self._incoming.close()
            if self._conn.broken_reason is None and self._peer_closed():
                self._conn.retire()
        await trio.lowlevel.checkpoint()

    def _peer_closed(self) -> bool:
        state = self._outgoing.statistics()
        return state.open_receive_channels == 0
