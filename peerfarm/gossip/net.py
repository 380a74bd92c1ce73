"""The real transport: authenticated UDP datagrams and TCP streams on trio sockets.

This module owns the sockets and nothing else: bytes come from and go to the pure envelope
code in ``transport.py``. Rules:

- UDP and TCP share one port, so a peer is named by one ``(host, port)``.
- Whatever a peer sends can cost us a counter and a debug log line, never a crash: bad
  datagrams are dropped inside :meth:`NetTransport.receive_datagram`; a bad connection is
  closed and the server keeps accepting.
- Every network wait has a timeout, and trio/OS errors become TransportError through
  :func:`~peerfarm.gossip.transport.map_network_errors`.
- A connection has not proved the farm key until its handshake is done, so it waits in a pool
  of its own: a short handshake deadline, a cap per source address and a cap in all, and when
  a cap is reached the *oldest* waiting connection (of that address, else of all) is dropped
  for the new one. A keyed peer's handshake takes a round trip, so connections without the key,
  however many, cannot keep it out. Only connections that proved the key take one of the
  served slots, which are capped in total and per remote host.
"""

from __future__ import annotations

import errno
import logging
import secrets
import socket
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from peerfarm.errors import PeerfarmError, RemoteProtocolError, TransportError
from peerfarm.gossip.crypto import Keyring
from peerfarm.gossip.transport import (
    SESSION_NONCE_LEN,
    Address,
    Datagram,
    FrameBuffer,
    ReplayFilter,
    Stream,
    StreamClosed,
    StreamSession,
    TransportStats,
    client_finish,
    client_hello,
    decode_datagram,
    encode_datagram,
    map_network_errors,
    server_accept,
)

logger = logging.getLogger(__name__)

_RECV_BUFFER = 65536  # bigger than any UDP payload, so an oversized datagram is seen whole
_BIND_ATTEMPTS = 8  # tries to find a port free for both UDP and TCP when binding port 0
_ACCEPT_BACKOFF = 0.1
#: recvfrom errors that only report ICMP news about an earlier send; the socket is fine.
_TRANSIENT_UDP_ERRORS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EMSGSIZE}
)  # seconds to wait after accept fails for lack of resources (EMFILE)


@dataclass(frozen=True, slots=True)
class NetLimits:
    """Timeouts (seconds) and caps of the real transport."""

    #: Keyed connections served at once; more are closed at once. Bounds memory and handles.
    max_connections: int = 64
    #: Keyed connections served at once from one remote host (one peer can't hog all).
    max_per_host: int = 8
    #: Connections still in their handshake (the key not yet proved), in all; at the cap the
    #: oldest is dropped for the newcomer. Bounds what connections without the key can hold.
    max_handshakes: int = 32
    #: Connections in their handshake from one source address; over it, that address's oldest
    #: is dropped. A few addresses cannot fill the pool for everyone else.
    max_handshakes_per_host: int = 4
    #: Time a new connection gets to complete the handshake (either side). A keyed peer needs
    #: one round trip (milliseconds on a LAN); an idle stranger is dropped after this.
    handshake_timeout: float = 2.0
    #: Default wait in ``Stream.receive`` when no timeout is given; ``math.inf`` waits forever.
    idle_timeout: float = 60.0
    #: Time one send may block on a peer that does not read (TCP) or a full buffer (UDP).
    send_timeout: float = 10.0
    #: Authentic datagrams remembered to reject replays (12-byte nonce each).
    replay_window: int = 16384


@asynccontextmanager
async def open_transport(
    keyring: Keyring,
    bind: Address,
    *,
    advertise_host: str | None = None,
    limits: NetLimits | None = None,
) -> AsyncIterator[NetTransport]:
    """Bind UDP and TCP on the same port (port 0: a free one) and yield the transport.

    ``local_address`` is ``(advertise_host or the bound host, port)``. Sockets close on exit.
    """
    udp, tcp = await _bind_pair(bind)
    host = advertise_host or bind[0]
    transport = NetTransport(keyring, udp, tcp, (host, udp.getsockname()[1]), limits or NetLimits())
    try:
        yield transport
    finally:
        transport.close()


async def _bind_pair(bind: Address) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    host, port = bind
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    attempts = 1 if port else _BIND_ATTEMPTS
    for attempt in range(attempts):
        udp = trio.socket.socket(family, socket.SOCK_DGRAM)
        tcp = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            with map_network_errors(f"bind UDP {host}:{port}"):
                await udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart in TIME_WAIT
            chosen = udp.getsockname()[1]
            try:
                await tcp.bind((host, chosen))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                    logger.debug("TCP port %d taken, trying another port pair", chosen)
                    udp.close()
                    tcp.close()
                    continue
                raise TransportError(f"bind TCP {host}:{chosen}: {exc.strerror}") from None
            tcp.listen(128)
            return udp, tcp
        except BaseException:
            udp.close()
            tcp.close()
            raise
    raise TransportError(f"no port free for both UDP and TCP on {host}")  # pragma: no cover


def _address(raw: Any) -> Address:
    return (str(raw[0]), int(raw[1]))


class NetTransport:
    """The :class:`~peerfarm.gossip.transport.Transport` on real sockets; use open_transport."""

    def __init__(
        self,
        keyring: Keyring,
        udp: trio.socket.SocketType,
        tcp: trio.socket.SocketType,
        local_address: Address,
        limits: NetLimits,
    ) -> None:
        self._keyring = keyring
        self._udp = udp
        self._tcp = tcp
        self._local_address = local_address
        self._limits = limits
        self._stats = TransportStats()
        self._replay = ReplayFilter(limits.replay_window)
        self._active = 0
        self._per_host: Counter[str] = Counter()
        # Connections in their handshake, oldest first: id -> (remote host, its cancel scope).
        self._pending: OrderedDict[int, tuple[str, trio.CancelScope]] = OrderedDict()
        self._pending_per_host: Counter[str] = Counter()
        self._next_id = 0
        self._serving = False

    @property
    def local_address(self) -> Address:
        return self._local_address

    @property
    def stats(self) -> TransportStats:
        return self._stats

    @property
    def active_connections(self) -> int:
        """Keyed connections being served now."""
        return self._active

    @property
    def pending_handshakes(self) -> int:
        """Accepted connections that have not completed their handshake yet."""
        return len(self._pending)

    def close(self) -> None:
        """Close both sockets; blocked receives and accepts raise TransportError."""
        self._udp.close()
        self._tcp.close()

    # --- datagrams ----------------------------------------------------------------------------

    async def send_datagram(self, to: Address, message: Any) -> None:
        # MessageTooLarge is the caller's bug
        await self._send_sealed(to, encode_datagram(self._keyring, message))

    async def send_datagrams(self, to: Sequence[Address], message: Any) -> None:
        data = encode_datagram(self._keyring, message)
        for address in to:
            await self._send_sealed(address, data)

    async def _send_sealed(self, to: Address, data: bytes) -> None:
        try:
            with (
                map_network_errors(f"send datagram to {to}"),
                trio.fail_after(self._limits.send_timeout),
            ):
                await self._udp.sendto(data, to)
        except TransportError as exc:
            self._stats.send_errors += 1
            logger.debug("datagram to %s not sent: %s", to, exc)
            return
        self._stats.datagrams_sent += 1
        self._stats.bytes_sent += len(data)

    async def receive_datagram(self) -> Datagram:
        while True:
            try:
                data, raw_sender = await self._udp.recvfrom(_RECV_BUFFER)
            except trio.ClosedResourceError:
                raise TransportError("receive datagram: transport closed") from None
            except OSError as exc:
                if exc.errno in _TRANSIENT_UDP_ERRORS:  # ICMP news about an earlier send
                    logger.debug("datagram receive error ignored: %s", exc)
                    continue
                raise TransportError(f"receive datagram: {exc.strerror or exc}") from None
            sender = _address(raw_sender)
            self._stats.bytes_received += len(data)
            try:
                version, message = decode_datagram(self._keyring, data, replay=self._replay)
            except RemoteProtocolError as exc:
                counter = self._stats.count_rejection(exc)
                logger.debug("dropped datagram from %s (%s): %s", sender, counter, exc)
                continue
            self._stats.datagrams_received += 1
            return Datagram(sender, version, message)

    # --- streams ------------------------------------------------------------------------------

    async def connect(self, to: Address, *, timeout: float = 5.0) -> Stream:
        """Open a stream; TransportError if unreachable or slow, RemoteProtocolError if the
        peer's handshake is bad (wrong farm key, unsupported version)."""
        client_nonce = secrets.token_bytes(SESSION_NONCE_LEN)
        with map_network_errors(f"connect to {to}"), trio.fail_after(timeout):
            sock_stream = await trio.open_tcp_stream(to[0], to[1])
            try:
                buffer = FrameBuffer()
                await sock_stream.send_all(client_hello(self._keyring, client_nonce))
                try:
                    reply = await _read_frame(sock_stream, buffer, self._stats)
                except StreamClosed:  # refused (connection cap) or our key was not accepted
                    raise TransportError(f"connect to {to}: closed during handshake") from None
                session = client_finish(self._keyring, client_nonce, reply)
            except BaseException as exc:
                if isinstance(exc, RemoteProtocolError):
                    self._stats.count_rejection(exc)
                await trio.aclose_forcefully(sock_stream)
                raise
        self._stats.streams_opened += 1
        return NetStream(sock_stream, session, buffer, to, self._stats, self._limits)

    async def serve_streams(
        self,
        handler: Callable[[Stream], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections until cancelled (or the transport closes), one task each."""
        if self._serving:
            raise RuntimeError("serve_streams is already running on this transport")
        self._serving = True
        listener = trio.SocketListener(self._tcp)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    try:
                        with map_network_errors("accept"):
                            sock_stream = await listener.accept()
                    except TransportError as exc:
                        if self._tcp.fileno() == -1:
                            return  # transport closed
                        logger.warning("accept failed, retrying: %s", exc)
                        await trio.sleep(_ACCEPT_BACKOFF)
                        continue
                    self._admit(nursery, sock_stream, handler)
        finally:
            self._serving = False

    def _admit(
        self,
        nursery: trio.Nursery,
        sock_stream: trio.SocketStream,
        handler: Callable[[Stream], Awaitable[None]],
    ) -> None:
        try:
            remote = _address(sock_stream.socket.getpeername())
        except OSError:  # already gone
            nursery.start_soon(trio.aclose_forcefully, sock_stream)
            return
        self._make_room_for_handshake(remote[0])
        ident = self._next_id
        self._next_id += 1
        scope = trio.CancelScope()
        self._pending[ident] = (remote[0], scope)
        self._pending_per_host[remote[0]] += 1
        nursery.start_soon(self._serve_one, sock_stream, remote, handler, ident, scope)

    def _make_room_for_handshake(self, host: str) -> None:
        """Drop the oldest waiting handshake of ``host``, else of all, if a cap is reached."""
        limits = self._limits
        victim: int | None = None
        if self._pending_per_host[host] >= limits.max_handshakes_per_host:
            victim = next(i for i, (h, _scope) in self._pending.items() if h == host)
        elif len(self._pending) >= limits.max_handshakes:
            victim = next(iter(self._pending))
        if victim is not None:
            self._stats.handshakes_dropped += 1
            _host, scope = self._pending[victim]
            self._end_handshake(victim)
            scope.cancel()
            logger.debug("dropped a waiting handshake from %s for a newer connection", _host)

    def _end_handshake(self, ident: int) -> None:
        entry = self._pending.pop(ident, None)
        if entry is not None:
            host = entry[0]
            self._pending_per_host[host] -= 1
            if not self._pending_per_host[host]:
                del self._pending_per_host[host]

    async def _serve_one(
        self,
        sock_stream: trio.SocketStream,
        remote: Address,
        handler: Callable[[Stream], Awaitable[None]],
        ident: int,
        scope: trio.CancelScope,
    ) -> None:
        served = False
        try:
            stream: NetStream | None = None
            with scope:
                try:
                    stream = await self._server_handshake(sock_stream, remote)
                except PeerfarmError as exc:
                    if isinstance(exc, RemoteProtocolError):
                        self._stats.count_rejection(exc)
                    logger.debug("handshake with %s failed: %s", remote, exc)
            self._end_handshake(ident)
            if stream is None:
                return  # failed, timed out, or dropped for a newer connection
            served = True
            self._stats.streams_accepted += 1
            try:
                await handler(stream)
            except PeerfarmError as exc:
                logger.info("stream from %s closed after error: %s", remote, exc)
        finally:
            self._end_handshake(ident)
            if served:
                self._active -= 1
                self._per_host[remote[0]] -= 1
                if not self._per_host[remote[0]]:
                    del self._per_host[remote[0]]
            await trio.aclose_forcefully(sock_stream)

    async def _server_handshake(
        self, sock_stream: trio.SocketStream, remote: Address
    ) -> NetStream | None:
        """The server's half of the handshake; ``None`` when the connection caps are full
        (the peer is then closed without a reply). A served slot is taken on success."""
        buffer = FrameBuffer()
        with (
            map_network_errors(f"handshake with {remote}"),
            trio.fail_after(self._limits.handshake_timeout),
        ):
            hello = await _read_frame(sock_stream, buffer, self._stats)
            server_nonce = secrets.token_bytes(SESSION_NONCE_LEN)
            reply, session = server_accept(self._keyring, hello, server_nonce)
            limits = self._limits
            if self._active >= limits.max_connections or (
                self._per_host[remote[0]] >= limits.max_per_host
            ):
                self._stats.streams_refused += 1
                logger.debug("refused connection from %s: connection cap reached", remote)
                return None
            self._active += 1
            self._per_host[remote[0]] += 1
            try:
                await sock_stream.send_all(reply)
            except BaseException:
                self._active -= 1
                self._per_host[remote[0]] -= 1
                if not self._per_host[remote[0]]:
                    del self._per_host[remote[0]]
                raise
        self._stats.bytes_sent += len(reply)
        return NetStream(sock_stream, session, buffer, remote, self._stats, self._limits)


async def _read_frame(
    sock_stream: trio.SocketStream, buffer: FrameBuffer, stats: TransportStats
) -> bytes:
    """Read until ``buffer`` holds a whole frame; StreamClosed on EOF between frames."""
    while True:
        body = buffer.next_frame()
        if body is not None:
            return body
        data = await sock_stream.receive_some(_RECV_BUFFER)
        if not data:
            if buffer.pending:
                raise TransportError(f"connection closed mid-frame ({buffer.pending} bytes)")
            raise StreamClosed("connection closed by peer")
        stats.bytes_received += len(data)
        buffer.feed(data)


class NetStream:
    """One authenticated TCP stream (see :class:`~peerfarm.gossip.transport.Stream`)."""

    def __init__(
        self,
        sock_stream: trio.SocketStream,
        session: StreamSession,
        buffer: FrameBuffer,
        remote: Address,
        stats: TransportStats,
        limits: NetLimits,
    ) -> None:
        self._sock_stream = sock_stream
        self._session = session
        self._buffer = buffer
        self._remote = remote
        self._stats = stats
        self._limits = limits
        self._send_lock = trio.Lock()  # frames must hit the wire in sequence-number order

    @property
    def remote(self) -> Address:
        return self._remote

    @property
    def version(self) -> int:
        return self._session.version

    async def send(self, message: Any) -> None:
        async with self._send_lock:
            frame = self._session.seal(message)
            with (
                map_network_errors(f"send to {self._remote}"),
                trio.fail_after(self._limits.send_timeout),
            ):
                await self._sock_stream.send_all(frame)
        self._stats.bytes_sent += len(frame)

    async def receive(self, *, timeout: float | None = None) -> Any:
        """Next message; waits at most ``timeout`` (default: the idle timeout of NetLimits)."""
        limit = self._limits.idle_timeout if timeout is None else timeout
        try:
            with map_network_errors(f"receive from {self._remote}"), trio.fail_after(limit):
                body = await _read_frame(self._sock_stream, self._buffer, self._stats)
            return self._session.open(body)
        except RemoteProtocolError as exc:
            self._stats.count_rejection(exc)
            raise

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._sock_stream)
