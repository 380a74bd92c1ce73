"""The warm Blender worker: one long-lived ``blender_worker`` process and the scene it holds.

``peerfarm.renderers.blender`` keeps one :class:`WarmWorker` per renderer instance (one per
render slot). This module owns the process and its line protocol (JSON commands on stdin,
JSON events on stdout, Blender's log on stderr): starting it (``python -m
peerfarm.renderers.blender_worker`` for ``bpy``, ``blender -b --disable-autoexec --python
blender_worker.py`` for a program), loading a scene once, rendering a frame (or a tile) with the
job's settings script, relaying progress, and ending its whole process tree on any failure,
timeout or cancellation (a lost claim), so the next render starts a fresh one.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from peerfarm import platform
from peerfarm.renderers import groups
from peerfarm.renderers.base import (
    LineReader,
    LogTail,
    RenderFailed,
    child_env,
    close_pipes,
    kill_process_group,
)
from peerfarm.renderers.blender_worker import LOG_MARK
from peerfarm.renderers.installs import Installation

#: The worker script a Blender program runs (``--python``): standard library and bpy only.
WORKER_SCRIPT = Path(__file__).with_name("blender_worker.py")
#: Seconds an answer waits for the log to be read up to its mark (see ``WarmWorker._exchange``).
LOG_DRAIN_S = 2.0
#: Seconds allowed for the worker to import bpy, and to load a scene.
WORKER_START_TIMEOUT_S = 120.0
SCENE_LOAD_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class _SceneKey:
    path: str
    size: int
    mtime_ns: int
    allow_scripts: bool
    settings: str = ""  # the job's settings script: another job's settings need a fresh load


class WorkerDidNotStart(RenderFailed):
    """The warm worker ended or failed before it said it was ready."""


def worker_argv(install: Installation) -> list[str]:
    """The command that starts a warm worker in ``install``."""
    if install.kind == "bpy":
        return [install.path, "-m", "peerfarm.renderers.blender_worker"]
    return [install.path, "-b", "--disable-autoexec", "--python", str(WORKER_SCRIPT)]


class WarmWorker:
    """One ``blender_worker`` subprocess (started by ``argv``) and the scene it has loaded."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.process: trio.Process | None = None
        self.scene: _SceneKey | None = None
        self.version = ""
        self.oidn = False
        self.tail = LogTail()
        self._stdin: trio.abc.SendStream | None = None
        self._proto: LineReader | None = None
        self._log: LineReader | None = None
        self._marks_read = 0  # the last log mark read (see blender_worker: LOG_MARK)
        self._mark_read = trio.Event()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.tail = LogTail()
        self._marks_read = 0
        try:
            self.process = await trio.lowlevel.open_process(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env({"PYTHONUNBUFFERED": "1"}),
                **platform.tree_kwargs(),
            )
        except OSError as exc:
            raise WorkerDidNotStart(f"cannot start the Blender worker: {exc}") from exc
        platform.track_tree(self.process.pid)
        groups.REGISTRY.started(self.process.pid)
        assert self.process.stdin and self.process.stdout and self.process.stderr
        self._stdin = self.process.stdin
        self._proto = LineReader(self.process.stdout)
        self._log = LineReader(self.process.stderr)
        try:
            ready = await self._exchange(None, None, WORKER_START_TIMEOUT_S, {"ready"})
        except RenderFailed as exc:
            await self.stop()
            raise WorkerDidNotStart(exc.reason, log_tail=exc.log_tail) from exc
        self.version = str(ready.get("version", ""))
        self.oidn = bool(ready.get("oidn", False))

    async def stop(self) -> None:
        """Ask the worker to quit, and kill its group if it does not within the grace."""
        process, self.process, self.scene = self.process, None, None
        if process is None:
            return
        if process.returncode is None and self._stdin is not None:
            with trio.move_on_after(1.0) as scope:
                scope.shield = True
                try:
                    await self._stdin.send_all(b'{"cmd": "quit"}\n')
                    await process.wait()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        await kill_process_group(process)
        await close_pipes(process)
        platform.release_tree(process.pid)
        groups.REGISTRY.ended(process.pid)

    async def ensure_scene(self, key: _SceneKey) -> None:
        if not self.alive:
            await self.stop()
            await self.start()
        if self.scene == key:
            return
        self.scene = None
        command = {"cmd": "load", "path": key.path, "allow_scripts": key.allow_scripts}
        await self._exchange(command, None, SCENE_LOAD_TIMEOUT_S, {"loaded"})
        self.scene = key

    async def render(
        self,
        frame: int,
        output: Path,
        on_line: Callable[[str], None],
        timeout: float,
        script: str = "",
        **settings: Any,
    ) -> dict[str, Any]:
        """Render ``frame`` to ``output`` (no extension) with the job's settings ``script``;
        ``settings``: more of the command (``tile``)."""
        command = {"cmd": "render", "frame": frame, "output": str(output), "script": script}
        command.update({k: v for k, v in settings.items() if v is not None})
        return await self._exchange(command, on_line, timeout, {"done"})

    async def _exchange(
        self,
        command: dict[str, Any] | None,
        on_line: Callable[[str], None] | None,
        timeout: float,
        until: set[str],
    ) -> dict[str, Any]:
        """Send ``command``; relay progress and stderr until an event in ``until`` arrives.

        Any failure, timeout or cancellation kills the worker (it is restarted next time).
        """
        assert self.process and self._stdin and self._proto and self._log
        process, proto, log = self.process, self._proto, self._log
        answer: dict[str, Any] = {}
        failure: list[RenderFailed] = []

        async def pump_log() -> None:
            while (line := await log.next_line()) is not None:
                if line.startswith(LOG_MARK):
                    with contextlib.suppress(ValueError):
                        self._marks_read = max(self._marks_read, int(line[len(LOG_MARK) :]))
                    self._mark_read.set()
                    self._mark_read = trio.Event()
                    continue
                self.tail.add(line)
                if on_line is not None:
                    on_line(line)

        async def log_read_up_to(mark: object) -> None:
            """Wait until the log is read up to ``mark`` (what Blender printed before the
            event that named it), at most ``LOG_DRAIN_S``: the log is a pipe of its own, and
            under load its last lines arrive after the event that ends the command."""
            if not isinstance(mark, int):
                return  # a worker of protocol 2 marks nothing
            with trio.move_on_after(LOG_DRAIN_S):
                while self._marks_read < mark:
                    await self._mark_read.wait()

        async def read_answer(cancel: trio.CancelScope) -> None:
            while (raw := await proto.next_line()) is not None:
                try:
                    message = json.loads(raw)
                except ValueError:
                    self.tail.add(raw)
                    continue
                event = message.get("event")
                if event == "progress" and on_line is not None:
                    on_line(f"Fra:{message.get('frame')} | {message.get('line', '')}")
                elif event == "error":
                    await log_read_up_to(message.get("log"))
                    reason = f"Blender: {message.get('message', 'unknown error')}"
                    failure.append(RenderFailed(reason[:300], log_tail=self.tail.text()))
                    break
                elif event in until:
                    await log_read_up_to(message.get("log"))
                    answer.update(message)
                    break
            else:
                with trio.move_on_after(5):
                    await process.wait()
                failure.append(
                    RenderFailed(
                        f"the Blender worker exited (status {process.returncode})",
                        log_tail=self.tail.text(),
                    )
                )
            cancel.cancel()

        try:
            with trio.fail_after(timeout):
                if command is not None:
                    await self._stdin.send_all(json.dumps(command).encode() + b"\n")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump_log)
                    nursery.start_soon(read_answer, nursery.cancel_scope)
        except trio.TooSlowError:
            tail = self.tail.text()
            await self.stop()
            message = f"the Blender worker did not answer in {timeout:g} s"
            raise RenderFailed(message, log_tail=tail) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            tail = self.tail.text()
            await self.stop()
            raise RenderFailed("the Blender worker closed its pipes", log_tail=tail) from exc
        except BaseException:
            await self.stop()
            raise
        if failure:
            if not self.alive:
                await self.stop()
            raise failure[0]
        return answer
