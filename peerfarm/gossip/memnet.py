"""An in-memory network for simulation tests: delay, jitter, loss, partitions and crashes.

This module owns the fake network behind the same :class:`~peerfarm.gossip.transport.Transport`
interface as ``net.py`` (the stream ends it hands out are :mod:`.memstream`). Rules:

- Only ``trio.sleep*`` and ``trio.current_time`` measure time, so it runs under
  ``trio.testing.MockClock(autojump_threshold=0)`` and hundreds of peers fit in one process.
- One ``random.Random(seed)`` decides every loss and jitter, and one delivery task hands out
  datagrams in (time, send order) order: the same seed and the same sends give the same run.
- Every message is msgpack-encoded and decoded, with the same size caps as the real envelope,
  so a message that would fail on the wire fails here too. No encryption.
- Faults: per-link delay/jitter/loss (jitter reorders datagrams; streams stay ordered),
  partitions (no datagrams, no new streams, open streams broken), crashed hosts (send and
  receive nothing; their streams break).
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from peerfarm import PROTOCOL_VERSION
from peerfarm.errors import MessageTooLarge, PeerfarmError, RemoteProtocolError, TransportError
from peerfarm.gossip.memstream import MemoryConnection, MemoryStream
from peerfarm.gossip.transport import (
    ENVELOPE_OVERHEAD,
    MAX_DATAGRAM_PAYLOAD,
    Address,
    Datagram,
    Stream,
    TransportStats,
    map_network_errors,
    pack_message,
    unpack_message,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """How one direction of a link behaves."""

    #: Seconds every message spends in flight.
    delay: float = 0.001
    #: Extra seconds drawn uniformly from [0, jitter] per message (reorders datagrams).
    jitter: float = 0.0
    #: Probability in [0, 1] that a datagram is lost (streams are reliable: never lost).
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.delay < 0 or self.jitter < 0 or not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"invalid link config {self}")


@dataclass(order=True, slots=True)
class _InFlight:
    when: float
    seq: int
    sender: Address = field(compare=False)
    to: Address = field(compare=False)
    payload: bytes = field(compare=False)


class MemoryNetwork:
    """A deterministic fake network; hosts get a transport each with :meth:`transport`."""

    def __init__(
        self,
        seed: int,
        *,
        default_link: LinkConfig | None = None,
        inbox_size: int = 4096,
        stream_buffer: int = 64,
        stream_idle_timeout: float = 60.0,
        max_connections: int = 64,
        max_per_host: int = 8,
    ) -> None:
        self._rng = random.Random(seed)
        self._default = default_link or LinkConfig()
        self._links: dict[tuple[Address, Address], LinkConfig] = {}
        self._hosts: dict[Address, MemoryTransport] = {}
        self._groups: dict[Address, int] | None = None
        self._crashed: set[Address] = set()
        self._paused: dict[Address, list[tuple[Address, bytes]]] = {}  # held datagrams to it
        self._heap: list[_InFlight] = []
        self._seq = 0
        self._wakeup = trio.Event()
        self._running = False
        self._connections: set[MemoryConnection] = set()
        self.inbox_size = inbox_size
        self.stream_buffer = stream_buffer
        self.stream_idle_timeout = stream_idle_timeout
        self.max_connections = max_connections
        self.max_per_host = max_per_host

    # --- hosts --------------------------------------------------------------------------------

    def transport(self, address: Address) -> MemoryTransport:
        """A transport for a new host at ``address`` (each address once until closed)."""
        if address in self._hosts:
            raise TransportError(f"address {address} is already in use on the memory network")
        host = MemoryTransport(self, address)
        self._hosts[address] = host
        return host

    def _unregister(self, host: MemoryTransport) -> None:
        if self._hosts.get(host.local_address) is host:
            del self._hosts[host.local_address]
        self._break_where(lambda conn: host.local_address in conn.ends, "host closed")

    # --- faults -------------------------------------------------------------------------------

    def set_default_link(
        self, *, delay: float = 0.001, jitter: float = 0.0, loss: float = 0.0
    ) -> None:
        """The behaviour of every link without its own :meth:`set_link`."""
        self._default = LinkConfig(delay, jitter, loss)

    def set_link(
        self,
        a: Address,
        b: Address,
        *,
        delay: float = 0.001,
        jitter: float = 0.0,
        loss: float = 0.0,
        symmetric: bool = True,
    ) -> None:
        """Configure traffic from ``a`` to ``b`` (and back, unless ``symmetric=False``)."""
        config = LinkConfig(delay, jitter, loss)
        self._links[(a, b)] = config
        if symmetric:
            self._links[(b, a)] = config

    def link(self, a: Address, b: Address) -> LinkConfig:
        return self._links.get((a, b), self._default)

    def partition(self, *groups: Iterable[Address]) -> None:
        """Cut the network into ``groups``; hosts named in no group form one more group.

        Datagrams across the cut are dropped (also those in flight), new streams are refused,
        open streams across it break. Replaces any earlier partition.
        """
        self._groups = {}
        for index, group in enumerate(groups):
            for address in group:
                self._groups[address] = index
        self._break_where(lambda conn: not self.reachable(*conn.ends), "network partition")

    def heal(self) -> None:
        """Remove the partition (crashed hosts stay crashed)."""
        self._groups = None

    def crash(self, address: Address) -> None:
        """Stop ``address`` dead: it sends and receives nothing and its streams break."""
        self._crashed.add(address)
        host = self._hosts.get(address)
        if host is not None:
            host._drain_inbox()
        self._break_where(lambda conn: address in conn.ends, f"host {address} crashed")

    def restore(self, address: Address) -> None:
        """Bring a crashed host back (with an empty inbox)."""
        self._crashed.discard(address)

    def pause(self, address: Address) -> None:
        """Freeze ``address`` (SIGSTOP): datagrams to it are held, as a kernel would buffer
        them, and delivered when it resumes."""
        self._paused.setdefault(address, [])

    def resume(self, address: Address) -> None:
        held = self._paused.pop(address, [])
        host = self._hosts.get(address)
        for sender, payload in held:
            if host is not None and self.reachable(sender, address):
                host._enqueue(sender, payload)

    def is_crashed(self, address: Address) -> bool:
        return address in self._crashed

    def reachable(self, a: Address, b: Address) -> bool:
        """Whether traffic can flow between ``a`` and ``b`` now (no crash, no partition)."""
        if a in self._crashed or b in self._crashed:
            return False
        if self._groups is None:
            return True
        return self._groups.get(a, -1) == self._groups.get(b, -1)

    def _break_where(self, predicate: Callable[[MemoryConnection], bool], reason: str) -> None:
        for conn in [c for c in self._connections if predicate(c)]:
            conn.break_(reason)

    # --- accounting ---------------------------------------------------------------------------

    def stats(self, address: Address) -> TransportStats:
        return self._hosts[address].stats

    def bytes_sent(self, address: Address) -> int:
        """Bytes ``address`` put on the wire (envelope overhead included, as on a real one)."""
        return self._hosts[address].stats.bytes_sent

    def total_bytes_sent(self) -> int:
        return sum(host.stats.bytes_sent for host in self._hosts.values())

    def total_datagrams_sent(self) -> int:
        return sum(host.stats.datagrams_sent for host in self._hosts.values())

    # --- delivery -----------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[MemoryNetwork]:
        """Run the delivery task for the duration of the block."""
        async with trio.open_nursery() as nursery:
            self.start(nursery)
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()

    def start(self, nursery: trio.Nursery) -> None:
        """Run the delivery task in ``nursery`` (until it is cancelled)."""
        if self._running:
            raise RuntimeError("this MemoryNetwork is already running")
        self._running = True
        nursery.start_soon(self._deliver_forever)

    async def _deliver_forever(self) -> None:
        try:
            while True:
                if not self._heap:
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    continue
                first = self._heap[0]
                if trio.current_time() < first.when:
                    with trio.move_on_at(first.when):
                        await self._wakeup.wait()
                    if self._wakeup.is_set():
                        self._wakeup = trio.Event()
                    continue
                heapq.heappop(self._heap)
                self._deliver(first)
        finally:
            self._running = False

    def _deliver(self, item: _InFlight) -> None:
        host = self._hosts.get(item.to)
        if host is None or not self.reachable(item.sender, item.to):
            return
        held = self._paused.get(item.to)
        if held is not None:
            if len(held) < self.inbox_size:
                held.append((item.sender, item.payload))
            return
        host._enqueue(item.sender, item.payload)

    def _route(self, sender: Address, to: Address, payload: bytes) -> None:
        if not self._running:
            raise RuntimeError("MemoryNetwork is not running: use `async with net.running()`")
        config = self.link(sender, to)
        lost = self._rng.random() < config.loss
        extra = self._rng.uniform(0.0, config.jitter) if config.jitter else 0.0
        if lost or not self.reachable(sender, to):
            return
        self._seq += 1
        heapq.heappush(
            self._heap,
            _InFlight(trio.current_time() + config.delay + extra, self._seq, sender, to, payload),
        )
        self._wakeup.set()

    def _stream_delay(self, sender: Address, to: Address) -> float:
        config = self.link(sender, to)
        return config.delay + (self._rng.uniform(0.0, config.jitter) if config.jitter else 0.0)

    # --- streams ------------------------------------------------------------------------------

    async def _connect(self, client: MemoryTransport, to: Address, timeout: float) -> MemoryStream:
        me = client.local_address
        if me in self._crashed:
            raise TransportError(f"connect to {to}: this host is crashed")
        if not self.reachable(me, to):  # SYNs vanish: the caller waits out its timeout
            await trio.sleep(timeout)
            raise TransportError(f"connect to {to}: timed out")
        await trio.sleep(self.link(me, to).delay + self.link(to, me).delay)  # handshake RTT
        server = self._hosts.get(to)
        if server is None or not server._serving or not self.reachable(me, to):
            raise TransportError(f"connect to {to}: connection refused")
        ends = [c for c in self._connections if c.ends[1] == to]
        if len(ends) >= self.max_connections or (
            sum(1 for c in ends if c.ends[0][0] == me[0]) >= self.max_per_host
        ):
            server.stats.streams_refused += 1
            raise TransportError(f"connect to {to}: closed by peer (connection cap)")
        conn = MemoryConnection(self, me, to)
        self._connections.add(conn)
        client_stream, server_stream = conn.streams(client.stats, server.stats)
        try:
            server._accept_send.send_nowait(server_stream)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            conn.break_("refused")
            raise TransportError(f"connect to {to}: connection refused") from None
        client.stats.streams_opened += 1
        return client_stream


class MemoryTransport:
    """One host on a :class:`MemoryNetwork` (see :class:`~peerfarm.gossip.transport.Transport`)."""

    def __init__(self, net: MemoryNetwork, address: Address) -> None:
        self._net = net
        self._address = address
        self._stats = TransportStats()
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[Address, bytes]](
            net.inbox_size
        )
        self._accept_send, self._accept = trio.open_memory_channel[MemoryStream](
            net.max_connections
        )
        self._serving = False

    @property
    def local_address(self) -> Address:
        return self._address

    @property
    def stats(self) -> TransportStats:
        return self._stats

    async def __aenter__(self) -> MemoryTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Leave the network: the address becomes free, open streams break."""
        self._net._unregister(self)
        self._inbox_send.close()
        await trio.lowlevel.checkpoint()

    def _drain_inbox(self) -> None:
        while True:
            try:
                self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return

    def _enqueue(self, sender: Address, payload: bytes) -> None:
        try:
            self._inbox_send.send_nowait((sender, payload))
        except trio.WouldBlock:
            logger.debug("inbox of %s full: datagram from %s dropped", self._address, sender)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def send_datagram(self, to: Address, message: Any) -> None:
        payload = pack_message(message)
        if len(payload) > MAX_DATAGRAM_PAYLOAD:
            raise MessageTooLarge(
                f"datagram payload of {len(payload)} bytes exceeds {MAX_DATAGRAM_PAYLOAD}"
            )
        await trio.lowlevel.checkpoint()
        if self._net.is_crashed(self._address):
            return
        self._stats.datagrams_sent += 1
        self._stats.bytes_sent += len(payload) + ENVELOPE_OVERHEAD
        self._net._route(self._address, to, payload)

    async def send_datagrams(self, to: Sequence[Address], message: Any) -> None:
        for address in to:
            await self.send_datagram(address, message)

    async def receive_datagram(self) -> Datagram:
        while True:
            try:
                sender, payload = await self._inbox.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise TransportError("receive datagram: transport closed") from None
            self._stats.bytes_received += len(payload) + ENVELOPE_OVERHEAD
            try:
                message = unpack_message(payload)
            except RemoteProtocolError as exc:  # pragma: no cover - we encoded it ourselves
                self._stats.count_rejection(exc)
                continue
            self._stats.datagrams_received += 1
            return Datagram(sender, PROTOCOL_VERSION, message)

    async def connect(self, to: Address, *, timeout: float = 5.0) -> Stream:
        with map_network_errors(f"connect to {to}"), trio.fail_after(timeout):
            return await self._net._connect(self, to, timeout)

    async def serve_streams(
        self,
        handler: Callable[[Stream], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._serving:
            raise RuntimeError("serve_streams is already running on this transport")
        self._serving = True
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async for stream in self._accept:
                    self._stats.streams_accepted += 1
                    nursery.start_soon(self._serve_one, stream, handler)
        finally:
            self._serving = False
            self._drain_accept()

    def _drain_accept(self) -> None:
        while True:
            try:
                stream = self._accept.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            stream._conn.break_("server stopped")

    async def _serve_one(
        self, stream: MemoryStream, handler: Callable[[Stream], Awaitable[None]]
    ) -> None:
        try:
            await handler(stream)
        except PeerfarmError as exc:
            logger.info("stream from %s closed after error: %s", stream.remote, exc)
        finally:
            await stream.aclose()
