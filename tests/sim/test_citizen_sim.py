"""A good citizen on workstations (issue 21), on the simulated farm with a driven clock.

Real nodes on the in-memory network under MockClock; the schedule reads a local time that
follows the virtual clock, and the desktop's idle time comes from a :class:`DrivenIdle` the
test touches like a user pressing a key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import trio
import trio.testing

from peerfarm.farm import Farm
from peerfarm.ledger.model import Status
from peerfarm.peer.idle import DrivenIdle
from peerfarm.scheduler.availability import Schedule
from peerfarm.testing import SimFarm

#: A Wednesday, 30 s before the evening window of "Mon-Fri 19:00-08:00" opens.
WEDNESDAY_EVENING = datetime(2026, 12, 2, 18, 59, 30)


def local_clock(base: datetime) -> Callable[[], datetime]:
    """Local wall time that reads ``base`` now and follows the virtual clock."""
    start = trio.current_time()
    return lambda: base + timedelta(seconds=trio.current_time() - start)


async def test_nothing_is_claimed_outside_the_schedule(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    schedule = Schedule.parse("Mon-Fri 19:00-08:00, Sat-Sun")
    opens = trio.current_time() + 30.0  # 19:00 local
    parts = {"schedule": schedule, "local_time": local_clock(WEDNESDAY_EVENING)}
    farm = SimFarm(tmp_path, renderer_seconds=0.5)
    with trio.fail_after(600):
        async with farm.running():
            first = await farm.add_peer(parts=parts)
            await farm.add_peer(seeds=[first.address], parts=parts)
            await farm.wait_until(farm.membership_converged, timeout=30, what="membership")
            job = await farm.submit(first, "1-6")
            await trio.sleep(5)
            view = Farm(first.node).status(job)["jobs"][0]
            assert set(view["waiting"].values()) == {
                "outside its schedule (Mon-Fri 19:00-08:00, Sat-Sun)"
            }
            assert not farm.log.of_job(job)
            await farm.wait_until(lambda: farm.job_finished(job), timeout=120, what="job done")
            started = [r.started for r in farm.log.of_job(job)]
            assert started and min(started) >= opens  # nothing before 19:00 local
            assert min(started) <= opens + 2.0  # and at once after
            assert farm.log.duplicates() == {}


async def test_a_returning_user_gets_the_machine_and_the_frame_moves_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    idle = DrivenIdle()  # idle since forever
    farm = SimFarm(tmp_path, renderer_seconds=30.0)
    with trio.fail_after(600):
        async with farm.running():
            desk = await farm.add_peer(name="desk", parts={"when_idle": 20.0, "idle_source": idle})
            job = await farm.submit(desk, "1")
            await farm.wait_until(lambda: bool(farm.log.running()), timeout=10, what="render")
            assert farm.log.running()[0].node == desk.node_id
            spare = await farm.add_peer(name="spare", seeds=[desk.address])
            await farm.wait_until(farm.membership_converged, timeout=30, what="membership")
            await trio.sleep(1)
            idle.touch()  # the user is back
            back = trio.current_time()

            def moved() -> bool:
                return any(r.node == spare.node_id for r in farm.log.running())

            await farm.wait_until(moved, timeout=2.0, what="the frame rendered elsewhere")
            assert trio.current_time() - back <= 2.0
            assert not desk.node.takes_work()
            stopped = [r for r in farm.log.of_job(job) if r.node == desk.node_id]
            assert stopped and stopped[0].ended is not None and not stopped[0].completed
            view = Farm(spare.node).status()
            (peer,) = [p for p in view["peers"] if p["name"] == "desk"]
            assert peer["availability"].startswith("its user is at the machine")
            await farm.wait_until(lambda: farm.job_finished(job), timeout=120, what="job done")
            record = spare.node.ledger.frame(job, 1)
            assert record.status == Status.DONE and record.node == spare.node_id
            assert farm.log.duplicates() == {}
            # The user leaves again: after the idle time the desk takes work again.
            await trio.sleep(21)
            assert desk.node.takes_work()


async def test_hold_and_drain_from_another_peer_survive_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm = SimFarm(tmp_path, renderer_seconds=6.0, slots=1)
    with trio.fail_after(600):
        async with farm.running():
            a, b = await farm.start(2)
            job = await farm.submit(a, "1-12")
            await farm.wait_until(
                lambda: {r.node for r in farm.log.running()} == {a.node_id, b.node_id},
                timeout=10,
                what="both rendering",
            )
            held = trio.current_time()
            answer = await Farm(a.node).host(b.name, "hold")
            assert answer["availability"] == f"held by {a.name}"
            # b finishes its frame and takes no more; the waiting reason says why
            await farm.wait_until(
                lambda: b.node.ledger.host_hold(b.node_id) is not None, timeout=2, what="hold"
            )
            await trio.sleep(8)
            assert not [r for r in farm.log.started_after(held + 0.5) if r.node == b.node_id]
            view = Farm(a.node).status(job)["jobs"][0]
            assert view["waiting"].get(b.name) == f"held by {a.name}"
            # survives a restart of the held peer
            farm.crash(b.node_id)
            b = await farm.restart(b.node_id)
            await trio.sleep(5)
            assert b.node.ledger.host_hold(b.node_id) is not None
            assert not [r for r in farm.log.started_after(held + 0.5) if r.node == b.node_id]
            await Farm(a.node).host(b.name, "release")
            await farm.wait_until(
                lambda: any(r.node == b.node_id for r in farm.log.running()),
                timeout=25,
                what="b renders again",
            )
            # drain --now: b's render stops at once and its frame goes back to the farm
            drained = trio.current_time()
            await Farm(a.node).host(b.name, "drain", now=True)
            await farm.wait_until(
                lambda: not [r for r in farm.log.running() if r.node == b.node_id],
                timeout=2,
                what="b's render stopped",
            )
            assert trio.current_time() - drained <= 2.0
            await Farm(b.node).host(b.name, "release")
            await farm.wait_until(lambda: farm.job_finished(job), timeout=300, what="job done")
            assert farm.log.duplicates() == {}
