"""Nothing lost (issue 16): crashes, restarts, pauses, retries and failures, one at a time.

Each test reproduces one of the issue's numbered behaviours on the simulator (real nodes, real
SQLite ledgers, in-memory network, virtual time) and ends with the farm-wide invariant check.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from peerfarm.cli.views import waiting_lines
from peerfarm.gossip.config import GossipConfig
from peerfarm.ledger.model import JobState, Status
from peerfarm.status import job_view, logs_view
from peerfarm.testing import SimFarm, SimPeer
from tests.support.depth import depth

DAY_MS = 24 * 3600 * 1000


async def finish(farm: SimFarm, job: str, timeout: float = 60.0) -> None:
    await farm.wait_until(lambda: farm.job_finished(job), timeout=timeout, what="job finished")
    await farm.wait_until(farm.converged, timeout=timeout, what="equal ledgers")


def rendering_on(farm: SimFarm, job: str) -> dict[int, str]:
    return {r.frame: r.node for r in farm.log.running() if r.job == job}


async def test_a_peer_killed_right_after_submit_keeps_the_job_and_gets_its_outputs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """(1) kill -9 moments after a write was acknowledged and gossiped: the restarted peer has
    it (saved before it left), the farm renders the job and the submitter gets every frame."""
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=31, renderer_seconds=0.2)
        async with farm.running():
            submitter, *_ = await farm.start(4)
            job = await farm.submit(submitter, "1-12")  # returns once the write is on disk
            await trio.sleep(0.01)  # gossiped to the others, well before any periodic save
            farm.crash(submitter.node_id)
            assert all(p.node.ledger.job(job) for p in farm.live())
            await trio.sleep(1.0)
            submitter = await farm.restart(submitter.node_id)
            assert submitter.node.ledger.job(job) is not None
            await finish(farm, job)
            inv = farm.check_invariants()
            assert inv.delivered_files == 12


async def test_a_restarted_peer_releases_claims_no_render_holds(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """(2) the only capable peer, killed mid-frame and restarted, does not leave its claims
    "rendering" forever: it gives them back at once and renders them."""
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=32, renderer_seconds=1.0)
        async with farm.running():
            submitter, renderer = await farm.start(2, renderers=1)
            submitter, renderer = renderer, submitter  # the first peer renders, the other not
            assert renderer.renderer and not submitter.renderer
            job = await farm.submit(submitter, "1-3")
            # Killed once the submitter has heard its claim (a first claim of a job waits for
            # the renderer's next push, up to push_defer_max).
            await farm.wait_until(
                lambda: (
                    bool(rendering_on(farm, job))
                    and Status.CLAIMED in farm.frame_statuses(job, submitter).values()
                ),
                timeout=10,
                what="rendering, and the claim heard",
            )
            farm.crash(renderer.node_id)
            await trio.sleep(2.0)
            statuses = farm.frame_statuses(job, submitter)
            assert Status.CLAIMED in statuses.values()  # as the crash left it
            renderer = await farm.restart(renderer.node_id)
            await finish(farm, job)
            farm.check_invariants()
            assert farm.frame_statuses(job) == {1: Status.DONE, 2: Status.DONE, 3: Status.DONE}


async def test_a_frame_claimed_in_a_new_epoch_is_taken_over_when_its_renderer_dies(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """(3) after a retry, a peer that hears the frame's new claim without ever seeing it
    pending still takes it over when the new renderer dies."""
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=33, renderer_seconds=0.3)
        async with farm.running():
            a, b, c = await farm.start(3)
            job = await farm.submit(a, "1-6")
            await finish(farm, job)
            # c is cut off while the retry opens epoch 1 and b claims frame 3 in it.
            farm.partition([a.node_id, b.node_id], [c.node_id])
            await farm.act(a, job, "retry", "3")
            await farm.wait_until(
                lambda: rendering_on(farm, job).get(3) in (a.node_id, b.node_id),
                timeout=10,
                what="frame 3 claimed again",
            )
            owner = rendering_on(farm, job)[3]
            other = b if owner == a.node_id else a
            # c hears the new claim (epoch 1) directly, never the pending record before it.
            farm.heal()
            await farm.wait_until(
                lambda: c.node.ledger.frame(job, 3).epoch == 1, timeout=10, what="c heard"
            )
            # Now the owner and the other old peer go away: only c can finish the frame.
            farm.crash(owner)
            await farm.stop(other.node_id)
            await farm.wait_until(
                lambda: c.node.ledger.frame(job, 3).status == Status.DONE,
                timeout=30,
                what="c took frame 3 over",
            )
            assert c.node.ledger.frame(job, 3).node == c.node_id
            await farm.restart(owner)
            await farm.restart(other.node_id)
            await finish(farm, job)
            farm.check_invariants()


async def test_a_job_that_fails_everywhere_ends_failed_with_its_reason(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """(4) when every peer fails the first frames and stops taking the job, the job ends —
    failed, with the reason — instead of staying active with frames pending forever."""
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=34, renderer_seconds=0.1, fail=lambda node, frame: True)
        async with farm.running():
            peers = await farm.start(3)
            job = await farm.submit(peers[0], "1-50", retries=5)
            await finish(farm, job)
            ledger = peers[0].node.ledger
            assert ledger.job_state(job) == JobState.FAILED
            reason = ledger.halted(job)
            assert reason is not None and "no peer can render it" in reason
            assert "fake failure" in reason
            assert len(ledger.banned(job)) == 3
            assert ledger.counts(job).pending > 0  # ended early, not frame by frame
            spec = ledger.job(job)
            assert spec is not None
            # Every view says why: `status`, `status JOB`, the dashboard (`ended`) and `logs`.
            view = job_view(ledger, spec, peer_slots=1)
            assert view["state"] == "failed" and view.get("ended") == reason
            pending = next(f for f in spec.frames if ledger.frame(job, f).status == Status.PENDING)
            assert logs_view(ledger, spec, pending, {}, None).get("ended") == reason
            assert waiting_lines(view)[0] == f"ended: {reason}"
            farm.check_invariants()
            # A user's retry lifts the verdict and the bans: the job is active again.
            await farm.act(peers[0], job, "retry")
            assert ledger.halted(job) is None and ledger.banned(job) == {}
            assert ledger.job_state(job) == JobState.ACTIVE


async def test_a_long_sync_served_while_claims_land_does_not_stop_the_daemon(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """(6) a push-pull of thousands of deltas to a late joiner while the farm keeps claiming:
    the stream is served from a snapshot and the joiner converges."""
    with trio.fail_after(180):
        farm = SimFarm(tmp_path, seed=36, renderer_seconds=0.05, slots=2)
        async with farm.running():
            peers = await farm.start(3)
            # ~360 frames are done when the late peer joins (6 slots, 0.05 s a frame), and
            # claims keep landing during its sync and after: a longer job adds nothing.
            job = await farm.submit(peers[0], "1-1000", chunk=1)
            await trio.sleep(3.0)  # plenty of records, and claims landing all the time
            late = await farm.add_peer(seeds=[peers[1].address], renderer=False, name="late")
            await farm.wait_until(
                lambda: late.node.ledger.job(job) is not None, timeout=30, what="late joined"
            )
            await finish(farm, job, timeout=150)
            farm.check_invariants()
            assert all(p.node.stats.stream_errors == 0 for p in farm.live())


async def test_a_paused_peer_does_not_make_frames_render_three_times(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """(7) a peer frozen (SIGSTOP) longer than a lease resumes with a stale view: every lease
    it saw before looks lapsed. It must not take those frames over (it re-times its leases and
    asks an owner before a takeover), so no frame renders more than twice, and only the frame
    it held itself when it froze may render twice."""
    config = GossipConfig.fast()
    with trio.fail_after(300):
        for seed in range(70, 76):
            farm = SimFarm(tmp_path / str(seed), seed=seed, renderer_seconds=4.0, slots=2)
            async with farm.running():
                peers = await farm.start(3)
                a = peers[0]
                job = await farm.submit(a, "1-4")

                def one_free_and_others_busy() -> SimPeer | None:
                    """A peer with a free slot while three frames render (the victim)."""
                    nodes = list(rendering_on(farm, job).values())  # noqa: B023
                    if len(nodes) < 3:
                        return None
                    for peer in peers:  # noqa: B023
                        mine = nodes.count(peer.node_id)
                        if mine < 2 and len(nodes) - mine >= 1:
                            return peer
                    return None

                await farm.wait_until(one_free_and_others_busy, timeout=10, what="renders")
                victim = one_free_and_others_busy()
                assert victim is not None
                held = {f for f, n in rendering_on(farm, job).items() if n == victim.node_id}
                await trio.sleep(0.3)  # the victim has seen every claim renewed
                farm.pause(victim.node_id)
                await trio.sleep(config.lease_timeout * 3)
                farm.resume(victim.node_id)
                resumed = trio.current_time()
                await finish(farm, job)
                farm.check_invariants()
                counts: dict[int, int] = {}
                for render in farm.log.completed(job):
                    counts[render.frame] = counts.get(render.frame, 0) + 1
                taken = [
                    r.frame
                    for r in farm.log.of_job(job)
                    if r.node == victim.node_id and r.started >= resumed and r.frame not in held
                ]
                story = [
                    (r.frame, farm.peers[r.node].name, round(r.started, 2), r.completed)
                    for r in farm.log.of_job(job)
                ]
                assert not taken, f"seed {seed}: the victim took over {taken}: {story}"
                assert max(counts.values()) <= 2, (seed, story, victim.name)
                assert {f for f, n in counts.items() if n == 2} <= held, (seed, story, held)


async def test_a_clock_a_day_ahead_cannot_freeze_a_pause(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """(8) a pause written by a peer whose clock runs a day ahead is undone by a later resume
    from a peer with the right time."""
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=38, renderer_seconds=0.2)
        async with farm.running():
            a, _b, c = await farm.start(3)
            farm.skew_clock(c.node_id, 2 * DAY_MS)
            job = await farm.submit(a, "1-40")
            await trio.sleep(0.5)
            await farm.act(c, job, "pause")
            await farm.wait_until(lambda: a.node.ledger.paused(job), timeout=10, what="pause heard")
            await farm.act(a, job, "resume")
            await farm.wait_until(farm.converged, timeout=10, what="converged")
            assert not any(p.node.ledger.paused(job) for p in farm.live())
            await finish(farm, job)
            farm.check_invariants()


async def test_fault_free_farms_render_every_frame_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """No duplicate renders in a healthy farm: no lost claim race, no takeover of a done frame
    (the owner is asked first), over several seeds."""
    with trio.fail_after(300):
        total = 0
        for seed in range(40, 40 + depth(3, long=6)):
            farm = SimFarm(tmp_path / str(seed), seed=seed, renderer_seconds=0.25)
            async with farm.running():
                peers = await farm.start(12)
                jobs = [await farm.submit(peers[i], "1-40", name=f"job{i}") for i in (0, 5, 9)]
                for job in jobs:
                    await finish(farm, job)
                inv = farm.check_invariants()
                total += inv.duplicates
                print(f"seed {seed}: {inv}")
                assert inv.duplicates == 0, farm.log.duplicates()
                assert sum(p.node.stats.duplicate_frames for p in peers) == 0
