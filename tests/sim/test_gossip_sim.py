"""Gossip at farm scale (issue 3): 50 real nodes on the in-memory network, virtual time.

Every test runs real :class:`~peerfarm.node.Node` objects (membership, ledger, push-pull) with
``GossipConfig.fast()`` timers on :class:`~peerfarm.gossip.memnet.MemoryNetwork` under
:func:`peerfarm.testing.sim_clock`; the network and every node draw from seeded RNGs, and time
is virtual, so a run is the same on a busy machine as on an idle one. No peer has a renderer:
this is pure ledger and membership traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from peerfarm.gossip.config import GossipConfig, suspicion_bounds
from peerfarm.gossip.membership import MemberState
from peerfarm.peer.gossip import PUSH_COALESCE
from peerfarm.testing import SimFarm
from tests.support.depth import depth

N = 50


class _Counter(logging.Handler):
    """Counts the node's membership log lines ("peer died: ...", "peer suspected: ...")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def count(self, prefix: str) -> int:
        return sum(1 for line in self.lines if line.startswith(prefix))


@pytest.fixture
def membership_log() -> Iterator[_Counter]:
    logger = logging.getLogger("peerfarm")
    handler = _Counter()
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


async def test_one_update_reaches_every_live_peer_by_gossip_alone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Push-pull off after the joins: only the immediate push and piggybacked gossip carry it.
    config = GossipConfig.fast().replace(push_pull_interval=3600.0, lease_timeout=3 * 3600.0)
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=11, config=config, invariants="converged")
        async with farm.running():
            peers = await farm.start(N, renderers=0)
            await trio.sleep(1.0)  # let the join-time syncs finish
            for victim in peers[-3:]:
                farm.crash(victim.node_id)  # not yet known dead: pushes to them are wasted
            origin = peers[7]
            syncs = {p.node_id: p.node.stats.syncs for p in farm.live()}
            sent = trio.current_time()
            job = await farm.announce_job(origin, "news")
            arrived = await farm.wait_until(
                lambda: all(p.node.ledger.job(job) is not None for p in farm.live()),
                timeout=2.0,
                poll=0.005,
                what="the update on every live peer",
            )
            took = arrived - sent
            print(f"one update reached {len(farm.live())} peers in {took:.3f} s (virtual)")
            # log4(50) ~ 3 gossip rounds; 10 rounds (0.2 s) leaves room for unlucky sampling.
            assert took <= 10 * config.gossip_interval
            assert farm.converged()
            # Nothing came by push-pull: no sync ran since the update was written.
            assert {p.node_id: p.node.stats.syncs for p in farm.live()} == syncs


async def test_farm_converges_with_ten_percent_loss_on_every_link(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=12, invariants="converged")
        async with farm.running():
            peers = await farm.start(N, renderers=0)
            farm.set_loss(0.10, delay=0.001, jitter=0.004)
            writers = peers[::5]  # ten peers each write a job, then act on another's
            jobs = [await farm.announce_job(p, f"job{i}") for i, p in enumerate(writers)]
            await trio.sleep(0.05)
            for i, peer in enumerate(writers):
                target = jobs[(i + 1) % len(jobs)]
                if peer.node.ledger.job(target) is None:
                    continue  # not arrived yet: skip this write (the loss decides, seeded)
                await peer.node.write(lambda ledger, wall, job=target: ledger.pause(job, wall))
            started = trio.current_time()
            at = await farm.wait_until(
                lambda: (
                    farm.converged()
                    and all(len(p.node.ledger.jobs()) == len(jobs) for p in farm.live())
                ),
                timeout=15.0,
                poll=0.05,
                what="one ledger on every peer",
            )
            print(f"converged {at - started:.2f} s (virtual) after the last write")
            # Push-pull every second repairs what gossip lost: a few rounds at most.
            assert at - started <= 5 * farm.config.push_pull_interval
            paused = {sum(p.node.ledger.paused(j) for j in jobs) for p in farm.live()}
            assert len(paused) == 1 and paused.pop() > 0


async def test_two_way_partition_heals_into_identical_ledgers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(90):
        farm = SimFarm(tmp_path, seed=13, invariants="converged")
        async with farm.running():
            peers = await farm.start(N, renderers=0)
            shared = await farm.announce_job(peers[0], "shared")
            await farm.wait_until(farm.converged, timeout=5.0, what="the shared job everywhere")
            left, right = peers[: N // 2], peers[N // 2 :]
            farm.partition([p.node_id for p in left], [p.node_id for p in right])
            split = trio.current_time()
            # Each side writes on its own, including opposite writes to one register.
            left_job = await farm.announce_job(left[3], "left-only")
            right_job = await farm.announce_job(right[4], "right-only")
            await left[5].node.write(lambda ledger, wall: ledger.pause(shared, wall))
            await trio.sleep(0.5)
            await right[6].node.write(lambda ledger, wall: ledger.pause(shared, wall))
            await trio.sleep(0.5)
            await right[7].node.write(lambda ledger, wall: ledger.resume(shared, wall))
            await trio.sleep(0.5)
            await left[8].node.write(lambda ledger, wall: ledger.set_priority(shared, 5, wall))

            # Long enough for each side to declare the other dead.
            def sides_apart() -> bool:
                seen_left = farm.states_of(right[0].node_id)
                seen_right = farm.states_of(left[0].node_id)
                return all(seen_left[p.node_id] == MemberState.DEAD for p in left) and all(
                    seen_right[p.node_id] == MemberState.DEAD for p in right
                )

            await farm.wait_until(
                sides_apart, timeout=15.0, poll=0.1, what="each side declaring the other dead"
            )
            # Each side agrees within itself (two ledgers in the farm).
            await farm.wait_until(
                lambda: len(farm.digests()) == 2, timeout=5.0, poll=0.05, what="one per side"
            )
            farm.heal()
            healed = trio.current_time()
            print(f"split for {healed - split:.1f} s")
            ledger_at = await farm.wait_until(
                lambda: farm.converged() and len(farm.live()[0].node.ledger.jobs()) == 3,
                timeout=20.0,
                poll=0.05,
                what="identical ledgers after the heal",
            )
            members_at = await farm.wait_until(
                farm.membership_converged, timeout=20.0, poll=0.05, what="everyone alive again"
            )
            print(
                f"ledgers identical {ledger_at - healed:.2f} s, "
                f"membership {members_at - healed:.2f} s after the heal"
            )
            for peer in farm.live():
                ledger = peer.node.ledger
                assert {s.id for s in ledger.jobs()} == {shared, left_job, right_job}
                assert ledger.paused(shared) is False  # the last write (resume) won everywhere
                assert ledger.priority(shared) == 5


async def test_crashed_peer_is_declared_dead_everywhere_within_the_suspicion_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, membership_log: _Counter
) -> None:
    config = GossipConfig.fast()
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=14, config=config, invariants="converged")
        async with farm.running():
            peers = await farm.start(N, renderers=0)
            await trio.sleep(1.0)
            victim = peers[17]
            farm.crash(victim.node_id)
            crashed = trio.current_time()
            await farm.wait_until(
                lambda: all(s == MemberState.DEAD for s in farm.states_of(victim.node_id).values()),
                timeout=15.0,
                poll=0.02,
                what="the crashed peer dead everywhere",
            )
            declared = [
                m.state_since - crashed
                for p in farm.live()
                if (m := p.node.membership.get(victim.node_id)) is not None
            ]
            low, high = suspicion_bounds(config, N)
            print(
                f"dead everywhere after {min(declared):.2f}..{max(declared):.2f} s (virtual); "
                f"suspicion timeout {low:.2f}..{high:.2f} s"
            )
            # Bound: the first probe of the victim (49 probers walking shuffled round-robin
            # lists: well within 5 probe intervals) + its timeout and the indirect round (one
            # more interval) + Lifeguard's *longest* suspicion timeout (no confirmations) +
            # dissemination of the death (log4(50) ~ 3 gossip rounds; 10 allowed).
            bound = 6 * config.probe_interval + high + 10 * config.gossip_interval
            assert max(declared) <= bound
            # With 49 probers confirming, Lifeguard brings the timeout well below its maximum.
            assert max(declared) <= high
            # Nobody else was declared dead, and nobody alive was even suspected.
            assert membership_log.count("peer died") == len(declared)
            assert all(
                m.state == MemberState.ALIVE
                for p in farm.live()
                for m in p.node.members()
                if m.node_id != victim.node_id
            )


async def test_long_loss_free_run_never_declares_a_live_peer_dead(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, membership_log: _Counter
) -> None:
    # 15 virtual seconds of the fast preset are 150 probe rounds per peer (7,500 probes in
    # all): two and a half minutes of LAN probing (its probe interval is ten times longer); the
    # long profile runs 60 s. Push-pull every 3 s keeps nearer LAN's ratio of push-pulls to
    # gossip rounds. The pure machine runs ten minutes at 50 peers in test_membership_sim.
    config = GossipConfig.fast().replace(push_pull_interval=3.0, lease_timeout=9.0)
    minutes = depth(15, long=60) / 60
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=15, config=config, invariants="converged")
        async with farm.running():
            # Jitter: round trips vary from 2 to 12 ms against a 50 ms probe timeout.
            farm.set_loss(0.0, delay=0.001, jitter=0.005)
            await farm.start(N, renderers=0)
            membership_log.lines.clear()
            probes = [p.node.transport.stats.datagrams_sent for p in farm.live()]
            await trio.sleep(60 * minutes)
            sent = sum(p.node.transport.stats.datagrams_sent for p in farm.live()) - sum(probes)
            print(f"{60 * minutes:.0f} s (virtual): {sent} datagrams, no suspicion")
            assert sent >= 2 * N * 60 * minutes / config.probe_interval * 0.9  # pings and acks
            assert membership_log.count("peer suspected") == 0
            assert membership_log.count("peer died") == 0
            assert farm.membership_converged()
            assert all(m.incarnation == 0 for p in farm.live() for m in p.node.members())


async def test_halves_that_forgot_each_other_meet_again_after_a_long_split(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A split longer than ``dead_node_reclaim``: each half forgets the other entirely, so
    SWIM has no dead member left to reconnect to. The seeds a peer joined through are tried
    again (a push-pull), and the farm is one again after the heal."""
    config = GossipConfig.fast()
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=16, config=config, invariants="converged")
        async with farm.running():
            peers = await farm.start(6, renderers=0)
            left, right = peers[:3], peers[3:]
            farm.partition([p.node_id for p in left], [p.node_id for p in right])
            await trio.sleep(config.dead_node_reclaim + 10)
            assert all(p.node.membership.get(left[0].node_id) is None for p in right)
            healed = trio.current_time()
            farm.heal()
            took = await farm.wait_until(
                farm.membership_converged, timeout=30, what="one farm again"
            )
            print(f"one farm again {took - healed:.2f} s after the heal")


async def test_a_joiner_and_its_seed_opening_exchanges_at_once_carry_the_ledger_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A joiner opens a push-pull with its seed while the seed opens one with the new member
    (issue 19's late joiner): one exchange carries both directions, the other is answered
    ``sync-busy``, so the joiner receives the seed's big ledger once, not twice."""
    frames = 400
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=17, invariants="converged")  # nobody renders here
        async with farm.running():
            seed = await farm.add_peer(renderer=False, node_id="1" * 16)  # the lower id
            job = await farm.submit(seed, f"1-{frames}")
            for frame in range(1, frames + 1):  # one entry per frame in the seed's ledger
                await seed.node.write(lambda ledger, wall, f=frame: ledger.claim(job, [f], wall))
            entries = len(seed.node.ledger.all_deltas())
            assert entries > frames
            joiner = await farm.add_peer(seeds=[seed.address], renderer=False, node_id="f" * 16)
            await farm.wait_until(
                lambda: joiner.node.ledger.state_digest() == seed.node.ledger.state_digest(),
                timeout=30,
                what="the joiner holds the ledger",
            )
            await trio.sleep(1.0)  # both exchanges over
            # Every entry came by push-pull once (gossip relays count apart).
            assert joiner.node.stats.sync_deltas_received == entries


async def test_a_submit_reaches_every_peer_without_the_coalescing_pause(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Local writes wait PUSH_COALESCE to share a datagram; one a control request waits for (a
    submit) is pushed with its save, so every peer can start on it one network hop later."""
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=5)
        async with farm.running():
            peers = await farm.start(4)
            asked = trio.current_time()
            job = await farm.submit(peers[0], "1-8")
            known = await farm.wait_until(
                lambda: all(p.node.ledger.job(job) is not None for p in peers),
                timeout=5.0,
                poll=0.0001,
                what="the job on every peer",
            )
            assert known - asked < PUSH_COALESCE / 2, known - asked
