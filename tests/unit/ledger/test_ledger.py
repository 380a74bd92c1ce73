"""The ledger's rules, one at a time."""

from __future__ import annotations

import pytest

from peerfarm.errors import IllegalTransition, LedgerError
from peerfarm.ledger import Ledger, LostClaim, Status
from peerfarm.ledger.model import PENDING0, Event, FrameRecord, JobState, check_transition
from tests.support.ledger import NODES, make_job, output

A, B, C = NODES[:3]


def pair() -> tuple[Ledger, Ledger, str]:
    a, b = Ledger(A), Ledger(B)
    spec = make_job(a)
    b.merge(a.submit(spec), 1_000)
    return a, b, spec.id


def test_submit_replicates_and_is_idempotent() -> None:
    a, b, job = pair()
    assert b.job(job) == a.job(job)
    assert a.submit(a.job(job)) == []  # type: ignore[arg-type]
    assert a.state_digest() == b.state_digest()
    assert a.counts(job).pending == 10


def test_concurrent_claims_pick_one_owner_everywhere() -> None:
    a, b, job = pair()
    ca = a.claim(job, [1], 2_000)
    cb = b.claim(job, [1], 2_000)
    a.merge(cb, 2_001)
    b.merge(ca, 2_001)
    assert a.frame(job, 1) == b.frame(job, 1)
    assert a.frame(job, 1).node == b.frame(job, 1).node
    assert a.state_digest() == b.state_digest()


def test_earliest_claim_wins() -> None:
    a, b, job = pair()
    cb = b.claim(job, [1], 1_500)
    ca = a.claim(job, [1], 2_500)
    a.merge(cb, 3_000)
    b.merge(ca, 3_000)
    assert a.frame(job, 1).node == B == b.frame(job, 1).node


def test_takeover_is_a_later_attempt_and_fences_the_old_owner() -> None:
    a, b, job = pair()
    ca = a.claim(job, [1], 2_000)
    b.merge(ca, 2_000)
    tb = b.claim(job, [1], 9_000, takeover=True)
    assert b.frame(job, 1).attempt == 2
    a.merge(tb, 9_001)
    claim = ca[0][1]
    assert isinstance(claim, FrameRecord)
    with pytest.raises(LostClaim):
        a.complete(job, 1, claim, [output(1)], 1.0)
    with pytest.raises(LostClaim):
        a.renew(job, [(1, claim)])
    # The old owner's stale renewal cannot beat the takeover either.
    stale = FrameRecord(0, Status.CLAIMED, 1, claim.stamp, A, seq=99)
    b.merge([(("F", job, 1), stale, A, 50)], 9_002)
    assert b.frame(job, 1).node == B


def test_done_is_terminal_within_an_epoch() -> None:
    a, b, job = pair()
    ca = a.claim(job, [1], 2_000)
    claim = ca[0][1]
    assert isinstance(claim, FrameRecord)
    done = a.complete(job, 1, claim, [output(1)], 1.25)
    b.merge(ca, 2_000)
    takeover = b.claim(job, [1], 3_000, takeover=True)  # b has not heard of DONE yet
    b.merge(done, 3_001)
    a.merge(takeover, 3_001)
    assert a.frame(job, 1).status == Status.DONE == b.frame(job, 1).status
    assert a.frame(job, 1).outputs == (output(1),)
    assert a.counts(job).done == 1


def test_failures_up_to_the_retry_limit() -> None:
    a = Ledger(A)
    spec = make_job(a, retries=2)
    a.submit(spec)
    claim = a.claim(spec.id, [3], 2_000)[0][1]
    assert isinstance(claim, FrameRecord)
    a.fail(spec.id, 3, claim, "exit 1", "boom", 0.5, 2_100)
    assert a.frame(spec.id, 3).status == Status.RETRYING
    assert 3 in list(a.open_frames(spec.id))
    claim = a.claim(spec.id, [3], 2_200)[0][1]
    assert isinstance(claim, FrameRecord)
    a.fail(spec.id, 3, claim, "exit 1", "boom again", 0.5, 2_300)
    assert a.frame(spec.id, 3).status == Status.FAILED
    assert 3 not in list(a.open_frames(spec.id))
    assert [x[1].log_tail for x in a.attempts(spec.id, 3)] == ["boom", "boom again"]
    assert a.failures_by(spec.id, A) == 2
    # A user's retry opens a new epoch that beats the failure.
    a.retry(spec.id, None, 3_000)
    record = a.frame(spec.id, 3)
    assert (record.epoch, record.status) == (1, Status.PENDING)
    assert a.attempts(spec.id, 3, epoch=1) == []


def test_release_hands_the_frame_back() -> None:
    a, b, job = pair()
    claim = a.claim(job, [2], 2_000)[0][1]
    assert isinstance(claim, FrameRecord)
    b.merge(a.release(job, [(2, claim)], 2_500), 2_500)
    assert b.frame(job, 2).status == Status.RELEASED
    assert 2 in list(b.open_frames(job))
    second = b.claim(job, [2], 2_600)[0][1]
    assert isinstance(second, FrameRecord) and second.attempt == 2


def test_controls_last_writer_wins_and_cancel_is_final() -> None:
    a, b, job = pair()
    pa = a.pause(job, 2_000)
    rb = b.resume(job, 2_500)
    a.merge(rb, 2_600)
    b.merge(pa, 2_600)
    assert not a.paused(job) and not b.paused(job)
    cancel = a.cancel(job, 3_000)
    later_resume = b.resume(job, 9_000)
    b.merge(cancel, 9_001)
    a.merge(later_resume, 9_001)
    assert a.job_state(job) == JobState.CANCELLED == b.job_state(job)
    pr = a.set_priority(job, 5, 10_000)
    b.merge(pr, 10_000)
    assert b.priority(job) == 5


def test_transition_table_names_state_and_event() -> None:
    with pytest.raises(IllegalTransition, match="'complete' in state 'pending'"):
        check_transition(PENDING0, Event.COMPLETE, FrameRecord(0, Status.DONE, 0, 1, A))


def test_unknown_job_and_foreign_frames() -> None:
    a, _b, job = pair()
    with pytest.raises(LedgerError):
        a.claim("f" * 16, [1], 1)
    with pytest.raises(LedgerError):
        a.retry(job, [99], 1)
    # A frame outside the job is refused on merge.
    bogus = FrameRecord(0, Status.CLAIMED, 1, 5, B)
    assert a.merge([(("F", job, 99), bogus, B, 7)], 10) == []


def test_frames_before_their_job_are_kept_and_checked_when_it_arrives() -> None:
    a = Ledger(A)
    spec = make_job(a)
    deltas = a.submit(spec) + a.claim(spec.id, [1, 2], 2_000)
    b = Ledger(B)
    b.merge(deltas[1:], 2_000)
    bogus = FrameRecord(0, Status.CLAIMED, 1, 5, C)
    b.merge([(("F", spec.id, 500), bogus, C, 1)], 2_000)
    b.merge(deltas[:1], 2_001)
    assert b.frame(spec.id, 1).node == A
    assert 500 not in b.frame_records(spec.id)
    assert b.state_digest() == a.state_digest()


def test_watermarks_advance_in_order_only() -> None:
    a, b, job = pair()
    d1 = a.claim(job, [1], 2_000)
    d2 = a.claim(job, [2], 2_001)
    d3 = a.claim(job, [3], 2_002)
    b.merge(d3, 3_000)
    assert b.watermarks()[A] == 1  # the spec only: version 3 arrived early
    b.merge(d1, 3_000)
    assert b.watermarks()[A] == 2
    b.merge(d2, 3_000)
    assert b.watermarks()[A] == 4


def test_anti_entropy_sends_only_what_is_missing() -> None:
    a = Ledger(A)
    spec = make_job(a, frames=5_000)
    b = Ledger(B)
    b.merge(a.submit(spec), 1_000)
    for f in range(1, 5_001):
        b.merge(a.claim(spec.id, [f], 2_000 + f), 9_000)
    assert list(a.deltas_since(b.watermarks())) == []
    missed = a.claim(spec.id, [5_000], 99_000, takeover=True)
    delta = list(a.deltas_since(b.watermarks()))
    assert delta == missed
    b.merge(delta, 99_001)
    b.absorb_watermarks(a.watermarks())
    assert a.state_digest() == b.state_digest()


def test_delivery_marks() -> None:
    a, b, job = pair()
    claim = b.claim(job, [4], 2_000)[0][1]
    assert isinstance(claim, FrameRecord)
    a.merge(b.complete(job, 4, claim, [output(4)], 1.0), 2_100)
    assert not a.delivered(job, 4)
    b.merge(a.mark_delivered(job, 4, a.frame(job, 4), 2_200), 2_200)
    assert b.delivered(job, 4)
    a.retry(job, [4], 3_000)
    assert not a.delivered(job, 4)


def test_a_delivery_mark_names_the_outputs_it_delivered() -> None:
    """A takeover's done record (attempt 2) that wins after attempt 1 was delivered is not
    delivered: the submitter must bring in the bytes the ledger now names."""
    a, b, job = pair()
    c = Ledger(C)
    c.merge(list(a.all_deltas()), 1_500)
    first = b.claim(job, [4], 2_000)
    c.merge(first, 2_001)
    takeover = c.claim(job, [4], 9_000, takeover=True)[0][1]  # b's lease lapsed on c's clock
    assert isinstance(takeover, FrameRecord) and takeover.attempt == 2
    claim = first[0][1]
    assert isinstance(claim, FrameRecord)
    a.merge(b.complete(job, 4, claim, [output(4)], 1.0), 9_100)  # b never heard of it
    a.merge(a.mark_delivered(job, 4, a.frame(job, 4), 9_200), 9_200)
    assert a.delivered(job, 4)
    a.merge(c.complete(job, 4, takeover, [output(4, b"other bytes")], 1.0), 9_300)
    assert a.frame(job, 4).attempt == 2
    assert not a.delivered(job, 4)
    a.merge(a.mark_delivered(job, 4, a.frame(job, 4), 9_400), 9_400)
    assert a.delivered(job, 4)


def test_archive_tombstone_converges_a_replica_that_was_away() -> None:
    a, _b, job = pair()
    c = Ledger(C)
    c.merge(list(a.all_deltas()), 1_500)
    claim = c.claim(job, [1], 2_000)  # c's work that a never sees before archiving
    for f in range(1, 11):
        cl = a.claim(job, [f], 2_100) if f != 1 else a.claim(job, [f], 2_100, takeover=False)
        rec = cl[0][1]
        assert isinstance(rec, FrameRecord)
        a.complete(job, f, rec, [output(f)], 0.1)
    a.archive(job, 5_000)
    assert a.job(job) is None and job in a.archived()
    # c returns: exchange both ways.
    c.merge(list(a.deltas_since(c.watermarks())), 6_000)
    a.merge(list(c.deltas_since(a.watermarks())), 6_000)
    a.merge(claim, 6_000)  # late replay of c's old claim changes nothing
    assert c.job(job) is None
    assert a.archived()[job]["done"] == 10
    assert a.state_digest() == c.state_digest()


def test_superseded_says_whether_passing_a_value_on_would_spread_stale_news() -> None:
    """Gossip relays a broadcast only when the replica holds nothing newer for its key, so a
    stale renewal can never replace a finished frame in the relay queue."""
    a, b, job = pair()
    claim = b.claim(job, [5], 2_000)
    renewal = b.renew(job, [(5, claim[0][1])])  # type: ignore[list-item]
    done = b.complete(job, 5, renewal[0][1], [output(5)], 1.0)  # type: ignore[arg-type]
    a.merge(claim + renewal + done, 3_000)
    assert a.superseded(claim[0]) and a.superseded(renewal[0])  # stale: a holds the done
    assert not a.superseded(done[0])  # the very value a holds: fine to pass on
    pause = a.pause(job, 3_100)
    resume = b.resume(job, 3_200)
    a.merge(resume, 3_300)
    assert a.superseded(pause[0]) and not a.superseded(resume[0])
    assert not a.superseded(a.all_deltas()[0])  # the spec: immutable, never stale
