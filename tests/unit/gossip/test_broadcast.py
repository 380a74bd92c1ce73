"""The transmit-limited broadcast queue: byte budget, retransmit limit, newest per key."""

from __future__ import annotations

from collections import Counter

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.gossip.broadcast import BroadcastQueue, encoded_size
from peerfarm.gossip.config import retransmit_limit


def test_size_is_the_msgpack_length() -> None:
    payload = {"t": "user", "d": b"x" * 300}
    q = BroadcastQueue(4)
    q.queue("k", payload)
    [(got, size)] = q.select(0, 1000, 1)
    assert got == payload and size == len(msgpack.packb(payload)) == encoded_size(payload)


def test_newer_item_with_same_key_replaces_older() -> None:
    q = BroadcastQueue(4)
    q.queue("a", "old")
    q.queue("b", "other")
    q.queue("a", "new")
    assert len(q) == 2
    assert sorted(q.get_broadcasts(0, 1000, 1)) == ["new", "other"]


def test_items_are_dropped_after_the_retransmit_limit() -> None:
    q = BroadcastQueue(2)
    q.queue("a", "x")
    limit = retransmit_limit(2, 50)  # 4
    sent = [q.get_broadcasts(0, 100, 50) for _ in range(limit + 2)]
    assert sent == [["x"]] * limit + [[], []]
    assert len(q) == 0


def test_least_transmitted_first_then_newest() -> None:
    q = BroadcastQueue(4)
    q.queue("a", "aaaa")
    assert q.get_broadcasts(0, 5, 10) == ["aaaa"]  # a has one transmit now
    q.queue("b", "bbbb")
    q.queue("c", "cccc")
    one = encoded_size("aaaa")
    assert q.get_broadcasts(0, one, 10) == ["cccc"]  # untransmitted, newest
    assert q.get_broadcasts(0, one, 10) == ["bbbb"]
    assert q.get_broadcasts(0, one, 10) == ["cccc"]  # all at 1: newest first
    assert q.transmits("a") == 1 and q.transmits("c") == 2


def test_budget_and_overhead_are_respected_and_small_items_fill_gaps() -> None:
    q = BroadcastQueue(4)
    q.queue("big", b"B" * 100)
    q.queue("small", b"s")
    small = encoded_size(b"s")
    assert q.get_broadcasts(0, 50, 3) == [b"s"]  # big skipped, small fits
    assert q.get_broadcasts(10, small + 9, 3) == []  # overhead counts
    assert q.get_broadcasts(10, small + 10, 3) == [b"s"]


def test_queue_is_bounded_dropping_oldest() -> None:
    q = BroadcastQueue(4, max_items=3)
    for i in range(5):
        q.queue(i, i)
    assert len(q) == 3
    assert sorted(q.get_broadcasts(0, 100, 1)) == [2, 3, 4]


def test_invalidate_and_bad_arguments() -> None:
    q = BroadcastQueue(4)
    q.queue("a", 1)
    q.invalidate("a")
    q.invalidate("missing")
    assert q.get_broadcasts(0, 100, 1) == []
    with pytest.raises(ValueError):
        BroadcastQueue(0)
    with pytest.raises(TypeError):
        q.queue("bad", object())


Op = tuple[str, str, int] | tuple[str, int, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("q"), st.sampled_from("abcdef"), st.integers(0, 200)),
        st.tuples(st.just("g"), st.integers(0, 400), st.integers(0, 8)),
    ),
    max_size=80,
)


@given(ops, st.integers(1, 5), st.integers(1, 200))
def test_property_budget_limit_and_newest_wins(script: list[Op], mult: int, n: int) -> None:
    q = BroadcastQueue(mult, max_items=4)
    version: Counter[object] = Counter()
    sends: Counter[tuple[object, int]] = Counter()
    for op, a, b in script:
        if op == "q":
            version[a] += 1
            q.queue(a, [a, version[a], b"x" * b])
            continue
        assert isinstance(a, int)
        limit, overhead = a, b
        picked = q.select(overhead, limit, n)
        assert sum(size + overhead for _, size in picked) <= limit
        keys = [p[0] for p, _ in picked]
        assert len(keys) == len(set(keys))
        for payload, size in picked:
            key, ver, _ = payload
            assert size == encoded_size(payload)
            assert ver == version[key], "an older version of a key was sent after a newer one"
            sends[key, ver] += 1
    assert all(count <= retransmit_limit(mult, n) for count in sends.values())
