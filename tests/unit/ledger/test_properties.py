"""Properties: any delivery order, with duplicates and losses repaired by digest exchange,
leaves every replica identical; merge is commutative, associative and idempotent."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from peerfarm.errors import LedgerError
from peerfarm.ledger import Ledger, Status
from peerfarm.ledger.codec import Delta
from peerfarm.ledger.model import FrameRecord, frame_gt, merge_frames
from tests.support.depth import examples
from tests.support.ledger import NODES, make_job, output

FRAMES = 6
OPS = [
    "claim",
    "takeover",
    "renew",
    "release",
    "complete",
    "fail",
    "retry",
    "pause",
    "resume",
    "cancel",
    "priority",
    "deliver",
    "ban",
]


def run_op(ledger: Ledger, job: str, op: str, frame: int, wall: int) -> list[Delta]:
    record = ledger.frame(job, frame)
    mine = record.status == Status.CLAIMED and record.node == ledger.node_id
    if op == "claim":
        return ledger.claim(job, [frame], wall)
    if op == "takeover":
        if record.status == Status.CLAIMED and record.node != ledger.node_id:
            return ledger.claim(job, [frame], wall, takeover=True)
        return []
    if not mine and op in ("renew", "release", "complete", "fail"):
        return []
    if op == "renew":
        return ledger.renew(job, [(frame, record)])
    if op == "release":
        return ledger.release(job, [(frame, record)], wall)
    if op == "complete":
        return ledger.complete(job, frame, record, [output(frame)], 0.5)
    if op == "fail":
        return ledger.fail(job, frame, record, "exit 1", "log", 0.25, wall)
    if op == "retry":
        return ledger.retry(job, [frame] if frame % 2 else None, wall)
    if op == "pause":
        return ledger.pause(job, wall)
    if op == "resume":
        return ledger.resume(job, wall)
    if op == "cancel":
        return ledger.cancel(job, wall)
    if op == "priority":
        return ledger.set_priority(job, frame, wall)
    if op == "deliver":
        return (
            ledger.mark_delivered(job, frame, record, wall) if record.status == Status.DONE else []
        )
    return ledger.ban(job, "failed here", wall)


def exchange(a: Ledger, b: Ledger, wall: int) -> None:
    """One full push-pull between two replicas (what the TCP anti-entropy does)."""
    a_marks, b_marks = a.watermarks(), b.watermarks()
    to_a = list(b.deltas_since(a_marks))
    to_b = list(a.deltas_since(b_marks))
    a.merge(to_a, wall)
    a.absorb_watermarks(b_marks)
    b.merge(to_b, wall)
    b.absorb_watermarks(a_marks)


@settings(max_examples=examples(300))
@given(st.data())
def test_replicas_converge_under_any_delivery(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 4), label="replicas")
    replicas = [Ledger(node) for node in NODES[:n]]
    spec = make_job(replicas[0], frames=FRAMES, retries=2)
    history: list[Delta] = list(replicas[0].submit(spec))
    inboxes: list[list[Delta]] = [[] for _ in range(n)]
    for d in history:
        for i in range(1, n):
            inboxes[i].append(d)
    wall = 2_000
    steps = data.draw(st.integers(0, 60), label="steps")
    for _ in range(steps):
        wall += data.draw(st.integers(0, 50))
        i = data.draw(st.integers(0, n - 1))
        action = data.draw(st.sampled_from(["op", "op", "deliver", "dup", "drop"]))
        ledger = replicas[i]
        if action == "op" and ledger.job(spec.id) is not None:
            op = data.draw(st.sampled_from(OPS))
            frame = data.draw(st.integers(1, FRAMES))
            try:
                out = run_op(ledger, spec.id, op, frame, wall)
            except LedgerError:
                continue
            history.extend(out)
            for j in range(n):
                if j != i:
                    inboxes[j].extend(out)
        elif inboxes[i]:
            k = data.draw(st.integers(0, len(inboxes[i]) - 1))
            delta = inboxes[i][k] if action == "dup" else inboxes[i].pop(k)
            if action != "drop":
                ledger.merge([delta], wall)
    # Repair by digest exchange in a ring, twice round, the way gossip would.
    for _ in range(2):
        for i in range(n):
            exchange(replicas[i], replicas[(i + 1) % n], wall)
    digests = {r.state_digest() for r in replicas}
    assert len(digests) == 1
    # Every replica equals the join of everything ever written, in writing order.
    reference = Ledger(NODES[5])
    reference.merge(history, wall)
    assert reference.state_digest() in digests
    for frame in range(1, FRAMES + 1):
        records = {r.frame(spec.id, frame) for r in replicas}
        assert len(records) == 1  # one owner per claimed frame, done everywhere alike
    # Watermark promise: each replica dominates every write it claims to have.
    for r in replicas:
        marks = r.watermarks()
        for key, value, origin, version in history:
            if version <= marks.get(origin, 0) and key[0] == "F":
                assert isinstance(value, FrameRecord)
                held = r.frame(key[1], key[2])
                assert held == value or frame_gt(held, value)


def frame_records() -> st.SearchStrategy[FrameRecord]:
    return st.builds(
        FrameRecord,
        epoch=st.integers(0, 2),
        status=st.sampled_from(list(Status)),
        attempt=st.integers(0, 3),
        stamp=st.integers(0, 3),
        node=st.sampled_from(NODES[:3]),
        seq=st.integers(0, 2),
        seconds=st.sampled_from([0.0, 1.0]),
    )


@given(frame_records(), frame_records(), frame_records())
def test_frame_merge_is_a_semilattice(a: FrameRecord, b: FrameRecord, c: FrameRecord) -> None:
    assert merge_frames(a, b) == merge_frames(b, a)
    assert merge_frames(merge_frames(a, b), c) == merge_frames(a, merge_frames(b, c))
    assert merge_frames(a, a) == a
    assert not (frame_gt(a, b) and frame_gt(b, a))


@settings(max_examples=60)
@given(st.permutations(list(range(12))), st.data())
def test_merge_order_and_duplicates_do_not_matter(order: list[int], data: st.DataObject) -> None:
    a, b = Ledger(NODES[0]), Ledger(NODES[1])
    spec = make_job(a, frames=4)
    deltas: list[Any] = a.submit(spec)
    b.merge(deltas, 1_000)
    for f in (1, 2, 3):
        deltas += a.claim(spec.id, [f], 2_000 + f)
        deltas += b.claim(spec.id, [f], 2_000 + f) if b.frame(spec.id, f).status == 0 else []
    record = a.frame(spec.id, 1)
    if record.node == NODES[0]:
        deltas += a.complete(spec.id, 1, record, [output(1)], 1.0)
    deltas += a.pause(spec.id, 3_000) + b.resume(spec.id, 3_000)
    deltas = deltas[:12]
    c1, c2 = Ledger(NODES[2]), Ledger(NODES[3])
    c1.merge(deltas, 4_000)
    shuffled = [deltas[i] for i in order if i < len(deltas)]
    dups = data.draw(st.lists(st.sampled_from(deltas), max_size=5))
    for d in itertools.chain(shuffled, dups, shuffled):
        c2.merge([d], 4_000)
    assert c1.state_digest() == c2.state_digest()
