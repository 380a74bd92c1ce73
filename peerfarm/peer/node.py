"""One peer of the farm: the nursery, start / join / leave, and the one way to write the ledger.

The node owns the state every service shares (the ledger replica, the member table, the lease
table) and the rules of writing: :meth:`Node.write` applies a local operation, reacts to it
here, and hands it to the gossip service, which persists it before it leaves the peer
(durability before gossip); :meth:`Node.merge` applies what peers sent and reacts the same way.
Everything else is a service with one job, each in its own module:

========================  =========================================================
``peer.gossip``           datagrams, membership ticks, pushing fresh writes
``peer.sync``             push-pull anti-entropy, stream requests, lease checks
``peer.worker``           scheduling, rendering, lease renewal, failures
``peer.delivery``         outputs to the submitter's folder, archiving
``peer.blobs``            the content store: fetching, the disk budget
``peer.notify``           job-end notifications (``submit --notify``)
``peer.citizen``          schedule, desktop idle time, host holds and drains
========================  =========================================================

The parts are injected, so the same node runs on real sockets (``peerfarm.daemon``) or on the
in-memory network under trio's MockClock (``peerfarm.testing``).
"""

from __future__ import annotations

import logging
import platform
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import trio

from .. import __version__
from ..errors import UsageError
from ..framepage import FrameJournal
from ..gossip.broadcast import encoded_size
from ..gossip.membership import Member, Membership, MemberState
from ..gossip.transport import SPOKEN_VERSION, Address
from ..ledger import Ledger
from ..ledger.codec import Delta
from ..ledger.keys import (
    Change,
    FrameChanged,
    HostChanged,
    JobAdded,
    JobArchived,
    JobControlChanged,
    JobHalted,
    classify,
)
from ..ledger.model import JobSpec, JobState, Status
from ..scheduler import eligibility
from ..scheduler.leases import LeaseTable
from .blobs import Blobs
from .citizen import Citizen
from .delivery import Deliverer
from .gossip import GossipService
from .notify import Notifier
from .parts import IncompatiblePeer, NodeParts, NodeStats
from .sync import SyncService
from .worker import Worker

T = TypeVar("T")
log = logging.getLogger("peerfarm")

OWN_JOBS_FILE = "submitted"  # data dir file: ids of the jobs submitted here, one a line

#: A local operation on the ledger: given the replica and the wall clock (ms), the deltas.
Operation = Callable[[Ledger, int], Sequence[Delta]]


class Node:
    """A peer: the shared state and the services around it."""

    def __init__(self, parts: NodeParts) -> None:
        self.parts = parts
        self.node_id = parts.node_id
        self.name = parts.name
        self.config = parts.config
        self.transport = parts.transport
        self.ledger = parts.ledger
        self.store = parts.store
        self.data_dir = parts.data_dir
        self.work_dir = parts.data_dir / "work"
        self.stats = NodeStats()
        self.leases = LeaseTable(parts.config.lease_timeout)
        self.generation = 0
        #: Every frame change seen here, numbered (the dashboard's map asks what changed since).
        self.frame_journal = FrameJournal()
        self.stopping = False
        self.killed = False  # simulations: a kill -9 saves nothing on the way out
        #: Local reasons this peer takes no work, by source ("disk", "ledger"...).
        self.problems: dict[str, str] = {}
        #: Passing reasons this peer takes no new work (outside its schedule, user active).
        self.away: dict[str, str] = {}
        #: Jobs whose scene this peer could get from no peer (``Worker.set_aside`` adds them).
        self.scene_out_of_reach: set[str] = set()
        self.incompatible: dict[str, IncompatiblePeer] = {}
        self._changed = trio.Event()
        self._started = trio.current_time()
        # Jobs submitted through this peer's own control facade. Only these are delivered: a
        # spec's ``submitted_by`` and ``output`` are just fields any keyed peer can write.
        self._own_jobs_path = parts.data_dir / OWN_JOBS_FILE
        self._own_jobs: set[str] = read_lines(self._own_jobs_path)
        self.membership = Membership(
            parts.node_id,
            parts.transport.local_address,
            self.meta(),
            parts.config,
            parts.rng,
            trio.current_time(),
            protocol=SPOKEN_VERSION,
            incarnation=parts.incarnation,
        )
        self.blobs = Blobs(self)
        self.gossip = GossipService(self)
        self.sync = SyncService(self)
        self.worker = Worker(self)
        self.deliverer = Deliverer(self)
        self.notifier = Notifier(self)
        self.citizen = Citizen(self)
        now = trio.current_time()
        for spec in self.ledger.jobs():
            for frame, record in self.ledger.claimed_frames(spec.id):
                self.leases.observe(spec.id, frame, record, now)

    # ----------------------------------------------------------------------------------
    # identity

    def meta(self) -> dict[str, Any]:
        """What this peer tells the farm about itself (membership metadata, size-limited)."""
        renderers = dict(self.parts.renderer_versions)
        if not self.parts.allow_command:
            renderers.pop("command", None)
        meta: dict[str, Any] = {
            "name": self.name[:64],
            "slots": self.parts.slots,
            "renderers": renderers,
            "cmd": self.parts.allow_command,
            "host": socket.gethostname()[:64],
            "os": f"{platform.system()} {platform.release()}"[:64],
            "py": platform.python_version(),
            "pf": __version__,
            "req": 1,  # obeys job requirements (scheduler.eligibility rule 5)
        }
        if self.parts.tags:
            meta["tags"] = list(self.parts.tags)[:8]
        if self.parts.shared_root is not None:
            meta["shared"] = True
        if self.problems:
            meta["problem"] = "; ".join(self.problems.values())[:160]
        if self.away:
            meta["away"] = "; ".join(self.away.values())[:160]
        if self.parts.max_memory:
            meta["maxmem"] = int(self.parts.max_memory)
        meta.update(self.parts.extra_meta)
        if self.scene_out_of_reach:
            # Id prefixes, as many as fit under the size limit beside the rest (a few at most:
            # each is an unusual event, and status just lacks a reason for the others).
            prefixes = sorted(job[: eligibility.JOB_PREFIX] for job in self.scene_out_of_reach)
            for count in range(min(len(prefixes), eligibility.MAX_NO_SCENE), 0, -1):
                listed = {**meta, eligibility.NO_SCENE: prefixes[:count]}
                if encoded_size(listed) <= self.config.meta_limit:
                    return listed
        return meta

    def set_problem(self, source: str, problem: str | None) -> None:
        """A local reason this peer cannot take work (None: it went away), gossiped in its
        metadata, so every peer's ``status`` says why this one is skipped."""
        if self.problems.get(source) == problem:
            return
        if problem:
            self.problems[source] = problem
            log.error("this peer takes no work: %s", problem)
        else:
            self.problems.pop(source, None)
            log.info("%s", "this peer takes work again" if not self.problems else "")
        self.membership.update_meta(self.meta(), self.now())
        self.touch()

    def set_away(self, reasons: dict[str, str]) -> None:
        """This peer's passing reasons to take no new work (``citizen``), gossiped in its
        metadata so every ``status`` shows them; an empty dict: it takes work."""
        if reasons == self.away:
            return
        if reasons:
            log.info("this peer takes no new work: %s", "; ".join(reasons.values()))
        else:
            log.info("this peer takes work again")
        self.away = dict(reasons)
        self.membership.update_meta(self.meta(), self.now())
        self.touch()

    def scene_reached(self, job: str, reached: bool) -> None:
        """Whether this peer could get ``job``'s scene (and assets) from a peer: one out of
        reach is gossiped in its metadata, so every peer's ``status`` says why this one does
        not render the job. Said again only when it changes."""
        if reached == (job not in self.scene_out_of_reach):
            return
        if reached:
            self.scene_out_of_reach.discard(job)
        else:
            self.scene_out_of_reach.add(job)
        self.membership.update_meta(self.meta(), self.now())
        self.touch()

    def takes_work(self) -> bool:
        """Whether this peer claims now: no problem, not away, not held or drained."""
        return not (self.problems or self.away or self.ledger.host_hold(self.node_id))

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one blocking file operation off the event loop (``NodeParts.offload``: a
        worker thread, or inline in a simulation)."""
        return cast(T, await self.parts.offload(fn, *args))

    def now(self) -> float:
        return trio.current_time()

    async def gate(self) -> None:
        """Wait while a simulation holds this peer frozen (SIGSTOP); nothing in a daemon."""
        if self.parts.gate is not None:
            await self.parts.gate()

    def wall(self) -> int:
        return self.parts.wall_ms()

    # ----------------------------------------------------------------------------------
    # changes

    def touch(self) -> None:
        """Something the interfaces show changed: wake the services and the event streams."""
        self.generation += 1
        self._changed.set()
        self._changed = trio.Event()
        self.worker.wake()
        self.deliverer.wake()
        self.notifier.wake()

    async def wait_for_change(self, since: int, timeout: float) -> int:
        if self.generation == since:
            with trio.move_on_after(timeout):
                await self._changed.wait()
        return self.generation

    async def write(
        self, operation: Operation, *, durable: bool = False, deferred: bool = False
    ) -> list[Delta]:
        """Apply a local operation, react to it and publish it: the only way this peer writes.

        The gossip service persists every write before it sends it; ``durable`` waits until
        that happened (a control request answers only once its write would survive a crash).
        ``deferred``: no peer needs the write at once, it rides this peer's next push
        (``GossipService.publish``).
        Errors of the operation (LedgerError, LostClaim) propagate; nothing was written then.
        """
        deltas = list(operation(self.ledger, self.wall()))
        if deltas:
            self.react([classify(d) for d in deltas])
            self.gossip.publish(deltas, deferred=deferred)
        if durable:
            await self.gossip.persisted()
        return deltas

    def merge(self, deltas: Sequence[Delta]) -> list[Change]:
        """Apply what a peer sent; react to what changed."""
        changes = self.ledger.merge(deltas, self.wall())
        self.stats.deltas_received += len(deltas)
        if changes:
            self.react(changes)
        return changes

    def react(self, changes: Sequence[Change]) -> None:
        """Local bookkeeping for every ledger entry that changed (ours or a peer's)."""
        now = self.now()
        for change in changes:
            if isinstance(change, FrameChanged):
                self.frame_journal.note(change.job, change.frame)
                self.leases.observe(change.job, change.frame, change.record, now)
                if change.record.status == Status.DONE:
                    self.deliverer.frame_done(change.job, change.frame)
                self.worker.frame_changed(change.job, change.frame, change.record)
            elif isinstance(change, JobControlChanged | JobHalted):
                state = self.ledger.job_state(change.job)
                if state in (JobState.CANCELLED, JobState.PAUSED, JobState.FAILED):
                    self.worker.stop_job(change.job, state.value)
            elif isinstance(change, JobArchived):
                self.worker.stop_job(change.job, "archived")
                self.leases.forget_job(change.job)
                self.worker.forget(change.job)
            elif isinstance(change, JobAdded):
                self.worker.forget(change.job)
            elif isinstance(change, HostChanged):
                self.citizen.host_changed(change.node, change.hold)
        self.touch()

    # ----------------------------------------------------------------------------------
    # running

    async def run(
        self,
        *,
        seeds: Sequence[Address] = (),
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run every service until cancelled; the ledger is saved on the way out."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.transport.serve_streams, self.sync.serve_stream)
                await nursery.start(self.gossip.run)
                nursery.start_soon(self.sync.run)
                nursery.start_soon(self.sync.reconnect_loop)
                nursery.start_soon(self.sync.tidy_asking)
                nursery.start_soon(self.worker.run)
                nursery.start_soon(self.deliverer.run)
                nursery.start_soon(self.notifier.run)
                nursery.start_soon(self.citizen.run)
                if seeds:
                    await self.join(seeds)
                task_status.started()
        finally:
            if not self.killed:
                with trio.CancelScope(shield=True):
                    self.gossip.save()

    async def join(self, seeds: Sequence[Address]) -> None:
        self.sync.remember_seeds(seeds)
        for address, message in self.membership.join(list(seeds), self.now()):
            await self.gossip.send(address, message)
        for seed in seeds:
            self.sync.request(seed)

    async def leave(self, grace: float = 2.0) -> None:
        """Graceful stop: render nothing new, hand back claims, announce the leave."""
        self.stopping = True
        await self.worker.stop_all(grace)
        await self.gossip.flush_outbox(everything=True)
        for address, message in self.membership.leave(self.now()):
            await self.gossip.send(address, message)
        # Give the leave a moment to go out (and be relayed) before sockets close.
        await trio.sleep(min(0.2, self.config.gossip_interval))
        for address, message in self.membership.tick(self.now()):
            await self.gossip.send(address, message)
        self.gossip.save()

    # ----------------------------------------------------------------------------------
    # jobs submitted here

    def add_own_job(self, job: str) -> None:
        """Remember (on disk) that ``job`` was submitted here, so its outputs are delivered."""
        if job in self._own_jobs:
            return
        self._own_jobs.add(job)
        try:
            with self._own_jobs_path.open("a") as fh:
                fh.write(job + "\n")
        except OSError as exc:
            log.error("cannot record job %s in %s: %s", job[:8], self._own_jobs_path, exc)

    def is_own_job(self, job: str) -> bool:
        return job in self._own_jobs

    # ----------------------------------------------------------------------------------
    # queries for services and interfaces

    def members(self) -> list[Member]:
        return self.membership.members()

    def address_of(self, node_id: str) -> Address | None:
        member = self.membership.get(node_id)
        return None if member is None else member.address

    def gone(self) -> list[str]:
        """Peers gossip declared dead or that left: their leases end at once."""
        return [
            m.node_id
            for m in self.membership.members()
            if m.state in (MemberState.DEAD, MemberState.LEFT)
        ]

    def capable_peers(self, spec: JobSpec, *, troubled: bool = False) -> list[str]:
        """The job's home set: peers that can render it and have not left (``troubled``:
        count peers that take no work for now because of a problem of their own)."""
        return eligibility.capable_peers(
            spec,
            self.membership.members(),
            banned=self.ledger.banned(spec.id),
            now=self.now(),
            home_grace=self.config.home_grace,
            self_id=self.node_id,
            stopping=self.stopping,
            troubled=troubled,
            holds=self.ledger.host_holds(),
            peak_memory=self.ledger.peak_memory(spec.id),
        )

    def job_label(self, job: str) -> str:
        spec = self.ledger.job(job)
        return f"{spec.name} ({job[:8]})" if spec else job[:8]

    def progress_of(self, job: str, frame: int) -> str | None:
        return self.worker.progress_of(job, frame)

    def resolve_job(self, ref: str) -> str:
        ref = ref.strip()
        specs = self.ledger.jobs()
        exact = [s.id for s in specs if s.id == ref]
        if exact:
            return exact[0]
        by_prefix = [s.id for s in specs if ref and s.id.startswith(ref)]
        by_name = [s.id for s in specs if s.name == ref]
        matches = list(dict.fromkeys(by_prefix + by_name))
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UsageError(f"no job {ref!r}: see `peerfarm status` for the jobs of this farm")
        raise UsageError(
            f"{ref!r} matches {len(matches)} jobs ({', '.join(m[:8] for m in matches)}): "
            "use more of the id"
        )


def read_lines(path: Path) -> set[str]:
    """The non-blank lines of a small text file in the data dir (empty when it is missing)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return set()
    return {line.strip() for line in text.splitlines() if line.strip()}
