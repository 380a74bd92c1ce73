"""SWIM membership with Lifeguard, as a pure state machine: who is in the farm, and alive.

This module owns the member table and every rule that changes it. It does no I/O: the caller
passes the time (monotonic float seconds) and a seeded ``random.Random``, feeds received
messages to :meth:`Membership.receive`, calls :meth:`Membership.tick` at
:meth:`Membership.next_deadline`, sends the returned ``(address, message)`` pairs (the transport
seals them), and reads :meth:`Membership.drain_events`. What the messages look like on the wire
(and their validation) is :mod:`peerfarm.gossip.swim_wire`; the probe cycle that feeds
suspicions is :mod:`peerfarm.gossip.probe`.

Rules (after SWIM and hashicorp memberlist with Lifeguard):

- Probing: members are pinged round-robin over a shuffled order, one per ``probe_interval``.
  No ack within ``probe_timeout`` -> ``indirect_checks`` random members are asked to ping it
  (``preq``) and nack if they get no answer. No ack by the end of the interval -> SUSPECT.
  Lifeguard local health: a node that misses acks/nacks multiplies its probe interval and
  timeout by its awareness (1..``awareness_max_multiplier``), so a slow node accuses less.
- Suspicion: a suspect is declared DEAD after Lifeguard's timeout, which starts at
  ``suspicion_max_timeout_mult`` times SWIM's ``suspicion_mult*max(1, log10 N)*probe_interval``
  and shrinks towards it with each independent accuser.
- Incarnations: news about a member is ordered by its incarnation; at one incarnation
  SUSPECT beats ALIVE and DEAD/LEFT beat both. A member that hears itself suspected, dead or
  left (or an alive with a newer incarnation than its own) refutes: it bumps its incarnation
  above the accusation and gossips ALIVE.
- Stale views are corrected at once: every message carries its sender's id and incarnation;
  a receiver that holds that sender as suspect/dead/left at the same or a newer incarnation (or
  alive at a newer one) tells it so directly, and it refutes. With a periodic ping to a random
  DEAD member (``reconnect_interval``) this heals partitions.
- Dissemination: membership news and opaque user broadcasts are piggybacked on every outgoing
  datagram (pings, acks, gossip) within the byte budget, each sent ``retransmit_limit`` times
  (see :mod:`peerfarm.gossip.broadcast`); a gossip round sends what is queued to
  ``gossip_fanout`` random members (also to members dead for less than ``gossip_to_dead_time``).
  User broadcasts are relayed by every receiver once (deduplicated by origin and id) and
  delivered as :class:`UserBroadcast` events.
- DEAD and LEFT members stay listed (with state and ``state_since``) for ``dead_node_reclaim``
  seconds, then they are forgotten.

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

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from peerfarm.errors import MessageTooLarge
from peerfarm.gossip.broadcast import encoded_size
from peerfarm.gossip.config import (
    GossipConfig,
    expected_confirmations,
    lifeguard_timeout,
    suspicion_bounds,
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


@dataclass(slots=True)
class _Suspicion:
    started: float
    low: float
    high: float
    expected: int
    accusers: set[str] = field(default_factory=set)

    def deadline(self) -> float:
        confirmations = len(self.accusers) - 1  # the first accuser is not a confirmation
        return self.started + lifeguard_timeout(self.low, self.high, confirmations, self.expected)


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
        self._suspicions: dict[str, _Suspicion] = {}
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
        self._next_gossip_at = now + config.gossip_interval
        self._next_reconnect_at = now + config.reconnect_interval
        self._next_reap_at = math.inf
        self._seeds: list[Address] = []
        self._next_join_at: float | None = None
        self._leaving = False

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
        times = [self._next_reap_at, *self._prober.deadlines(not self._leaving)]
        if not self._leaving and self._config.reconnect_interval > 0:
            times.append(self._next_reconnect_at)
        times.extend(s.deadline() for s in self._suspicions.values())
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
        self._leaving = True
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
        for node_id, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline():
                del self._suspicions[node_id]
                member = self._table.get(node_id)
                if member is not None and member.state is MemberState.SUSPECT:
                    self._on_dead(Dead(node_id, member.incarnation, self._id), now)
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
        if now >= self._next_reap_at:
            self._reap(now)
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
                self._on_alive(alive_of(m), now)
            elif m.state is MemberState.LEFT:
                self._on_left(Left(m.node_id, m.incarnation), now)
            else:
                self._on_suspect(Suspect(m.node_id, m.incarnation, sender), now)

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
            return self._on_alive(update, now)
        if isinstance(update, Suspect):
            return self._on_suspect(update, now)
        if isinstance(update, Dead):
            return self._on_dead(update, now)
        if isinstance(update, Left):
            return self._on_left(update, now)
        self._on_user(update)
        return False

    def _on_alive(self, alive: Alive, now: float) -> bool:
        if alive.node_id == self._id:
            me = self._self
            if self._leaving or alive.incarnation < me.incarnation:
                return False
            if (
                alive.incarnation == me.incarnation
                and alive.address == me.address
                and alive.meta == me.meta
                and alive.protocol == me.protocol
            ):
                return False
            return self._refute(alive.incarnation)
        member = self._table.get(alive.node_id)
        if member is None:
            member = Member(
                alive.node_id,
                alive.address,
                alive.incarnation,
                MemberState.ALIVE,
                dict(alive.meta),
                now,
                alive.protocol,
            )
            self._table[alive.node_id] = member
            self._prober.add(alive.node_id)
            self._events.append(MemberJoined(member.copy()))
            self._news.queue_member(alive.node_id, alive.wire())
            return False
        if alive.incarnation <= member.incarnation:
            return False
        changed = (
            member.address != alive.address
            or member.meta != alive.meta
            or member.protocol != alive.protocol
        )
        member.incarnation = alive.incarnation
        member.address = alive.address
        member.meta = dict(alive.meta)
        member.protocol = alive.protocol
        if member.state is not MemberState.ALIVE:
            if member.state in (MemberState.DEAD, MemberState.LEFT):
                self._prober.add(alive.node_id)
            member.state = MemberState.ALIVE
            member.state_since = now
            self._suspicions.pop(alive.node_id, None)
            self._events.append(MemberAlive(member.copy()))
        elif changed:
            self._events.append(MemberUpdated(member.copy()))
        self._news.queue_member(alive.node_id, alive.wire())
        return False

    def _on_suspect(self, suspect: Suspect, now: float) -> bool:
        if suspect.node_id == self._id:
            if self._leaving or suspect.incarnation < self._self.incarnation:
                return False
            return self._refute(suspect.incarnation)
        member = self._table.get(suspect.node_id)
        if member is None or suspect.incarnation < member.incarnation:
            return False
        if member.state is MemberState.SUSPECT:
            suspicion = self._suspicions.get(member.node_id)
            if suspicion is not None and suspect.accuser not in suspicion.accusers:
                suspicion.accusers.add(suspect.accuser)  # Lifeguard: a confirmation
                self._news.queue_member(member.node_id, suspect.wire())
            return False
        if member.state is not MemberState.ALIVE:
            return False
        member.state = MemberState.SUSPECT
        member.incarnation = suspect.incarnation
        member.state_since = now
        n = len(self._table)
        low, high = suspicion_bounds(self._config, n)
        self._suspicions[member.node_id] = _Suspicion(
            now, low, high, expected_confirmations(self._config, n), {suspect.accuser}
        )
        self._events.append(MemberSuspected(member.copy()))
        self._news.queue_member(member.node_id, suspect.wire())
        return False

    def _on_dead(self, dead: Dead, now: float) -> bool:
        if dead.node_id == self._id:
            if self._leaving or dead.incarnation < self._self.incarnation:
                return False
            return self._refute(dead.incarnation)
        member = self._table.get(dead.node_id)
        if member is None or dead.incarnation < member.incarnation:
            return False
        if member.state in (MemberState.DEAD, MemberState.LEFT):
            return False
        self._set_gone(member, MemberState.DEAD, dead.incarnation, now)
        self._events.append(MemberDied(member.copy()))
        self._news.queue_member(member.node_id, dead.wire())
        return False

    def _on_left(self, left: Left, now: float) -> bool:
        if left.node_id == self._id:
            if self._leaving or left.incarnation < self._self.incarnation:
                return False
            return self._refute(left.incarnation)
        member = self._table.get(left.node_id)
        if member is None or left.incarnation < member.incarnation:
            return False
        if member.state is MemberState.LEFT:
            return False
        self._set_gone(member, MemberState.LEFT, left.incarnation, now)
        self._events.append(MemberLeft(member.copy()))
        self._news.queue_member(member.node_id, left.wire())
        return False

    def _on_user(self, item: UserItem) -> None:
        event = self._news.receive_user(item)
        if event is not None:
            self._events.append(event)

    def relay(self, event: UserBroadcast) -> None:
        """Spread a received broadcast further (the application found it was news). It replaces
        whatever was queued under its key: the application relays only what supersedes that."""
        self._news.relay(event)

    # --- helpers -----------------------------------------------------------------------

    def _set_gone(self, member: Member, state: MemberState, incarnation: int, now: float) -> None:
        member.state = state
        member.incarnation = incarnation
        member.state_since = now
        self._suspicions.pop(member.node_id, None)
        self._next_reap_at = min(self._next_reap_at, now + self._config.dead_node_reclaim)

    def _refute(self, accused: int) -> bool:
        self._self.incarnation = max(self._self.incarnation, accused) + 1
        self._prober.adjust_awareness(1)
        self._news.queue_member(self._id, alive_of(self._self).wire())
        return True

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
        self._on_suspect(Suspect(target.node_id, target.incarnation, self._id), now)

    def _reap(self, now: float) -> None:
        reclaim = self._config.dead_node_reclaim
        self._next_reap_at = math.inf
        for member in list(self._others()):
            if member.state in (MemberState.DEAD, MemberState.LEFT):
                due = member.state_since + reclaim
                if now >= due:
                    del self._table[member.node_id]
                    self._suspicions.pop(member.node_id, None)
                    self._news.forget_member(member.node_id)
                else:
                    self._next_reap_at = min(self._next_reap_at, due)
