"""Fakes that are part of the library (trio.testing style): a fake renderer and a simulated farm.

``SimFarm`` runs many real :class:`~peerfarm.node.Node` objects in one process on the in-memory
network (:mod:`peerfarm.gossip.memnet`), under whatever clock the test uses (trio's MockClock for
deterministic runs). Only the network and the renderer are fake; the ledger, membership,
scheduler, leases, store and transfers are the real ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import trio

from .files.store import ContentStore
from .gossip.config import GossipConfig
from .gossip.memnet import MemoryNetwork
from .ledger import Ledger
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


@dataclass(slots=True)
class RenderRecord:
    node: str
    job: str
    frame: int
    started: float
    ended: float | None = None
    completed: bool = False


@dataclass
class RenderLog:
    """Every render any fake renderer started, for counting duplicates."""

    records: list[RenderRecord] = field(default_factory=list)

    def completed(self) -> list[RenderRecord]:
        return [r for r in self.records if r.completed]

    def duplicates(self) -> dict[tuple[str, int], int]:
        counts: dict[tuple[str, int], int] = {}
        for r in self.completed():
            counts[(r.job, r.frame)] = counts.get((r.job, r.frame), 0) + 1
        return {k: v for k, v in counts.items() if v > 1}


class FakeRenderer(Renderer):
    """Sleeps ``seconds`` per frame (trio time, so MockClock skips it) and writes one file."""

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
                    raise RenderFailed(f"fake failure of frame {frame}", log_tail="boom\n")
                out = task.output_dir / f"{frame_stem(frame)}.txt"
                out.write_text(f"{task.job_id}:{frame}\n")
                outputs[frame] = [out]
                record.completed = True
            finally:
                record.ended = trio.current_time()
        return RenderResult(outputs, trio.current_time() - start, "ok\n")

    def build_argv(self, task: RenderTask) -> list[str]:
        return ["fake", *map(str, task.frames)]

    def parse_line(self, line: str) -> Progress | None:
        return None


@dataclass
class SimPeer:
    node: Node
    address: tuple[str, int]
    scope: trio.CancelScope
    data_dir: Path
    done: trio.Event


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
        self._nursery: trio.Nursery | None = None
        self._count = 0

    def wall_ms(self) -> int:
        return 1_700_000_000_000 + int(trio.current_time() * 1000)

    async def add_peer(
        self,
        *,
        seeds: Iterable[tuple[str, int]] = (),
        name: str | None = None,
        node_id: str | None = None,
        renderer: bool = True,
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
            slots=self.slots,
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

    def crash(self, node_id: str) -> None:
        """kill -9: the node stops at once, sends nothing more, keeps its claims."""
        peer = self.peers[node_id]
        self.net.crash(peer.address)
        peer.scope.cancel()

    async def stop(self, node_id: str) -> None:
        """Graceful stop (SIGTERM): hand back claims, announce the leave."""
        peer = self.peers[node_id]
        await peer.node.leave()
        peer.scope.cancel()
        await peer.done.wait()

    def live(self) -> list[SimPeer]:
        return [p for p in self.peers.values() if not p.done.is_set()]

    def digests(self) -> set[str]:
        return {p.node.ledger.state_digest() for p in self.live()}
