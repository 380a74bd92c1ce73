"""SWIM membership with Lifeguard, as a pure state machine: who is in the farm, and alive.

This module owns the member table and every rule that changes it. It does no I/O: the caller
passes the time (monotonic float seconds) and a seeded ``random.Random``, feeds received
messages to :meth:`Membership.receive`, calls :meth:`Membership.tick` at
:meth:`Membership.next_deadline`, sends the returned ``(address, message)`` pairs (the transport
seals them), and reads :meth:`Membership.drain_events`.

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

import enum
import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from peerfarm.errors import DecodeError, MessageTooLarge
from peerfarm.gossip.broadcast import BroadcastQueue, encoded_size
from peerfarm.gossip.config import (
    GossipConfig,
    awareness_multiplier,
    expected_confirmations,
    lifeguard_timeout,
    suspicion_bounds,
)

Address = tuple[str, int]
Message = dict[str, Any]
Outgoing = tuple[Address, Message]

# Wire type names ("t"). APPEND-ONLY: never rename or reuse one; peers of other versions
# must keep understanding the ones they know.
# Datagrams:
T_PING = "ping"  # direct probe: {"s": seq, "to": target id}
T_ACK = "ack"  # probe answered: {"s": seq}
T_NACK = "nack"  # indirect probe got no answer (Lifeguard): {"s": seq}
T_PING_REQ = "preq"  # ping "to" at "a" for me: {"s", "to", "a": [host, port], "n": want nack}
T_GOSSIP = "gossip"  # carries piggybacked items only
T_JOIN = "join"  # "b" holds the joiner's alive; the receiver answers with its view
# Piggybacked items (in "b"):
T_ALIVE = "alive"  # {"n": id, "i": incarnation, "a": [host, port], "m": meta, "p": protocol}
T_SUSPECT = "suspect"  # {"n": id, "i": incarnation, "by": accuser id}
T_DEAD = "dead"  # {"n": id, "i": incarnation, "by": accuser id}
T_LEFT = "left"  # {"n": id, "i": incarnation}
T_USER = "user"  # {"o": origin id, "id": broadcast id, "k": key, "d": opaque payload}
# TCP push-pull state:
T_PUSH_PULL = "pp"  # {"f": sender id, "m": [[id, inc, state, [host, port], meta, protocol]]}

MAX_NODE_ID_BYTES = 128
MAX_HOST_BYTES = 255
MAX_KEY_BYTES = 128
_MAX_UINT64 = 2**64 - 1
#: Bytes msgpack adds for the "b" key and an array header (fixmap keeps one header byte).
_LIST_OVERHEAD = 5
#: Encoded size of the largest possible gossip header (longest id, largest incarnation).
_GOSSIP_HEADER_MAX = len(
    msgpack.packb({"t": T_GOSSIP, "f": "x" * MAX_NODE_ID_BYTES, "i": _MAX_UINT64})
)


def max_item_size(config: GossipConfig) -> int:
    """Largest piggybacked item (encoded bytes) that any member can relay in one datagram."""
    return config.message_budget - _GOSSIP_HEADER_MAX - _LIST_OVERHEAD


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


# --- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alive:
    node_id: str
    incarnation: int
    address: Address
    meta: dict[str, Any]
    protocol: int

    def wire(self) -> Message:
        return {
            "t": T_ALIVE,
            "n": self.node_id,
            "i": self.incarnation,
            "a": list(self.address),
            "m": self.meta,
            "p": self.protocol,
        }


@dataclass(frozen=True, slots=True)
class Suspect:
    node_id: str
    incarnation: int
    accuser: str

    def wire(self) -> Message:
        return {"t": T_SUSPECT, "n": self.node_id, "i": self.incarnation, "by": self.accuser}


@dataclass(frozen=True, slots=True)
class Dead:
    node_id: str
    incarnation: int
    accuser: str

    def wire(self) -> Message:
        return {"t": T_DEAD, "n": self.node_id, "i": self.incarnation, "by": self.accuser}


@dataclass(frozen=True, slots=True)
class Left:
    node_id: str
    incarnation: int

    def wire(self) -> Message:
        return {"t": T_LEFT, "n": self.node_id, "i": self.incarnation}


@dataclass(frozen=True, slots=True)
class UserItem:
    origin: str
    broadcast_id: int
    key: str
    payload: Any
    size: int  # encoded size of wire()

    def wire(self) -> Message:
        return {
            "t": T_USER,
            "o": self.origin,
            "id": self.broadcast_id,
            "k": self.key,
            "d": self.payload,
        }


Update = Alive | Suspect | Dead | Left | UserItem


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded datagram: its type, sender header, type-specific fields and piggyback."""

    kind: str
    sender: str
    incarnation: int
    updates: tuple[Update, ...]
    seq: int = 0
    target: str = ""
    target_address: Address = ("", 0)
    want_nack: bool = False


# --- decoding (every check raises DecodeError with the reason) ------------------------------


def _get(msg: dict[Any, Any], key: str, what: str) -> Any:
    if key not in msg:
        raise DecodeError(f"{what}: missing field {key!r}")
    return msg[key]


def _text(value: Any, what: str, max_bytes: int) -> str:
    if not isinstance(value, str) or not value:
        raise DecodeError(f"{what}: expected a non-empty string, got {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise DecodeError(f"{what}: string is not valid UTF-8") from None
    if size > max_bytes:
        raise DecodeError(f"{what}: string of {size} bytes exceeds {max_bytes}")
    return value


def _uint(value: Any, what: str, high: int = _MAX_UINT64) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise DecodeError(f"{what}: expected an integer in 0..{high}, got {value!r:.40}")
    return value


def _address(value: Any, what: str) -> Address:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise DecodeError(f"{what}: expected [host, port]")
    return _text(value[0], f"{what} host", MAX_HOST_BYTES), _uint(value[1], f"{what} port", 65535)


def _meta(value: Any, what: str, limit: int) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise DecodeError(f"{what}: metadata must be a map with string keys")
    try:
        size = encoded_size(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DecodeError(f"{what}: metadata does not encode: {exc}") from None
    if size > limit:
        raise DecodeError(f"{what}: metadata of {size} bytes exceeds {limit}")
    return value


def _node(msg: dict[Any, Any], key: str, what: str) -> str:
    return _text(_get(msg, key, what), f"{what} {key!r}", MAX_NODE_ID_BYTES)


def _decode_update(raw: Any, config: GossipConfig) -> Update:
    if not isinstance(raw, dict):
        raise DecodeError("piggybacked item must be a map")
    kind = raw.get("t")
    what = f"{kind!r:.20} item"
    if kind == T_USER:
        try:
            size = encoded_size(raw)
        except (TypeError, ValueError, OverflowError) as exc:
            raise DecodeError(f"user item does not encode: {exc}") from None
        if size > max_item_size(config):
            raise DecodeError(f"user item of {size} bytes exceeds {max_item_size(config)}")
        return UserItem(
            _node(raw, "o", what),
            _uint(_get(raw, "id", what), f"{what} id"),
            _text(_get(raw, "k", what), f"{what} key", MAX_KEY_BYTES),
            _get(raw, "d", what),
            size,
        )
    if kind not in (T_ALIVE, T_SUSPECT, T_DEAD, T_LEFT):
        raise DecodeError(f"unknown piggybacked item type {kind!r:.40}")
    node_id = _node(raw, "n", what)
    inc = _uint(_get(raw, "i", what), f"{what} incarnation")
    if kind == T_ALIVE:
        return Alive(
            node_id,
            inc,
            _address(_get(raw, "a", what), f"{what} address"),
            _meta(_get(raw, "m", what), what, config.meta_limit),
            _uint(_get(raw, "p", what), f"{what} protocol", 65535),
        )
    if kind == T_SUSPECT:
        return Suspect(node_id, inc, _node(raw, "by", what))
    if kind == T_DEAD:
        return Dead(node_id, inc, _node(raw, "by", what))
    return Left(node_id, inc)


_DATAGRAM_TYPES = frozenset({T_PING, T_ACK, T_NACK, T_PING_REQ, T_GOSSIP, T_JOIN})


def decode_packet(message: Any, config: GossipConfig) -> Packet:
    """Validate one datagram's message into a :class:`Packet`; DecodeError says what is wrong."""
    if not isinstance(message, dict):
        raise DecodeError(f"gossip message must be a map, got {type(message).__name__}")
    kind = message.get("t")
    if not isinstance(kind, str) or kind not in _DATAGRAM_TYPES:
        raise DecodeError(f"unknown gossip message type {kind!r:.40}")
    sender = _node(message, "f", kind)
    inc = _uint(_get(message, "i", kind), f"{kind} incarnation")
    raw_updates = message.get("b", [])
    if not isinstance(raw_updates, list | tuple):
        raise DecodeError(f"{kind}: piggyback 'b' must be a list")
    updates = tuple(_decode_update(raw, config) for raw in raw_updates)
    if kind in (T_GOSSIP, T_JOIN):
        return Packet(kind, sender, inc, updates)
    seq = _uint(_get(message, "s", kind), f"{kind} seq")
    if kind in (T_ACK, T_NACK):
        return Packet(kind, sender, inc, updates, seq)
    target = _node(message, "to", kind)
    if kind == T_PING:
        return Packet(kind, sender, inc, updates, seq, target)
    want_nack = _get(message, "n", kind)
    if not isinstance(want_nack, bool):
        raise DecodeError(f"{kind}: 'n' must be a boolean")
    return Packet(
        kind,
        sender,
        inc,
        updates,
        seq,
        target,
        _address(_get(message, "a", kind), f"{kind} address"),
        want_nack,
    )


def decode_push_pull(state: Any, config: GossipConfig) -> tuple[str, list[Member]]:
    """Validate a push-pull state into (sender id, members); DecodeError says what is wrong."""
    if not isinstance(state, dict) or state.get("t") != T_PUSH_PULL:
        raise DecodeError("push-pull state must be a map with t='pp'")
    sender = _node(state, "f", "push-pull")
    rows = _get(state, "m", "push-pull")
    if not isinstance(rows, list | tuple):
        raise DecodeError("push-pull 'm' must be a list")
    members = []
    for row in rows:
        if not isinstance(row, list | tuple) or len(row) != 6:
            raise DecodeError("push-pull member must be [id, inc, state, addr, meta, protocol]")
        node_id = _text(row[0], "push-pull member id", MAX_NODE_ID_BYTES)
        raw_state = _uint(row[2], "push-pull member state", 255)
        if raw_state not in MemberState._value2member_map_:
            raise DecodeError(f"push-pull member state {raw_state} is unknown")
        members.append(
            Member(
                node_id,
                _address(row[3], "push-pull member address"),
                _uint(row[1], "push-pull member incarnation"),
                MemberState(raw_state),
                _meta(row[4], "push-pull member", config.meta_limit),
                0.0,
                _uint(row[5], "push-pull member protocol", 65535),
            )
        )
    return sender, members


# --- the state machine ---------------------------------------------------------------------


@dataclass(slots=True)
class _Probe:
    target: str
    seq: int
    indirect_at: float
    deadline: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    origin: Address
    origin_seq: int
    want_nack: bool
    deadline: float


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


def _alive_of(member: Member) -> Alive:
    return Alive(member.node_id, member.incarnation, member.address, member.meta, member.protocol)


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
        self._members_q = BroadcastQueue(config.retransmit_mult, config.broadcast_queue_cap)
        self._user_q = BroadcastQueue(config.retransmit_mult, config.broadcast_queue_cap)
        self._events: list[MembershipEvent] = []
        self._seq = 0
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, _Suspicion] = {}
        self._awareness = 0
        self._next_probe_at = now + rng.uniform(0.0, config.probe_interval)
        self._next_gossip_at = now + config.gossip_interval
        self._next_reconnect_at = now + config.reconnect_interval
        self._next_reap_at = math.inf
        self._seeds: list[Address] = []
        self._next_join_at: float | None = None
        self._leaving = False
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()

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
        return self._awareness

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
        times = [self._next_reap_at]
        if not self._leaving:
            times.append(self._next_probe_at)
            if self._config.reconnect_interval > 0:
                times.append(self._next_reconnect_at)
        if self._probe is not None:
            times.append(self._probe.deadline)
            if not self._probe.indirect_sent:
                times.append(self._probe.indirect_at)
        times.extend(r.deadline for r in self._relays.values())
        times.extend(s.deadline() for s in self._suspicions.values())
        if len(self._members_q) or len(self._user_q):
            times.append(self._next_gossip_at)
        if self._next_join_at is not None:
            times.append(self._next_join_at)
        return min(times)

    def push_pull_state(self) -> Message:
        """Our whole table, compact, for the periodic TCP push-pull."""
        rows = [
            [m.node_id, m.incarnation, int(m.state), list(m.address), m.meta, m.protocol]
            for m in self._table.values()
        ]
        return {"t": T_PUSH_PULL, "f": self._id, "m": rows}

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
        self._probe = None
        self._next_join_at = None
        self._self.state = MemberState.LEFT
        self._self.state_since = now
        left = Left(self._id, self._self.incarnation).wire()
        self._members_q.queue(("m", self._id), left)
        return [
            self._packet(m.address, self._header(T_GOSSIP), [left], piggyback=False)
            for m in self._table.values()
            if m is not self._self and m.state in (MemberState.ALIVE, MemberState.SUSPECT)
        ]

    def update_meta(self, meta: dict[str, Any], now: float) -> None:
        """Change our metadata: bump our incarnation and gossip the new ALIVE."""
        self._check_meta(meta)
        self._self.meta = dict(meta)
        self._self.incarnation += 1
        self._members_q.queue(("m", self._id), _alive_of(self._self).wire())

    def queue_broadcast(self, key: str, payload: Any) -> None:
        """Spread an opaque payload to every member (delivered there as UserBroadcast).

        A newer payload under the same ``key`` replaces an older one not yet sent. Raises
        MessageTooLarge if it cannot fit one datagram, TypeError if it is not msgpack-able.
        """
        if not isinstance(key, str) or not 0 < len(key.encode("utf-8")) <= MAX_KEY_BYTES:
            raise ValueError(f"broadcast key must be 1..{MAX_KEY_BYTES} UTF-8 bytes")
        item = UserItem(self._id, self._rng.getrandbits(63), key, payload, 0)
        wire = item.wire()
        size = encoded_size(wire)
        if size > max_item_size(self._config):
            raise MessageTooLarge(
                f"broadcast of {size} bytes exceeds {max_item_size(self._config)}"
            )
        self._remember((self._id, item.broadcast_id))
        self._user_q.queue(("u", key), wire, size)

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
        out.extend(self._tick_probe(now))
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                if relay.want_nack:
                    out.append(self._packet(relay.origin, self._header(T_NACK, relay.origin_seq)))
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
                self._seq += 1
                out.append(
                    self._packet(target.address, self._header(T_PING, self._seq, target.node_id))
                )
        if now >= self._next_gossip_at:
            self._next_gossip_at = now + self._config.gossip_interval
            out.extend(self._gossip_round(now))
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
            alive = _alive_of(self._self).wire()
            out.append(self._packet(reply_to, self._header(T_GOSSIP), [alive]))
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
                self._on_alive(_alive_of(m), now)
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
            return [self._packet(sender, self._header(T_ACK, packet.seq))]
        if kind == T_ACK:
            relay = self._relays.pop(packet.seq, None)
            if relay is not None:
                return [self._packet(relay.origin, self._header(T_ACK, relay.origin_seq))]
            if self._probe is not None and self._probe.seq == packet.seq:
                self._probe = None
                self._awareness_delta(-1)
            return []
        if kind == T_NACK:
            if self._probe is not None and self._probe.seq == packet.seq:
                self._probe.nacks += 1
            return []
        if kind == T_PING_REQ:
            self._seq += 1
            self._relays[self._seq] = _Relay(
                sender, packet.seq, packet.want_nack, now + self._config.probe_timeout
            )
            ping = self._header(T_PING, self._seq, packet.target)
            return [self._packet(packet.target_address, ping)]
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
            item = _alive_of(member)
        elif member.incarnation < packet.incarnation:
            return None
        elif member.state is MemberState.SUSPECT:
            item = Suspect(member.node_id, member.incarnation, self._id)
        elif member.state is MemberState.DEAD:
            item = Dead(member.node_id, member.incarnation, self._id)
        else:
            item = Left(member.node_id, member.incarnation)
        return self._packet(sender, self._header(T_GOSSIP), [item.wire()])

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
            self._add_to_probe_order(alive.node_id)
            self._events.append(MemberJoined(member.copy()))
            self._members_q.queue(("m", alive.node_id), alive.wire())
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
                self._add_to_probe_order(alive.node_id)
            member.state = MemberState.ALIVE
            member.state_since = now
            self._suspicions.pop(alive.node_id, None)
            self._events.append(MemberAlive(member.copy()))
        elif changed:
            self._events.append(MemberUpdated(member.copy()))
        self._members_q.queue(("m", alive.node_id), alive.wire())
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
                self._members_q.queue(("m", member.node_id), suspect.wire())
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
        self._members_q.queue(("m", member.node_id), suspect.wire())
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
        self._members_q.queue(("m", member.node_id), dead.wire())
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
        self._members_q.queue(("m", member.node_id), left.wire())
        return False

    def _on_user(self, item: UserItem) -> None:
        key = (item.origin, item.broadcast_id)
        if item.origin == self._id or key in self._seen:
            return
        self._remember(key)
        self._events.append(UserBroadcast(item.payload, item.origin, item))

    def relay(self, event: UserBroadcast) -> None:
        """Spread a received broadcast further (the application found it was news). It replaces
        whatever was queued under its key: the application relays only what supersedes that."""
        item = event.item
        if isinstance(item, UserItem):
            self._user_q.queue(("u", item.key), item.wire(), item.size)

    # --- helpers -----------------------------------------------------------------------

    def _set_gone(self, member: Member, state: MemberState, incarnation: int, now: float) -> None:
        member.state = state
        member.incarnation = incarnation
        member.state_since = now
        self._suspicions.pop(member.node_id, None)
        self._next_reap_at = min(self._next_reap_at, now + self._config.dead_node_reclaim)

    def _refute(self, accused: int) -> bool:
        self._self.incarnation = max(self._self.incarnation, accused) + 1
        self._awareness_delta(1)
        self._members_q.queue(("m", self._id), _alive_of(self._self).wire())
        return True

    def _remember(self, key: tuple[str, int]) -> None:
        self._seen[key] = None
        while len(self._seen) > self._config.seen_broadcast_cap:
            self._seen.popitem(last=False)

    def _check_meta(self, meta: dict[str, Any]) -> None:
        size = encoded_size(meta)
        if size > self._config.meta_limit:
            raise MessageTooLarge(f"metadata of {size} bytes exceeds {self._config.meta_limit}")

    def _awareness_delta(self, delta: int) -> None:
        top = self._config.awareness_max_multiplier - 1
        self._awareness = min(top, max(0, self._awareness + delta))

    def _others(self) -> Iterable[Member]:
        return (m for m in self._table.values() if m is not self._self)

    def _header(self, kind: str, seq: int | None = None, target: str | None = None) -> Message:
        msg: Message = {"t": kind, "f": self._id, "i": self._self.incarnation}
        if seq is not None:
            msg["s"] = seq
        if target is not None:
            msg["to"] = target
        return msg

    def _packet(
        self, address: Address, base: Message, extra: Sequence[Any] = (), piggyback: bool = True
    ) -> Outgoing:
        """``base`` plus ``extra`` items and queued broadcasts, within the byte budget."""
        free = self._config.message_budget - encoded_size(base) - _LIST_OVERHEAD
        items: list[Any] = []
        for item in extra:
            size = encoded_size(item)
            if size <= free:
                items.append(item)
                free -= size
        if piggyback:
            n = len(self._table)
            for queue in (self._members_q, self._user_q):
                for payload, size in queue.select(0, free, n):
                    items.append(payload)
                    free -= size
        if items:
            base["b"] = items
        return address, base

    def _join_packets(self) -> list[Outgoing]:
        alive = _alive_of(self._self).wire()
        return [self._packet(seed, self._header(T_JOIN), [alive]) for seed in self._seeds]

    def _join_answer(self, sender: Address, joiner: str) -> Outgoing:
        others = [m for m in self._others() if m.state is MemberState.ALIVE and m.node_id != joiner]
        self._rng.shuffle(others)
        extra = [_alive_of(self._self).wire()] + [_alive_of(m).wire() for m in others[:16]]
        return self._packet(sender, self._header(T_GOSSIP), extra, piggyback=False)

    def _gossip_round(self, now: float) -> list[Outgoing]:
        if not (len(self._members_q) or len(self._user_q)):
            return []
        horizon = now - self._config.gossip_to_dead_time
        targets = [
            m
            for m in self._others()
            if m.state in (MemberState.ALIVE, MemberState.SUSPECT)
            or (m.state is MemberState.DEAD and m.state_since > horizon)
        ]
        chosen = self._rng.sample(targets, min(self._config.gossip_fanout, len(targets)))
        out = []
        for member in chosen:
            address, msg = self._packet(member.address, self._header(T_GOSSIP))
            if "b" not in msg:
                break
            out.append((address, msg))
        return out

    def _add_to_probe_order(self, node_id: str) -> None:
        if node_id not in self._probe_order:
            position = self._rng.randint(self._probe_index, len(self._probe_order))
            self._probe_order.insert(position, node_id)

    def _next_probe_target(self) -> Member | None:
        for _ in range(2 * len(self._table) + 1):
            if self._probe_index >= len(self._probe_order):
                self._probe_order = [
                    m.node_id
                    for m in self._others()
                    if m.state in (MemberState.ALIVE, MemberState.SUSPECT)
                ]
                self._rng.shuffle(self._probe_order)
                self._probe_index = 0
                if not self._probe_order:
                    return None
            member = self._table.get(self._probe_order[self._probe_index])
            self._probe_index += 1
            if member is not None and member.state in (MemberState.ALIVE, MemberState.SUSPECT):
                return member
        return None

    def _tick_probe(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        probe = self._probe
        if probe is not None and not probe.indirect_sent and now >= probe.indirect_at:
            probe.indirect_sent = True
            target = self._table.get(probe.target)
            helpers = [
                m
                for m in self._others()
                if m.state is MemberState.ALIVE and m.node_id != probe.target
            ]
            helpers = self._rng.sample(helpers, min(self._config.indirect_checks, len(helpers)))
            probe.expected_nacks = len(helpers)
            if target is not None:
                for helper in helpers:
                    req = self._header(T_PING_REQ, probe.seq, probe.target)
                    req["a"] = list(target.address)
                    req["n"] = True
                    out.append(self._packet(helper.address, req))
        if probe is not None and now >= probe.deadline:
            self._probe = None
            missed = probe.expected_nacks - probe.nacks if probe.expected_nacks else 1
            self._awareness_delta(max(0, missed))
            target = self._table.get(probe.target)
            if target is not None and target.state in (MemberState.ALIVE, MemberState.SUSPECT):
                self._on_suspect(Suspect(target.node_id, target.incarnation, self._id), now)
        if not self._leaving and now >= self._next_probe_at:
            scale = awareness_multiplier(self._awareness, self._config)
            self._next_probe_at = now + self._config.probe_interval * scale
            target = self._next_probe_target()
            if target is not None:
                self._seq += 1
                self._probe = _Probe(
                    target.node_id,
                    self._seq,
                    now + self._config.probe_timeout * scale,
                    now + self._config.probe_interval * scale,
                )
                ping = self._header(T_PING, self._seq, target.node_id)
                out.append(self._packet(target.address, ping))
        return out

    def _reap(self, now: float) -> None:
        reclaim = self._config.dead_node_reclaim
        self._next_reap_at = math.inf
        for member in list(self._others()):
            if member.state in (MemberState.DEAD, MemberState.LEFT):
                due = member.state_since + reclaim
                if now >= due:
                    del self._table[member.node_id]
                    self._suspicions.pop(member.node_id, None)
                    self._members_q.invalidate(("m", member.node_id))
                else:
                    self._next_reap_at = min(self._next_reap_at, due)
