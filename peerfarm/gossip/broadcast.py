"""The transmit-limited broadcast queue (memberlist's ``TransmitLimitedQueue``), pure.

This module owns which queued news rides on the next datagram. Rules:

- an item is ``(key, payload, encoded size)``; the size is the payload's msgpack length,
  computed once when it is queued;
- a newer item with the same key replaces the older one (newer news about the same subject
  makes the old one worthless);
- :meth:`BroadcastQueue.select` fills a byte budget preferring the least-transmitted items
  (newest first among equals), counts one transmit per item per call, and drops an item once
  it has been sent ``retransmit_limit(mult, n)`` times;
- the queue holds at most ``max_items``; beyond that the oldest items are dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import msgpack

from peerfarm.gossip.config import retransmit_limit


@dataclass(slots=True)
class _Item:
    key: Hashable
    payload: Any
    size: int
    order: int  # insertion counter: higher is newer
    transmits: int = 0


def encoded_size(payload: Any) -> int:
    """Bytes of ``payload`` encoded with msgpack (TypeError if it is not msgpack-able)."""
    return len(msgpack.packb(payload))


class BroadcastQueue:
    """Queued broadcasts, each sent to a bounded number of peers, newest per key."""

    def __init__(self, retransmit_mult: int, max_items: int = 4096) -> None:
        if retransmit_mult < 1 or max_items < 1:
            raise ValueError("retransmit_mult and max_items must be >= 1")
        self._mult = retransmit_mult
        self._max_items = max_items
        self._items: dict[Hashable, _Item] = {}  # insertion-ordered: oldest first
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: Hashable, payload: Any, size: int | None = None) -> None:
        """Queue ``payload`` under ``key``, replacing any older item with that key.

        ``size`` may pass an already known msgpack length; otherwise it is computed here.
        """
        if size is None:
            size = encoded_size(payload)
        self._items.pop(key, None)
        self._items[key] = _Item(key, payload, size, next(self._counter))
        while len(self._items) > self._max_items:
            del self._items[next(iter(self._items))]

    def invalidate(self, key: Hashable) -> None:
        """Drop the item queued under ``key``, if any."""
        self._items.pop(key, None)

    def select(self, overhead_per_item: int, limit: int, n_members: int) -> list[tuple[Any, int]]:
        """Pick ``(payload, size)`` pairs whose ``size + overhead_per_item`` sum to <= ``limit``.

        Least-transmitted first, newest first among equals; items that do not fit are skipped
        in favour of smaller ones. Each picked item's transmit count goes up by one, and an item
        that reached ``retransmit_limit(mult, n_members)`` transmits is dropped.
        """
        if not self._items or limit <= 0:
            return []
        max_transmits = retransmit_limit(self._mult, n_members)
        spent = [key for key, item in self._items.items() if item.transmits >= max_transmits]
        for key in spent:
            del self._items[key]
        candidates = sorted(self._items.values(), key=lambda it: (it.transmits, -it.order))
        smallest = min((it.size for it in candidates), default=0) + overhead_per_item
        picked: list[tuple[Any, int]] = []
        free = limit
        for item in candidates:
            if free < smallest:
                break
            cost = item.size + overhead_per_item
            if cost > free:
                continue
            free -= cost
            picked.append((item.payload, item.size))
            item.transmits += 1
            if item.transmits >= max_transmits:
                del self._items[item.key]
        return picked

    def get_broadcasts(self, overhead_per_item: int, limit: int, n_members: int) -> list[Any]:
        """Payloads to piggyback on one datagram (see :meth:`select`)."""
        return [payload for payload, _ in self.select(overhead_per_item, limit, n_members)]

    def transmits(self, key: Hashable) -> int | None:
        """How many times the item under ``key`` was sent, or None if it is not queued."""
        item = self._items.get(key)
        return None if item is None else item.transmits
