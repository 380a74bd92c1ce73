"""Issue 3 with real daemons on loopback: discovery, membership, keys and hostile input."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import pytest

from peerfarm.testing.daemons import LocalFarm, wait_until, write_key
from tests.support import EXAMPLES

SCRIPT = EXAMPLES / "command" / "render.sh"


@pytest.mark.mdns
def test_three_peers_find_each_other_by_mdns_alone(farm: LocalFarm) -> None:
    t0 = time.monotonic()
    daemons = [farm.start(name, mdns=True) for name in ("m1", "m2", "m3")]
    for daemon in daemons:
        wait_until(
            lambda d=daemon: d.alive_names() == {"m1", "m2", "m3"}, 30, f"{daemon.name} sees all"
        )
    print(f"mDNS discovery of 3 peers: {time.monotonic() - t0:.1f} s")


def test_three_peers_find_each_other_by_join_alone(farm: LocalFarm) -> None:
    a = farm.start("j1")
    b = farm.start("j2", join=a)
    c = farm.start("j3", join=b)  # c only knows b; gossip introduces it to a
    for daemon in (a, b, c):
        wait_until(
            lambda d=daemon: d.alive_names() == {"j1", "j2", "j3"}, 20, f"{daemon.name} sees all"
        )


def test_a_peer_with_another_key_never_joins(farm: LocalFarm, tmp_path: Path) -> None:
    a = farm.start("k1", "--allow-command")
    b = farm.start("k2", join=a)
    other_key = write_key(tmp_path / "other.key")
    intruder = farm.start("intruder", "--allow-command", join=a, key=other_key)
    # The intruder submits a job to its own ledger; it must never reach the farm.
    intruder.cli("submit", str(SCRIPT), "1-3")
    wait_until(lambda: a.alive_names() == {"k1", "k2"}, 20, "farm formed")
    time.sleep(3)
    for daemon in (a, b):
        status = daemon.status()
        assert {p["name"] for p in status["peers"]} == {"k1", "k2"}
        assert status["jobs"] == []
    assert {p["name"] for p in intruder.status()["peers"]} == {"intruder"}
    dropped = a.cli_json("status")  # still answering
    assert dropped["node"]["name"] == "k1"


def _garbage_datagrams(key: bytes) -> list[bytes]:
    from peerfarm.gossip.crypto import Keyring
    from peerfarm.gossip.transport import encode_datagram

    valid = encode_datagram(Keyring([key]), {"t": "ping", "s": 1})
    wrong = encode_datagram(Keyring([os.urandom(32)]), {"t": "L", "d": [["F", "0" * 16]]})
    weird = encode_datagram(Keyring([key]), {"t": "L", "d": [["F", "x", 1, 2, 3, [1]]]})
    nonsense = encode_datagram(Keyring([key]), ["not", "a", "map", 1.5, None])
    return [
        b"",
        b"\x00" * 9,
        b"PF\x01\x00" + os.urandom(60),
        os.urandom(1400),
        valid[:-5],
        valid,  # replayed below
        valid,
        wrong,
        weird,
        nonsense,
        b"PF\x09\x00" + os.urandom(40),  # a protocol from the future
    ]


def test_garbage_leaves_every_daemon_alive_and_its_ledger_unchanged(farm: LocalFarm) -> None:
    a = farm.start("g1", "--allow-command")
    b = farm.start("g2", "--allow-command", join=a)
    wait_until(lambda: a.alive_names() == {"g1", "g2"}, 20, "farm formed")
    job = a.cli_json("submit", str(SCRIPT), "1-4")["job"]
    wait_until(lambda: a.status()["jobs"][0]["state"] == "done", 30, "job done")
    wait_until(
        lambda: a.status()["node"]["digest"] == b.status()["node"]["digest"], 20, "converged"
    )
    before = a.status()["node"]["digest"]
    key = farm.key_file.read_text().strip()
    from peerfarm.gossip.crypto import decode_key

    raw_key = decode_key(key)
    host, port = a.address.rsplit(":", 1)
    target = (host, int(port))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for payload in _garbage_datagrams(raw_key) * 20:
        udp.sendto(payload, target)
    udp.close()
    # Streams: garbage, a truncated frame, an oversized announced length, a slow-loris.
    for payload in (os.urandom(300), b"\x00\x00\x00\x10PF", b"\xff\xff\xff\xffPF\x01\x01", b""):
        with socket.create_connection(target, timeout=5) as tcp:
            tcp.sendall(payload)
            tcp.settimeout(2)
            with contextlib.suppress(TimeoutError, ConnectionError):
                tcp.recv(100)
    time.sleep(1)
    for daemon in (a, b):
        assert daemon.alive(), daemon.log()
        status = daemon.status()
        assert status["node"]["digest"] == before
        assert status["jobs"][0]["id"] == job
    # And the farm still works.
    job2 = b.cli_json("submit", str(SCRIPT), "5-8")["job"]
    wait_until(lambda: a.status(job2)["jobs"][0]["state"] == "done", 30, "second job done")
