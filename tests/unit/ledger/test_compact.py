"""The packed form of done frame records (ledger/compact.py): lossless, and a frame table is a
mapping like a plain dict whatever the order of writes, the spec's runs, or when the spec came.
Merge laws and convergence with packed records are checked by test_properties."""

from __future__ import annotations

import sys
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from peerfarm.frames import runs_overlap
from peerfarm.ledger import Ledger, Status
from peerfarm.ledger.compact import FrameTable, NodeTable, pack_done, packable, unpack_done
from peerfarm.ledger.model import FrameRecord, JobSpec, Output, SceneRef
from tests.support.ledger import NODES, make_job, output

node_ids = st.sampled_from(NODES)
outputs = st.builds(
    Output,
    name=st.text(min_size=1, max_size=40),
    digest=st.binary(min_size=32, max_size=32),
    size=st.integers(0, 2**63 - 1),
)
done_records = st.builds(
    FrameRecord,
    epoch=st.integers(0, 1_000_000),
    status=st.just(Status.DONE),
    attempt=st.integers(0, 1_000_000),
    stamp=st.integers(0, 2**64 - 1),
    node=node_ids,
    seq=st.integers(0, 2**63 - 1),
    seconds=st.floats(0, 1e9, allow_nan=False),
    outputs=st.lists(outputs, max_size=4).map(tuple),
    origin=node_ids,
    version=st.integers(1, 2**63 - 1),
)
live_records = st.builds(
    FrameRecord,
    epoch=st.integers(0, 3),
    status=st.sampled_from([s for s in Status if s != Status.DONE]),
    attempt=st.integers(0, 3),
    stamp=st.integers(0, 10),
    node=node_ids,
    origin=node_ids,
    version=st.integers(1, 100),
)


@given(done_records)
def test_a_packed_done_record_unpacks_to_an_equal_record(record: FrameRecord) -> None:
    nodes = NodeTable()
    back = unpack_done(pack_done(record, nodes), nodes)
    assert back == record
    assert (back.origin, back.version) == (record.origin, record.version)


def test_only_done_records_without_an_error_are_packed() -> None:
    done = FrameRecord(0, Status.DONE, 1, 5, NODES[0], outputs=(output(1),))
    assert packable(done)
    assert not packable(replace(done, error="odd but valid on the wire"))
    assert not packable(replace(done, status=Status.CLAIMED, outputs=()))


def test_a_packed_done_record_with_one_output_is_small() -> None:
    record = FrameRecord(
        0,
        Status.DONE,
        1,
        2**62,
        NODES[0],
        seconds=1.5,
        outputs=(output(1),),
        origin=NODES[1],
        version=10**6,
    )
    assert sys.getsizeof(pack_done(record, NodeTable())) <= 150


runs = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 12), st.integers(1, 3)).map(
        lambda r: (r[0], r[0] + r[1], r[2])
    ),
    min_size=1,
    max_size=3,
).filter(lambda rs: not runs_overlap(tuple(rs)))


def _spec(frame_runs: list[tuple[int, int, int]]) -> JobSpec:
    scene = SceneRef(b"\0" * 32, "scene.sh", 1)
    return JobSpec(
        "0" * 16, "j", NODES[0], "a", 1, "command", {}, scene, (), tuple(frame_runs), 1, "", 3, 0
    )


@settings(max_examples=150)
@given(runs, st.data())
def test_a_frame_table_behaves_like_a_dict(
    frame_runs: list[tuple[int, int, int]], data: st.DataObject
) -> None:
    spec = _spec(frame_runs)
    frames = list(spec.frames)
    table = FrameTable(NodeTable())
    model: dict[int, FrameRecord] = {}
    bind_at = data.draw(st.integers(0, 20), label="bind after")
    for step in range(data.draw(st.integers(0, 30), label="steps")):
        if step == bind_at:
            table.bind(spec)
        frame = data.draw(st.sampled_from(frames))
        if data.draw(st.booleans()) or frame not in model:
            record = data.draw(st.one_of(done_records, live_records))
            table.put(frame, record)
            model[frame] = record
        else:
            assert table.pop(frame) == model.pop(frame)
        assert len(table) == len(model)
    for frame in frames:
        assert table.get(frame) == model.get(frame)
        assert (frame in table) == (frame in model)
        held = model.get(frame)
        assert table.status(frame) == (None if held is None else held.status)
        assert table.written(frame) == (None if held is None else (held.origin, held.version))
    assert sorted(table) == sorted(model)
    assert dict(table.statuses()) == {f: r.status for f, r in model.items()}
    assert dict(table.items()) == model
    table.bind(spec)
    assert dict(table.items()) == model
    if table._loose is None:  # indexed by position: in the job's frame order
        assert list(table) == sorted(model)


def test_records_that_came_before_their_spec_are_kept_and_indexed() -> None:
    a, b = Ledger(NODES[0]), Ledger(NODES[1])
    spec = make_job(a, frames=300)
    submit = a.submit(spec)
    deltas = []
    for f in range(1, 301):
        deltas += a.claim(spec.id, [f], 2_000 + f)
        deltas += a.complete(spec.id, f, a.frame(spec.id, f), [output(f)], 0.5)
    b.merge(deltas, 5_000)  # frames first: the spec is not known yet
    b.merge(submit, 5_000)
    assert b.state_digest() == a.state_digest()
    assert dict(b.frame_records(spec.id).items()) == dict(a.frame_records(spec.id).items())
    assert list(b.frame_records(spec.id)) == list(range(1, 301))
    assert b.counts(spec.id).done == 300
    assert b.frame_status(spec.id, 7) == Status.DONE and b.frame_status(spec.id, 999) == 0
    assert b.deltas_since({}) and {d[0] for d in b.deltas_since({})} == {
        d[0] for d in a.deltas_since({})
    }


def test_first_unfinished_walks_positions_and_needs_an_index() -> None:
    a = Ledger(NODES[0])
    spec = make_job(a, frames=6)
    submit = a.submit(spec)
    b = Ledger(NODES[1])
    deltas = []
    for f in (1, 2, 4):
        deltas += a.claim(spec.id, [f], 2_000 + f)
    deltas += a.complete(spec.id, 1, a.frame(spec.id, 1), [output(1)], 0.5)
    b.merge(deltas, 3_000)  # no spec yet: records kept by frame, not by position
    assert b.first_unfinished(spec.id, 0) is None
    b.merge(submit, 3_000)
    assert b.first_unfinished(spec.id, 0) == 1  # frame 2: claimed
    b.merge(a.complete(spec.id, 2, a.frame(spec.id, 2), [output(2)], 0.5), 3_000)
    assert b.first_unfinished(spec.id, 0) == 2  # frame 3: pending, no record
    assert b.first_unfinished(spec.id, 4) == 4
    assert b.first_unfinished("no such job", 3) == 3
