"""SWIM membership with Lifeguard, as a pure state machine: who is in the farm, and alive.

This module owns the protocol that drives one node's membership. It does no I/O: the caller
passes the time (monotonic float seconds) and a seeded ``random.Random``, feeds received
messages to :meth:`Membership.receive`, calls :meth:`Membership.tick` at
:meth:`Membership.next_deadline`, sends the returned ``(address, message)`` pairs (the transport
seals them), and reads :meth:`Membership.drain_events`. Its parts, each pure and with its rules
in its own docstring (after SWIM and hashicorp memberlist with Lifeguard):

- :mod:`peerfarm.gossip.table`: the member table, incarnations, refutation, Lifeguard
  suspicion, forgetting DEAD and LEFT members after ``dead_node_reclaim``;
- :mod:`peerfarm.gossip.probe`: the probe cycle, indirect probes, Lifeguard local health;
- :mod:`peerfarm.gossip.dissemination`: news piggybacked on every datagram within the byte
  budget, gossip rounds, user broadcasts relayed once;
- :mod:`peerfarm.gossip.swim_wire`: what the messages look like on the wire, and validation.

Rules kept here: joining (join datagrams retried until a member is known), leaving, stale views
corrected at once (every message carries its sender's id and incarnation; a receiver that
holds that sender as suspect/dead/left at the same or a newer incarnation, or alive at a newer
one, tells it so directly, and it refutes), and with a periodic ping to a random DEAD member
(``reconnect_interval``) partitions heal; a push-pull merge takes a remote DEAD as SUSPECT.

What the node layer must do:

- Call :meth:`Membership.join` with the seeds (mDNS answers or ``--join``), then do a TCP
  push-pull with one seed (:meth:`push_pull_state` / :meth:`merge_push_pull` on both sides) to
  get the full table; join datagrams are retried by :meth:`tick` every ``join_retry_interval``
  until some member is known. Afterwards push-pull with a random alive member every
  ``push_pull_interval``.
- Choose the starting incarnation on (re)start: ``max(persisted + 1, int(wall_clock_seconds))``
  is a good choice, so a restarted node's ALIVE is newer than anything said about its previous
  life. A restart with a lower or equal incarnation still recovers: the first peer that hears it
  answers with its old record and the node refutes above it.
- Treat :class:`peerfarm.errors.DecodeError` from :meth:`receive` and :meth:`merge_push_pull`
  as "log and drop"; nothing else is raised for bad remote input.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from peerfarm.errors import MessageTooLarge
from peerfarm.gossip.broadcast import encoded_size
from peerfarm.gossip.config import (
    GossipConfig,
)
from peerfarm.gossip.dissemination import Dissemination
from peerfarm.gossip.members import (
    Address,
    Member,
    MemberAlive,
    MemberDied,
    MemberJoined,
    MemberLeft,
    MembershipEvent,
    MemberState,
    MemberSuspected,
    MemberUpdated,
    UserBroadcast,
)
from peerfarm.gossip.probe import Prober
from peerfarm.gossip.swim_wire import (
    MAX_NODE_ID_BYTES,
    T_ACK,
    T_GOSSIP,
    T_JOIN,
    T_NACK,
    T_PING,
    T_PING_REQ,
    Alive,
    Dead,
    Left,
    Message,
    Outgoing,
    Packet,
    Suspect,
    Update,
    UserItem,
    alive_of,
    decode_packet,
    decode_push_pull,
    encode_push_pull,
)
from peerfarm.gossip.table import MemberTable

#: The values callers read from the machine are re-exported here (see members and swim_wire).
__all__ = [
    "Address",
    "Member",
    "MemberAlive",
    "MemberDied",
    "MemberJoined",
    "MemberLeft",
    "MemberState",
    "MemberSuspected",
    "MemberUpdated",
    "Membership",
    "MembershipEvent",
    "Message",
    "Outgoing",
    "UserBroadcast",
]


# --- the state machine ---------------------------------------------------------------------


class Membership:
    """One node's SWIM membership: feed it messages and time, send what it returns."""

    def __init__(
        self,
        node_id: str,
        address: Address,
        meta: dict[str, Any],
        config: GossipConfig,
        rng: random.Random,
        now: float,
        protocol: int = 1,
        incarnation: int = 0,
    ) -> None:
        if not node_id or len(node_id.encode("utf-8")) > MAX_NODE_ID_BYTES:
            raise ValueError(f"node id must be 1..{MAX_NODE_ID_BYTES} UTF-8 bytes")
        self._config = config
        self._rng = rng
        self._id = node_id
        self._check_meta(meta)
        self._self = Member(
            node_id,
            (address[0], address[1]),
            incarnation,
            MemberState.ALIVE,
            dict(meta),
            now,
            protocol,
        )
        self._table: dict[str, Member] = {node_id: self._self}
        self._news = Dissemination(config, rng, self._table, self._self)
        self._events: list[MembershipEvent] = []
        self._prober = Prober(
            config,
            rng,
            now,
            self._table,
            self._self,
            self._news.header,
            self._news.packet,
            self._suspect_unanswered,
        )
        self._rules = MemberTable(
            self._table,
            self._self,
            config,
            self._news,
            self._emit,
            self._prober.add,
            lambda: self._prober.adjust_awareness(1),
        )
        self._next_gossip_at = now + config.gossip_interval
        self._next_reconnect_at = now + config.reconnect_interval
        self._seeds: list[Address] = []
        self._next_join_at: float | None = None

    @property
    def _leaving(self) -> bool:
        return self._rules.leaving

    def _emit(self, event: MembershipEvent) -> None:
        self._events.append(event)

    # --- read side ---------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._id

    @property
    def incarnation(self) -> int:
        return self._self.incarnation

    @property
    def awareness(self) -> int:
        """Lifeguard local-health score: 0 is healthy; probes slow down by ``score + 1``."""
        return self._prober.awareness

    def members(self) -> list[Member]:
        """Every listed member, ourselves included, DEAD/LEFT ones until they are reclaimed."""
        return [m.copy() for m in self._table.values()]

    def get(self, node_id: str) -> Member | None:
        member = self._table.get(node_id)
        return None if member is None else member.copy()

    def alive_members(self) -> list[Member]:
        """Members other than ourselves that are ALIVE (SUSPECT ones are not included)."""
        return [
            m.copy()
            for m in self._table.values()
            if m is not self._self and m.state is MemberState.ALIVE
        ]

    def drain_events(self) -> list[MembershipEvent]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float:
        """The earliest time at which :meth:`tick` has work (``inf`` if none)."""
        times = [*self._rules.deadlines(), *self._prober.deadlines(not self._leaving)]
        if not self._leaving and self._config.reconnect_interval > 0:
            times.append(self._next_reconnect_at)
        if self._news.pending:
            times.append(self._next_gossip_at)
        if self._next_join_at is not None:
            times.append(self._next_join_at)
        return min(times)

    def push_pull_state(self) -> Message:
        """Our whole table, compact, for the periodic TCP push-pull."""
        return encode_push_pull(self._id, self._table.values())

    # --- commands ----------------------------------------------------------------------

    def join(self, seeds: Sequence[Address], now: float) -> list[Outgoing]:
        """Announce ourselves to the seeds; :meth:`tick` retries until a member is known.

        Then push-pull with a seed over TCP (see the module docstring).
        """
        self._seeds = [(s[0], s[1]) for s in seeds if (s[0], s[1]) != self._self.address]
        if not self._seeds:
            self._next_join_at = None
            return []
        self._next_join_at = now + self._config.join_retry_interval
        return self._join_packets()

    def leave(self, now: float) -> list[Outgoing]:
        """Leave gracefully: tell every member we know at once, and keep gossiping it."""
        if self._leaving:
            return []
        self._rules.leaving = True
        self._prober.stop()
        self._next_join_at = None
        self._self.state = MemberState.LEFT
        self._self.state_since = now
        left = Left(self._id, self._self.incarnation).wire()
        self._news.queue_member(self._id, left)
        return [
            self._news.packet(m.address, self._news.header(T_GOSSIP), [left], piggyback=False)
            for m in self._table.values()
            if m is not self._self and m.state in (MemberState.ALIVE, MemberState.SUSPECT)
        ]

    def update_meta(self, meta: dict[str, Any], now: float) -> None:
        """Change our metadata: bump our incarnation and gossip the new ALIVE."""
        self._check_meta(meta)
        self._self.meta = dict(meta)
        self._self.incarnation += 1
        self._news.queue_member(self._id, alive_of(self._self).wire())

    def queue_broadcast(self, key: str, payload: Any) -> None:
        """Spread an opaque payload to every member (delivered there as UserBroadcast).

        A newer payload under the same ``key`` replaces an older one not yet sent. Raises
        MessageTooLarge if it cannot fit one datagram, TypeError if it is not msgpack-able.
        """
        self._news.queue_user(key, payload)

    # --- time ------------------------------------------------------------------------

    def tick(self, now: float) -> list[Outgoing]:
        """Do everything due by ``now``; return the datagrams to send."""
        out: list[Outgoing] = []
        if self._next_join_at is not None and now >= self._next_join_at:
            if any(m.state is MemberState.ALIVE for m in self._others()):
                self._next_join_at = None
            else:
                self._next_join_at = now + self._config.join_retry_interval
                out.extend(self._join_packets())
        out.extend(self._prober.tick_probe(now, not self._leaving))
        out.extend(self._prober.tick_relays(now))
        self._rules.expire_suspicions(now)
        if (
            not self._leaving
            and self._config.reconnect_interval > 0
            and now >= self._next_reconnect_at
        ):
            self._next_reconnect_at = now + self._config.reconnect_interval
            dead = [m for m in self._others() if m.state is MemberState.DEAD]
            if dead:
                target = self._rng.choice(dead)
                ping = self._news.header(T_PING, self._prober.next_seq(), target.node_id)
                out.append(self._news.packet(target.address, ping))
        if now >= self._next_gossip_at:
            self._next_gossip_at = now + self._config.gossip_interval
            out.extend(self._news.gossip_round(now))
        if now >= self._rules.next_reap_at:
            self._rules.reap(now)
        return out

    # --- input -----------------------------------------------------------------------

    def receive(self, sender: Address, message: Any, now: float) -> list[Outgoing]:
        """Handle one datagram's message from ``sender``; return the replies.

        Raises DecodeError (and changes nothing) if the message is malformed.
        """
        packet = decode_packet(message, self._config)
        reply_to: Address = (sender[0], sender[1])
        out: list[Outgoing] = []
        notice = self._stale_view_notice(packet, reply_to)
        if notice is not None:
            out.append(notice)
        refuted = False
        for update in packet.updates:
            refuted |= self._apply(update, now)
        if refuted:
            alive = alive_of(self._self).wire()
            out.append(self._news.packet(reply_to, self._news.header(T_GOSSIP), [alive]))
        out.extend(self._handle(packet, reply_to, now))
        return out

    def merge_push_pull(self, state: Any, now: float) -> None:
        """Merge a peer's push-pull state (DecodeError, changing nothing, if malformed).

        A remote DEAD is taken as SUSPECT (we give the member a chance to refute), a remote
        LEFT as LEFT, a remote ALIVE as ALIVE; unknown members are only learned when ALIVE.
        """
        sender, members = decode_push_pull(state, self._config)
        for m in members:
            if m.state is MemberState.ALIVE:
                self._rules.on_alive(alive_of(m), now)
            elif m.state is MemberState.LEFT:
                self._rules.on_left(Left(m.node_id, m.incarnation), now)
            else:
                self._rules.on_suspect(Suspect(m.node_id, m.incarnation, sender), now)

    # --- packet handling ---------------------------------------------------------------

    def _handle(self, packet: Packet, sender: Address, now: float) -> list[Outgoing]:
        kind = packet.kind
        if kind == T_PING:
            if packet.target != self._id:
                return []  # meant for a previous owner of this address
            return [self._news.packet(sender, self._news.header(T_ACK, packet.seq))]
        if kind == T_ACK:
            answer = self._prober.on_ack(packet.seq)
            return [] if answer is None else [answer]
        if kind == T_NACK:
            self._prober.on_nack(packet.seq)
            return []
        if kind == T_PING_REQ:
            return [self._prober.on_ping_req(packet, sender, now)]
        if kind == T_JOIN:
            self._next_join_at = None
            return [self._join_answer(sender, packet.sender)]
        return []  # T_GOSSIP: the piggyback was all

    def _stale_view_notice(self, packet: Packet, sender: Address) -> Outgoing | None:
        """Tell a sender we hold an accusation (or newer alive) against its incarnation."""
        member = self._table.get(packet.sender)
        if member is None or member is self._self:
            return None
        item: Update
        if member.state is MemberState.ALIVE:
            if member.incarnation <= packet.incarnation:
                return None
            item = alive_of(member)
        elif member.incarnation < packet.incarnation:
            return None
        elif member.state is MemberState.SUSPECT:
            item = Suspect(member.node_id, member.incarnation, self._id)
        elif member.state is MemberState.DEAD:
            item = Dead(member.node_id, member.incarnation, self._id)
        else:
            item = Left(member.node_id, member.incarnation)
        return self._news.packet(sender, self._news.header(T_GOSSIP), [item.wire()])

    def _apply(self, update: Update, now: float) -> bool:
        """Apply one piggybacked item; True if it made us refute."""
        if isinstance(update, Alive):
            return self._rules.on_alive(update, now)
        if isinstance(update, Suspect):
            return self._rules.on_suspect(update, now)
        if isinstance(update, Dead):
            return self._rules.on_dead(update, now)
        if isinstance(update, Left):
            return self._rules.on_left(update, now)
        self._on_user(update)
        return False

    def _on_user(self, item: UserItem) -> None:
        event = self._news.receive_user(item)
        if event is not None:
            self._emit(event)

    def relay(self, event: UserBroadcast) -> None:
        """Spread a received broadcast further (the application found it was news). It replaces
        whatever was queued under its key: the application relays only what supersedes that."""
        self._news.relay(event)

    # --- helpers -----------------------------------------------------------------------

    def _check_meta(self, meta: dict[str, Any]) -> None:
        size = encoded_size(meta)
        if size > self._config.meta_limit:
            raise MessageTooLarge(f"metadata of {size} bytes exceeds {self._config.meta_limit}")

    def _others(self) -> Iterable[Member]:
        return (m for m in self._table.values() if m is not self._self)

    def _join_packets(self) -> list[Outgoing]:
        alive = alive_of(self._self).wire()
        return [self._news.packet(seed, self._news.header(T_JOIN), [alive]) for seed in self._seeds]

    def _join_answer(self, sender: Address, joiner: str) -> Outgoing:
        others = [m for m in self._others() if m.state is MemberState.ALIVE and m.node_id != joiner]
        self._rng.shuffle(others)
        extra = [alive_of(self._self).wire()] + [alive_of(m).wire() for m in others[:16]]
        return self._news.packet(sender, self._news.header(T_GOSSIP), extra, piggyback=False)

    def _suspect_unanswered(self, target: Member, now: float) -> None:
        """The prober got no ack from ``target`` within its interval: we accuse it."""
        self._rules.on_suspect(Suspect(target.node_id, target.incarnation, self._id), now)
