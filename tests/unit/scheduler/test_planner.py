"""The planner's choices, pure: homes, stealing, priorities, skips, chunks, takeovers."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.ledger import Ledger
from peerfarm.ledger.model import FrameRecord, Status
from peerfarm.scheduler.leases import LeaseTable
from peerfarm.scheduler.planner import (
    Claim,
    Planner,
    _rank,
    batch_size,
    chunk_homes,
    chunks_of,
    merge_claims,
    merge_stolen,
    rendezvous_home,
    spread_order,
)
from tests.support.ledger import NODES, make_job, output

A, B, C, D = NODES[:4]


def setup(frames: int = 40, **kw: object) -> tuple[Ledger, str]:
    ledger = Ledger(A)
    spec = make_job(ledger, frames=frames, **kw)
    ledger.submit(spec)
    return ledger, spec.id


def test_rendezvous_is_stable_and_balanced() -> None:
    """Plain rendezvous (a lapsed claim's taker): removing a peer moves only its chunks."""
    peers = [A, B, C, D]
    homes = Counter(rendezvous_home("job", i, peers) for i in range(4000))
    assert set(homes) == set(peers)
    assert all(800 <= n <= 1200 for n in homes.values())
    moved = sum(
        1
        for i in range(4000)
        if rendezvous_home("job", i, peers) != D
        and rendezvous_home("job", i, peers) != rendezvous_home("job", i, [A, B, C])
    )
    assert moved == 0


@pytest.mark.parametrize(("count", "n"), [(128, 32), (130, 32), (7, 4), (3, 8), (4000, 4)])
def test_every_peer_is_home_to_its_fair_share_of_chunks(count: int, n: int) -> None:
    peers = [f"peer{i:02d}" for i in range(n)]
    homes = chunk_homes("job", count, peers)
    loads = Counter(homes)
    assert sum(loads.values()) == count and set(loads) <= set(peers)
    assert max(loads.values()) - min(loads[p] for p in peers) <= 1
    assert chunk_homes("job", count, list(reversed(peers))) == homes  # order does not matter
    # Plain rendezvous leaves some of these peers with none or twice their share.
    plain = Counter(rendezvous_home("job", i, peers) for i in range(count))
    if count == 128:
        assert max(plain.values()) - min(plain[p] for p in peers) > 1


def test_bounded_homes_mostly_follow_the_hash_and_mostly_stay_when_a_peer_leaves() -> None:
    peers = [f"peer{i:02d}" for i in range(8)]
    count = 8 * 60
    homes = chunk_homes("job", count, peers)
    first = sum(h == rendezvous_home("job", i, peers) for i, h in enumerate(homes))
    assert first >= 0.85 * count
    after = chunk_homes("job", count, peers[:-1])
    moved = sum(1 for a, b in zip(homes, after, strict=True) if a != peers[-1] and a != b)
    assert moved <= 0.1 * count
    assert chunk_homes("job", 5, []) == [None] * 5


def test_a_chunks_home_ranks_first_and_the_others_follow_the_hash() -> None:
    peers = [A, B, C, D]
    homes = chunk_homes("job", 40, peers)
    for index, home in enumerate(homes):
        ranks = sorted(_rank("job", index, p, peers, home) for p in peers)
        assert ranks == [0, 1, 2, 3]
        assert _rank("job", index, str(home), peers, home) == 0


def test_takes_own_frames_first_in_order() -> None:
    ledger, job = setup()
    planner = Planner(A)
    claims = planner.plan(ledger, free_slots=2, capable={job: [A, B, C]})
    spec = ledger.job(job)
    assert spec is not None
    homes = planner.homes(spec, [A, B, C])
    mine = [chunk[0] for i, chunk in enumerate(chunks_of(spec)) if homes[i] == A]
    assert [c.frames[0] for c in claims] == mine[:2]
    assert all(c.home and not c.takeover for c in claims)


def test_steals_the_earliest_chunk_but_never_a_live_peers_next_one() -> None:
    ledger, job = setup(frames=12)
    spec = ledger.job(job)
    assert spec is not None
    planner = Planner(A)
    homes = planner.homes(spec, [A, B])
    for i, chunk in enumerate(chunks_of(spec)):  # A has finished all of its own
        if homes[i] == A:
            claim = ledger.claim(job, chunk, 2_000)[0][1]
            assert isinstance(claim, FrameRecord)
            ledger.complete(job, chunk[0], claim, [output(chunk[0])], 0.1)
    b_frames = [c[0] for i, c in enumerate(chunks_of(spec)) if homes[i] == B]
    claims = planner.plan(ledger, free_slots=1, capable={job: [A, B]}, alive=[A, B])
    assert [c.frames[0] for c in claims] == [b_frames[1]]  # B's next one (b_frames[0]) stays
    assert not claims[0].home
    # B's next chunk is not stolen even when it is the only one left.
    for frame in b_frames[1:]:
        ledger.claim(job, [frame], 3_000)
    assert planner.plan(ledger, free_slots=1, capable={job: [A, B]}, alive=[A, B]) == []
    # ...unless B is not alive any more.
    assert planner.plan(ledger, free_slots=1, capable={job: [A, B]}, alive=[A])[0].frames == (
        b_frames[0],
    )


def test_skips_paused_cancelled_incapable_and_banned_jobs() -> None:
    ledger, job = setup()
    planner = Planner(A)
    assert planner.plan(ledger, free_slots=1, capable={job: [B]}) == []
    ledger.pause(job, 2_000)
    assert planner.plan(ledger, free_slots=1, capable={job: [A]}) == []
    ledger.resume(job, 2_001)
    assert planner.plan(ledger, free_slots=1, capable={job: [A]})
    ledger.ban(job, "failed 3 times", 2_002)
    assert planner.plan(ledger, free_slots=1, capable={job: [A]}) == []
    ledger2, job2 = setup()
    ledger2.cancel(job2, 2_000)
    assert Planner(A).plan(ledger2, free_slots=1, capable={job2: [A]}) == []


def test_priority_then_age() -> None:
    ledger = Ledger(A)
    old = make_job(ledger, frames=5, name="old", wall=1_000)
    new = make_job(ledger, frames=5, name="new", wall=2_000)
    ledger.submit(old)
    ledger.submit(new)
    planner = Planner(A)
    capable = {old.id: [A], new.id: [A]}
    assert planner.plan(ledger, free_slots=1, capable=capable)[0].job == old.id
    ledger.set_priority(new.id, 10, 3_000)
    assert planner.plan(ledger, free_slots=1, capable=capable)[0].job == new.id


def test_chunks_and_takeovers() -> None:
    ledger, job = setup(frames=10, chunk=4)
    planner = Planner(A)
    claims = planner.plan(ledger, free_slots=3, capable={job: [A]})
    assert [c.frames for c in claims] == [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10)]
    b = Ledger(B)
    b.merge(list(ledger.all_deltas()), 1_000)
    taken = b.claim(job, [1, 2, 3, 4], 2_000)
    ledger.merge(taken, 2_000)
    leases = LeaseTable(timeout=10.0)
    for frame, record in ledger.claimed_frames(job):
        leases.observe(job, frame, record, now=100.0)
    assert leases.expired(105.0, exclude=A) == []
    expired = leases.expired(111.0, exclude=A)
    assert sorted(f for _, f in expired) == [1, 2, 3, 4]
    claims = planner.plan(ledger, free_slots=1, capable={job: [A]}, expired=expired)
    assert claims[0].takeover and claims[0].frames == (1, 2, 3, 4)
    # A dead owner's lease expires at once.
    assert len(leases.expired(100.5, gone=[B], exclude=A)) == 4


def test_renewals_restart_the_lease_on_the_observers_clock() -> None:
    a, b = Ledger(A), Ledger(B)
    spec = make_job(a, frames=3)
    b.merge(a.submit(spec), 1_000)
    claim = b.claim(spec.id, [1], 2_000)
    a.merge(claim, 2_000)
    leases = LeaseTable(timeout=5.0)
    leases.observe(spec.id, 1, a.frame(spec.id, 1), now=0.0)
    record = claim[0][1]
    assert isinstance(record, FrameRecord)
    for t in (4.0, 8.0, 12.0):
        renewal = b.renew(spec.id, [(1, record)])
        record = renewal[0][1]  # type: ignore[assignment]
        a.merge(renewal, 9_000)
        leases.observe(spec.id, 1, a.frame(spec.id, 1), now=t)
        assert leases.expired(t + 4.9, exclude=A) == []
    assert leases.expired(17.1, exclude=A) == [(spec.id, 1)]
    done = b.complete(spec.id, 1, record, [output(1)], 1.0)
    a.merge(done, 9_500)
    leases.observe(spec.id, 1, a.frame(spec.id, 1), now=18.0)
    assert len(leases) == 0
    assert a.frame(spec.id, 1).status == Status.DONE


@given(st.integers(1, 6), st.integers(1, 50), st.integers(1, 5))
def test_home_claims_of_different_peers_never_overlap(
    peers_n: int, frames: int, slots: int
) -> None:
    peers = NODES[:peers_n]
    ledger = Ledger(peers[0])
    spec = make_job(ledger, frames=frames)
    ledger.submit(spec)
    seen: set[int] = set()
    for peer in peers:
        view = Ledger(peer)
        view.merge(list(ledger.all_deltas()), 1_000)
        for claim in Planner(peer).plan(view, free_slots=slots, capable={spec.id: peers}):
            if claim.home:  # two peers' own work never overlaps
                assert seen.isdisjoint(claim.frames)
                seen.update(claim.frames)


def test_a_frame_that_failed_here_goes_to_another_peer_first() -> None:
    ledger, job = setup(frames=1)
    claim = ledger.claim(job, [1], 2_000)[0][1]
    assert isinstance(claim, FrameRecord)
    ledger.fail(job, 1, claim, "exit 1", "", 0.1, 2_100)
    planner = Planner(A)
    assert planner.plan(ledger, free_slots=1, capable={job: [A, B]}, alive=[A, B]) == []
    # Alone (or when the others failed it too), this peer retries it itself.
    assert planner.plan(ledger, free_slots=1, capable={job: [A]}, alive=[A])[0].frames == (1,)
    assert planner.plan(ledger, free_slots=1, capable={job: [A, B]}, alive=[A])[0].frames == (1,)


@pytest.mark.parametrize("seconds", [5.0, 0.25])
def test_a_busy_homes_next_chunk_is_stolen_whatever_the_frame_length(seconds: float) -> None:
    ledger, job = setup(frames=12)
    spec = ledger.job(job)
    assert spec is not None
    planner = Planner(A)
    homes = planner.homes(spec, [A, B])
    for i, chunk in enumerate(chunks_of(spec)):  # A has finished all of its own
        if homes[i] == A:
            claim = ledger.claim(job, chunk, 2_000)[0][1]
            assert isinstance(claim, FrameRecord)
            ledger.complete(job, chunk[0], claim, [output(chunk[0])], seconds)
    b_frames = [c[0] for i, c in enumerate(chunks_of(spec)) if homes[i] == B]
    for frame in b_frames[1:]:
        ledger.claim(job, [frame], 3_000)  # B renders... every other frame is taken
    # B idle (not saturated): its next chunk stays its own.
    assert planner.plan(ledger, free_slots=1, capable={job: [A, B]}, alive=[A, B]) == []
    # B busy on all its slots: an idle A takes the chunk rather than idle while B still has
    # frames to do (the worker asks B first, so they never both render it).
    claims = planner.plan(ledger, free_slots=1, capable={job: [A, B]}, alive=[A, B], saturated=[B])
    assert [c.frames for c in claims] == [(b_frames[0],)]
    assert not claims[0].home and claims[0].home_peer == B


def test_frame_orders() -> None:
    """ "ordered" keeps the frames' order, "first-last" starts with both ends, "spread"
    bisects; every order holds every chunk exactly once."""
    assert spread_order(8) == [0, 4, 2, 6, 1, 3, 5, 7]
    assert spread_order(5) == [0, 2, 4, 1, 3]
    for n in range(0, 40):
        assert sorted(spread_order(n)) == list(range(n))
    ledger = Ledger(A)
    for order, first in (("ordered", [1, 2, 3]), ("first-last", [1, 10, 2]), ("spread", [1, 6, 3])):
        spec = make_job(ledger, frames=10, name=order, options={"order": order})
        chunks = chunks_of(spec)
        assert [c[0] for c in chunks[:3]] == first, order
        assert sorted(f for c in chunks for f in c) == list(range(1, 11))


@given(
    st.lists(st.sampled_from(["done", "claimed", "pending"]), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=4),
    st.sampled_from(["ordered", "first-last", "spread"]),
)
def test_a_rescan_moves_the_cursor_to_the_first_chunk_with_an_unfinished_frame(
    states: list[str], chunk: int, order: str
) -> None:
    """The cursor skips the finished chunks in one pass over the frame table (ordered) or
    chunk by chunk (other orders): either way, after a rescan a lone peer claims the free
    frames of the first chunk, in the job's chunk order, that has a frame nobody renders."""
    ledger = Ledger(A)
    spec = make_job(ledger, frames=len(states), chunk=chunk, options={"order": order})
    other = Ledger(B)
    other.merge(ledger.submit(spec), 1_000)
    wall = 2_000
    for frame, state in zip(spec.frames, states, strict=True):
        if state == "pending":
            continue
        (claim,) = other.claim(spec.id, [frame], wall)
        if state == "done":
            ledger.merge(other.complete(spec.id, frame, claim[1], [], 1.0), wall)  # type: ignore[arg-type]
        else:
            ledger.merge([claim], wall)
    planner = Planner(A)
    planner.plan(ledger, free_slots=1, capable={spec.id: [A]})
    planner.rescan_all()
    claims = planner.plan(ledger, free_slots=1, capable={spec.id: [A]})
    finished = (Status.DONE, Status.FAILED)
    expected: tuple[int, ...] | None = None
    for frames in chunks_of(spec):
        if any(ledger.frame_status(spec.id, f) not in finished for f in frames):
            free = [f for f in frames if ledger.frame_status(spec.id, f) == Status.PENDING]
            if free:
                expected = tuple(free)
                break
    assert (claims[0].frames if claims else None) == expected


@pytest.mark.parametrize(("seconds", "per_claim"), [(None, 1), (2.0, 1), (0.05, 2), (0.004, 16)])
def test_short_frames_are_claimed_several_home_chunks_at_a_time(
    seconds: float | None, per_claim: int
) -> None:
    """Once the job's frames are measured short, a free slot gets up to BATCH_SECONDS of this
    peer's own chunks in one claim (fewer claims and gossip per frame); a takeover and a
    stolen chunk are never joined to them, and no frame is in two claims."""
    ledger, job = setup(frames=200)
    spec = ledger.job(job)
    assert spec is not None
    planner = Planner(A)
    homes = planner.homes(spec, [A, B])
    mine = [c[0] for i, c in enumerate(chunks_of(spec)) if homes[i] == A]
    if seconds is not None:  # one frame of A's done, in `seconds`
        claim = ledger.claim(job, [mine[0]], 1_000)[0][1]
        assert isinstance(claim, FrameRecord)
        ledger.complete(job, mine[0], claim, [output(mine[0])], seconds)
    assert batch_size(seconds) == per_claim
    claims = planner.plan(ledger, free_slots=2, capable={job: [A, B]}, alive=[A, B])
    assert len(claims) == 2
    start = 1 if seconds is not None else 0
    assert [c.frames for c in claims] == [
        tuple(mine[start : start + per_claim]),
        tuple(mine[start + per_claim : start + 2 * per_claim]),
    ]
    assert all(c.home and not c.takeover for c in claims)


def test_merged_claims_keep_takeovers_and_steals_apart() -> None:
    job = "job"
    fresh = [Claim(job, (f,), False, True, A) for f in (1, 2, 3)]
    takeover = Claim(job, (7,), True, True, A)
    stolen = Claim(job, (9,), False, False, B)
    merged = merge_claims([fresh[0], fresh[1], takeover, fresh[2], stolen], batch=4)
    assert [(c.frames, c.takeover, c.home) for c in merged] == [
        ((1, 2), False, True),
        ((7,), True, True),
        ((3,), False, True),
        ((9,), False, False),
    ]
    assert [c.frames for c in merge_claims(fresh, batch=2)] == [(1, 2), (3,)]


@pytest.mark.parametrize(("seconds", "per_steal"), [(2.0, 1), (0.05, 2), (0.004, 16)])
def test_short_frames_are_stolen_several_chunks_at_a_time(seconds: float, per_steal: int) -> None:
    """A peer with nothing of its own left steals as it claims at home: short frames several
    chunks of one home in one claim (one check with that home, one claim), never the home's
    next chunk, and never two homes' chunks together."""
    ledger, job = setup(frames=200)
    spec = ledger.job(job)
    assert spec is not None
    planner = Planner(A)
    peers = [A, B, NODES[2]]
    homes = planner.homes(spec, peers)
    chunks = chunks_of(spec)
    for i, home in enumerate(homes):  # A has rendered all of its own chunks, in ``seconds``
        if home == A:
            claim = ledger.claim(job, chunks[i], 1_000)[0][1]
            assert isinstance(claim, FrameRecord)
            ledger.complete(job, chunks[i][0], claim, [output(chunks[i][0])], seconds)
    claims = planner.plan(ledger, free_slots=1, capable={job: peers}, alive=peers, saturated=[B])
    assert len(claims) == 1
    (steal,) = claims
    assert not steal.home and not steal.takeover and steal.home_peer in (B, NODES[2])
    assert len(steal.frames) == per_steal
    assert all(homes[chunks.index((f,))] == steal.home_peer for f in steal.frames)


def test_merged_steals_keep_one_home_and_takeovers_apart() -> None:
    job = "job"
    b1, c1, b2, b3, t = (
        Claim(job, (1,), False, False, B),
        Claim(job, (2,), False, False, NODES[2]),
        Claim(job, (3,), False, False, B),
        Claim(job, (4,), False, False, B),
        Claim(job, (5,), True, False, B),
    )
    assert [c.frames for c in merge_stolen([b1, c1, b2, t, b3], batch=2, want=3)] == [
        (1, 3),
        (2,),
        (5,),
    ]
    assert [c.frames for c in merge_stolen([b1, c1, b2, b3], batch=4, want=1)] == [(1, 3, 4)]
    assert merge_stolen([t, b1], batch=4, want=2) == [t, b1]


@pytest.mark.parametrize("seconds", [0.5, 0.004])
def test_a_chunk_a_round_behind_on_a_busy_home_is_taken_as_lagging(seconds: float) -> None:
    """Frames claimed one at a time: the lagging chunk is taken. Short frames, claimed several
    at a time (``batch_size``): never; the peer claims its own, since a lagging chunk would
    split its batch into one-frame claims, each asked of a home first (at 4 ms a frame, four
    peers rendered 620 frames/s that way against 920 without)."""
    ledger, job = setup(frames=12)
    spec = ledger.job(job)
    assert spec is not None
    planner = Planner(A)
    homes = planner.homes(spec, [A, B])
    chunks = chunks_of(spec)
    a_chunks = [i for i, home in enumerate(homes) if home == A]
    for i in a_chunks[:-1]:  # A has done all of its own but the last
        claim = ledger.claim(job, chunks[i], 2_000)[0][1]
        assert isinstance(claim, FrameRecord)
        ledger.complete(job, chunks[i][0], claim, [output(chunks[i][0])], seconds)
    last = a_chunks[-1]
    behind = [i for i, home in enumerate(homes) if home == B and last - i >= 2]
    assert behind, homes  # B's first chunks are a round (two chunks) behind A's last one
    # B busy on every slot: A takes B's earliest chunk instead of its own, marked lagging (the
    # worker takes it only with B's promise: B may be across a split, rendering it).
    claims = planner.plan(ledger, free_slots=1, capable={job: [A, B]}, alive=[A, B], saturated=[B])
    if batch_size(seconds) > 1:
        assert [(c.frames, c.lagging, c.home) for c in claims] == [(chunks[last], False, True)]
        return
    assert [(c.frames, c.lagging, c.home, c.home_peer) for c in claims] == [
        (chunks[behind[0]], True, False, B)
    ]
    # B idle (about to take it), or not alive (across a split): A takes its own last chunk.
    for alive, saturated in (([A, B], []), ([A], [B])):
        claims = planner.plan(
            ledger, free_slots=1, capable={job: [A, B]}, alive=alive, saturated=saturated
        )
        assert [(c.frames, c.lagging, c.home) for c in claims] == [(chunks[last], False, True)]


def test_a_peer_far_ahead_claims_its_own_next_chunks_and_finds_a_reopened_one() -> None:
    """Short frames, a peer far ahead of a slower one (whose unfinished chunk holds the job's
    cursor): its plan is its own next chunks, found through its own chunks alone, and an own
    frame opened again behind its place (a user's retry) is the first one it claims."""
    ledger, job = setup(frames=400)
    spec = ledger.job(job)
    assert spec is not None
    planner = Planner(A)
    peers = [A, B]
    homes = planner.homes(spec, peers)
    chunks = chunks_of(spec)
    mine = [i for i, home in enumerate(homes) if home == A]
    theirs = [i for i, home in enumerate(homes) if home == B]
    slow = ledger.claim(job, chunks[theirs[0]], 1_000)[0][1]  # B renders its first chunk
    assert isinstance(slow, FrameRecord)
    for i in mine[:100]:  # A has done its first hundred
        claim = ledger.claim(job, chunks[i], 1_000)[0][1]
        assert isinstance(claim, FrameRecord)
        ledger.complete(job, chunks[i][0], claim, [output(chunks[i][0])], 0.004)
    assert batch_size(ledger.mean_frame_seconds(job)) == 16

    def plan() -> list[tuple[int, ...]]:
        claims = planner.plan(ledger, free_slots=1, capable={job: peers}, alive=peers)
        assert all(c.home and not c.takeover and not c.lagging for c in claims)
        return [c.frames for c in claims]

    expected = tuple(f for i in mine[100:116] for f in chunks[i])
    assert plan() == [expected]
    assert plan() == [expected]  # nothing claimed meanwhile: the same again
    retried = chunks[mine[3]][0]
    ledger.retry(job, [retried], 2_000)
    planner.reopened(job, retried)  # as the worker tells it of every frame open again
    assert plan() == [(retried, *expected[:15])]
