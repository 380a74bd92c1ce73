"""SWIM dissemination for one node: what news rides on each datagram, and gossip rounds.

This module owns the two retransmit queues (membership news and opaque user broadcasts, each
item sent ``retransmit_limit`` times, see :mod:`peerfarm.gossip.broadcast`), how a datagram is
filled with them within ``message_budget`` bytes, the periodic gossip round to
``gossip_fanout`` random members (also to members dead for less than ``gossip_to_dead_time``),
and the once-only rule for user broadcasts (deduplicated by origin and id, relayed only when
the application says the payload was news).

Pure like :mod:`peerfarm.gossip.membership`, which owns one and shares its member table.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from peerfarm.errors import MessageTooLarge
from peerfarm.gossip.broadcast import BroadcastQueue, encoded_size
from peerfarm.gossip.config import GossipConfig
from peerfarm.gossip.members import Address, Member, MemberState, UserBroadcast
from peerfarm.gossip.swim_wire import (
    LIST_OVERHEAD,
    MAX_KEY_BYTES,
    T_GOSSIP,
    Message,
    Outgoing,
    UserItem,
    header,
    max_item_size,
)


class Dissemination:
    """The outgoing news of one node and the datagrams that carry it."""

    def __init__(
        self, config: GossipConfig, rng: random.Random, table: dict[str, Member], me: Member
    ) -> None:
        self._config = config
        self._rng = rng
        self._table = table
        self._me = me
        self._members_q = BroadcastQueue(config.retransmit_mult, config.broadcast_queue_cap)
        self._user_q = BroadcastQueue(config.retransmit_mult, config.broadcast_queue_cap)
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()

    @property
    def pending(self) -> bool:
        """True while some news still has transmissions left."""
        return bool(len(self._members_q) or len(self._user_q))

    # --- membership news ------------------------------------------------------------

    def queue_member(self, node_id: str, item: Message) -> None:
        """Spread news about ``node_id``; it replaces older news about that member."""
        self._members_q.queue(("m", node_id), item)

    def forget_member(self, node_id: str) -> None:
        """Drop queued news about a member we no longer list."""
        self._members_q.invalidate(("m", node_id))

    # --- user broadcasts ------------------------------------------------------------

    def queue_user(self, key: str, payload: Any) -> None:
        """Queue our own payload under ``key`` (see :meth:`Membership.queue_broadcast`)."""
        if not isinstance(key, str) or not 0 < len(key.encode("utf-8")) <= MAX_KEY_BYTES:
            raise ValueError(f"broadcast key must be 1..{MAX_KEY_BYTES} UTF-8 bytes")
        item = UserItem(self._me.node_id, self._rng.getrandbits(63), key, payload, 0)
        wire = item.wire()
        size = encoded_size(wire)
        if size > max_item_size(self._config):
            raise MessageTooLarge(
                f"broadcast of {size} bytes exceeds {max_item_size(self._config)}"
            )
        self._remember((self._me.node_id, item.broadcast_id))
        self._user_q.queue(("u", key), wire, size)

    def receive_user(self, item: UserItem) -> UserBroadcast | None:
        """A received user item: the event to report, or None if it is ours or seen before."""
        key = (item.origin, item.broadcast_id)
        if item.origin == self._me.node_id or key in self._seen:
            return None
        self._remember(key)
        return UserBroadcast(item.payload, item.origin, item)

    def relay(self, event: UserBroadcast) -> None:
        """Spread a received broadcast further, replacing whatever was queued under its key."""
        item = event.item
        if isinstance(item, UserItem):
            self._user_q.queue(("u", item.key), item.wire(), item.size)

    # --- datagrams ------------------------------------------------------------------

    def header(self, kind: str, seq: int | None = None, target: str | None = None) -> Message:
        return header(kind, self._me.node_id, self._me.incarnation, seq, target)

    def packet(
        self, address: Address, base: Message, extra: Sequence[Any] = (), piggyback: bool = True
    ) -> Outgoing:
        """``base`` plus ``extra`` items and queued broadcasts, within the byte budget."""
        free = self._config.message_budget - encoded_size(base) - LIST_OVERHEAD
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

    def gossip_round(self, now: float) -> list[Outgoing]:
        """Send what is queued to ``gossip_fanout`` random members (nothing if nothing is)."""
        if not self.pending:
            return []
        horizon = now - self._config.gossip_to_dead_time
        targets = [
            m
            for m in self._table.values()
            if m is not self._me
            and (
                m.state in (MemberState.ALIVE, MemberState.SUSPECT)
                or (m.state is MemberState.DEAD and m.state_since > horizon)
            )
        ]
        chosen = self._rng.sample(targets, min(self._config.gossip_fanout, len(targets)))
        out = []
        for member in chosen:
            address, msg = self.packet(member.address, self.header(T_GOSSIP))
            if "b" not in msg:
                break
            out.append((address, msg))
        return out

    def _remember(self, key: tuple[str, int]) -> None:
        self._seen[key] = None
        while len(self._seen) > self._config.seen_broadcast_cap:
            self._seen.popitem(last=False)
