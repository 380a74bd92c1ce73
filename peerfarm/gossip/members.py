"""The values of SWIM membership: a member's state, our row for it, and the events we report.

These are plain data shared by the wire codec (:mod:`peerfarm.gossip.swim_wire`, which decodes
push-pull rows into :class:`Member`), the state machine (:mod:`peerfarm.gossip.membership`, which
keeps the table and emits the events) and everything above them that reads the table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

Address = tuple[str, int]


class MemberState(enum.IntEnum):
    """A member's state. Wire values: APPEND-ONLY."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(slots=True)
class Member:
    """Our view of one member (ourselves included)."""

    node_id: str
    address: Address
    incarnation: int
    state: MemberState
    meta: dict[str, Any]
    state_since: float  # monotonic time of the last state change, on our clock
    protocol: int

    def copy(self) -> Member:
        return Member(
            self.node_id,
            self.address,
            self.incarnation,
            self.state,
            dict(self.meta),
            self.state_since,
            self.protocol,
        )


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberJoined:
    """A member we did not know is alive."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberUpdated:
    """An alive member changed its metadata, address or protocol."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberSuspected:
    member: Member


@dataclass(frozen=True, slots=True)
class MemberAlive:
    """A suspected, dead or left member is alive again (refuted, recovered or rejoined)."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberDied:
    member: Member


@dataclass(frozen=True, slots=True)
class MemberLeft:
    member: Member


@dataclass(frozen=True, slots=True)
class UserBroadcast:
    """An opaque payload another member queued with :meth:`Membership.queue_broadcast`.

    It is not relayed on its own: the application passes it to :meth:`Membership.relay` when it
    is news (it changed something), so a stale payload never replaces a newer one queued under
    the same key."""

    payload: Any
    sender_id: str
    item: Any = field(default=None, compare=False, repr=False)


MembershipEvent = (
    MemberJoined
    | MemberUpdated
    | MemberSuspected
    | MemberAlive
    | MemberDied
    | MemberLeft
    | UserBroadcast
)
