"""Scheduling at farm scale (issue 4): 20 real nodes with fake renderers, virtual time.

Real :class:`~peerfarm.node.Node` objects (ledger, leases, planner, store, transfers) on the
in-memory network with ``GossipConfig.fast()`` timers (lease 1 s, renewed every 0.2 s) under
:func:`peerfarm.testing.sim_clock`. Jobs go in through the control facade
(:class:`~peerfarm.farm.Farm`), like the CLI's; ``RenderLog`` records every render with its
virtual start and end, so the tests check what ran where and when, not only the end state.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from peerfarm.farm import Farm
from peerfarm.gossip.broadcast import encoded_size
from peerfarm.gossip.config import GossipConfig
from peerfarm.gossip.membership import MemberState
from peerfarm.ledger.model import FrameRecord, JobState, Status
from peerfarm.peer.render import Renderer as PeerRenderer
from peerfarm.peer.sync import KEEP_ASKING_S
from peerfarm.peer.worker import SET_ASIDE_S
from peerfarm.scheduler.eligibility import JOB_PREFIX, NO_SCENE, NO_SCENE_REASON
from peerfarm.scheduler.planner import Planner, chunks_of
from peerfarm.testing import (
    RenderRecord,
    SimFarm,
    SimPeer,
    frames_of,
    output_files,
)

from .pushes import Sent

N = 20
SECONDS = 0.25  # per fake frame


def _frames(farm: SimFarm, job: str) -> list[int]:
    spec = farm.live()[0].node.ledger.job(job)
    assert spec is not None
    return list(spec.frames)


def assert_no_duplicates(farm: SimFarm) -> None:
    """No frame rendered twice: a claim is pushed to every peer at once, so a concurrent
    claim loses within one datagram hop, and a lapsed lease is confirmed with its owner."""
    assert farm.log.duplicates() == {}


def assert_complete(farm: SimFarm, job: str, submitter: SimPeer) -> None:
    """Every frame DONE on every live peer, rendered (completed) at least once, and every output
    delivered, byte for byte, to the submitter's output folder."""
    frames = _frames(farm, job)
    for peer in farm.live():
        statuses = farm.frame_statuses(job, peer)
        assert set(statuses.values()) == {Status.DONE}, peer.node.name
        assert peer.node.ledger.job_state(job) == JobState.DONE
    done_by = {r.frame for r in farm.log.completed(job)}
    assert done_by == set(frames)
    for frame in frames:
        record = submitter.node.ledger.frame(job, frame)
        # The ledger's DONE entry names a node that did complete this frame.
        assert any(r.node == record.node for r in farm.log.completed(job) if r.frame == frame)
    spec = submitter.node.ledger.job(job)
    assert spec is not None
    delivered = output_files(Path(spec.output))
    assert sorted(delivered) == sorted(frames_of(frames))
    assert delivered == farm.expected_files(job)


async def wait_finished(farm: SimFarm, job: str, timeout: float) -> float:
    """Until every live peer sees ``job`` finished and delivered; then until all ledgers are
    equal (which needs every other job to be idle too). Returns when the job was finished."""
    finished = await farm.wait_until(
        lambda: farm.job_finished(job),
        timeout=timeout,
        poll=0.05,
        what=f"job {job[:8]} finished everywhere",
    )
    await farm.wait_until(farm.converged, timeout=timeout, poll=0.05, what="equal ledgers")
    return finished


def first_in_flight(
    farm: SimFarm, job: str, *, not_on: frozenset[str] | set[str] = frozenset()
) -> RenderRecord:
    running = [r for r in farm.log.running() if r.job == job and r.node not in not_on]
    assert running, "nothing is rendering"
    return running[0]


async def test_every_frame_done_once_and_delivered_without_faults(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=21)
        async with farm.running():
            peers = await farm.start(N)
            submitters = [peers[0], peers[7], peers[13]]
            jobs = [await farm.submit(p, "1-60", name=f"job{i}") for i, p in enumerate(submitters)]
            start = trio.current_time()
            for job in jobs:
                await wait_finished(farm, job, 30.0)
            took = trio.current_time() - start
            print(f"3 x 60 frames on {N} peers: {took:.2f} s (ideal {180 * SECONDS / N:.2f})")
            assert_no_duplicates(farm)
            # Thieves that lost a race for the same chunk (near a job's end) stopped at once.
            lost = [r for r in farm.log.records if not r.completed]
            print(f"{len(lost)} renders stopped after losing a concurrent claim")
            # A loser hears of the winning claim from the immediate push (milliseconds) or, if
            # that push went to other peers, from gossip or the next push-pull (1 s here).
            slowest = max((r.ended or math.inf) - r.started for r in lost) if lost else 0.0
            assert slowest <= GossipConfig.fast().push_pull_interval + 0.25, slowest
            # A third of the frames would be a herd, not a race (13-20 seen before commit
            # 204bb63, ~45-50 after it).
            assert len(lost) <= 60
            for job, submitter in zip(jobs, submitters, strict=True):
                assert_complete(farm, job, submitter)
            assert len(farm.log.by_node()) == N  # the work was spread over every peer


async def test_peer_killed_mid_frame_has_its_frame_rendered_elsewhere(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = GossipConfig.fast()
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=22, renderer_seconds=0.5)
        async with farm.running():
            peers = await farm.start(N)
            submitter = peers[0]
            job = await farm.submit(submitter, "1-100")
            await trio.sleep(1.2)
            victim = first_in_flight(farm, job, not_on={submitter.node_id})
            farm.crash(victim.node)
            crashed = trio.current_time()
            await wait_finished(farm, job, 30.0)
            assert_complete(farm, job, submitter)
            again = [r for r in farm.log.completed(job) if r.frame == victim.frame]
            assert len(again) == 1 and again[0].node != victim.node
            delay = again[0].started - crashed
            print(f"frame {victim.frame} re-rendered {delay:.2f} s after the crash")
            # Taken over once the lease ran out on the taker's clock (or the victim was
            # declared dead, whichever came first) and a slot freed (every peer is busy: one
            # 0.5 s frame at most), plus one scheduler wakeup.
            assert delay <= config.lease_timeout + 0.5 + 0.1
            assert_no_duplicates(farm)
            assert sum(p.node.stats.takeovers for p in farm.live()) >= 1


async def test_short_partition_duplicates_only_frames_in_flight_at_the_split(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=23)
        async with farm.running():
            peers = await farm.start(N)
            job = await farm.submit(peers[0], "1-240")
            await trio.sleep(1.0)
            left, right = peers[: N // 2], peers[N // 2 :]
            farm.partition([p.node_id for p in left], [p.node_id for p in right])
            split = trio.current_time()
            in_flight = {r.frame for r in farm.log.in_flight(split, job)}
            await trio.sleep(2.0)  # neither side runs out of its own frames (~120 each)
            farm.heal()
            await wait_finished(farm, job, 30.0)
            assert_complete(farm, job, peers[0])
            dups = farm.log.duplicates()
            print(f"{len(in_flight)} frames in flight at the split, duplicates: {sorted(dups)}")
            # Rendered twice only if in flight at the split, or taken across the split: by a
            # peer on the other side than the frame's home (once its own side ran dry).
            side = {p.node_id: p in left for p in peers}
            spec = peers[0].node.ledger.job(job)
            assert spec is not None
            homes = Planner("x").homes(spec, [p.node_id for p in peers])
            unexplained = []
            for _job, frame in dups:
                if frame in in_flight:
                    continue
                home = homes[spec.frames.index(frame)]
                assert home is not None
                renders = [r for r in farm.log.completed(job) if r.frame == frame]
                if not any(side[r.node] != side[home] for r in renders):
                    unexplained.append(frame)
            print(f"duplicates on the home's own side: {unexplained}")
            assert unexplained == []
            # Only the frames in flight at the split (and a claim made at that instant). A chunk
            # of the other side whose first backup is here looks lagging (its home's progress is
            # not heard), but it is taken to keep frames in order only with its home's promise,
            # and the home does not answer across the split. Without that rule 6-14 more frames
            # were rendered twice, depending on the job id's homes.
            assert len(dups) <= len(in_flight) + 2
            assert sum(p.node.stats.steals_unanswered for p in farm.live()) >= 1
            assert max(dups.values(), default=1) <= 2  # across a split: at most twice
            # The /metrics counter counts every completed render beyond the first, farm-wide.
            metric = sum(p.node.stats.duplicate_frames for p in farm.live())
            assert metric == sum(n - 1 for n in dups.values()), (metric, dups)


async def test_long_partition_heals_without_losing_a_frame(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=24)
        async with farm.running():
            peers = await farm.start(N)
            submitter = peers[0]
            job = await farm.submit(submitter, "1-120")
            await trio.sleep(0.5)
            left, right = peers[: N // 2], peers[N // 2 :]
            farm.partition([p.node_id for p in left], [p.node_id for p in right])
            # Each side renders its own frames, then takes the other side's: both finish.
            await farm.wait_until(
                lambda: all(p.node.ledger.job_state(job) == JobState.DONE for p in right),
                timeout=20.0,
                poll=0.05,
                what="the far side finishing the job alone",
            )
            farm.heal()
            await wait_finished(farm, job, 30.0)
            assert_complete(farm, job, submitter)
            print(f"duplicates after a long split: {len(farm.log.duplicates())} of 120")
            assert len(farm.log.duplicates()) < 120


async def test_cancel_stops_every_render_within_a_second(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=25)
        async with farm.running():
            peers = await farm.start(N)
            job = await farm.submit(peers[0], "1-1000")
            await trio.sleep(1.0)
            assert len(farm.log.running()) >= N - 2  # busy (a few between two frames)
            await farm.act(peers[5], job, "cancel")
            cancelled = trio.current_time()
            await trio.sleep(3.0)
            assert farm.log.started_after(cancelled + 1.0, job) == []
            assert farm.log.running() == []
            last_end = max(r.ended or 0.0 for r in farm.log.of_job(job))
            print(f"last render of the cancelled job ended {last_end - cancelled:.3f} s after")
            assert last_end <= cancelled + 1.0
            assert all(p.node.ledger.job_state(job) == JobState.CANCELLED for p in farm.live())
            assert farm.converged()


async def test_pause_stops_and_resume_continues(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=26)
        async with farm.running():
            peers = await farm.start(N)
            job = await farm.submit(peers[0], "1-150")
            await trio.sleep(1.0)
            await farm.act(peers[3], job, "pause")
            paused = trio.current_time()
            await trio.sleep(3.0)
            assert farm.log.started_after(paused + 1.0, job) == []
            assert farm.log.running() == []
            done_while_paused = len(farm.log.completed(job))
            assert 0 < done_while_paused < 150
            assert all(p.node.ledger.job_state(job) == JobState.PAUSED for p in farm.live())
            # Nothing stays claimed: stopped renders handed their frames back.
            assert all(s != Status.CLAIMED for s in farm.frame_statuses(job).values())
            await farm.act(peers[9], job, "resume")
            resumed = trio.current_time()
            await wait_finished(farm, job, 30.0)
            assert farm.log.started_after(resumed, job)
            assert_complete(farm, job, peers[0])
            assert_no_duplicates(farm)


async def test_high_priority_job_submitted_later_finishes_first(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=27)
        async with farm.running():
            peers = await farm.start(N)
            low = await farm.submit(peers[0], "1-300", name="low")
            await trio.sleep(1.0)
            high = await farm.submit(peers[1], "1-40", name="high", priority=10)
            submitted = trio.current_time()
            high_done = await farm.wait_until(
                lambda: farm.job_finished(high), timeout=30.0, poll=0.05, what="high done"
            )
            assert all(p.node.ledger.job_state(low) == JobState.ACTIVE for p in farm.live())
            await wait_finished(farm, low, 60.0)
            # When the last high frame was first picked up (by any render, also one that lost
            # its claim to a concurrent claimant and stopped): until then a high frame waited.
            first_start: dict[int, float] = {}
            for r in farm.log.of_job(high):
                first_start[r.frame] = min(first_start.get(r.frame, r.started), r.started)
            all_taken = max(first_start.values())
            # Once every peer knew of the high job (gossip: a few ms), no low frame started
            # while a high one waited (50 ms of slack for claims still in flight).
            low_meanwhile = [
                r
                for r in farm.log.started_after(submitted + 0.1, low)
                if r.started < all_taken - 0.05
            ]
            print(
                f"high job done {high_done - submitted:.2f} s after submit "
                f"(ideal {40 * SECONDS / N:.2f}); low frames started meanwhile: "
                f"{len(low_meanwhile)}"
            )
            # Claims race across 20 peers (a claim that loses to a concurrent one reopens
            # nothing, but its peer may already have moved on): allow a couple, no more.
            assert len(low_meanwhile) <= 3, low_meanwhile
            # Two rounds of 20 frames, a slot to free first, delivery rounds (every <= 1 s).
            assert high_done - submitted <= 40 * SECONDS / N + SECONDS + 1.5
            assert_complete(farm, high, peers[1])
            assert_complete(farm, low, peers[0])


async def test_failed_render_is_retried_on_another_peer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    failed_on: dict[int, str] = {}

    def fail(node: str, frame: int) -> bool:
        # The first render of frames 5 and 9 fails, wherever it runs.
        if frame in (5, 9) and frame not in failed_on:
            failed_on[frame] = node
            return True
        return False

    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=28, fail=fail)
        async with farm.running():
            peers = await farm.start(N)
            job = await farm.submit(peers[0], "1-60")
            await wait_finished(farm, job, 30.0)
            assert_complete(farm, job, peers[0])
            ledger = peers[0].node.ledger
            for frame, node in failed_on.items():
                attempts = ledger.attempts(job, frame)
                assert [key[5] for key, _a in attempts] == [node]
                assert "fake failure" in attempts[0][1].error
                assert ledger.frame(job, frame).node != node  # rendered elsewhere


async def test_frame_failing_everywhere_ends_failed_after_the_retry_limit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=29, fail=lambda node, frame: frame == 7)
        async with farm.running():
            peers = await farm.start(N)
            job = await farm.submit(peers[0], "1-40", retries=3)
            await wait_finished(farm, job, 30.0)
            for peer in farm.live():
                ledger = peer.node.ledger
                assert ledger.job_state(job) == JobState.FAILED
                statuses = farm.frame_statuses(job, peer)
                assert statuses.pop(7) == Status.FAILED
                assert set(statuses.values()) == {Status.DONE}
                attempts = ledger.attempts(job, 7)
                assert len(attempts) == 3
                assert len({key[5] for key, _a in attempts}) == 3  # three different peers
            renders = [r for r in farm.log.of_job(job) if r.frame == 7]
            assert len([r for r in renders if r.failed]) == 3
            # Others that raced for a retry lost the claim and stopped at once.
            assert all(
                r.ended is not None and r.ended - r.started <= 0.5 for r in renders if not r.failed
            )


async def test_graceful_stop_hands_claims_back_without_waiting_for_the_lease(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # A lease far longer than the test: only the hand-back can explain a quick takeover.
    config = GossipConfig.fast().replace(lease_timeout=30.0, lease_renew_interval=1.0)
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=30, config=config, renderer_seconds=2.0)
        async with farm.running():
            peers = await farm.start(N)
            job = await farm.submit(peers[0], "1-10")  # ten peers stay idle
            await trio.sleep(0.5)
            victim = first_in_flight(farm, job, not_on={peers[0].node_id})
            stopping = trio.current_time()
            await farm.stop(victim.node)
            await wait_finished(farm, job, 30.0)
            assert_complete(farm, job, peers[0])
            again = [r for r in farm.log.completed(job) if r.frame == victim.frame]
            assert len(again) == 1 and again[0].node != victim.node
            delay = again[0].started - stopping
            print(f"frame {victim.frame} taken {delay:.2f} s after the stop began (lease 30 s)")
            assert delay < 0.5
            assert_no_duplicates(farm)
            assert all(
                p.node.membership.get(victim.node).state == MemberState.LEFT  # type: ignore[union-attr]
                for p in farm.live()
            )


async def test_chunked_job_claims_four_frames_at_a_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=31)
        async with farm.running():
            peers = await farm.start(N)
            job = await farm.submit(peers[0], "1-80", chunk=4)
            await wait_finished(farm, job, 30.0)
            assert_complete(farm, job, peers[0])
            assert_no_duplicates(farm)
            ledger = peers[0].node.ledger
            spec = ledger.job(job)
            assert spec is not None
            for chunk in chunks_of(spec):
                assert len(chunk) == 4
                records = [ledger.frame(job, f) for f in chunk]
                # One claim: one node, one claim stamp, one attempt for the four frames.
                assert len({(r.node, r.stamp, r.attempt) for r in records}) == 1
                renders = sorted(
                    (r for r in farm.log.completed(job) if r.frame in chunk),
                    key=lambda r: r.started,
                )
                assert [r.frame for r in renders] == list(chunk)  # one after the other
                assert len({r.node for r in renders}) == 1


async def test_makespan_of_240_quarter_second_frames_on_four_peers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=32)
        async with farm.running():
            peers = await farm.start(4)
            job = await farm.submit(peers[0], "1-240")
            submitted = trio.current_time()
            done = await farm.wait_until(
                lambda: peers[0].node.ledger.job_state(job) == JobState.DONE,
                timeout=60.0,
                poll=0.01,
                what="the job done",
            )
            makespan = done - submitted
            await wait_finished(farm, job, 10.0)
            print(
                f"makespan {makespan:.2f} s (virtual) vs ideal 15.00 s: "
                f"{15.0 / makespan:.1%} of ideal; per peer {farm.log.by_node()}"
            )
            assert_complete(farm, job, peers[0])
            assert_no_duplicates(farm)
            assert makespan >= 15.0
            assert makespan <= 15.0 / 0.97


def _order_lag(farm: SimFarm, job: str) -> int:
    """How many later frames are done while an earlier one still waits unclaimed."""
    ledger = farm.live()[0].node.ledger
    spec = ledger.job(job)
    assert spec is not None
    waiting = [f for f in spec.frames if ledger.frame(job, f).status != Status.DONE]
    pending = [f for f in waiting if ledger.frame(job, f).status != Status.CLAIMED]
    if not pending:
        return 0
    first = pending[0]
    return sum(1 for f in spec.frames if f > first and ledger.frame(job, f).status == Status.DONE)


async def test_frames_finish_close_to_their_order_and_the_order_option_is_kept(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Artists look at the first frames first: across the farm, frames start close to their
    order ("ordered", the default), and the "first-last" and "spread" orders do what they say."""
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=41, renderer_seconds=0.25)
        async with farm.running():
            peers = await farm.start(8)
            lags = {}
            for order in ("ordered", "first-last", "spread"):
                job = await farm.submit(peers[0], "1-96", name=order, order=order)
                lag = 0
                while not farm.job_finished(job):
                    lag = max(lag, _order_lag(farm, job))
                    await trio.sleep(0.05)
                lags[order] = lag
                renders = sorted(farm.log.of_job(job), key=lambda r: r.started)
                # The frames started in the farm's first two rounds (two frames per peer).
                second_round = renders[2 * len(peers) - 1].started
                started = [r.frame for r in renders if r.started <= second_round]
                if order == "first-last":
                    assert 1 in started and 96 in started, started
                if order == "spread":
                    assert max(started) > 48, started  # the second half is sampled early
            print(f"largest count of later frames done before an earlier one started: {lags}")
            assert lags["ordered"] <= 2 * len(peers)
            assert lags["spread"] > lags["ordered"]


async def test_a_home_promises_each_open_frame_to_one_thief_and_leaves_it_alone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Steals are asked of the chunk's home (issue 16, the 32-host run): the home promises an
    open frame to the first thief that asks, refuses the next one, refuses a frame it renders
    itself (and the refused thief learns its claim from the answer), does not claim a promised
    frame while the promise holds, and takes it again once the promise ran out and the thief
    never claimed it (a thief that vanished loses nothing)."""
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=5, renderer_seconds=0.4)  # shorter than the promise
        async with farm.running():
            home, thief, other = await farm.start(3)
            # The two thieves take no work (held), so neither claims what it is promised, and
            # every frame is the home's own: its next claim is always its next pending frame.
            # Only the promise can keep the home off the frames it promised.
            for peer in (thief, other):
                await Farm(peer.node).host(peer.name, "hold")
            job = await farm.submit(home, "1-30")
            spec = home.node.ledger.job(job)
            assert spec is not None
            await farm.wait_until(
                lambda: home.node.capable_peers(spec) == [home.node_id],
                timeout=10,
                what="the holds heard",
            )
            own = list(spec.frames)

            def home_renders() -> list[int]:
                return [f for f in own if (job, f) in home.node.worker.running]

            await farm.wait_until(lambda: bool(home_renders()), timeout=10, what="a render")
            busy = home_renders()[0]
            pending = [f for f in own if home.node.ledger.frame_status(job, f) == Status.PENDING]
            wanted = pending[0]  # the home's next frame once its render ends

            granted = home.node.stats.steals_granted
            # Every frame the home has left is promised to the thief...
            assert await thief.node.sync.check_steal(home.node_id, job, pending) == set(pending)
            assert await other.node.sync.check_steal(home.node_id, job, [wanted]) == set()
            assert await other.node.sync.check_steal(home.node_id, job, [busy]) == set()
            record = other.node.ledger.frame(job, busy)
            assert (record.status, record.node) == (Status.CLAIMED, home.node_id)
            assert home.node.stats.steals_granted == granted + len(pending)

            # ...and nobody renders one while the promise holds (the home's render ends well
            # before: 0.4 s frames, a 1 s promise)...
            promised_until = trio.current_time() + farm.config.lease_timeout
            await trio.sleep_until(promised_until - 0.05)
            by = {
                (r.frame, r.node) for r in farm.log.records if r.job == job and r.frame in pending
            }
            assert by == set(), f"promised frames rendered: {by}"
            # ...then the home takes them back (the thief never claimed them) and finishes the
            # job, every frame exactly once.
            await farm.wait_until(
                lambda: home.node.ledger.job_state(job) == JobState.DONE,
                timeout=100,
                what="the job finished",
            )
            done = [r.frame for r in farm.log.completed(job)]
            assert all(done.count(f) == 1 for f in pending)
            assert_no_duplicates(farm)


async def test_a_failing_frame_in_a_batch_of_short_frames_fails_alone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Short frames are claimed several at a time. A frame that fails inside such a batch hands
    the whole batch back, and the peer then claims the job one frame at a time: only the
    failing frames fail (retries 0), every other frame is done, and the peer is not banned for
    its neighbours' failures (the real-daemon case: tests/real/farm/test_status_pages.py)."""
    broken = {40, 90}
    with trio.fail_after(120):
        farm = SimFarm(
            tmp_path, seed=9, renderer_seconds=0.002, fail=lambda node, frame: frame in broken
        )
        async with farm.running():
            (peer,) = await farm.start(1)
            job = await farm.submit(peer, "1-200", retries=0)
            await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="job ended")
            ledger = peer.node.ledger
            failed = {f for f in range(1, 201) if ledger.frame_status(job, f) == Status.FAILED}
            assert failed == broken
            assert ledger.counts(job).done == 200 - len(broken)
            assert peer.node_id not in ledger.banned(job)
            # Frame 40 was first tried inside a batch (handed back), then alone.
            tries = [r for r in farm.log.of_job(job) if r.frame == 40]
            assert len(tries) == 2 and all(r.failed for r in tries)


async def test_steal_questions_to_a_home_share_one_stream_while_they_come_often(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A thief asks the same homes again and again while a job of short frames runs, and
    opening a stream was two of a question's three round trips: questions within
    KEEP_ASKING_S of each other share one stream, an idle one is closed, and one the home
    closed (it was killed and restarted) is replaced without losing the question."""
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=8)
        async with farm.running():
            home, thief = await farm.start(2)
            job = await farm.submit(home, "1-4")
            await wait_finished(farm, job, 30.0)

            async def ask(frames: list[int]) -> int:
                """Asks (every frame is done: refused, with the home's records); returns the
                streams the thief opened meanwhile (a question takes milliseconds)."""
                before = farm.net.stats(thief.address).streams_opened
                assert await thief.node.sync.check_steal(home.node_id, job, frames) == set()
                return farm.net.stats(thief.address).streams_opened - before

            await trio.sleep(KEEP_ASKING_S * 2)  # the job's own steals' stream is closed
            assert await ask([1]) == 1
            for frame in (2, 3):
                await trio.sleep(KEEP_ASKING_S / 4)
                assert await ask([frame]) == 0  # the same stream
            await trio.sleep(KEEP_ASKING_S * 2)  # idle: closed (the home's connection freed)
            assert await ask([4]) == 1
            farm.crash(home.node_id)
            home = await farm.restart(home.node_id)
            assert await ask([1]) == 1  # the kept stream died with the home: a new one


async def test_a_peer_near_its_metadata_limit_lists_the_unreachable_scenes_that_fit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Gossiped metadata has a size limit: a peer that cannot get the scenes of many jobs lists
    as many as fit, and never fails to update its metadata because of them."""
    farm = SimFarm(tmp_path, seed=5)
    async with farm.running():
        (peer,) = await farm.start(1)
        node = peer.node
        limit = node.config.meta_limit
        node.parts.extra_meta["pad"] = "x" * (limit - encoded_size(node.meta()) - 40)
        jobs = [f"{n:032x}" for n in range(10)]
        for job in jobs:
            node.scene_reached(job, False)  # each updates the gossiped metadata
        meta = node.meta()
        assert encoded_size(meta) <= limit
        assert 1 <= len(meta[NO_SCENE]) < len(jobs)
        assert meta[NO_SCENE] == sorted(j[:JOB_PREFIX] for j in jobs)[: len(meta[NO_SCENE])]
        for job in jobs:
            node.scene_reached(job, True)
        assert NO_SCENE not in node.meta()


async def test_a_job_whose_scene_went_down_with_its_submitter_waits_and_does_not_fail(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The submitter is killed before any other peer fetched the scene: nobody can render the
    job meanwhile, but that is no failure of the job nor of the peers that tried (they hand the
    frames back and leave the job a while); once the submitter is back, the job is done and
    delivered to it."""
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=23, renderer_seconds=0.25)
        async with farm.running():
            submitter, *others = await farm.start(3)
            job = await farm.submit(submitter, "1-12")
            await farm.wait_until(
                lambda: all(p.node.ledger.job(job) is not None for p in others),
                timeout=5.0,
                poll=0.0001,
                what="the job heard of",
            )
            farm.crash(submitter.node_id)  # before a fetch of the scene could end (a round trip)
            await trio.sleep(3 * SET_ASIDE_S)
            names = sorted(str(p.node.name) for p in others)
            for peer in others:
                assert peer.node.ledger.job_state(job) == JobState.ACTIVE
                assert not peer.node.ledger.banned(job)
                assert peer.node.stats.frames_failed == 0
                # Every peer's status says why each of them waits (gossiped in metadata).
                view = Farm(peer.node).status(job)["jobs"][0]
                assert view["waiting"] == {name: NO_SCENE_REASON for name in names}
                assert view["blocked"] is None  # a passing reason: the job is not stuck for good
            submitter = await farm.restart(submitter.node_id)
            await wait_finished(farm, job, 60.0)
            assert_complete(farm, job, submitter)
            # Once the job is over, no peer says it lacks the scene any more.
            await farm.wait_until(
                lambda: all(NO_SCENE not in m.meta for p in others for m in p.node.members()),
                timeout=10.0,
                what="the scene reasons withdrawn",
            )


def _first_push(
    sent: list[tuple[float, list[tuple[int, FrameRecord]]]], frame: int, status: Status
) -> int | None:
    """The index of the first push carrying ``frame`` with ``status`` (None: none did)."""
    for index, (_at, frames) in enumerate(sent):
        if any(f == frame and r.status == status for f, r in frames):
            return index
    return None


async def test_a_finished_frame_and_the_claim_of_its_slots_next_frame_leave_in_one_push(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot is claimed again as soon as its render's process exits, before that render's
    frame is stored and written DONE: the claim waits for the DONE and both go in one push,
    one datagram to every peer instead of two (at 32 peers on a loaded machine, two thirds of
    the pushes were such halves). Here storing an output takes 20 ms, as on a busy disk."""
    store = PeerRenderer._store_outputs

    async def slow_store(self: PeerRenderer, *args: Any) -> Any:
        await trio.sleep(0.02)
        return await store(self, *args)

    monkeypatch.setattr(PeerRenderer, "_store_outputs", slow_store)
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=41)
        async with farm.running():
            peers = await farm.start(2)
            pushes = {p.node_id: Sent(p) for p in peers}
            job = await farm.submit(peers[0], "1-12")
            await wait_finished(farm, job, 30.0)
            assert_complete(farm, job, peers[0])
    together = 0
    for node_id, recorded in pushes.items():
        sent = recorded.frame_pushes()
        renders = sorted(
            (r for r in farm.log.completed(job) if r.node == node_id), key=lambda r: r.started
        )
        assert len(renders) >= 3, renders  # both peers render a share
        for before, after in itertools.pairwise(renders):
            claimed = _first_push(sent, after.frame, Status.CLAIMED)
            done = _first_push(sent, before.frame, Status.DONE)
            assert claimed is not None and done is not None, (before, after, sent)
            assert claimed >= done, f"frame {after.frame} claimed ahead of {before.frame}"
            together += claimed == done
    assert together >= 8, pushes


async def test_a_render_is_renewed_when_its_lease_is_due_not_at_every_tick(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A claim is renewed once it is ``lease_renew_interval`` old (checked every half
    interval), so a frame shorter than the interval is never renewed (a renewal is a push to
    every peer) and a long one is renewed at most 1.5 intervals apart."""
    config = GossipConfig.fast().replace(lease_timeout=6.0, lease_renew_interval=1.0)

    def seconds(frame: int) -> float:
        return 3.7 if frame == 1 else 0.45

    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=42, config=config, renderer_seconds=seconds)
        async with farm.running():
            peers = await farm.start(2)
            pushes = {p.node_id: Sent(p) for p in peers}
            job = await farm.submit(peers[0], "1-16")
            await wait_finished(farm, job, 60.0)
            assert_complete(farm, job, peers[0])
            assert_no_duplicates(farm)
    renewals: dict[int, list[float]] = {}
    claims: dict[int, float] = {}
    for recorded in pushes.values():
        for at, frames in recorded.frame_pushes():
            for frame, record in frames:
                if record.status == Status.CLAIMED and record.seq == 0:
                    claims.setdefault(frame, at)
                elif record.status == Status.CLAIMED:
                    renewals.setdefault(frame, []).append(at)
    assert set(renewals) == {1}, renewals  # the short frames never
    # From the claim's write (the render starts with it): a first claim may wait for a push.
    started = min(r.started for r in farm.log.of_job(job) if r.frame == 1)
    assert claims[1] >= started
    times = [started, *renewals[1]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 2 <= len(renewals[1]) <= 3, times
    assert all(1.0 - 0.01 <= gap <= 1.5 + 0.05 for gap in gaps), gaps
