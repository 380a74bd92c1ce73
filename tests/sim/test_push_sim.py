"""Who hears a write when (issue 19, 32 hosts): deferred pushes, in virtual time.

A claim goes to every peer at once, but for a peer's first claim of a job; a finished frame
goes at once to its job's submitter alone, which passes it on, and to the other peers with the
finisher's next claim, within ``push_defer_max``, or at once when it ends the job; a delivery
mark and a first claim wait the same way. These
tests watch the datagrams real nodes hand to the in-memory network and when each peer learns
each frame is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from peerfarm.gossip.config import GossipConfig
from peerfarm.ledger import codec
from peerfarm.ledger.keys import Kind
from peerfarm.ledger.model import FrameRecord, Status
from peerfarm.peer.gossip import PUSH_COALESCE, PUSH_HOLD_MAX
from peerfarm.scheduler.planner import Planner, chunks_of
from peerfarm.testing import SimFarm

from .pushes import Sent, done_seen
from .test_schedule_sim import assert_complete, assert_no_duplicates, wait_finished


def _kinds(deltas: list[Any]) -> str:
    return ",".join(
        f"{d[0][0]}{d[0][2] if d[0][0] in 'FD' else ''}"
        + (d[1].status.name[:2] if isinstance(d[1], FrameRecord) else "")
        for d in deltas
    )


def _is_claim(delta: Any) -> bool:
    return isinstance(delta[1], FrameRecord) and delta[1].status == Status.CLAIMED


async def test_a_finished_frame_reaches_its_submitter_at_once_and_rides_the_next_claim(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Pushes to every peer carry a claim (what peers must hear at once), except at most one
    a peer and job: its last frames and the submitter's delivery marks, sent when the job
    ended. The submitter still hears every finished frame as soon as it is written, and the
    other peers hear the job ended when the submitter does."""
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=51, renderer_seconds=0.06)
        async with farm.running():
            peers = await farm.start(4)
            submitter = peers[0]
            sent = {p.node_id: Sent(p) for p in peers}
            seen = {p.node_id: done_seen(p) for p in peers}
            job = await farm.submit(submitter, "1-24")
            await wait_finished(farm, job, 30.0)
            assert_complete(farm, job, submitter)
            assert_no_duplicates(farm)
    renders = farm.log.completed(job)
    for render in renders:
        assert render.ended is not None
        # Written when the render ended (storing outputs takes no virtual time here), then
        # one coalescing pause, or the hold of a slot's next claim at most.
        assert seen[submitter.node_id][render.frame] <= (
            render.ended + PUSH_HOLD_MAX + PUSH_COALESCE + 0.01
        ), render
    for node_id, peer_sent in sent.items():
        # One flush may need several datagrams: they leave at one virtual time.
        claimless = {at for at, _d, to_one in peer_sent.pushes if not to_one} - {
            at for at, deltas, _t in peer_sent.pushes if any(map(_is_claim, deltas))
        }
        # The submitter: when the job ended, and its last delivery marks.
        assert len(claimless) <= (2 if node_id == submitter.node_id else 1), (
            node_id,
            [(at, _kinds(d)) for at, d, _t in peer_sent.pushes],
        )
        targeted = [deltas for _at, deltas, to_one in peer_sent.pushes if to_one]
        if node_id != submitter.node_id:
            # Each peer's last frame went to the submitter alone first.
            assert targeted and all(d[1].status == Status.DONE for ds in targeted for d in ds)
    delivered = [
        d for ds in sent[submitter.node_id].full() for d in ds if d[0][0] == Kind.DELIVERED
    ]
    assert {d[0][2] for d in delivered} == set(range(1, 25))
    ended = max(seen[submitter.node_id].values())
    for node_id, frames in seen.items():
        assert set(frames) == set(range(1, 25)), node_id
        # Not push_defer_max later: the submitter passes the ending frames on at once.
        assert max(frames.values()) <= ended + PUSH_COALESCE + 0.01, node_id


async def test_a_finished_frame_sent_to_its_submitter_alone_survives_its_renderer_dying(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A peer killed as soon as its finished frame reached the submitter alone (before it
    could push it to the others): the submitter passes the frame on within
    ``push_defer_max``, before the dead peer is declared dead and loses its lease, so no
    other peer takes the frame over. (Its outputs died with it: the submitter opens the frame
    again once the peer has been gone for ``home_grace``, as for any lost copy.)"""
    config = GossipConfig.fast()
    killed: dict[str, Any] = {}
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=52, config=config, renderer_seconds=0.5)
        async with farm.running():
            peers = await farm.start(3)
            submitter, victim, other = peers
            seen = done_seen(other)
            gossip = submitter.node.gossip
            on_datagram = gossip._on_datagram

            async def receive_then_kill(sender: Any, message: Any) -> None:
                if (
                    not killed
                    and sender == victim.address
                    and isinstance(message, dict)
                    and message.get("r") is True
                ):
                    frames = [d[0][2] for d in codec.decode_deltas(message["d"])]
                    killed.update(at=trio.current_time(), frames=frames)
                    farm.crash(victim.node_id)
                await on_datagram(sender, message)

            gossip._on_datagram = receive_then_kill  # type: ignore[method-assign]
            job = await farm.submit(submitter, "1-12")
            await wait_finished(farm, job, 40.0)
            assert_complete(farm, job, submitter)
    assert killed, "the victim never sent a finished frame to the submitter alone"
    for frame in killed["frames"]:
        assert seen[frame] <= killed["at"] + config.push_defer_max + PUSH_COALESCE + 0.01
        again = [r for r in farm.log.records if r.frame == frame and r.node != victim.node_id]
        assert all(r.started >= killed["at"] + config.home_grace for r in again), again
    others = {frame for _job, frame in farm.log.duplicates()} - set(killed["frames"])
    assert not others, farm.log.duplicates()


async def test_a_peers_first_claim_of_a_job_rides_its_next_push(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """As a job starts every peer claims a chunk at once: those claims do not each go to every
    peer then, they ride each peer's next push (its first finished frame with its next claim,
    or ``push_defer_max`` later); its later claims go at once. Nothing renders twice."""
    config = GossipConfig.fast()
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=53, config=config, renderer_seconds=0.05)
        async with farm.running():
            peers = await farm.start(4)
            submitter = peers[0]
            sent = {p.node_id: Sent(p) for p in peers}
            job = await farm.submit(submitter, "1-24")
            await wait_finished(farm, job, 30.0)
            assert_complete(farm, job, submitter)
            assert_no_duplicates(farm)
    spec = submitter.node.ledger.job(job)
    assert spec is not None
    ids = [p.node_id for p in peers]
    home_of = {
        frame: home
        for chunk, home in zip(chunks_of(spec), Planner(ids[0]).homes(spec, ids), strict=True)
        for frame in chunk
    }
    checked = 0
    for peer in peers[1:]:
        renders = sorted(
            (r for r in farm.log.completed(job) if r.node == peer.node_id), key=lambda r: r.started
        )
        assert len(renders) >= 3, peer.node_id
        first, second = renders[0], renders[1]
        assert first.ended is not None
        if home_of[first.frame] != peer.node_id:
            continue  # its first frame was a steal (asked of its home): a claim that goes at once
        checked += 1
        pushes = [(at, ds) for at, ds, to_one in sent[peer.node_id].pushes if not to_one]
        # Nothing to every peer while its first frame renders...
        assert all(
            at >= min(first.ended, first.started + config.push_defer_max) for at, _ in pushes
        )
        # ...then the first claim goes with the first finished frame and the next claim.
        _at, deltas = pushes[0]
        frames = {(d[0][2], d[1].status) for d in deltas if isinstance(d[1], FrameRecord)}
        assert (first.frame, Status.DONE) in frames and (second.frame, Status.CLAIMED) in frames
        # A later claim goes at once: before its frame ends.
        third = renders[2]
        claimed_at = min(
            t
            for t, ds in pushes
            for d in ds
            if d[0][2] == third.frame and isinstance(d[1], FrameRecord)
        )
        assert third.ended is not None and claimed_at < third.ended
    assert checked >= 2
