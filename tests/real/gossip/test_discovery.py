"""Discovery with real mDNS on loopback (127.0.0.1 only, or inside a private network namespace)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import ifaddr
import pytest
import trio
from zeroconf import ServiceInfo, Zeroconf

from peerfarm.errors import PeerfarmError
from peerfarm.gossip.discovery import (
    SERVICE_TYPE,
    Announcement,
    Discovery,
    DiscoveryEvent,
    DiscoveryUnavailable,
    PeerFound,
    PeerGone,
)

LOOPBACK = ["127.0.0.1"]

PID = os.getpid()  # keeps our farm ids apart from other test runs sharing loopback mDNS


@dataclass
class Running:
    discovery: Discovery
    node_id: str
    port: int
    send: trio.MemorySendChannel[DiscoveryEvent]
    events: trio.MemoryReceiveChannel[DiscoveryEvent]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    seen: list[DiscoveryEvent] = field(default_factory=list)
    stopped: trio.Event = field(default_factory=trio.Event)

    async def wait_for(self, done: Callable[[list[DiscoveryEvent]], bool]) -> None:
        while not done(self.seen):
            self.seen.append(await self.events.receive())

    def drain(self) -> None:
        while True:
            try:
                self.seen.append(self.events.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    def found(self) -> dict[str, Announcement]:
        return {
            e.announcement.node_id: e.announcement for e in self.seen if isinstance(e, PeerFound)
        }


def make(tag: str, farm: str, port: int) -> Running:
    node_id = f"{tag}{PID:x}-node"
    discovery = Discovery(
        node_id=node_id,
        farm_id=f"{farm}-{PID}",
        name=f"{tag}-host",
        port=port,
        protocol=1,
        interfaces=LOOPBACK,
    )
    send, recv = trio.open_memory_channel[DiscoveryEvent](100)
    return Running(discovery, node_id, port, send, recv)


async def start_all(nursery: trio.Nursery, peers: list[Running]) -> None:
    """Start every peer concurrently (registration probes for ~1.7 s each)."""

    async def start_one(peer: Running) -> None:
        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with peer.scope:
                    await peer.discovery.run(peer.send, task_status=task_status)
            finally:
                peer.stopped.set()

        await nursery.start(run)

    async with trio.open_nursery() as starters:
        for peer in peers:
            starters.start_soon(start_one, peer)


def found_all(peer: Running, others: list[Running]) -> Callable[[list[DiscoveryEvent]], bool]:
    wanted = {o.node_id for o in others if o is not peer}
    return lambda seen: wanted <= peer.found().keys()


async def settle_and_drain(peers: list[Running]) -> None:
    await trio.sleep(0.5)  # let any late lookups land before asserting what was never reported
    for peer in peers:
        peer.drain()


@pytest.mark.mdns
async def test_three_peers_find_each_other() -> None:
    with trio.fail_after(30):
        peers = [make(tag, "main", 41000 + i) for i, tag in enumerate(["aaaa", "bbbb", "cccc"])]
        async with trio.open_nursery() as nursery:
            await start_all(nursery, peers)
            for peer in peers:
                await peer.wait_for(found_all(peer, peers))
            await settle_and_drain(peers)
            nursery.cancel_scope.cancel()
        for peer in peers:
            assert [e for e in peer.seen if not isinstance(e, PeerFound)] == []
            others = {o.node_id: o for o in peers if o is not peer}
            assert peer.found().keys() == others.keys()  # never itself
            for node_id, got in peer.found().items():
                assert got.address == ("127.0.0.1", others[node_id].port)
                assert got.farm_id == f"main-{PID}" and got.protocol == 1
                assert got.name == f"{node_id[:4]}-host"


@pytest.mark.mdns
async def test_other_farm_is_never_reported() -> None:
    with trio.fail_after(30):
        ours = make("dddd", "ours", 42000)
        theirs = [make("eeee", "theirs", 42001), make("ffff", "theirs", 42002)]
        async with trio.open_nursery() as nursery:
            await start_all(nursery, [ours, *theirs])
            # the other farm's records are on the wire: its own members see each other
            await theirs[0].wait_for(found_all(theirs[0], theirs))
            await theirs[1].wait_for(found_all(theirs[1], theirs))
            await settle_and_drain([ours, *theirs])
            nursery.cancel_scope.cancel()
        assert ours.seen == []
        assert theirs[0].found().keys() == {theirs[1].node_id}


@pytest.mark.mdns
async def test_clean_stop_is_seen_as_peer_gone() -> None:
    with trio.fail_after(30):
        peers = [make(tag, "stop", 43000 + i) for i, tag in enumerate(["gggg", "hhhh", "iiii"])]
        leaver = peers[2]
        async with trio.open_nursery() as nursery:
            await start_all(nursery, peers)
            for peer in peers:
                await peer.wait_for(found_all(peer, peers))
            leaver.scope.cancel()
            await leaver.stopped.wait()
            with trio.fail_after(5):  # a goodbye is seen at once, not after a TTL
                for peer in peers[:2]:
                    await peer.wait_for(lambda seen: PeerGone(leaver.node_id) in seen)
            nursery.cancel_scope.cancel()
        for peer in peers[:2]:
            assert [e for e in peer.seen if isinstance(e, PeerGone)] == [PeerGone(leaver.node_id)]
        leaver.drain()
        with pytest.raises(trio.EndOfChannel):  # run() closed its events channel
            leaver.events.receive_nowait()


def register_garbage(zc: Zeroconf, name: str, txt: bytes | dict[str, str]) -> None:
    info = ServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        port=44999,
        properties=txt,
        server=f"{name}.local.",
        parsed_addresses=LOOPBACK,
    )
    zc.register_service(info, cooperating_responders=True)


@pytest.mark.mdns
async def test_malformed_records_are_ignored_and_discovery_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="peerfarm.gossip.discovery")
    farm = f"junk-{PID}"
    garbage: dict[str, bytes | dict[str, str]] = {
        f"nov-{PID}": {"id": "g1", "farm": farm, "port": "44999"},
        f"badport-{PID}": {"id": "g2", "farm": farm, "v": "1", "port": "99999"},
        f"accent-{PID}": {"id": "g\u00e9", "farm": farm, "v": "1", "port": "1"},
        f"binary-{PID}": b"\x06\xff\xfe=\x00\x01\x80\x03v=1",
        f"overrun-{PID}": b"\x40id=g5",
    }
    with trio.fail_after(30):
        watcher, newcomer = make("jjjj", "junk", 44000), make("kkkk", "junk", 44001)
        zc = await trio.to_thread.run_sync(lambda: Zeroconf(interfaces=LOOPBACK))
        try:
            async with trio.open_nursery() as nursery:
                async with trio.open_nursery() as setup:
                    setup.start_soon(start_all, nursery, [watcher])
                    for name, txt in garbage.items():
                        setup.start_soon(trio.to_thread.run_sync, register_garbage, zc, name, txt)
                with trio.fail_after(10):  # every garbage record was looked up and rejected
                    while not all(name in caplog.text for name in garbage):
                        await trio.sleep(0.05)
                await start_all(nursery, [newcomer])
                await watcher.wait_for(found_all(watcher, [newcomer]))
                await settle_and_drain([watcher])
                nursery.cancel_scope.cancel()
        finally:
            await trio.to_thread.run_sync(zc.close)
    assert watcher.found().keys() == {newcomer.node_id}
    assert len(watcher.seen) == 1
    malformed = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert {name for name in garbage if any(name in m for m in malformed)} == set(garbage)


def _not_a_local_address() -> str:
    local = {ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips}
    return next(a for a in ("203.0.113.254", "198.51.100.254", "192.0.2.254") if a not in local)


async def test_unusable_interface_raises_discovery_unavailable() -> None:
    address = _not_a_local_address()  # documentation ranges; never ours
    with trio.fail_after(10):
        send, recv = trio.open_memory_channel[DiscoveryEvent](1)
        discovery = Discovery(
            node_id="n", farm_id="f", name="x", port=1, protocol=1, interfaces=[address]
        )
        with pytest.raises(DiscoveryUnavailable, match=re.escape(address)) as caught:
            await discovery.run(send)
        assert isinstance(caught.value, PeerfarmError)
        with pytest.raises(trio.EndOfChannel):
            recv.receive_nowait()


# Runs in a fresh network namespace: nothing there but `lo`, brought up with an ioctl (no `ip`
# binary is needed, and PATH has none), so interfaces=None can be exercised without ever
# touching a real interface.
_NETNS_PRELUDE = """
import fcntl, socket, struct, trio
from peerfarm.gossip.discovery import (
    Discovery, DiscoveryEvent, DiscoveryUnavailable, PeerFound)

def loopback_up():
    get_flags, set_flags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, get_flags, request))[1]
        fcntl.ioctl(sock, set_flags, struct.pack("16sH14x", b"lo", flags | iff_up))
"""

_NO_NETWORK_SCRIPT = (
    _NETNS_PRELUDE
    + """
async def main():
    send, _ = trio.open_memory_channel[DiscoveryEvent](1)
    d = Discovery(node_id="n", farm_id="f", name="x", port=1, protocol=1)
    with trio.fail_after(10):
        try:
            await d.run(send)
        except DiscoveryUnavailable as error:
            print("UNAVAILABLE", error)
trio.run(main)
"""
)

_ALL_INTERFACES_SCRIPT = (
    _NETNS_PRELUDE
    + """
async def main():
    loopback_up()
    peers = [Discovery(node_id=f"{tag}-node", farm_id="f", name=tag, port=port, protocol=1)
             for tag, port in (("aaaa", 5001), ("bbbb", 5002))]
    channels = [trio.open_memory_channel[DiscoveryEvent](10) for _ in peers]
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            for peer, (send, _) in zip(peers, channels):
                nursery.start_soon(nursery.start, peer.run, send)
            for _, recv in channels:
                event = await recv.receive()
                assert isinstance(event, PeerFound), event
                print("FOUND", event.announcement.node_id, *event.announcement.address)
            nursery.cancel_scope.cancel()
trio.run(main)
"""
)


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


async def _in_empty_netns(script: str) -> str:
    with trio.fail_after(20):
        result = await trio.run_process(
            [shutil.which("unshare") or "unshare", "-n", sys.executable, "-c", script],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "PATH": "/nonexistent"},
        )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


needs_netns = pytest.mark.skipif(
    not _can_unshare(), reason="needs `unshare -n` (root or user namespaces)"
)


@needs_netns
async def test_no_interfaces_at_all_raises_discovery_unavailable() -> None:
    """No multicast-capable interface (lo is down): run() fails with a clear, catchable error."""
    out = await _in_empty_netns(_NO_NETWORK_SCRIPT)
    assert out.startswith("UNAVAILABLE mDNS unavailable on all interfaces")


@needs_netns
@pytest.mark.mdns
async def test_all_interfaces_default_finds_peers() -> None:
    """interfaces=None announces the host's addresses (here only 127.0.0.1) and finds peers."""
    out = await _in_empty_netns(_ALL_INTERFACES_SCRIPT)
    assert sorted(out.splitlines()) == [
        "FOUND aaaa-node 127.0.0.1 5001",
        "FOUND bbbb-node 127.0.0.1 5002",
    ]
