"""Who sends a job-end notification, and when (``peerfarm.scheduler.notices``). Pure."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.errors import UsageError
from peerfarm.ledger import Ledger, codec
from peerfarm.ledger.keys import Kind
from peerfarm.ledger.model import Status
from peerfarm.scheduler import notices
from peerfarm.scheduler.notices import Decision, Mark, Situation, decide
from tests.support.ledger import NODES, make_job, output

SUB, P1, P2, P3 = NODES[:4]  # node ids ascend: P1 is the fallback


def situation(**kw: object) -> Situation:
    base: dict[str, object] = {
        "me": SUB,
        "submitter": SUB,
        "desktop_only": False,
        "mark": None,
        "sending": False,
        "alive": frozenset({SUB, P1, P2}),
        "gone_for": {},
        "seen_for": 0.0,
        "grace": 10.0,
    }
    base.update(kw)
    return Situation(**base)  # type: ignore[arg-type]


def test_the_submitter_sends_at_once_and_others_wait() -> None:
    assert decide(situation()) == Decision.SEND
    assert decide(situation(me=P1)) == Decision.WAIT
    assert decide(situation(sending=True)) == Decision.NOTHING


def test_sent_or_failed_events_are_never_sent_again() -> None:
    for phase in (notices.SENT, notices.FAILED):
        for me in (SUB, P1):
            gone = {SUB: 99.0}
            assert decide(situation(me=me, mark=Mark(phase, SUB), gone_for=gone)) == (
                Decision.NOTHING
            )


def test_the_lowest_other_peer_sends_after_the_grace_period() -> None:
    alive = frozenset({P1, P2})
    early = situation(me=P1, alive=alive, gone_for={SUB: 5.0}, seen_for=20.0)
    assert decide(early) == Decision.WAIT
    late = situation(me=P1, alive=alive, gone_for={SUB: 11.0}, seen_for=20.0)
    assert decide(late) == Decision.SEND
    assert decide(situation(me=P2, alive=alive, gone_for={SUB: 11.0}, seen_for=20.0)) == (
        Decision.WAIT
    )
    # The event itself must be older than the grace period too (a fresh restart's view).
    fresh = situation(me=P1, alive=alive, gone_for={SUB: 50.0}, seen_for=1.0)
    assert decide(fresh) == Decision.WAIT


def test_desktop_only_targets_are_the_submitters_alone() -> None:
    late = situation(
        me=P1, alive=frozenset({P1}), gone_for={SUB: 99.0}, seen_for=99.0, desktop_only=True
    )
    assert decide(late) == Decision.NOTHING


def test_a_claim_is_left_to_its_live_owner_and_taken_over_after_it_is_gone() -> None:
    claimed = Mark(notices.CLAIMED, P1)
    assert decide(situation(mark=claimed)) == Decision.WAIT
    assert decide(situation(mark=claimed, gone_for={P1: 3.0})) == Decision.WAIT
    assert decide(situation(mark=claimed, gone_for={P1: 12.0})) == Decision.SEND
    # Our own claim from an earlier life (we restarted while sending): send again.
    assert decide(situation(me=P1, mark=claimed, gone_for={SUB: 0.0})) == Decision.SEND


@given(
    st.sampled_from([SUB, P1, P2, P3]),
    st.frozensets(st.sampled_from([SUB, P1, P2, P3])),
    st.floats(0, 100),
    st.floats(0, 100),
)
def test_with_one_view_of_the_farm_at_most_one_peer_sends(
    _me: str, alive: frozenset[str], gone: float, seen: float
) -> None:
    """Peers that share a view (no split) never both decide to send a fresh event."""
    gone_for = {p: gone for p in (SUB, P1, P2, P3) if p not in alive}
    senders = [
        me
        for me in sorted(alive)
        if decide(situation(me=me, alive=alive, gone_for=gone_for, seen_for=seen)) == Decision.SEND
    ]
    assert len(senders) <= 1


def test_targets_are_checked() -> None:
    assert notices.check_targets(["Desktop", "https://h/x", "https://h/x"]) == [
        "desktop",
        "https://h/x",
    ]
    for bad in ("ftp://h/x", "hook", "http://", "http://h/ x"):
        with pytest.raises(UsageError):
            notices.check_targets([bad])
    with pytest.raises(UsageError):
        notices.check_targets([f"http://h/{i}" for i in range(5)])


def test_events_and_the_notice_register_replicate() -> None:
    a, b = Ledger(SUB), Ledger(P1)
    spec = make_job(a, frames=2, options={notices.NOTIFY: ["http://h/x"]})
    b.merge(a.submit(spec), 1_000)
    assert notices.targets_of(spec) == ("http://h/x",)
    assert notices.event_of(a, spec.id) is None
    for frame in (1, 2):
        (claim,) = a.claim(spec.id, [frame], 2_000)
        b.merge([claim], 2_000)
        b.merge(a.complete(spec.id, frame, claim[1], [output(frame)], 1.0), 2_000)  # type: ignore[arg-type]
    event = notices.event_of(b, spec.id)
    assert event == notices.JobEvent(spec.id, 0, "done")
    deltas = a.mark_notice(spec.id, 0, "done", notices.CLAIMED, 3_000)
    wire = codec.decode_deltas(codec.encode_deltas(deltas))
    b.merge(wire, 3_000)
    reg = b.notice(spec.id, 0)
    assert reg is not None and reg.value == ["done", "claimed"] and reg.node == SUB
    b.merge(a.mark_notice(spec.id, 0, "done", notices.SENT, 4_000), 4_000)
    assert notices.mark_of(b.notice(spec.id, 0).value, SUB) == Mark(notices.SENT, SUB)  # type: ignore[union-attr]
    assert a.state_digest() == b.state_digest()
    bad = codec.encode_deltas(deltas)
    bad[0][5][0] = ["done", "maybe"]
    with pytest.raises(Exception, match="notice"):
        codec.decode_deltas(bad)
    assert deltas[0][0][0] == Kind.NOTICE


@given(st.randoms(use_true_random=False))
def test_the_event_number_is_the_epoch_sum_whatever_the_merge_order(rnd: random.Random) -> None:
    """The event number is kept by every write (no walk over the frames): it equals the sum
    of the frame records' epochs on the writer and on a replica that merged the same deltas
    in any order, with duplicates; an archived job's is gone."""
    a, b = Ledger(SUB), Ledger(P1)
    spec = make_job(a, frames=6, options={notices.NOTIFY: ["http://h/x"]})
    deltas = list(a.submit(spec))
    wall = 2_000
    for round_ in range(3):
        for frame in spec.frames:
            if a.frame_status(spec.id, frame) in (Status.DONE, Status.FAILED):
                continue
            wall += 10
            (claim,) = a.claim(spec.id, [frame], wall)
            deltas.append(claim)
            if (frame + round_) % 2:
                deltas += a.complete(spec.id, frame, claim[1], [output(frame)], 1.0)  # type: ignore[arg-type]
            else:
                deltas += a.fail(spec.id, frame, claim[1], "boom", "", 1.0, wall)  # type: ignore[arg-type]
        deltas += a.retry(spec.id, rnd.sample(spec.frames, 3), wall)
    walked = sum(r.epoch for r in a.frame_records(spec.id).values())
    assert walked > 0 and a.epoch_sum(spec.id) == walked
    shuffled = deltas + rnd.sample(deltas, len(deltas) // 2)
    rnd.shuffle(shuffled)
    b.merge(shuffled, wall)
    assert b.epoch_sum(spec.id) == walked
    b.merge(a.archive(spec.id, wall + 10), wall + 10)
    assert b.epoch_sum(spec.id) == 0
