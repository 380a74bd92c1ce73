"""Watching a simulated peer's ledger pushes: what it hands to the network, and when it
first holds each frame DONE (shared by the push and schedule simulations)."""

from __future__ import annotations

from typing import Any

import trio

from peerfarm.ledger import codec
from peerfarm.ledger.keys import FrameChanged
from peerfarm.ledger.model import FrameRecord, Status
from peerfarm.peer.gossip import T_LEDGER
from peerfarm.testing import SimPeer


class Sent:
    """The ledger datagrams one peer hands to the network: (virtual time, kinds and frame
    records, whether it went to one peer asking it to pass it on)."""

    def __init__(self, peer: SimPeer) -> None:
        self.pushes: list[tuple[float, list[Any], bool]] = []
        transport = peer.node.transport
        to_all, to_one = transport.send_datagrams, transport.send_datagram

        def note(message: Any, targeted: bool) -> None:
            if isinstance(message, dict) and message.get("t") == T_LEDGER:
                deltas = codec.decode_deltas(message["d"])
                self.pushes.append((trio.current_time(), deltas, targeted))

        async def send_all(addresses: Any, message: Any) -> None:
            await to_all(addresses, message)
            note(message, False)

        async def send_one(address: Any, message: Any) -> None:
            await to_one(address, message)
            if isinstance(message, dict) and message.get("r") is True:
                note(message, True)  # (a push to every peer may pass through here too)

        transport.send_datagrams = send_all  # type: ignore[method-assign,assignment]
        transport.send_datagram = send_one  # type: ignore[method-assign,assignment]

    def full(self) -> list[list[Any]]:
        """The deltas of each push to every peer."""
        return [deltas for _at, deltas, targeted in self.pushes if not targeted]

    def frame_pushes(self) -> list[tuple[float, list[tuple[int, FrameRecord]]]]:
        """Each push to every peer that carried frame records: (time, records by frame)."""
        out = []
        for at, deltas, targeted in self.pushes:
            frames = [(d[0][2], d[1]) for d in deltas if isinstance(d[1], FrameRecord)]
            if frames and not targeted:
                out.append((at, frames))
        return out


def done_seen(peer: SimPeer) -> dict[int, float]:
    """Frame -> the virtual time ``peer`` first held it DONE (filled in from now on)."""
    seen: dict[int, float] = {}
    react = peer.node.react

    def noting(changes: Any) -> None:
        for change in changes:
            if isinstance(change, FrameChanged) and change.record.status == Status.DONE:
                seen.setdefault(change.frame, trio.current_time())
        react(changes)

    peer.node.react = noting  # type: ignore[method-assign]
    return seen
