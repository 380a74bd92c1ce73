"""Connections without the key cannot starve keyed peers (issue 17, item 4): real sockets.

Before: 72 idle TCP connections from a few loopback addresses, none of them holding the farm
key, filled all 64 stream slots for the 5 s handshake deadline, again and again, and every
push-pull and file transfer of the real peers was refused. Now a connection waits for its
handshake in a pool of its own (per-address and total caps, oldest dropped first, a 2 s
deadline) and only a keyed connection takes a served slot.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import trio

from peerfarm.gossip.crypto import Keyring
from peerfarm.gossip.net import NetLimits, NetTransport, open_transport
from peerfarm.gossip.transport import Stream

RING = Keyring([bytes(range(32))])
STRANGERS = [f"127.0.0.{n}" for n in range(2, 11)]  # 9 source addresses, 8 connections each


async def echo(stream: Stream) -> None:
    while True:
        message = await stream.receive(timeout=5)
        await stream.send(message)


@asynccontextmanager
async def server(limits: NetLimits | None = None) -> AsyncIterator[NetTransport]:
    async with (
        open_transport(RING, ("127.0.0.1", 0), limits=limits) as transport,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(transport.serve_streams, echo)
        yield transport
        nursery.cancel_scope.cancel()


def _idle(target: tuple[str, int], source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(target)
    return sock


@contextmanager
def strangers(target: tuple[str, int], per_address: int = 8) -> Iterator[list[socket.socket]]:
    """72 idle connections without the key, from 9 addresses (what issue 17 measured)."""
    held = [_idle(target, source) for source in STRANGERS for _ in range(per_address)]
    try:
        yield held
    finally:
        for sock in held:
            sock.close()


@contextmanager
def reconnecting_flood(target: tuple[str, int], stop: threading.Event) -> Iterator[list[int]]:
    """Keeps 8 idle connections per address open, reopening each as soon as it is closed."""
    opened = [0]

    def run(source: str) -> None:
        held: list[socket.socket] = []
        try:
            while not stop.is_set():
                alive = []
                for sock in held:
                    try:
                        if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                            sock.close()
                            continue
                    except BlockingIOError:
                        pass
                    except OSError:
                        sock.close()
                        continue
                    alive.append(sock)
                held = alive
                while len(held) < 8 and not stop.is_set():
                    try:
                        held.append(_idle(target, source))
                        opened[0] += 1
                    except OSError:
                        break
                time.sleep(0.01)
        finally:
            for sock in held:
                sock.close()

    threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in STRANGERS]
    for thread in threads:
        thread.start()
    try:
        yield opened
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)


async def round_trip(client: NetTransport, to: tuple[str, int], message: str) -> str:
    stream = await client.connect(to, timeout=3)
    try:
        await stream.send(message)
        reply = await stream.receive(timeout=3)
    finally:
        await stream.aclose()
    assert isinstance(reply, str)
    return reply


async def test_72_idle_connections_without_the_key_do_not_keep_a_keyed_peer_out() -> None:
    with trio.fail_after(20):
        async with server() as transport, open_transport(RING, ("127.0.0.1", 0)) as peer:
            target = transport.local_address
            with strangers(target):
                await trio.sleep(0.3)  # all accepted and waiting for their handshake
                for i in range(10):
                    assert await round_trip(peer, target, f"ping {i}") == f"ping {i}"
                limits = NetLimits()
                assert transport.pending_handshakes <= limits.max_handshakes
                assert transport.active_connections == 0  # none of them took a served slot
            assert transport.stats.handshakes_dropped >= 72 - limits.max_handshakes


async def test_idle_strangers_are_closed_after_the_short_handshake_deadline() -> None:
    limits = NetLimits()
    with trio.fail_after(20):
        async with server(limits) as transport:
            with strangers(transport.local_address, per_address=2) as held:
                started = trio.current_time()
                for sock in held:
                    sock.setblocking(False)

                def closed(sock: socket.socket) -> bool:
                    try:
                        return sock.recv(1) == b""
                    except BlockingIOError:
                        return False
                    except OSError:
                        return True

                while not all(closed(sock) for sock in held):
                    await trio.sleep(0.05)
                elapsed = trio.current_time() - started
            assert elapsed < limits.handshake_timeout + 1.5
            await trio.sleep(0.1)
            assert transport.pending_handshakes == 0


async def test_one_address_holds_at_most_its_share_of_waiting_handshakes() -> None:
    limits = NetLimits()
    with trio.fail_after(20):
        async with server(limits) as transport:
            target = transport.local_address
            held = [_idle(target, "127.0.0.2") for _ in range(40)]
            try:
                await trio.sleep(0.3)
                assert transport.pending_handshakes == limits.max_handshakes_per_host
                assert transport.stats.handshakes_dropped == 40 - limits.max_handshakes_per_host
            finally:
                for sock in held:
                    sock.close()


async def test_keyed_peers_keep_talking_through_a_reconnecting_flood() -> None:
    """The attacker reopens every connection the server drops, from 9 addresses at once."""
    stop = threading.Event()
    with trio.fail_after(40):
        async with server() as transport, open_transport(RING, ("127.0.0.1", 0)) as peer:
            target = transport.local_address
            with reconnecting_flood(target, stop) as opened:
                await trio.sleep(3.0)  # past the handshake deadline: the flood is reconnecting
                for i in range(20):
                    assert await round_trip(peer, target, f"msg {i}") == f"msg {i}"
                    await trio.sleep(0.05)
            assert opened[0] > 72  # the flood really reconnected
            assert transport.stats.streams_refused == 0
