"""The in-memory network: delay, loss, partitions, crashes, streams and determinism.

Every test runs on trio's MockClock with autojump (pytest-trio's ``autojump_clock`` fixture),
so simulated seconds cost no real time and every async test has a (simulated) deadline.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from peerfarm import PROTOCOL_VERSION
from peerfarm.errors import MessageTooLarge, TransportError
from peerfarm.gossip.memnet import LinkConfig, MemoryNetwork, MemoryTransport
from peerfarm.gossip.transport import (
    ENVELOPE_OVERHEAD,
    MAX_DATAGRAM_PAYLOAD,
    EncodeError,
    Stream,
    StreamClosed,
    Transport,
    pack_message,
)

A = ("10.0.0.1", 7946)
B = ("10.0.0.2", 7946)
C = ("10.0.0.3", 7946)


async def receive_all(t: MemoryTransport, within: float) -> list[Any]:
    """Every datagram message ``t`` receives in the next ``within`` simulated seconds."""
    got: list[Any] = []
    with trio.move_on_after(within):
        while True:
            got.append((await t.receive_datagram()).message)
    return got


async def echo(stream: Stream) -> None:
    while True:
        try:
            message = await stream.receive(timeout=30)
        except StreamClosed:
            return
        await stream.send(message)


async def test_delivery_takes_the_link_delay(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=1)
    net.set_link(A, B, delay=0.25)
    a, b = net.transport(A), net.transport(B)
    with trio.fail_after(10):
        async with net.running():
            start = trio.current_time()
            await a.send_datagram(B, {"hi": b"there"})
            got = await b.receive_datagram()
            assert trio.current_time() - start == pytest.approx(0.25)
            assert (got.sender, got.version, got.message) == (A, PROTOCOL_VERSION, {"hi": b"there"})
            await b.send_datagram(A, "back")  # symmetric link
            start = trio.current_time()
            assert (await a.receive_datagram()).message == "back"
            assert trio.current_time() - start == pytest.approx(0.25)


async def test_directional_link_and_default(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=1, default_link=LinkConfig(delay=0.5))
    net.set_link(A, B, delay=0.1, symmetric=False)
    a, b = net.transport(A), net.transport(B)
    with trio.fail_after(10):
        async with net.running():
            for sender, receiver, to, expected in ((a, b, B, 0.1), (b, a, A, 0.5)):
                start = trio.current_time()
                await sender.send_datagram(to, "x")
                await receiver.receive_datagram()
                assert trio.current_time() - start == pytest.approx(expected)


async def test_loss_rate_close_to_configured(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=42)
    net.set_link(A, B, loss=0.3)
    a, b = net.transport(A), net.transport(B)
    with trio.fail_after(60):
        async with net.running():
            for i in range(2000):
                await a.send_datagram(B, i)
            got = await receive_all(b, within=1.0)
    assert 0.65 * 2000 < len(got) < 0.75 * 2000
    assert got == sorted(got)  # no jitter: order kept
    assert a.stats.datagrams_sent == 2000 and b.stats.datagrams_received == len(got)


async def test_partition_blocks_and_heal_restores(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=3)
    a, b, c = net.transport(A), net.transport(B), net.transport(C)
    with trio.fail_after(60):
        async with net.running():
            net.partition([A, C], [B])
            assert not net.reachable(A, B) and net.reachable(A, C)
            await a.send_datagram(B, "cut")
            await a.send_datagram(C, "same side")
            assert await receive_all(b, within=1.0) == []
            assert await receive_all(c, within=1.0) == ["same side"]
            await a.send_datagram(B, "in flight when healed")  # dropped: sent across the cut
            net.heal()
            await a.send_datagram(B, "healed")
            assert await receive_all(b, within=1.0) == ["healed"]


async def test_partition_drops_datagrams_in_flight(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=3)
    net.set_link(A, B, delay=1.0)
    a, b = net.transport(A), net.transport(B)
    with trio.fail_after(60):
        async with net.running():
            await a.send_datagram(B, "doomed")
            await trio.sleep(0.5)
            net.partition([A], [B])
            await trio.sleep(1.0)
            net.heal()
            assert await receive_all(b, within=2.0) == []


async def test_crash_and_restore(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=4)
    a, b = net.transport(A), net.transport(B)
    with trio.fail_after(60):
        async with net.running():
            net.crash(B)
            await a.send_datagram(B, "to the dead")
            await b.send_datagram(A, "from the dead")
            assert await receive_all(b, within=1.0) == []
            assert await receive_all(a, within=1.0) == []
            assert b.stats.datagrams_sent == 0
            net.restore(B)
            await a.send_datagram(B, "welcome back")
            await b.send_datagram(A, "thanks")
            assert await receive_all(b, within=1.0) == ["welcome back"]
            assert await receive_all(a, within=1.0) == ["thanks"]


async def test_crash_drops_queued_inbox(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=4)
    a, b = net.transport(A), net.transport(B)
    with trio.fail_after(60):
        async with net.running():
            await a.send_datagram(B, "queued before the crash")
            await trio.sleep(0.1)
            net.crash(B)
            net.restore(B)
            assert await receive_all(b, within=1.0) == []


async def test_size_cap_and_encoding_like_the_real_transport(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=5)
    a, b = net.transport(A), net.transport(B)
    fits = b"x" * (MAX_DATAGRAM_PAYLOAD - 3)
    assert len(pack_message(fits)) == MAX_DATAGRAM_PAYLOAD
    with trio.fail_after(10):
        async with net.running():
            with pytest.raises(MessageTooLarge):
                await a.send_datagram(B, fits + b"x")
            with pytest.raises(EncodeError):
                await a.send_datagram(B, {"not": {1, 2}})
            await a.send_datagram(B, ("tuple", "becomes", "list"))
            assert (await b.receive_datagram()).message == ["tuple", "becomes", "list"]
            await a.send_datagram(B, fits)
            assert (await b.receive_datagram()).message == fits
    expected = 2 * ENVELOPE_OVERHEAD + len(pack_message(["tuple", "becomes", "list"]))
    assert net.bytes_sent(A) == expected + MAX_DATAGRAM_PAYLOAD
    assert net.total_bytes_sent() == net.bytes_sent(A) == b.stats.bytes_received
    assert net.total_datagrams_sent() == 2


async def order_with_seed(seed: int) -> list[int]:
    net = MemoryNetwork(seed=seed)
    net.set_link(A, B, delay=0.01, jitter=0.05)
    a, b = net.transport(A), net.transport(B)
    async with net.running():
        for i in range(60):
            await a.send_datagram(B, i)
            await trio.sleep(0.001)
        return await receive_all(b, within=1.0)


async def test_same_seed_same_delivery_order(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        first = await order_with_seed(7)
        second = await order_with_seed(7)
        other = await order_with_seed(8)
    assert first == second
    assert sorted(first) == list(range(60))
    assert first != sorted(first)  # jitter reorders
    assert other != first


async def test_not_running_is_an_error(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=0)
    a: Transport = net.transport(A)  # mypy checks MemoryTransport against the protocol
    with pytest.raises(RuntimeError, match="running"):
        await a.send_datagram(B, "x")
    with pytest.raises(TransportError, match="in use"):
        net.transport(A)


async def test_stream_roundtrip(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=6)
    net.set_link(A, B, delay=0.05, jitter=0.04)
    a, b = net.transport(A), net.transport(B)
    sent: list[Any] = [{"i": i, "data": bytes([i]) * i} for i in range(100)] + [b"\0" * 100_000]
    with trio.fail_after(60):
        async with net.running(), trio.open_nursery() as nursery:
            await nursery.start(b.serve_streams, echo)
            start = trio.current_time()
            stream = await a.connect(B)
            assert trio.current_time() - start == pytest.approx(0.1)  # one round trip
            assert stream.remote == B and stream.version == PROTOCOL_VERSION
            for message in sent:  # send all first: jitter must not reorder a stream
                await stream.send(message)
            got = [await stream.receive(timeout=5) for _ in sent]
            assert got == sent
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert a.stats.streams_opened == 1 and b.stats.streams_accepted == 1
    assert a.stats.bytes_sent == b.stats.bytes_received > 100_000


async def test_stream_peer_close_and_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def greet_and_leave(stream: Stream) -> None:
        await stream.send("hello")
        await trio.sleep(2)

    net = MemoryNetwork(seed=6)
    a, b = net.transport(A), net.transport(B)
    with trio.fail_after(60):
        async with net.running(), trio.open_nursery() as nursery:
            await nursery.start(b.serve_streams, greet_and_leave)
            stream = await a.connect(B)
            assert await stream.receive(timeout=1) == "hello"
            with pytest.raises(TransportError, match="timed out"):
                await stream.receive(timeout=1)
            with pytest.raises(StreamClosed):
                await stream.receive(timeout=5)
            with pytest.raises(TransportError):
                await stream.send("nobody listens")
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_streams_refused_and_broken_by_faults(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=9)
    a, b, c = net.transport(A), net.transport(B), net.transport(C)
    with trio.fail_after(60):
        async with net.running(), trio.open_nursery() as nursery:
            with pytest.raises(TransportError, match="refused"):
                await a.connect(B)  # nobody serving yet
            await nursery.start(b.serve_streams, echo)
            await nursery.start(c.serve_streams, echo)

            stream = await a.connect(B)
            net.partition([A], [B, C])
            with pytest.raises(TransportError, match="partition"):
                await stream.receive(timeout=5)
            start = trio.current_time()
            with pytest.raises(TransportError, match="timed out"):
                await a.connect(B, timeout=2)
            assert trio.current_time() - start == pytest.approx(2)
            net.heal()
            stream = await a.connect(B)
            await stream.send("after heal")
            assert await stream.receive(timeout=5) == "after heal"

            to_c = await a.connect(C)
            net.crash(B)
            with pytest.raises(TransportError, match="crashed"):
                await stream.send("to a crashed host")
            with pytest.raises(TransportError):
                await a.connect(B, timeout=1)
            await to_c.send("c is fine")
            assert await to_c.receive(timeout=5) == "c is fine"
            nursery.cancel_scope.cancel()


async def test_stream_connection_cap(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=10, max_per_host=2)
    a, b = net.transport(A), net.transport(B)
    with trio.fail_after(60):
        async with net.running(), trio.open_nursery() as nursery:
            await nursery.start(b.serve_streams, echo)
            held = [await a.connect(B) for _ in range(2)]
            with pytest.raises(TransportError, match="cap"):
                await a.connect(B)
            assert b.stats.streams_refused == 1
            await held[0].aclose()
            await trio.sleep(1)  # the server's echo sees EOF and closes its end
            extra = await a.connect(B)
            await extra.send(1)
            assert await extra.receive(timeout=5) == 1
            nursery.cancel_scope.cancel()
