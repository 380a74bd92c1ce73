"""The peer's worker: which frames to claim, claiming them, and keeping or giving up claims.

Owns the render slots, the planner, the table of renders in progress, lease renewal, the
takeover check (a lapsed claim whose owner is alive is confirmed with that owner first), giving
claims back (pause, cancel, graceful stop, a restart that finds claims no render holds), and the
farm-wide end of a job no peer can render any more. Rendering one claim is
:mod:`peerfarm.peer.render`; the rules are pure modules (``scheduler.planner``,
``scheduler.leases``, ``scheduler.eligibility``, ``scheduler.bans``).

Rules kept here:

* claim only when a slot is free (late binding), and never while this peer has a problem
  (a full disk, a ledger it cannot save) or is stopping;
* a render stops as soon as the ledger says its claim is not ours any more (another peer won,
  finished, or took over; the job was paused, cancelled, halted or archived);
* a restarted peer releases, at once, its own claims that no render of this life holds;
* a thief asks the chunk's home before it claims a stolen chunk, and the home, answering its
  askers one at a time, promises each open frame to one thief only and then leaves it alone:
  the home is where a steal and the home's own claim, or two thieves, would meet, so they
  never render the same frame twice however slowly gossip spreads their claims (a home that
  cannot be asked, dead or across a split, does not stop the steal);
* every unfinished frame is looked at again every :data:`RESCAN_INTERVAL` seconds, whatever
  the planner's cursor says.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from ..errors import LedgerError
from ..frames import format_frames
from ..ledger.model import OPEN, FrameRecord, JobState, Status, same_claim
from ..scheduler import bans, dependencies
from ..scheduler.planner import Claim, Planner
from .parts import Running
from .render import Renderer

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("peerfarm")

#: Frames this peer finished that it remembers, to count a result of another peer winning.
MAX_REMEMBERED = 4096
#: Seconds between full rescans of every unfinished frame (liveness: no frame waits on a
#: planner cursor that went past it).
RESCAN_INTERVAL = 5.0
#: Seconds a job whose scene no reachable peer holds is left alone before this peer tries again.
SET_ASIDE_S = 5.0


class Worker:
    """Scheduling and rendering for one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.planner = Planner(node.node_id, prefer_home=node.parts.prefer_home)
        self.running: dict[tuple[str, int], Running] = {}
        slots = max(1, node.parts.slots)
        self._slots = trio.Semaphore(slots)
        self._free_slot_ids = list(range(slots))
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.renderer = Renderer(node)
        self._checking: set[tuple[str, int]] = set()  # lapsed claims being confirmed
        # Frames of chunks homed here that this peer promised to a thief: (job, frame) ->
        # (thief, until). Neither this peer nor another thief takes them until the promise
        # runs out (by then the thief's claim has arrived, or the thief is gone).
        self._promised: dict[tuple[str, int], tuple[str, float]] = {}
        self._mine: OrderedDict[tuple[str, int], tuple[int, int]] = OrderedDict()
        # Homes that did not answer a steal check: node id -> until when they are not counted
        # busy (no chunk of theirs looks lagging), since they may be across a network split.
        self._unanswered: dict[str, float] = {}
        # Jobs left alone for a while (their scene is out of reach): job -> until when.
        self._aside: dict[str, float] = {}
        self._aside_before: set[str] = set()  # said once in the log, at warning level
        self._started_jobs: set[str] = set()  # jobs this peer claimed a frame of (this life)

    def wake(self) -> None:
        self._wake.set()

    def spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run a background task of the worker (it ends with the worker)."""
        if self._nursery is not None:
            self._nursery.start_soon(task)

    def progress_of(self, job: str, frame: int) -> str | None:
        running = self.running.get((job, frame))
        if running is None or running.progress is None:
            return None
        return running.progress.message

    def renders(self) -> list[Running]:
        return list({id(r): r for r in self.running.values()}.values())

    # ----------------------------------------------------------------------------------
    # reactions to ledger changes (called by Node.react)

    def completed(self, job: str, frame: int, record: FrameRecord) -> None:
        """This peer finished ``frame``: remember which result is ours (a few thousand)."""
        self._mine[(job, frame)] = (record.epoch, record.attempt)
        while len(self._mine) > MAX_REMEMBERED:
            self._mine.popitem(last=False)

    def frame_changed(self, job: str, frame: int, record: FrameRecord) -> None:
        if record.status not in (Status.DONE, Status.FAILED):
            self.planner.reopened(job, frame)
        if record.status not in OPEN:
            self._promised.pop((job, frame), None)  # the thief's claim (or a result) holds it
        ours = self._mine.get((job, frame))
        if (
            ours is not None
            and record.status == Status.DONE
            and record.node != self.node.node_id
            and record.epoch == ours[0]
        ):
            # Another peer's result of the same epoch won over ours: one of the two renders
            # was wasted (a duplicate), whichever way the merge went.
            del self._mine[(job, frame)]
            self.node.stats.duplicate_frames += 1
        running = self.running.get((job, frame))
        if running is None:
            return
        mine = running.claims.get(frame)
        # Anything but our own claim (renewed or completed) means another peer owns the frame
        # or finished it already: stop rendering it.
        if mine is None or record.node != self.node.node_id or not same_claim(record, mine):
            self._stop(running, "lost")  # counted in frames_lost, not as a duplicate

    def stop_job(self, job: str, reason: str) -> None:
        for running in self.renders():
            if running.job == job:
                self._stop(running, reason)

    def stop_renders(self, reason: str) -> None:
        """Stop every render of this peer; their frames are handed back (``HAND_BACK``)."""
        for running in self.renders():
            self._stop(running, reason)

    def forget(self, job: str) -> None:
        self.planner.forget(job)
        self._started_jobs.discard(job)
        self._aside.pop(job, None)
        self._aside_before.discard(job)
        self.node.scene_reached(job, True)

    def set_aside(self, job: str, reason: str) -> None:
        """Leave ``job`` alone for :data:`SET_ASIDE_S` seconds (its frames were handed back):
        a problem of reach, which counts as no failure of the job or of this peer."""
        level = logging.DEBUG if job in self._aside_before else logging.WARNING
        self._aside_before.add(job)
        log.log(level, "%s set aside for %g s: %s", self.node.job_label(job), SET_ASIDE_S, reason)
        self._aside[job] = self.node.now() + SET_ASIDE_S
        self.node.scene_reached(job, False)  # every peer's status says why, until it is had
        self.wake()

    def _stop(self, running: Running, reason: str) -> None:
        if running.stop_reason is None:
            running.stop_reason = reason
            running.scope.cancel()

    # ----------------------------------------------------------------------------------
    # tasks

    async def run(self) -> None:
        node = self.node
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._renew_loop)
            nursery.start_soon(self._rescan_loop)
            nursery.start_soon(self.renderer.trash_loop)
            await self.release_orphans()
            await node.citizen.ready.wait()  # schedule and idle read once before any claim
            if node.parts.settle > 0 and node.ledger.jobs():
                # Until the first full sync with a peer (or the settle time): a restarted peer
                # must hear the farm's claims before it picks work from what it remembers.
                with trio.move_on_after(node.parts.settle):
                    await node.sync.synced.wait()
            while True:
                self._wake = trio.Event()
                await node.gate()
                await self.schedule_once()
                next_expiry = node.leases.next_expiry(exclude=node.node_id)
                timeout = 1.0 if next_expiry is None else next_expiry - node.now() + 0.01
                with trio.move_on_after(min(max(0.01, timeout), 1.0)):
                    await self._wake.wait()

    async def release_orphans(self) -> None:
        """Claims of ours that no render of this life holds (we restarted): give them back at
        once, so the farm (this peer included) takes them without waiting out a lease."""
        node = self.node
        for spec in node.ledger.jobs():
            mine = [
                (frame, record)
                for frame, record in node.ledger.claimed_frames(spec.id)
                if record.node == node.node_id and (spec.id, frame) not in self.running
            ]
            if mine:
                log.info(
                    "releasing %d claim%s of %s left from before a restart",
                    len(mine),
                    "" if len(mine) == 1 else "s",
                    node.job_label(spec.id),
                )
                await self.release_frames(spec.id, mine)

    async def _rescan_loop(self) -> None:
        while True:
            await trio.sleep(RESCAN_INTERVAL)
            await self.node.gate()
            self.planner.rescan_all()
            await self.halt_hopeless_jobs()
            await self.node.blobs.tidy()
            self.wake()

    async def schedule_once(self) -> None:
        node = self.node
        if node.stopping or self._nursery is None or node.parts.slots <= 0:
            return
        if not node.takes_work():  # a problem, away (schedule, user), held or drained
            return
        free = self._slots.value
        if free <= 0:
            return
        now = node.now()
        expired = node.leases.expired(now, gone=node.gone(), exclude=node.node_id)
        active = {
            s.id: s for s in node.ledger.jobs() if node.ledger.job_state(s.id) == JobState.ACTIVE
        }
        held = dependencies.held_frames(node.ledger, active)
        for job in [j for j in node.scene_out_of_reach if j not in active]:
            node.scene_reached(job, True)  # paused or ended: nothing to say about its scene
        for job in [j for j, until in self._aside.items() if until <= now]:
            del self._aside[job]
        capable = {
            job: node.capable_peers(spec)
            for job, spec in active.items()
            if (job not in held or held[job] is not None) and job not in self._aside
        }
        members = node.membership.members()
        alive = [m.node_id for m in members if m.state.name == "ALIVE"]
        claimed = node.leases.claims_by_node()
        unanswered = self._unanswered_homes(now)
        saturated = [
            m.node_id
            for m in members
            if claimed.get(m.node_id, 0) >= max(1, int(m.meta.get("slots", 1) or 1))
            and m.node_id not in unanswered
        ]
        claims = self.planner.plan(
            node.ledger,
            free_slots=free,
            capable=capable,
            expired=[key for key in expired if key not in self._checking],
            busy=[*self.running, *self._promised_away(now)],
            alive=alive,
            saturated=saturated,
            held={job: frames for job, frames in held.items() if frames is not None},
        )
        gone = set(node.gone())
        for claim in claims:
            if claim.takeover:
                if not await self._confirm_lapsed(claim, gone):
                    continue
            elif not claim.home:
                confirmed = await self._confirm_steal(claim, set(alive))
                if confirmed is None:
                    continue
                claim = confirmed
            await self._start(claim)

    def _unanswered_homes(self, now: float) -> set[str]:
        for peer in [p for p, until in self._unanswered.items() if until <= now]:
            del self._unanswered[peer]
        return set(self._unanswered)

    def _promised_away(self, now: float) -> list[tuple[str, int]]:
        """Frames promised to a thief whose promise still holds (expired ones dropped)."""
        for key in [k for k, (_t, until) in self._promised.items() if until <= now]:
            del self._promised[key]
        return list(self._promised)

    async def _confirm_steal(self, claim: Claim, alive: set[str]) -> Claim | None:
        """The part of a stolen chunk its home lets this peer take (None: nothing). A home
        that is not alive is not asked. One that cannot be reached may be across a network
        split, still rendering: a chunk taken only to keep frames in order (``lagging``) is
        left to it, and for a lease its chunks do not look lagging; a steal by a peer with
        nothing of its own left goes ahead."""
        node = self.node
        home = claim.home_peer
        if home is None or home == node.node_id or home not in alive:
            return claim
        granted = await node.sync.check_steal(home, claim.job, claim.frames)
        if granted is None:
            if not claim.lagging:
                return claim
            self._unanswered[home] = node.now() + node.config.lease_timeout
            node.stats.steals_unanswered += 1
            self.wake()  # plan again at once: this peer's own next chunk instead
            return None
        frames = tuple(f for f in claim.frames if f in granted)
        if not frames:
            node.stats.steals_refused += 1
            return None
        return replace(claim, frames=frames)

    async def grant_steal(self, job: str, frames: Sequence[int], thief: str) -> list[int]:
        """A thief asks for frames of chunks homed here: the open ones that nobody renders,
        claims or was promised are promised to it for a lease (this peer's planner leaves them
        alone meanwhile); the rest are refused. Runs without a checkpoint: answers to thieves
        are serialised."""
        node = self.node
        now = node.now()
        self._promised_away(now)
        if node.ledger.job(job) is None or thief == node.node_id:
            return []
        until = now + node.config.lease_timeout
        granted = []
        for frame in frames:
            key = (job, frame)
            promise = self._promised.get(key)
            if key in self.running or (promise is not None and promise[0] != thief):
                continue
            if node.ledger.frame_status(job, frame) not in OPEN:
                continue
            self._promised[key] = (thief, until)
            granted.append(frame)
        node.stats.steals_granted += len(granted)
        return granted

    async def _confirm_lapsed(self, claim: Claim, gone: set[str]) -> bool:
        """Whether a takeover may go ahead: owners that gossip says are gone lost their leases
        already; a live owner is asked first (invariant 5). After its answer is merged, the
        claim stands only if the frames are still claimed by that owner and still lapsed."""
        node = self.node
        owners: dict[str, list[int]] = {}
        for frame in claim.frames:
            owners.setdefault(node.ledger.frame(claim.job, frame).node, []).append(frame)
        for owner, frames in owners.items():
            if owner in gone or owner == node.node_id:
                continue
            keys = [(claim.job, f) for f in frames]
            self._checking.update(keys)
            try:
                answered = await node.sync.check_lapsed(owner, claim.job, frames)
            finally:
                self._checking.difference_update(keys)
            if answered:
                node.stats.takeovers_refused += 1
                return False  # the owner's answer is merged: plan again from what it said
        return True

    async def _start(self, claim: Claim) -> None:
        node = self.node
        assert self._nursery is not None
        if self._slots.value <= 0 or node.stopping:
            return
        promised = self._promised_away(node.now())
        if promised and not claim.takeover:  # promised to a thief while we were planning
            frames = tuple(f for f in claim.frames if (claim.job, f) not in self._promised)
            if not frames:
                return
            claim = replace(claim, frames=frames)
        # A peer's first claim of a job is a chunk homed here, and every peer makes one as the
        # job starts, while it fetches the scene: pushed at once, that is a datagram from every
        # peer to every other (at 32 peers on 2 cores, the start took 0.1 s longer). No peer
        # takes the next chunk of a live home, nor steals from one without asking it, so the
        # claim can ride this peer's next push (its first finished frame, or push_defer_max).
        first = claim.home and not claim.takeover and claim.job not in self._started_jobs
        try:
            deltas = await node.write(
                lambda ledger, wall: ledger.claim(
                    claim.job, claim.frames, wall, takeover=claim.takeover
                ),
                deferred=first,
            )
        except LedgerError as exc:
            log.debug("claim of %s %s failed: %s", claim.job, claim.frames, exc)
            return
        self._started_jobs.add(claim.job)
        if claim.takeover:
            node.stats.takeovers += len(claim.frames)
        records = {d[0][2]: d[1] for d in deltas if isinstance(d[1], FrameRecord)}
        self._slots.acquire_nowait()
        slot = self._free_slot_ids.pop(0)
        running = Running(claim.job, claim.frames, records, trio.CancelScope(), node.now(), slot)
        for frame in claim.frames:
            self.running[(claim.job, frame)] = running
        log.info(
            "claimed %s frame%s %s%s",
            node.job_label(claim.job),
            "s" if len(claim.frames) > 1 else "",
            format_frames(claim.frames),
            " (takeover)" if claim.takeover else "" if claim.home else " (stolen)",
        )
        self._nursery.start_soon(self._render, running)

    async def _render(self, running: Running) -> None:
        node = self.node
        started = node.now()
        try:
            await self.renderer.render(running, free_slot=lambda: self.free_slot(running))
        finally:
            for frame in running.frames:
                if self.running.get((running.job, frame)) is running:
                    del self.running[(running.job, frame)]
            self.free_slot(running)
            node.stats.render_seconds += node.now() - started
            node.touch()

    def free_slot(self, running: Running) -> None:
        """Give the render slot back (once) and let the scheduler fill it."""
        if not running.slot_freed:
            running.slot_freed = True
            self._free_slot_ids.append(running.slot)
            self._free_slot_ids.sort()
            self._slots.release()
            self.wake()

    # ----------------------------------------------------------------------------------
    # keeping and giving back claims

    async def _renew_loop(self) -> None:
        """Renew each render's claims once they are ``lease_renew_interval`` old, looking every
        half interval (so at most 1.5 intervals apart, well inside a lease). Not every render
        at each tick: a frame claimed a moment before would be renewed for nothing, a push to
        every peer (with one-second frames, half of the frames)."""
        node = self.node
        interval = node.config.lease_renew_interval
        while True:
            await trio.sleep(interval / 2)
            await node.gate()
            now = node.now()
            for running in self.renders():
                last = running.started if running.renewed is None else running.renewed
                if now - last >= interval:
                    await self._renew(running)

    async def _renew(self, running: Running) -> None:
        try:
            renewed = await self.node.write(
                lambda ledger, wall: ledger.renew(running.job, list(running.claims.items()))
            )
        except LedgerError:  # LostClaim: another peer owns one of the frames now
            self._stop(running, "lost")
            return
        running.renewed = self.node.now()
        for delta in renewed:
            if isinstance(delta[1], FrameRecord):
                running.claims[delta[0][2]] = delta[1]

    async def confirm_claims(self, job: str, frames: Sequence[int]) -> None:
        """A peer asks about our lapsed claims: renew those we render, release the others.
        Saved before the answer goes out (the answer carries them)."""
        node = self.node
        renders = {id(r): r for f in frames if (r := self.running.get((job, f))) is not None}
        for running in renders.values():
            await self._renew(running)
        idle = [
            (f, record)
            for f in frames
            if (job, f) not in self.running
            and (record := node.ledger.frame(job, f)).status == Status.CLAIMED
            and record.node == node.node_id
        ]
        if idle:
            await self.release_frames(job, idle)
        await node.gossip.persisted()

    async def release(self, running: Running) -> None:
        """Hand a stopped render's claims back, so others take them without a lease wait."""
        await self.release_frames(running.job, list(running.claims.items()))

    async def release_frames(self, job: str, claims: list[tuple[int, FrameRecord]]) -> None:
        await self.node.write(lambda ledger, wall: ledger.release(job, claims, wall))

    async def _halt(self, job: str, reason: str) -> None:
        await self.node.write(lambda ledger, wall: ledger.halt(job, reason, wall))

    async def stop_all(self, grace: float) -> None:
        """Graceful stop: end every render, give every claim of ours back."""
        node = self.node
        for running in self.renders():
            self._stop(running, "stopping")
        with trio.move_on_after(grace):
            while self.running:
                await trio.sleep(0.01)
        for spec in node.ledger.jobs():
            mine = [
                (f, r) for f, r in node.ledger.claimed_frames(spec.id) if r.node == node.node_id
            ]
            if mine:
                await self.release_frames(spec.id, mine)

    # ----------------------------------------------------------------------------------
    # failures, bans and hopeless jobs

    async def after_failure(self, job: str, reason: str) -> None:
        """Stop taking a job that failed too often here (counted from the replicated ledger,
        so a restart remembers), and end it farm-wide when no peer can take it any more."""
        node = self.node
        limit = node.parts.max_failures_per_job
        verdict = bans.ban_verdict(node.ledger, job, node.node_id, limit, node.name, reason)
        if verdict is not None:
            await node.write(lambda ledger, wall: ledger.ban(job, verdict, wall))
            log.warning("stopped taking %s: %s", node.job_label(job), verdict)
        await self.halt_hopeless_jobs([job])

    async def halt_hopeless_jobs(self, jobs: Iterable[str] | None = None) -> None:
        """End (fail, with the reason) active jobs that every peer able to render them has
        stopped taking. A job nobody ever could render is not ended: it waits, with its reason,
        for a peer that can."""
        node = self.node
        for job in list(jobs) if jobs is not None else [s.id for s in node.ledger.jobs()]:
            spec = node.ledger.job(job)
            if spec is None or node.ledger.job_state(job) != JobState.ACTIVE:
                continue
            banned = node.ledger.banned(job)
            if not banned or node.capable_peers(spec, troubled=True):
                continue
            reason = bans.halt_reason(banned, node.membership.members())
            await self._halt(job, reason)
            log.error("%s failed: %s", node.job_label(job), reason)
