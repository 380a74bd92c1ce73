"""Fakes that are part of the library (trio.testing style): a fake renderer, a render log, and
a deterministic clock for simulations.

``FakeRenderer`` sleeps in trio time (so MockClock skips it) and writes one small file per frame
whose bytes name the peer that rendered it; ``RenderLog`` records every render any fake started,
with virtual start and end times, so tests count duplicates and check what ran when.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import trio
import trio.testing

from ..renderers.base import (
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
        gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.node = node
        self.log = log
        self.seconds = seconds
        self.fail = fail
        self.gate = gate  # waits while the peer is paused (SIGSTOP in a simulation)

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
                await self._sleep(seconds)
                on_progress(Progress(frame, 1.0, f"frame {frame} done"))
                if self.fail is not None and self.fail(self.node, frame):
                    record.failed = True
                    raise RenderFailed(f"fake failure of frame {frame}", log_tail="boom\n")
                out = task.output_dir / f"{frame_stem(frame)}.txt"
                out.write_text(expected_output(task.job_id, frame, self.node))
                outputs[frame] = [out]
                record.completed = True
            finally:
                record.ended = trio.current_time()
        return RenderResult(outputs, trio.current_time() - start, "ok\n")

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of the peer's running time: a pause does not count."""
        if self.gate is None:
            await trio.sleep(seconds)
            return
        left = seconds
        while left > 0:
            await self.gate()
            step = min(left, 0.05)
            await trio.sleep(step)
            left -= step

    def build_argv(self, task: RenderTask) -> list[str]:
        return ["fake", *map(str, task.frames)]

    def parse_line(self, line: str) -> Progress | None:
        return None


def expected_output(job: str, frame: int, node: str) -> str:
    """What :class:`FakeRenderer` on ``node`` writes for one frame: different bytes on every
    peer, as real renderers give (timestamps, noise), so tests see whose output was delivered."""
    return f"{job}:{frame}:{node}\n"


def rendered_by(text: str) -> str:
    """The node that rendered a :class:`FakeRenderer` output."""
    return text.strip().rsplit(":", 1)[-1]
