"""Fakes that are part of the library (trio.testing style): a fake renderer and a simulated farm.

``SimFarm`` runs many real :class:`~peerfarm.node.Node` objects in one process on the in-memory
network (:mod:`peerfarm.gossip.memnet`), under whatever clock the test uses (:func:`sim_clock`
for deterministic runs). Only the network, the clock and the renderer are fake; the ledger,
membership, scheduler, leases, store and transfers are the real ones. ``RenderLog`` records every
render any fake renderer started, with virtual start and end times, so tests can count
duplicates and check what ran when.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import trio
import trio.testing

from .control import SubmitRequest
from .files.store import ContentStore
from .gossip.config import GossipConfig
from .gossip.membership import MemberState
from .gossip.memnet import MemoryNetwork
from .ledger import Ledger
from .ledger.model import JobState, SceneRef, Status
from .node import Node, NodeParts
from .renderers.base import (
    Progress,
    Renderer,
    RendererInfo,
    RenderFailed,
    RenderResult,
    RenderTask,
    frame_stem,
)

#: Virtual time (``trio.current_time()``) at which SimFarm's wall clock reads this, in ms.
WALL_EPOCH_MS = 1_700_000_000_000


def sim_clock(*, settle: float = 0.0002) -> trio.testing.MockClock:
    """A MockClock that jumps to the next timer as soon as every task waits, except while a
    worker thread (``trio.to_thread``) is running.

    ``MockClock(autojump_threshold=0)`` alone jumps while a node copies a file in a thread, so
    a 1 ms copy can take seconds of virtual time (and expire leases), depending on how busy the
    machine is. A non-zero threshold avoids that but costs real time on each of the thousands
    of timer wakeups of a simulation. This clock has neither problem: while a thread is out it
    lets the thread finish (sleeping ``settle`` real seconds) instead of jumping.

    MockClock cannot be subclassed, so this wraps the hook trio's run loop calls on an idle
    autojump (``MockClock._autojump``, present in trio 0.2x-0.3x) on the instance.
    """
    clock = trio.testing.MockClock(autojump_threshold=0)
    jump = clock._autojump

    def autojump() -> None:
        if trio.to_thread.current_default_thread_limiter().borrowed_tokens:
            time.sleep(settle)  # only the thread can make progress: let it
            return
        jump()

    clock._autojump = autojump  # type: ignore[method-assign]
    return clock


@dataclass(slots=True)
class RenderRecord:
    node: str
    job: str
    frame: int
    started: float
    ended: float | None = None
    completed: bool = False
    failed: bool = False


@dataclass
class RenderLog:
    """Every render any fake renderer started, for counting duplicates."""

    records: list[RenderRecord] = field(default_factory=list)

    def completed(self, job: str | None = None) -> list[RenderRecord]:
        return [r for r in self.records if r.completed and (job is None or r.job == job)]

    def duplicates(self) -> dict[tuple[str, int], int]:
        """(job, frame) -> completed renders, for frames completed more than once."""
        counts: dict[tuple[str, int], int] = {}
        for r in self.completed():
            counts[(r.job, r.frame)] = counts.get((r.job, r.frame), 0) + 1
        return {k: v for k, v in counts.items() if v > 1}

    def of_job(self, job: str) -> list[RenderRecord]:
        return [r for r in self.records if r.job == job]

    def in_flight(self, at: float, job: str | None = None) -> list[RenderRecord]:
        """Renders started at or before ``at`` that had not ended by then."""
        return [
            r
            for r in self.records
            if r.started <= at
            and (r.ended is None or r.ended > at)
            and (job is None or r.job == job)
        ]

    def started_after(self, at: float, job: str | None = None) -> list[RenderRecord]:
        return [r for r in self.records if r.started > at and (job is None or r.job == job)]

    def running(self) -> list[RenderRecord]:
        return [r for r in self.records if r.ended is None]

    def by_node(self, job: str | None = None) -> dict[str, int]:
        """Completed renders per node."""
        out: dict[str, int] = {}
        for r in self.completed(job):
            out[r.node] = out.get(r.node, 0) + 1
        return out


class FakeRenderer(Renderer):
    """Sleeps ``seconds`` per frame (trio time, so MockClock skips it) and writes one file.

    ``fail(node, frame)`` returning True makes that frame's render fail on that node (after the
    sleep), like a renderer exiting non-zero.
    """

    name: ClassVar[str] = "command"

    def __init__(
        self,
        node: str,
        log: RenderLog,
        *,
        seconds: float | Callable[[int], float] = 0.25,
        fail: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.node = node
        self.log = log
        self.seconds = seconds
        self.fail = fail

    async def detect(self) -> RendererInfo | None:
        return RendererInfo(self.name, "fake-1", {"mode": "fake"})

    async def render(
        self, task: RenderTask, *, on_progress: Callable[[Progress], None]
    ) -> RenderResult:
        outputs: dict[int, list[Path]] = {}
        start = trio.current_time()
        for frame in task.frames:
            record = RenderRecord(self.node, task.job_id, frame, trio.current_time())
            self.log.records.append(record)
            try:
                seconds = self.seconds(frame) if callable(self.seconds) else self.seconds
                await trio.sleep(seconds)
                on_progress(Progress(frame, 1.0, f"frame {frame} done"))
                if self.fail is not None and self.fail(self.node, frame):
                    record.failed = True
                    raise RenderFailed(f"fake failure of frame {frame}", log_tail="boom\n")
                out = task.output_dir / f"{frame_stem(frame)}.txt"
                out.write_text(expected_output(task.job_id, frame))
                outputs[frame] = [out]
                record.completed = True
            finally:
                record.ended = trio.current_time()
        return RenderResult(outputs, trio.current_time() - start, "ok\n")

    def build_argv(self, task: RenderTask) -> list[str]:
        return ["fake", *map(str, task.frames)]

    def parse_line(self, line: str) -> Progress | None:
        return None


def expected_output(job: str, frame: int) -> str:
    """What :class:`FakeRenderer` writes for one frame."""
    return f"{job}:{frame}\n"


@dataclass
class SimPeer:
    node: Node
    address: tuple[str, int]
    scope: trio.CancelScope
    data_dir: Path
    done: trio.Event

    @property
    def node_id(self) -> str:
        return self.node.node_id


class SimFarm:
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
        self.peers: dict[str, SimPeer] = {}
        self.crashed: dict[str, float] = {}  # node id -> virtual time of the crash
        self.stopped: dict[str, float] = {}  # node id -> virtual time its graceful stop began
        self._nursery: trio.Nursery | None = None
        self._count = 0

    def wall_ms(self) -> int:
        return WALL_EPOCH_MS + int(trio.current_time() * 1000)

    async def add_peer(
        self,
        *,
        seeds: Iterable[tuple[str, int]] = (),
        name: str | None = None,
        node_id: str | None = None,
        renderer: bool = True,
        slots: int | None = None,
    ) -> SimPeer:
        assert self._nursery is not None, "use `async with farm.running()`"
        self._count += 1
        index = self._count
        node_id = node_id or f"{self.rng.getrandbits(64):016x}"
        address = (f"10.0.{index // 250}.{index % 250 + 1}", 7946)
        data_dir = self.root / (name or f"peer{index}")
        data_dir.mkdir(parents=True, exist_ok=True)
        renderers: dict[str, Renderer] = {}
        if renderer:
            renderers["command"] = FakeRenderer(
                node_id, self.log, seconds=self.renderer_seconds, fail=self.fail
            )
        parts = NodeParts(
            node_id=node_id,
            name=name or f"peer{index}",
            config=self.config,
            transport=self.net.transport(address),
            ledger=Ledger(node_id),
            store=ContentStore(data_dir / "store"),
            data_dir=data_dir,
            renderers=renderers,
            slots=self.slots if slots is None else slots,
            allow_command=True,
            wall_ms=self.wall_ms,
            rng=random.Random(self.rng.getrandbits(32)),
            prefer_home=self.prefer_home,
            renderer_versions={"command": "fake-1"} if renderer else {},
        )
        node = Node(parts)
        scope = trio.CancelScope()
        done = trio.Event()
        peer = SimPeer(node, address, scope, data_dir, done)
        self.peers[node_id] = peer

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await node.run(seeds=list(seeds), task_status=task_status)
            finally:
                done.set()

        await self._nursery.start(run)
        return peer

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
                farm._nursery.cancel_scope.cancel()
                return await self._nursery_cm.__aexit__(*exc)  # type: ignore[arg-type]

        return _Ctx()

    # --- faults -------------------------------------------------------------------------------

    def crash(self, node_id: str) -> None:
        """kill -9: the node stops at once, sends nothing more, keeps its claims."""
        peer = self.peers[node_id]
        self.net.crash(peer.address)
        self.crashed[node_id] = trio.current_time()
        peer.scope.cancel()

    async def stop(self, node_id: str) -> None:
        """Graceful stop (SIGTERM): hand back claims, announce the leave."""
        peer = self.peers[node_id]
        self.stopped[node_id] = trio.current_time()
        await peer.node.leave()
        peer.scope.cancel()
        await peer.done.wait()

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network by node ids (peers named in no group form one more group)."""
        self.net.partition(*[[self.peers[n].address for n in group] for group in groups])

    def heal(self) -> None:
        self.net.heal()

    def set_loss(self, loss: float, *, delay: float = 0.001, jitter: float = 0.0) -> None:
        """Every link drops ``loss`` of its datagrams (streams stay reliable)."""
        self.net.set_default_link(delay=delay, jitter=jitter, loss=loss)

    # --- views --------------------------------------------------------------------------------

    def live(self) -> list[SimPeer]:
        """Peers running now (not crashed, not stopped)."""
        return [
            p
            for p in self.peers.values()
            if not p.done.is_set()
            and p.node_id not in self.crashed
            and p.node_id not in self.stopped
        ]

    def digests(self) -> set[str]:
        return {p.node.ledger.state_digest() for p in self.live()}

    def converged(self) -> bool:
        """Every live peer holds the same ledger."""
        return len(self.digests()) == 1

    def membership_converged(self) -> bool:
        """Every live peer sees every live peer alive, and every other peer not alive."""
        live = {p.node_id for p in self.live()}
        for peer in self.live():
            alive = {
                m.node_id for m in peer.node.members() if m.state == MemberState.ALIVE
            }
            if alive != live:
                return False
        return True

    def states_of(self, node_id: str) -> dict[str, MemberState | None]:
        """How every live peer (but ``node_id``) sees ``node_id``."""
        out: dict[str, MemberState | None] = {}
        for peer in self.live():
            if peer.node_id == node_id:
                continue
            member = peer.node.membership.get(node_id)
            out[peer.node_id] = None if member is None else member.state
        return out

    def job_finished(self, job: str, *, delivered: bool = True) -> bool:
        """Every live peer sees ``job`` done (or failed/cancelled), every frame delivered."""
        for peer in self.live():
            ledger = peer.node.ledger
            if ledger.job(job) is None:
                return False
            state = ledger.job_state(job)
            if state == JobState.ACTIVE or state == JobState.PAUSED:
                return False
            if delivered and state == JobState.DONE:
                spec = ledger.job(job)
                assert spec is not None
                if not all(ledger.delivered(job, f) for f in spec.frames):
                    return False
        return True

    def frame_statuses(self, job: str, peer: SimPeer | None = None) -> dict[int, Status]:
        """Every frame of ``job`` and its status, as ``peer`` (default: any live one) sees it."""
        peer = peer or self.live()[0]
        ledger = peer.node.ledger
        spec = ledger.job(job)
        assert spec is not None, f"{peer.node.name} does not know job {job}"
        return {f: ledger.frame(job, f).status for f in spec.frames}

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
    ) -> str:
        """Submit a command job from ``peer`` through the control facade; returns the job id."""
        from .farm import Farm

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
        )
        result = await Farm(peer.node).submit(request)
        return str(result["job"])

    async def announce_job(
        self, peer: SimPeer, name: str, *, frames: Sequence[int] = range(1, 11)
    ) -> str:
        """Write a job straight into ``peer``'s ledger and gossip it (no scene file, so only
        for farms without renderers: pure ledger traffic for gossip tests). Returns its id."""
        ledger = peer.node.ledger
        spec = ledger.new_job(
            name=name,
            submitter_name=peer.node.name,
            renderer="command",
            options={},
            scene=SceneRef(hashlib.sha256(name.encode()).digest(), f"{name}.sh", 0),
            frames=list(frames),
            wall_ms=self.wall_ms(),
        )
        await peer.node.publish(ledger.submit(spec))
        return spec.id

    async def act(self, peer: SimPeer, job: str, action: str) -> None:
        """cancel / pause / resume from ``peer`` through the control facade."""
        from .farm import Farm

        await Farm(peer.node).act(job, action)  # type: ignore[arg-type]

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


def output_files(folder: Path) -> dict[str, str]:
    """File name -> text of every file in a delivery folder (hidden partial files excluded)."""
    if not folder.exists():
        return {}
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def frames_of(spec_frames: Sequence[int]) -> list[str]:
    """The names :class:`FakeRenderer` gives the outputs of these frames."""
    return [f"{frame_stem(f)}.txt" for f in spec_frames]
