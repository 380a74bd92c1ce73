"""A simulated farm: many real nodes in one process, on the in-memory network, in virtual time.

``SimFarm`` runs real :class:`~peerfarm.peer.Node` objects — ledger (saved to a real SQLite file
per peer), membership, scheduler, leases, store and transfers — under whatever clock the test
uses (:func:`~peerfarm.testing.fakes.sim_clock` for deterministic runs). Only the network, the
clock and the renderer are fake. A peer can be crashed (kill -9: whatever it had not saved is
lost, its renders die) and restarted from its own data dir, paused like SIGSTOP (every task of
it waits; its traffic is held), stopped gracefully, cut off by partitions and slowed by loss.
Every test ends with :meth:`SimFarm.check_invariants`, the farm-wide check of DESIGN.md; it and
every other read-only question about the farm live in :mod:`peerfarm.testing.farmview`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import trio

from ..control import SubmitRequest
from ..files.store import ContentStore
from ..gossip.config import GossipConfig
from ..gossip.memnet import MemoryNetwork
from ..ledger.model import SceneRef
from ..ledger.store import LedgerStore
from ..peer import Node, NodeParts
from ..peer.parts import inline
from ..renderers.base import Renderer, frame_stem
from .fakes import WALL_EPOCH_MS, FakeRenderer, RenderLog
from .farmview import FarmView, Invariants, SimPeer, output_files

__all__ = ["Invariants", "SimFarm", "SimPeer", "frames_of", "output_files"]


class SimFarm(FarmView):
    """N nodes on one in-memory network. Use inside ``async with farm.running():``."""

    def __init__(
        self,
        root: Path,
        *,
        seed: int = 1,
        config: GossipConfig | None = None,
        renderer_seconds: float | Callable[[int], float] = 0.25,
        fail: Callable[[str, int], bool] | None = None,
        prefer_home: bool = True,
        slots: int = 1,
        archive_after: float | None = None,
        invariants: str = "finished",
        notify_grace: float = 5.0,
    ) -> None:
        self.root = root
        self.net = MemoryNetwork(seed)
        self.rng = random.Random(seed)
        self.config = config or GossipConfig.fast()
        self.log = RenderLog()
        self.renderer_seconds = renderer_seconds
        self.fail = fail
        self.prefer_home = prefer_home
        self.slots = slots
        self.archive_after = archive_after
        #: What the farm-wide check at the end of ``running()`` asks: "finished" (every job
        #: done or failed, replicas equal, delivered bytes right), "converged" (replicas equal
        #: and delivered bytes right; jobs may still run) or "off" (the test checks itself).
        self.invariants = invariants
        self.last_check: Invariants | None = None
        self.peers: dict[str, SimPeer] = {}
        self.crashed: dict[str, float] = {}  # node id -> virtual time of the crash
        self.stopped: dict[str, float] = {}  # node id -> virtual time its graceful stop began
        self.paused: dict[str, trio.Event] = {}  # node id -> set when it resumes
        self.clock_skew: dict[str, int] = {}  # node id -> ms its wall clock is ahead
        self.submitters: dict[str, str] = {}  # job id -> node id of the peer it was submitted on
        self.notify_grace = notify_grace
        #: Every job-end notification a peer sent: (virtual time, node id, target, event id).
        self.notifications: list[tuple[float, str, str, str]] = []
        #: node id -> NodeParts fields set on that peer at every boot (schedule, idle source...)
        self.extra_parts: dict[str, dict[str, Any]] = {}
        self._nursery: trio.Nursery | None = None
        self._count = 0

    def wall_ms(self) -> int:
        return WALL_EPOCH_MS + int(trio.current_time() * 1000)

    def _wall_of(self, node_id: str) -> Callable[[], int]:
        return lambda: self.wall_ms() + self.clock_skew.get(node_id, 0)

    def _gate_of(self, node_id: str) -> Callable[[], Any]:
        async def gate() -> None:
            while (event := self.paused.get(node_id)) is not None:
                await event.wait()

        return gate

    # --- peers --------------------------------------------------------------------------------

    async def add_peer(
        self,
        *,
        seeds: Iterable[tuple[str, int]] = (),
        name: str | None = None,
        node_id: str | None = None,
        renderer: bool = True,
        slots: int | None = None,
        parts: dict[str, Any] | None = None,
    ) -> SimPeer:
        """Add a peer; ``parts`` sets fields of its NodeParts (kept across restarts)."""
        assert self._nursery is not None, "use `async with farm.running()`"
        self._count += 1
        index = self._count
        node_id = node_id or f"{self.rng.getrandbits(64):016x}"
        if parts:
            self.extra_parts[node_id] = dict(parts)
        address = (f"10.0.{index // 250}.{index % 250 + 1}", 7946)
        name = name or f"peer{index}"
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        peer = await self._boot(
            node_id, name, address, data_dir, renderer, self.slots if slots is None else slots, 0
        )
        await self._launch(peer, list(seeds))
        return peer

    async def _boot(
        self,
        node_id: str,
        name: str,
        address: tuple[str, int],
        data_dir: Path,
        renderer: bool,
        slots: int,
        incarnation: int,
    ) -> SimPeer:
        renderers: dict[str, Renderer] = {}
        slot_renderers: list[dict[str, Renderer]] = []
        if renderer:
            for slot in range(max(1, slots)):
                fake = FakeRenderer(
                    node_id,
                    self.log,
                    seconds=self.renderer_seconds,
                    fail=self.fail,
                    gate=self._gate_of(node_id),
                )
                if slot == 0:
                    renderers["command"] = fake
                else:
                    slot_renderers.append({"command": fake})
        ledger_store = LedgerStore(data_dir / "ledger.db")
        parts = NodeParts(
            node_id=node_id,
            name=name,
            config=self.config,
            transport=self.net.transport(address),
            ledger=ledger_store.load(node_id),
            store=ContentStore(data_dir / "store"),
            data_dir=data_dir,
            renderers=renderers,
            slot_renderers=slot_renderers,
            slots=slots,
            allow_command=True,
            ledger_store=ledger_store,
            wall_ms=self._wall_of(node_id),
            rng=random.Random(self.rng.getrandbits(32)),
            prefer_home=self.prefer_home,
            renderer_versions={"command": "fake-1"} if renderer else {},
            incarnation=incarnation,
            archive_after=self.archive_after,
            gate=self._gate_of(node_id),
            notify_sender=self._notify_sender(node_id),
            notify_grace=self.notify_grace,
            offload=inline,  # file work on the event loop: virtual time stays exact
        )
        for field_name, value in self.extra_parts.get(node_id, {}).items():
            setattr(parts, field_name, value)
        node = Node(parts)
        return SimPeer(
            node, address, trio.CancelScope(), data_dir, trio.Event(), name, renderer, slots
        )

    def _notify_sender(self, node_id: str) -> Callable[[str, str, dict[str, Any]], Any]:
        async def send(target: str, event: str, payload: dict[str, Any]) -> None:
            self.notifications.append((trio.current_time(), node_id, target, event))

        return send

    async def _launch(self, peer: SimPeer, seeds: list[tuple[str, int]]) -> None:
        assert self._nursery is not None
        self.peers[peer.node_id] = peer

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with peer.scope:
                    await peer.node.run(seeds=seeds, task_status=task_status)
            finally:
                peer.done.set()

        await self._nursery.start(run)

    async def start(
        self,
        count: int,
        *,
        renderers: int | None = None,
        settle: float | None = 30.0,
        spacing: float = 0.0,
    ) -> list[SimPeer]:
        """Add ``count`` peers, all seeded with the first, and wait until each sees all alive.

        Only the first ``renderers`` peers (default: all) can render. ``spacing`` is virtual
        seconds between joins; ``settle`` bounds the wait for membership (None: do not wait).
        """
        capable = count if renderers is None else renderers
        first = await self.add_peer(renderer=capable > 0)
        peers = [first]
        for index in range(1, count):
            if spacing:
                await trio.sleep(spacing)
            peers.append(await self.add_peer(seeds=[first.address], renderer=index < capable))
        if settle is not None:
            await self.wait_until(self.membership_converged, timeout=settle, what="membership")
        return peers

    def running(self) -> Any:
        farm = self

        class _Ctx:
            async def __aenter__(self) -> SimFarm:
                self._nursery_cm = trio.open_nursery()
                nursery = await self._nursery_cm.__aenter__()
                farm._nursery = nursery
                farm.net.start(nursery)
                return farm

            async def __aexit__(self, *exc: object) -> bool | None:
                assert farm._nursery is not None
                failed: BaseException | None = None
                if exc[0] is None and farm.invariants != "off" and farm.live():
                    try:
                        await farm.settle_and_check()
                    except BaseException as error:  # raised after the nursery is closed
                        failed = error
                for event in farm.paused.values():
                    event.set()
                farm.paused.clear()
                farm._nursery.cancel_scope.cancel()
                result = await self._nursery_cm.__aexit__(*exc)  # type: ignore[arg-type]
                if failed is not None:
                    for peer in farm.peers.values():
                        if peer.node.parts.ledger_store is not None:
                            peer.node.parts.ledger_store.close()
                    raise failed
                for peer in farm.peers.values():
                    store = peer.node.parts.ledger_store
                    if store is not None:
                        store.close()
                return result

        return _Ctx()

    # --- faults -------------------------------------------------------------------------------

    def crash(self, node_id: str) -> None:
        """kill -9: the node stops at once and sends nothing more; what it had not saved is
        lost (its database keeps only what was committed), its renders die."""
        peer = self.peers[node_id]
        self.net.crash(peer.address)
        self.crashed[node_id] = trio.current_time()
        self.paused.pop(node_id, None)
        peer.node.killed = True  # no final save on the way out
        peer.scope.cancel()

    async def restart(self, node_id: str, *, seeds: Sequence[tuple[str, int]] = ()) -> SimPeer:
        """Start a crashed or stopped peer again from its own data dir (ledger, store, id)."""
        old = self.peers[node_id]
        await old.done.wait()
        store = old.node.parts.ledger_store
        if store is not None:
            store.close()
        await old.node.transport.aclose()  # type: ignore[attr-defined]
        self.net.restore(old.address)
        self.crashed.pop(node_id, None)
        self.stopped.pop(node_id, None)
        incarnation = old.node.membership.incarnation + 1
        peer = await self._boot(
            node_id, old.name, old.address, old.data_dir, old.renderer, old.slots, incarnation
        )
        others = [p.address for p in self.live() if p.node_id != node_id]
        await self._launch(peer, list(seeds) or others[:1])
        return peer

    async def stop(self, node_id: str) -> None:
        """Graceful stop (SIGTERM): hand back claims, announce the leave."""
        peer = self.peers[node_id]
        self.stopped[node_id] = trio.current_time()
        await peer.node.leave()
        peer.scope.cancel()
        await peer.done.wait()

    def pause(self, node_id: str) -> None:
        """SIGSTOP: every task of the peer waits and its traffic is held until :meth:`resume`."""
        if node_id not in self.paused:
            self.paused[node_id] = trio.Event()
            self.net.pause(self.peers[node_id].address)

    def resume(self, node_id: str) -> None:
        """SIGCONT: the peer goes on where it stopped, with a stale view of the farm."""
        event = self.paused.pop(node_id, None)
        if event is not None:
            self.net.resume(self.peers[node_id].address)
            event.set()

    def skew_clock(self, node_id: str, ms: int) -> None:
        """Set ``node_id``'s wall clock ``ms`` ahead of the farm's (negative: behind)."""
        self.clock_skew[node_id] = ms

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network by node ids (peers named in no group form one more group)."""
        self.net.partition(*[[self.peers[n].address for n in group] for group in groups])

    def heal(self) -> None:
        self.net.heal()

    def set_loss(self, loss: float, *, delay: float = 0.001, jitter: float = 0.0) -> None:
        """Every link drops ``loss`` of its datagrams (streams stay reliable)."""
        self.net.set_default_link(delay=delay, jitter=jitter, loss=loss)

    # --- views --------------------------------------------------------------------------------

    # --- the farm-wide check ------------------------------------------------------------------

    async def settle_and_check(self, timeout: float = 60.0) -> Invariants:
        """Wait (virtual time) for gossip to quiesce, then :meth:`check_invariants`."""
        finished = self.invariants == "finished"

        def all_finished() -> bool:
            jobs = [s.id for s in self.live()[0].node.ledger.jobs()]
            return all(self.job_finished(job) for job in jobs)

        if finished:
            await self.wait_until(
                all_finished,
                timeout=timeout,
                poll=0.05,
                what="every job finished (farm-wide check)",
            )
        await self.wait_until(self.converged, timeout=timeout, poll=0.05, what="equal ledgers")
        self.last_check = self.check_invariants(expect_finished=finished)
        return self.last_check

    # --- actions ------------------------------------------------------------------------------

    async def submit(
        self,
        peer: SimPeer,
        frames: str,
        *,
        name: str = "render",
        chunk: int = 1,
        priority: int = 0,
        retries: int = 3,
        order: str | None = None,
        after: str | None = None,
        per_frame: bool = False,
        notify: Sequence[str] = (),
    ) -> str:
        """Submit a command job from ``peer`` through the control facade; returns the job id."""
        from ..farm import Farm

        scene = self.root / f"{name}.sh"
        if not scene.exists():
            scene.write_text(f"#!/bin/sh\n# {name}\n")
            scene.chmod(0o755)
        request = SubmitRequest(
            scene=scene,
            frames=frames,
            renderer="command",
            name=name,
            chunk=chunk,
            priority=priority,
            retries=retries,
            cwd=self.root / "submit",
            options={"order": order} if order else {},
            after=after,
            per_frame=per_frame,
            notify=tuple(notify),
        )
        result = await Farm(peer.node).submit(request)
        job = str(result["job"])
        self.submitters[job] = peer.node_id
        return job

    async def announce_job(
        self, peer: SimPeer, name: str, *, frames: Sequence[int] = range(1, 11)
    ) -> str:
        """Write a job straight into ``peer``'s ledger and gossip it (no scene file, so only
        for farms without renderers: pure ledger traffic for gossip tests). Returns its id."""
        spec = peer.node.ledger.new_job(
            name=name,
            submitter_name=peer.node.name,
            renderer="command",
            options={},
            scene=SceneRef(hashlib.sha256(name.encode()).digest(), f"{name}.sh", 0),
            frames=list(frames),
            wall_ms=self.wall_ms(),
        )
        await peer.node.write(lambda ledger, wall: ledger.submit(spec))
        return spec.id

    async def act(self, peer: SimPeer, job: str, action: str, frames: str | None = None) -> None:
        """cancel / pause / resume / retry from ``peer`` through the control facade."""
        from ..farm import Farm

        await Farm(peer.node).act(job, action, frames)  # type: ignore[arg-type]

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        *,
        timeout: float,
        poll: float = 0.01,
        what: str = "condition",
    ) -> float:
        """Poll ``predicate`` every ``poll`` virtual seconds; the time it first held.

        Raises AssertionError after ``timeout`` virtual seconds.
        """
        deadline = trio.current_time() + timeout
        while not predicate():
            if trio.current_time() >= deadline:
                raise AssertionError(f"{what} not reached within {timeout} s (virtual)")
            await trio.sleep(poll)
        return trio.current_time()


def frames_of(spec_frames: Sequence[int]) -> list[str]:
    """The names :class:`FakeRenderer` gives the outputs of these frames."""
    return [f"{frame_stem(f)}.txt" for f in spec_frames]
