"""The ledger's wire form: round trips, and hostile bytes only ever raise DecodeError."""

from __future__ import annotations

import contextlib

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from peerfarm.errors import DecodeError
from peerfarm.ledger import Ledger, codec
from tests.support.depth import examples
from tests.support.ledger import NODES, make_job, output


def busy_ledger() -> Ledger:
    a = Ledger(NODES[0])
    spec = make_job(a, frames=20, retries=1)
    a.submit(spec)
    for f in range(1, 11):
        claim = a.claim(spec.id, [f], 2_000 + f)[0][1]
        if f % 3 == 0:
            a.fail(spec.id, f, claim, "exit 1", "tail", 0.1, 3_000)  # type: ignore[arg-type]
        else:
            a.complete(spec.id, f, claim, [output(f)], 0.5)  # type: ignore[arg-type]
    a.pause(spec.id, 4_000)
    a.set_priority(spec.id, 3, 4_001)
    a.mark_delivered(spec.id, 1, a.frame(spec.id, 1), 4_002)
    a.ban(spec.id, "failed 3 times", 4_003)
    return a


def test_round_trip_through_msgpack() -> None:
    a = busy_ledger()
    wire = codec.packb(codec.encode_deltas(a.all_deltas()))
    decoded = codec.decode_deltas(codec.unpackb(wire))
    b = Ledger(NODES[1])
    b.merge(decoded, 5_000)
    assert b.state_digest() == a.state_digest()
    assert decoded == list(a.all_deltas())


def test_one_frame_delta_is_small() -> None:
    a = busy_ledger()
    spec = a.jobs()[0]
    done = next(d for d in a.all_deltas() if d[0][0] == "F" and d[1].outputs)  # type: ignore[union-attr]
    assert len(codec.packb(codec.encode_delta(done))) < 200
    claim = a.claim(spec.id, [15], 9_000)[0]
    assert len(codec.packb(codec.encode_delta(claim))) < 120


def test_a_spec_whose_hash_does_not_match_is_refused() -> None:
    a = busy_ledger()
    wire = codec.encode_delta(next(iter(a.all_deltas())))
    wire[5][0] = "renamed"
    try:
        codec.decode_delta(wire)
    except DecodeError as exc:
        assert "does not match" in str(exc)
    else:
        raise AssertionError("a tampered spec decoded")


@settings(max_examples=examples(1000))
@given(st.binary(max_size=300))
def test_fuzzed_bytes_only_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        codec.decode_deltas(codec.unpackb(data))


def _mutations() -> st.SearchStrategy[object]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.floats(allow_nan=True),
        st.text(max_size=20),
        st.binary(max_size=40),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )


@settings(max_examples=examples(2000))
@given(st.data())
def test_mutated_valid_deltas_only_raise_decode_error(data: st.DataObject) -> None:
    deltas = codec.encode_deltas(_LEDGER.all_deltas())
    delta = data.draw(st.sampled_from(deltas))
    mutated = msgpack.unpackb(msgpack.packb(delta), raw=False)  # deep copy
    # Walk into a random position and replace it.
    target = mutated
    path_len = data.draw(st.integers(0, 3))
    for _ in range(path_len):
        if isinstance(target, list) and target:
            idx = data.draw(st.integers(0, len(target) - 1))
            if isinstance(target[idx], list) and target[idx]:
                target = target[idx]
    if isinstance(target, list) and target:
        idx = data.draw(st.integers(0, len(target) - 1))
        target[idx] = data.draw(_mutations())
    try:
        decoded = codec.decode_delta(mutated)
    except DecodeError:
        return
    # Whatever decodes must merge without raising.
    Ledger(NODES[2]).merge([decoded], 10_000)


_LEDGER = busy_ledger()
