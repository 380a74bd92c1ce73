"""Floods from a peer that holds the key do not stop the others (issue 10).

Two real daemons on 127.0.0.1 render a job while a flooder on 127.0.0.2 (another loopback
address, so another "host" to the per-host connection cap) holds as many TCP connections to
both as it can, reconnecting when they are closed, and sprays random datagrams and authentic
datagrams carrying junk. The job must complete on both peers and membership must hold.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path

from peerfarm.gossip.crypto import Keyring, load_key_file
from peerfarm.gossip.transport import encode_datagram
from peerfarm.testing.daemons import LocalFarm, wait_until

FLOOD_HOST = "127.0.0.2"
HELD_PER_TARGET = 40  # well over NetLimits.max_per_host (8)


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


class Flooder:
    def __init__(self, keyring: Keyring, targets: list[tuple[str, int]], seed: int) -> None:
        self.keyring = keyring
        self.targets = targets
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.connects = 0
        self.datagrams = 0
        self.threads = [
            threading.Thread(target=self._tcp, daemon=True),
            threading.Thread(target=self._udp, daemon=True),
        ]

    def __enter__(self) -> Flooder:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _tcp(self) -> None:
        held: list[socket.socket] = []
        try:
            while not self.stop.is_set():
                for target in self.targets:
                    alive = []
                    for sock in held:  # drop the ones the server closed
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
                    while len(held) < HELD_PER_TARGET * len(self.targets):
                        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                        sock.settimeout(1)
                        try:
                            sock.bind((FLOOD_HOST, 0))
                            sock.connect(target)
                            sock.sendall(self.rng.randbytes(self.rng.randrange(1, 64)))
                        except OSError:
                            sock.close()
                            break
                        self.connects += 1
                        held.append(sock)
                time.sleep(0.05)
        finally:
            for sock in held:
                sock.close()

    def _udp(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((FLOOD_HOST, 0))
        junk_messages = [
            {"t": "L", "d": [["F", "0" * 16, 1, "0" * 16, 1, [0] * 9]]},
            {"t": "L", "d": "x" * 500},
            {"t": "ping", "seq": -1},
            [1, 2, 3],
            {"t": "alive", "node": "f" * 16, "inc": 2**64 - 1},
        ]
        try:
            while not self.stop.is_set():
                for _ in range(50):
                    target = self.rng.choice(self.targets)
                    if self.rng.random() < 0.5:
                        data = self.rng.randbytes(self.rng.randrange(1, 1400))
                    else:
                        data = encode_datagram(self.keyring, self.rng.choice(junk_messages))
                    try:
                        sock.sendto(data, target)
                        self.datagrams += 1
                    except OSError:
                        pass
                time.sleep(0.02)  # ~2,500 datagrams/s: a flood, but not a CPU benchmark
        finally:
            sock.close()


def test_a_flooding_keyed_peer_does_not_stop_two_daemons_from_rendering(
    farm: LocalFarm, tmp_path: Path
) -> None:
    a = farm.start("a", "--allow-command", "--slots", "1")
    b = farm.start("b", "--allow-command", "--slots", "1", join=a)
    wait_until(lambda: a.alive_names() == {"a", "b"} == b.alive_names(), 20, "farm formed")
    scene = tmp_path / "slow.sh"
    scene.write_text(
        "#!/bin/sh\nsleep 0.3\n"
        'echo "$PEERFARM_FRAME" > "$PEERFARM_OUTPUT_DIR/frame_$PEERFARM_FRAME.txt"\n'
    )
    out = tmp_path / "out"
    keyring = Keyring([load_key_file(farm.key_file)])
    with Flooder(keyring, [_address(a.address), _address(b.address)], seed=5) as flood:
        time.sleep(1.0)  # the flood is on before the job starts
        job = a.cli_json(
            "submit", str(scene), "1-12", "--renderer", "command", "--output", str(out)
        )
        wait_until(
            lambda: a.status(job["job"])["jobs"][0]["frames_delivered"] == 12,
            60,
            "12 frames delivered under the flood",
        )
        status = a.status(job["job"])
        assert a.alive_names() == {"a", "b"} == b.alive_names()
        assert flood.connects > HELD_PER_TARGET and flood.datagrams > 1000
    assert {f["peer"] for f in status["frames"]} == {"a", "b"}  # both kept working
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{n:04d}.txt" for n in range(1, 13)]
    assert a.alive() and b.alive()
