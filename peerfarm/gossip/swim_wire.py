"""The SWIM membership wire codec: every message kind, its fields, and their validation.

This module owns what membership messages look like on the wire and nothing else: the
append-only type names, the size limits, the values a message decodes to (the piggybacked
:class:`Alive` / :class:`Suspect` / :class:`Dead` / :class:`Left` / :class:`UserItem`, a whole
datagram as a :class:`Packet`, a member row as :class:`Member`), and the encoders for headers
and the push-pull table. Decoding is strict: every check raises
:class:`peerfarm.errors.DecodeError` with the reason, and nothing else is raised for bad remote
input. The rules that act on decoded messages live in :mod:`peerfarm.gossip.membership`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from peerfarm.errors import DecodeError
from peerfarm.gossip.broadcast import encoded_size
from peerfarm.gossip.config import GossipConfig
from peerfarm.gossip.members import Address, Member, MemberState

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
LIST_OVERHEAD = 5
#: Encoded size of the largest possible gossip header (longest id, largest incarnation).
_GOSSIP_HEADER_MAX = len(
    msgpack.packb({"t": T_GOSSIP, "f": "x" * MAX_NODE_ID_BYTES, "i": _MAX_UINT64})
)


def max_item_size(config: GossipConfig) -> int:
    """Largest piggybacked item (encoded bytes) that any member can relay in one datagram."""
    return config.message_budget - _GOSSIP_HEADER_MAX - LIST_OVERHEAD


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


# --- encoding --------------------------------------------------------------------------------


def alive_of(member: Member) -> Alive:
    """The ALIVE message that announces ``member`` as we hold it."""
    return Alive(member.node_id, member.incarnation, member.address, member.meta, member.protocol)


def header(
    kind: str, sender: str, incarnation: int, seq: int | None = None, target: str | None = None
) -> Message:
    """A datagram's header: type, sender and the sender's incarnation (plus probe fields)."""
    msg: Message = {"t": kind, "f": sender, "i": incarnation}
    if seq is not None:
        msg["s"] = seq
    if target is not None:
        msg["to"] = target
    return msg


def encode_push_pull(sender: str, members: Iterable[Member]) -> Message:
    """A whole member table, compact, for the periodic TCP push-pull."""
    rows = [
        [m.node_id, m.incarnation, int(m.state), list(m.address), m.meta, m.protocol]
        for m in members
    ]
    return {"t": T_PUSH_PULL, "f": sender, "m": rows}
