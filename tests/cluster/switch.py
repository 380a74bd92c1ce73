"""A userspace learning switch with per-link loss and delay: netem for kernels without it.

Owns the lossy, slow network of the cluster tests. The kernels these tests run on may lack
``sch_netem`` (and every tc classifier and action), so :meth:`Net.netem` detaches the hosts'
ports from the kernel bridge and runs this program on them in the bridge namespace instead:

    python switch.py --loss 10 --delay 0.05 --seed 1 v1 v2 v3 v4

Every Ethernet frame that arrives on a port is forwarded (learned unicast, else flooded) to
the other ports; each copy is dropped with probability ``loss`` percent and sent ``delay``
seconds later, so a packet between two hosts crosses exactly one lossy, delayed link. Frames
are read and written with ``PACKET_VNET_HDR``, so checksum offload and GSO pass through as
they would through a kernel bridge. The forwarding rules are :class:`Switch` (pure, seeded);
the loop around it only reads sockets and sends what it returns.
"""

from __future__ import annotations

import argparse
import heapq
import random
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4
VNET_HDR_LEN = 10
MAX_FRAME = 65_536 + VNET_HDR_LEN
MAC_AGE_S = 300.0


@dataclass(order=True, frozen=True, slots=True)
class Send:
    """A frame copy to put on ``port`` at time ``at`` (``seq`` keeps equal times in order)."""

    at: float
    seq: int
    port: str = field(compare=False)
    frame: bytes = field(compare=False, repr=False)


class Switch:
    """Learning, flooding, loss and delay. Pure: time comes in, what to send goes out."""

    def __init__(self, ports: list[str], *, loss: float, delay: float, seed: int) -> None:
        if not 0 <= loss <= 100 or delay < 0:
            raise ValueError(f"bad loss {loss} or delay {delay}")
        self.ports = list(ports)
        self.loss = loss / 100
        self.delay = delay
        self.rng = random.Random(seed)
        self.macs: dict[bytes, tuple[str, float]] = {}
        self.dropped = 0
        self.forwarded = 0
        self._seq = 0

    def receive(self, port: str, frame: bytes, now: float) -> list[Send]:
        """A frame (vnet header + Ethernet) arrived on ``port``: the copies to send."""
        eth = frame[VNET_HDR_LEN:]
        if len(eth) < 14:
            return []
        dst, src = eth[0:6], eth[6:12]
        if not src[0] & 1:
            self.macs[src] = (port, now)
        known = None if dst[0] & 1 else self.macs.get(dst)
        if known is not None and now - known[1] < MAC_AGE_S:
            targets = [] if known[0] == port else [known[0]]
        else:
            targets = [p for p in self.ports if p != port]
        out = []
        for target in targets:
            if self.rng.random() < self.loss:
                self.dropped += 1
                continue
            self._seq += 1
            self.forwarded += 1
            out.append(Send(now + self.delay, self._seq, target, frame))
        return out


def open_port(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((name, 0))
    sock.setblocking(False)
    return sock


def serve(switch: Switch, stop: list[bool]) -> None:
    sockets = {name: open_port(name) for name in switch.ports}
    selector = selectors.DefaultSelector()
    for name, sock in sockets.items():
        selector.register(sock, selectors.EVENT_READ, name)
    queue: list[Send] = []
    print("switch ready", flush=True)
    while not stop:
        timeout = max(0.0, queue[0].at - time.monotonic()) if queue else 0.5
        for key, _ in selector.select(timeout):
            sock = sockets[key.data]
            while True:
                try:
                    frame, address = sock.recvfrom(MAX_FRAME)
                except BlockingIOError:
                    break
                if address[2] == PACKET_OUTGOING:
                    continue  # our own sends, seen again on the way out
                for item in switch.receive(key.data, frame, time.monotonic()):
                    heapq.heappush(queue, item)
        now = time.monotonic()
        while queue and queue[0].at <= now:
            item = heapq.heappop(queue)
            try:
                sockets[item.port].send(item.frame)
            except OSError as exc:
                print(f"send on {item.port} failed: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="switch.py")
    parser.add_argument("--loss", type=float, default=0.0, help="percent of copies dropped")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to each copy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("ports", nargs="+")
    args = parser.parse_args(argv)
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    switch = Switch(args.ports, loss=args.loss, delay=args.delay, seed=args.seed)
    serve(switch, stop)
    print(f"switch stopped: forwarded {switch.forwarded}, dropped {switch.dropped}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
