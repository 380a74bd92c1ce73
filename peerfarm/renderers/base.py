"""The renderer plugin interface and the process plumbing every plugin shares.

This module owns: the value objects a renderer takes and returns (``RenderTask``, ``Progress``,
``RenderResult``, ``RendererInfo``), the abstract ``Renderer``, the output naming rule
(``frame_0001.png``), contiguous frame chunks, and ``run_logged`` — the
one place a renderer process is started. Its rule: a renderer runs in a process tree of its own
(a process group on POSIX, a job object on Windows: ``peerfarm.platform``), and when the caller
is cancelled (job cancelled, lease lost, shutdown) or the process ends, the whole tree is ended
(asked to leave, then killed after ``KILL_GRACE_S``), so no renderer leaves orphans.

It also applies the peer's resource caps to every process it starts, whatever the plugin: the
caller sets :data:`LIMITS` (a :class:`RenderLimits`) for the render, and ``run_logged`` lowers
the process's priority (``--nice``), tells it how many threads to use (``PEERFARM_THREADS``,
``OMP_NUM_THREADS``; plugins pass ``threads`` on their own command line too), and samples the
group's resident memory: the peak is kept in the limits for the frame's done record, and a
group over ``max_memory`` is killed (:class:`MemoryExceeded`).
"""

from __future__ import annotations

import abc
import collections
import contextlib
import contextvars
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import psutil
import trio

from peerfarm import platform
from peerfarm.errors import RendererError
from peerfarm.renderers import groups, stuck
from peerfarm.renderers.checks import NOTHING, Expected

#: Seconds between SIGTERM and SIGKILL when a renderer's process group is stopped.
KILL_GRACE_S = 2.0
#: How much of a renderer's output is kept for error reports (lines, then bytes).
TAIL_LINES = 50
TAIL_BYTES = 8 * 1024
#: A line longer than this (no newline seen) is cut and emitted in pieces.
MAX_LINE_BYTES = 64 * 1024

#: How much ``--nice`` lowers a renderer's priority (POSIX nice increment; Windows: below normal).
NICE_INCREMENT = 10
#: Seconds between the first two samples of a renderer group's resident memory; each wait
#: after is twice the one before, up to :data:`MEMORY_SAMPLE_MAX_S`. A sample reads every
#: process of the machine (a process's descendants are found through their parents), about
#: 1 ms at 70 processes and 3.5 ms at 200: every 0.2 s all render long, that was a quarter of
#: the CPU of 32 peers on 2 cores. A render's memory grows as it loads its scene and then
#: mostly stays, so later samples miss little.
MEMORY_SAMPLE_S = 0.2
MEMORY_SAMPLE_MAX_S = 1.0
#: Seconds before the first sample (renders shorter than this record no peak memory).
FIRST_SAMPLE_S = 0.05

_LINE_SPLIT = re.compile(rb"\r\n|\r|\n")


class RenderFailed(RendererError):
    """A render that did not produce its frames: non-zero exit, crash, or missing output.

    ``reason`` is one line for the ledger and the dashboard; ``log_tail`` is the end of the
    renderer's output, for the person who has to fix the scene.
    """

    def __init__(self, reason: str, *, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


class MemoryExceeded(RenderFailed):
    """The renderer's processes used more memory than this peer's ``--max-memory``."""


@dataclass(slots=True)
class RenderLimits:
    """This peer's caps for one render, and what the render used (filled by ``run_logged``)."""

    threads: int | None = None  # at most this many threads (None: the renderer decides)
    nice: bool = False  # lower the renderers' priority
    max_memory: int | None = None  # bytes; a group above it is killed
    peak_memory: int = 0  # the greatest resident memory sampled over the group (bytes)
    #: Called once the render's last process has exited (``run_logged(..., last=True)``): the
    #: machine is free, and the peer starts its next frame while this one's files are collected.
    machine_free: Callable[[], None] | None = None


#: The caps of the render the current task runs (set by the peer around a plugin's ``render``).
LIMITS: contextvars.ContextVar[RenderLimits | None] = contextvars.ContextVar(
    "peerfarm_render_limits", default=None
)


def limited_env(
    env: Mapping[str, str] | None, limits: RenderLimits | None
) -> dict[str, str] | None:
    """The child's environment with the thread cap (None: inherit ours unchanged)."""
    if limits is None or not limits.threads:
        return dict(env) if env is not None else None
    out = dict(env) if env is not None else dict(os.environ)
    out["PEERFARM_THREADS"] = out["OMP_NUM_THREADS"] = str(limits.threads)
    return out


def _lower_priority() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform != "win32":  # Windows lowers priority through psutil after the start
        os.nice(NICE_INCREMENT)


def group_memory(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 when it is gone)."""
    total = 0
    for proc in platform.tree_processes(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


@dataclass(frozen=True, slots=True)
class RendererInfo:
    """What a peer can render with: goes into the peer's metadata.

    ``version`` is the preferred installation's; ``versions`` every installed version,
    ascending, when the plugin can have several installations (Blender).
    """

    name: str
    version: str
    details: dict[str, str] = field(default_factory=dict)
    versions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RenderTask:
    """Frames of one job to render on this peer.

    ``scene`` is a local file or an unpacked folder; ``output_dir`` is an empty folder for this
    task's outputs; ``work_dir`` is scratch space for the job that persists across its frames.
    ``allow_scripts`` lets a scene run code (Blender auto-exec, the command renderer).
    """

    job_id: str
    frames: tuple[int, ...]
    scene: Path
    scene_name: str
    options: Mapping[str, Any]
    output_dir: Path
    work_dir: Path
    allow_scripts: bool = False


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress report parsed from a renderer's output; ``None`` where it said nothing."""

    frame: int | None
    fraction: float | None
    message: str
    samples: str | None = None
    memory: str | None = None


@dataclass(frozen=True, slots=True)
class RenderResult:
    """Frame number -> the files it produced (inside the task's ``output_dir``)."""

    outputs: dict[int, list[Path]]
    seconds: float
    log_tail: str


class Renderer(abc.ABC):
    """A renderer plugin. Pure where it can be: ``build_argv`` and ``parse_line``."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def detect(self) -> RendererInfo | None:
        """The installed renderer's version, or ``None`` when this peer does not have it."""

    @abc.abstractmethod
    async def render(
        self, task: RenderTask, *, on_progress: Callable[[Progress], None]
    ) -> RenderResult:
        """Render ``task.frames``; raise ``RenderFailed`` when any frame is not produced."""

    async def aclose(self) -> None:  # noqa: B027 - most renderers keep nothing warm
        """Stop anything kept running between renders."""

    def expected_output(self, task: RenderTask) -> Expected:
        """What each frame of ``task`` must produce to count as done (``renderers.checks``);
        a frame that exits 0 without it fails. Default: nothing is required."""
        return NOTHING

    @abc.abstractmethod
    def build_argv(self, task: RenderTask) -> list[str]:
        """The command line for ``task`` (pure)."""

    @abc.abstractmethod
    def parse_line(self, line: str) -> Progress | None:
        """Progress from one output line, or ``None`` when the line says nothing useful."""


# --- naming and frames (pure) --------------------------------------------------------------


def frame_stem(frame: int) -> str:
    """``frame_0001``: zero-padded to 4 digits, more when the number needs them."""
    sign = "-" if frame < 0 else ""
    return f"frame_{sign}{abs(frame):04d}"


def contiguous_runs(frames: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, de-duplicated frames as inclusive (first, last) runs: 1,2,3,7 -> (1,3),(7,7)."""
    runs: list[tuple[int, int]] = []
    for frame in sorted(set(frames)):
        if runs and frame == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], frame)
        else:
            runs.append((frame, frame))
    return runs


def split_lines(buffer: bytearray) -> list[str]:
    """Take every complete line (ended by ``\\n``, ``\\r`` or ``\\r\\n``) out of ``buffer``.

    Blank lines are dropped; a line longer than ``MAX_LINE_BYTES`` is cut. A lone trailing
    ``\\r`` is kept back, since a ``\\n`` may follow in the next chunk.
    """
    lines: list[str] = []
    start = 0
    for match in _LINE_SPLIT.finditer(buffer):
        if match.group() == b"\r" and match.end() == len(buffer):
            break
        lines.append(bytes(buffer[start : match.start()]).decode("utf-8", "replace"))
        start = match.end()
    del buffer[:start]
    while len(buffer) > MAX_LINE_BYTES:
        lines.append(bytes(buffer[:MAX_LINE_BYTES]).decode("utf-8", "replace"))
        del buffer[:MAX_LINE_BYTES]
    return [line for line in lines if line.strip()]


class LogTail:
    """The last ``max_lines`` lines of output, at most ``max_bytes`` in all."""

    def __init__(self, max_lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> None:
        self._lines: collections.deque[str] = collections.deque()
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._bytes = 0

    def add(self, line: str) -> None:
        line = line[-self._max_bytes :]
        self._lines.append(line)
        self._bytes += len(line) + 1
        while len(self._lines) > self._max_lines or self._bytes > self._max_bytes:
            self._bytes -= len(self._lines.popleft()) + 1

    def text(self) -> str:
        return "\n".join(self._lines)


# --- processes ------------------------------------------------------------------------------


class LineReader:
    """Lines from a trio receive stream, split on ``\\n`` and ``\\r`` (progress bars)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._ready: collections.deque[str] = collections.deque()
        self._eof = False

    async def next_line(self) -> str | None:
        """The next non-blank line, or ``None`` at end of stream."""
        while not self._ready:
            if self._eof:
                return None
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                self._eof = True
                self._buffer.extend(b"\n")
            else:
                self._buffer.extend(chunk)
            self._ready.extend(split_lines(self._buffer))
        return self._ready.popleft()


class ChildProcess(Protocol):
    """What ``run_logged`` uses of a child: ``trio.Process``, or a :class:`DirectChild`."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdin(self) -> trio.abc.SendStream | None: ...

    @property
    def stdout(self) -> trio.abc.ReceiveStream | None: ...

    @property
    def stderr(self) -> trio.abc.ReceiveStream | None: ...

    async def wait(self) -> int: ...


class DirectChild:
    """A child started in the event loop itself and waited for through its exit descriptor
    (``platform.exit_fd``), its output read from a pipe: no thread is woken to start it or to
    see it end. Starting is a ``vfork``, a fraction of a millisecond; through
    ``trio.lowlevel.open_process`` the same start waits for a worker thread and then for the
    event loop to come back to it (a millisecond, several on a busy peer, between two frames)."""

    def __init__(self, popen: subprocess.Popen[bytes], stdout: trio.abc.ReceiveStream) -> None:
        self._popen = popen
        self._exit_fd = platform.exit_fd(popen.pid)
        self._watched: trio.Event | None = None
        self.pid = popen.pid
        self.stdin: trio.abc.SendStream | None = None
        self.stdout: trio.abc.ReceiveStream | None = stdout
        self.stderr: trio.abc.ReceiveStream | None = None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        """The exit status, once the child has ended (several tasks may wait at once)."""
        while self.returncode is None:
            if self._exit_fd is None:  # the descriptor could not be had: look again soon
                await trio.sleep(0.005)
            elif self._watched is not None:  # another task watches the descriptor
                await self._watched.wait()
            else:  # readable once the child has ended (and stays so after it is reaped)
                self._watched = trio.Event()
                try:
                    await trio.lowlevel.wait_readable(self._exit_fd)
                finally:
                    self._watched.set()  # the others look again (one of them may watch)
                    self._watched = None
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._watched is None:
            # Not while another task watches it: that one may not have run since the child
            # ended (this one found it reaped), and closing the descriptor under it would
            # raise there. It closes it itself when it looks again.
            self._close_exit_fd()
        return self._popen.wait()

    def _close_exit_fd(self) -> None:
        if self._exit_fd is not None:
            fd, self._exit_fd = self._exit_fd, None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    def close(self) -> None:
        """Forget the exit descriptor (the child was reaped, or is left to ``kill``)."""
        self._close_exit_fd()


def start_child(
    argv: list[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    preexec_fn: Callable[[], None] | None = None,
) -> DirectChild | None:
    """``argv`` as the head of a tree of its own, stdout and stderr into one pipe, started
    right here (see :class:`DirectChild`); None where a child cannot be waited for that way
    (no exit descriptors: macOS, Windows, an old kernel) or must run code before ``exec``
    (``preexec_fn`` forbids the ``vfork`` that makes starting in the event loop cheap).
    OSError when it cannot be started."""
    if sys.platform == "win32" or preexec_fn is not None or not platform.exit_fds_work():
        return None
    read_fd, write_fd = os.pipe()
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            **platform.tree_kwargs(),
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return DirectChild(popen, trio.lowlevel.FdStream(read_fd))


async def kill_process_group(process: ChildProcess, grace: float = KILL_GRACE_S) -> None:
    """Stop ``process`` and everything in its tree: asked to leave (SIGTERM, CTRL_BREAK on
    Windows), then killed after ``grace``; see ``peerfarm.platform``.

    Runs shielded so a cancelled caller still waits for the kill; every renderer is started
    with ``platform.tree_kwargs()`` and ``platform.track_tree``.
    """
    pid = process.pid
    with trio.CancelScope(shield=True):
        if platform.signal_tree(pid, kill=False):
            with trio.move_on_after(grace):
                await process.wait()
                # The leader is gone; give the rest of the tree the remaining grace.
                while platform.tree_alive(pid):
                    await trio.sleep(0.02)
        platform.signal_tree(pid, kill=True)
        await process.wait()


async def close_pipes(process: ChildProcess) -> None:
    """Close our ends of a process's pipes (shielded: runs during cancellation too)."""
    with trio.CancelScope(shield=True):
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()
    if isinstance(process, DirectChild):
        process.close()


@dataclass(frozen=True, slots=True)
class LoggedRun:
    """How a ``run_logged`` process ended."""

    returncode: int
    log_tail: str
    seconds: float


async def run_logged(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    last: bool = False,
) -> LoggedRun:
    """Run ``argv`` in its own process group, streaming stdout+stderr lines to ``on_line``.

    Keeps a bounded tail of the output. On cancellation the group is killed and
    ``trio.Cancelled`` propagates; when the leader exits, stragglers in its group are killed
    too. A program that cannot be started raises ``RenderFailed``. ``last``: the render runs
    no process after this one, so its exit frees the machine (:attr:`RenderLimits.machine_free`)
    whatever the outcome.
    """
    tail = LogTail()
    started = time.monotonic()
    limits = LIMITS.get()
    extra: dict[str, Any] = {}
    if limits is not None and limits.nice and os.name == "posix":
        extra["preexec_fn"] = _lower_priority
    child_env = limited_env(env, limits)
    process: ChildProcess | None
    try:
        process = start_child(argv, cwd=cwd, env=child_env, preexec_fn=extra.get("preexec_fn"))
        if process is None:
            process = await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=child_env,
                **platform.tree_kwargs(),
                **extra,
            )
    except OSError as exc:
        raise RenderFailed(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
    platform.track_tree(process.pid)
    if limits is not None and limits.nice and os.name != "posix":  # pragma: no cover - Windows
        with contextlib.suppress(psutil.Error, AttributeError):
            psutil.Process(process.pid).nice(getattr(psutil, "BELOW_NORMAL_PRIORITY_CLASS", 10))
    groups.REGISTRY.started(process.pid)
    over: list[int] = []
    assert process.stdout is not None
    reader = LineReader(process.stdout)

    lines = 0
    after = stuck.STUCK_AFTER.get()
    stuck_scope = trio.CancelScope()
    found_stuck = False

    async def pump() -> None:
        nonlocal lines
        while (line := await reader.next_line()) is not None:
            lines += 1
            tail.add(line)
            if on_line is not None:
                on_line(line)

    async def watch(done: trio.CancelScope) -> None:
        nonlocal found_stuck
        with done:
            state = stuck.Watch(after, trio.current_time())
            while True:
                await trio.sleep(stuck.sample_interval(after))
                now = trio.current_time()
                state = state.observe(now, lines, group_cpu_seconds(process.pid))
                if state.stuck(now):
                    found_stuck = True
                    stuck_scope.cancel()
                    return

    sampler = trio.CancelScope()

    async def sample_memory(limits: RenderLimits) -> None:
        with sampler:
            await trio.sleep(FIRST_SAMPLE_S)  # a no-op process pays nothing for the sampling
            interval = MEMORY_SAMPLE_S
            while process.returncode is None:
                used = await trio.to_thread.run_sync(group_memory, process.pid)
                limits.peak_memory = max(limits.peak_memory, used)
                if limits.max_memory and used > limits.max_memory:
                    over.append(used)
                    platform.signal_tree(process.pid, kill=True)
                    return
                await trio.sleep(interval)
                interval = min(MEMORY_SAMPLE_MAX_S, interval * 2)

    try:
        with stuck_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump)
                watching = trio.CancelScope()
                if after > 0:
                    nursery.start_soon(watch, watching)
                if limits is not None:
                    nursery.start_soon(sample_memory, limits)
                await process.wait()
                if last and limits is not None and limits.machine_free is not None:
                    limits.machine_free()
                watching.cancel()
                sampler.cancel()
                # A grandchild may still hold the pipe open: end the tree so the pump sees EOF.
                platform.signal_tree(process.pid, kill=True)
        if found_stuck:
            await kill_process_group(process)
    except BaseException:
        await kill_process_group(process)
        raise
    finally:
        await close_pipes(process)
        platform.release_tree(process.pid)
        groups.REGISTRY.ended(process.pid)
    if found_stuck:
        raise RenderFailed(stuck.reason(after), log_tail=tail.text())
    assert process.returncode is not None
    if over and limits is not None:
        raise MemoryExceeded(
            f"used {_size(over[0])}, over this peer's --max-memory {_size(limits.max_memory or 0)}",
            log_tail=tail.text(),
        )
    return LoggedRun(process.returncode, tail.text(), time.monotonic() - started)


def group_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and every process below it,
    including children it has reaped; 0 when it is gone."""
    total = 0.0
    for proc in platform.tree_processes(pid):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _size(size: int) -> str:
    return f"{size / 1024**2:.0f} MiB"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a renderer: ours plus ``extra``."""
    env = dict(os.environ)
    env.update(extra or {})
    return env


# --- scenes on disk -------------------------------------------------------------------------
