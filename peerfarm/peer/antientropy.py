"""Push-pull anti-entropy as a pure session: what to send, what was received, when it is done.

One exchange between two peers over one stream, the same for both sides::

    initiator                                  responder
      sync {m: members, w: watermarks}   ->
                                         <-    sync-r {m: members, w: watermarks}
                                         <-    deltas {d: [...]} ... end
      deltas {d: [...]} ... end          ->

Two peers that open an exchange with each other at once (a joiner and its seed both do) keep
one: the responder that started its own exchange with the initiator, and has the smaller node
id, answers ``sync-busy`` instead of ``sync-r`` (the other exchange carries both directions),
so a big ledger is never encoded, sent, decoded and merged twice.

Each side sends exactly the ledger entries the other's watermarks say it may lack, taken from a
snapshot (so merges that happen while the stream is written never disturb it), in batches of at
most :data:`SYNC_BATCH`. After the other side's ``end`` the session absorbs its watermarks: the
driver promises it merged every delta the session handed it before feeding the next message.

No I/O and no clock: :class:`SyncSession` returns the messages to send and the deltas to merge;
``peerfarm.peer.sync`` drives it over a transport stream. Wire names are append-only.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import DecodeError
from ..gossip.membership import Membership
from ..ledger import Ledger, codec
from ..ledger.codec import Delta

T_SYNC = "sync"  # initiator: member table and ledger watermarks
T_SYNC_REPLY = "sync-r"  # responder: the same
T_DELTAS = "deltas"  # a batch of ledger entries
T_END = "end"  # no more entries from this side
T_BUSY = "sync-busy"  # responder: the exchange it started with the initiator carries it all

SYNC_BATCH = 1_000  # ledger entries per message

Message = dict[str, Any]


class Phase(enum.Enum):
    START = "start"  # initiator: nothing sent yet; responder: waiting for the request
    RECEIVING = "receiving"  # reading the other side's deltas
    DONE = "done"


@dataclass(slots=True)
class Step:
    """What feeding one message produced: members to merge, deltas to merge, messages to send."""

    members: Any = None  # the other side's member table (Membership.merge_push_pull input)
    deltas: list[Delta] = field(default_factory=list)
    send: Iterator[Message] = field(default_factory=lambda: iter(()))


def _batches(deltas: list[Delta]) -> Iterator[Message]:
    for start in range(0, len(deltas), SYNC_BATCH):
        yield {
            "t": T_DELTAS,
            "d": [codec.encode_delta(d) for d in deltas[start : start + SYNC_BATCH]],
        }
    yield {"t": T_END}


class SyncSession:
    """One push-pull exchange with one peer, from either side."""

    def __init__(self, ledger: Ledger, membership: Membership, *, initiator: bool) -> None:
        self.ledger = ledger
        self.membership = membership
        self.initiator = initiator
        self.phase = Phase.START
        self.received = 0  # deltas received from the other side
        self.sent = 0  # deltas we sent
        self._their_marks: dict[str, int] | None = None
        self.peer: str | None = None  # the other side's node id, when it says
        self.refused = False  # initiator: the responder answered sync-busy

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    def _hello(self, kind: str) -> Message:
        return {
            "t": kind,
            "m": self.membership.push_pull_state(),
            "w": self.ledger.watermarks(),
            "n": self.ledger.node_id,  # who speaks (added later: absent from older peers)
        }

    def opening(self) -> Message:
        """The initiator's first message."""
        if not self.initiator or self.phase is not Phase.START:
            raise RuntimeError("only a new initiating session opens an exchange")
        return self._hello(T_SYNC)

    def _our_deltas(self, marks: dict[str, int]) -> Iterator[Message]:
        deltas = self.ledger.deltas_since(marks)  # a snapshot, taken now
        self.sent = len(deltas)
        return _batches(deltas)

    def receive(self, message: Any) -> Step:
        """Feed one message from the other side (DecodeError when it breaks the protocol)."""
        if not isinstance(message, dict):
            raise DecodeError("expected a map in a sync")
        kind = message.get("t")
        if self.phase is Phase.START:
            if self.initiator and kind == T_BUSY:
                self.refused = True
                self.phase = Phase.DONE
                return Step()
            want = T_SYNC_REPLY if self.initiator else T_SYNC
            if kind != want:
                raise DecodeError(f"expected {want!r} to open a sync, got {kind!r}")
            marks = codec.decode_watermarks(message.get("w"))
            self._their_marks = marks
            peer = message.get("n")
            self.peer = peer if type(peer) is str and codec.ID_RE.match(peer) else None
            self.phase = Phase.RECEIVING
            step = Step(members=message.get("m"))
            if not self.initiator:
                reply = self._hello(T_SYNC_REPLY)  # our watermarks before their deltas arrive
                step.send = _chain(iter([reply]), self._our_deltas(marks))
            return step
        if self.phase is Phase.RECEIVING:
            if kind == T_DELTAS:
                deltas = codec.decode_deltas(message.get("d"), max_count=SYNC_BATCH)
                self.received += len(deltas)
                return Step(deltas=deltas)
            if kind == T_END:
                assert self._their_marks is not None
                # Every delta they sent for our watermarks is merged: we dominate their state.
                self.ledger.absorb_watermarks(self._their_marks)
                self.phase = Phase.DONE
                if self.initiator:
                    return Step(send=self._our_deltas(self._their_marks))
                return Step()
            raise DecodeError(f"unexpected message {kind!r} in a sync")
        raise DecodeError("message after the end of a sync")


def busy_reply() -> Message:
    """The responder's answer when the exchange it started with the initiator wins."""
    return {"t": T_BUSY}


def _chain(*parts: Iterator[Message]) -> Iterator[Message]:
    for part in parts:
        yield from part
