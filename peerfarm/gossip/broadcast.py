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

import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import msgpack

from peerfarm.gossip.config import retransmit_limit

#: Items a select may pass over because they do not fit the budget before it gives up looking
#: for smaller ones (a bound on the work per datagram, whatever the size of the queue).
MAX_SKIPPED = 64


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
    """Queued broadcasts, each sent to a bounded number of peers, newest per key.

    Items wait in one heap per transmit count, newest first, so a select costs what it sends
    (plus stale entries left by replaced items, dropped as they surface), not the queue's size.
    """

    def __init__(self, retransmit_mult: int, max_items: int = 4096) -> None:
        if retransmit_mult < 1 or max_items < 1:
            raise ValueError("retransmit_mult and max_items must be >= 1")
        self._mult = retransmit_mult
        self._max_items = max_items
        self._items: dict[Hashable, _Item] = {}  # insertion-ordered: oldest first
        self._heaps: list[list[tuple[int, Hashable]]] = [[]]  # by transmits: (-order, key)
        self._entries = 0  # heap entries, stale ones included
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
        item = self._items[key] = _Item(key, payload, size, next(self._counter))
        self._push(item)
        while len(self._items) > self._max_items:
            del self._items[next(iter(self._items))]

    def invalidate(self, key: Hashable) -> None:
        """Drop the item queued under ``key``, if any."""
        self._items.pop(key, None)

    def _push(self, item: _Item) -> None:
        while len(self._heaps) <= item.transmits:
            self._heaps.append([])
        heapq.heappush(self._heaps[item.transmits], (-item.order, item.key))
        self._entries += 1
        if self._entries > 4 * len(self._items) + 64:
            self._compact()

    def _compact(self) -> None:
        """Rebuild the heaps from the live items (drops the stale entries)."""
        heaps: list[list[tuple[int, Hashable]]] = [[] for _ in self._heaps]
        for item in self._items.values():
            while len(heaps) <= item.transmits:
                heaps.append([])
            heaps[item.transmits].append((-item.order, item.key))
        for heap in heaps:
            heapq.heapify(heap)
        self._heaps = heaps
        self._entries = len(self._items)

    def _live(self, entry: tuple[int, Hashable], transmits: int) -> _Item | None:
        item = self._items.get(entry[1])
        if item is None or item.order != -entry[0] or item.transmits != transmits:
            return None
        return item

    def select(self, overhead_per_item: int, limit: int, n_members: int) -> list[tuple[Any, int]]:
        """Pick ``(payload, size)`` pairs whose ``size + overhead_per_item`` sum to <= ``limit``.

        Least-transmitted first, newest first among equals; items that do not fit are skipped
        in favour of smaller ones (up to :data:`MAX_SKIPPED` of them). Each picked item's
        transmit count goes up by one, and an item that reached ``retransmit_limit(mult,
        n_members)`` transmits is dropped (also one found there already, the cluster having
        shrunk).
        """
        if not self._items or limit <= 0:
            return []
        max_transmits = retransmit_limit(self._mult, n_members)
        picked: list[tuple[Any, int]] = []
        moved: list[_Item] = []
        skipped: list[tuple[int, tuple[int, Hashable]]] = []
        free = limit
        for transmits, heap in enumerate(self._heaps):
            while heap and free > overhead_per_item and len(skipped) < MAX_SKIPPED:
                entry = heapq.heappop(heap)
                self._entries -= 1
                item = self._live(entry, transmits)
                if item is None:
                    continue  # replaced, invalidated or evicted since it was queued
                if item.transmits >= max_transmits:
                    del self._items[item.key]
                    continue
                cost = item.size + overhead_per_item
                if cost > free:
                    skipped.append((transmits, entry))
                    continue
                free -= cost
                picked.append((item.payload, item.size))
                item.transmits += 1
                if item.transmits >= max_transmits:
                    del self._items[item.key]
                else:
                    moved.append(item)
        for transmits, entry in skipped:
            heapq.heappush(self._heaps[transmits], entry)
            self._entries += 1
        for item in moved:
            self._push(item)
        return picked

    def get_broadcasts(self, overhead_per_item: int, limit: int, n_members: int) -> list[Any]:
        """Payloads to piggyback on one datagram (see :meth:`select`)."""
        return [payload for payload, _ in self.select(overhead_per_item, limit, n_members)]

    def transmits(self, key: Hashable) -> int | None:
        """How many times the item under ``key`` was sent, or None if it is not queued."""
        item = self._items.get(key)
        return None if item is None else item.transmits
