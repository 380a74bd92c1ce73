"""The generic command renderer: any executable script renders a frame.

This module owns the contract with such a script. SCENE is run once per frame with
``PEERFARM_FRAME`` (the frame number) and ``PEERFARM_OUTPUT_DIR`` (an empty folder: the
task's ``output_dir``, or a folder in it once an earlier frame of the chunk left files there) in
its environment; exit status 0 means success and every file left
in that folder is an output of the frame, under the name the script gave it.
``options["args"]`` (a list of strings, checked by ``peerfarm.renderers.options``) is appended to
the command line. Running a script is running arbitrary code, so a task must have
``allow_scripts``.

How a script runs (``interpreter_argv``, pure): on POSIX a script with its executable bit runs
itself. Otherwise (files fetched from the content store lose the bit; Windows has none) its
suffix names the interpreter: ``.py`` the peer's own Python; ``.sh`` its ``#!`` line, else
``sh`` (Git for Windows, MSYS2 and Cygwin put one on PATH); ``.bat``/``.cmd`` ``cmd.exe /d
/c`` (Windows only); ``.ps1`` PowerShell (``powershell`` on Windows, ``pwsh`` elsewhere)
without profile or execution policy. Any other script runs through its ``#!`` line (on
Windows the interpreter's name is looked up on PATH), else ``sh``. A script whose interpreter
this peer lacks fails its frame saying which one.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import ClassVar

from peerfarm import platform
from peerfarm.renderers import options as job_options
from peerfarm.renderers.base import (
    Progress,
    Renderer,
    RendererInfo,
    RenderFailed,
    RenderResult,
    RenderTask,
    child_env,
    frame_stem,
    run_logged,
)
from peerfarm.renderers.checks import NO_OUTPUT, NOTHING, Expected

#: ``PROGRESS 0.5`` or ``PROGRESS 50%`` on a line of its own: a script's way to report progress.
PROGRESS_RE = re.compile(r"^\s*PROGRESS\s+(?P<value>\d+(?:\.\d+)?)(?P<percent>%?)\s*$")


def _found(name: str, which: Callable[[str], str | None]) -> str:
    path = which(name)
    if path is None:
        raise RenderFailed(f"this peer has no {name} to run the script with")
    return path


def interpreter_argv(
    first_line: bytes,
    script: Path,
    *,
    windows: bool = False,
    python: str = sys.executable,
    which: Callable[[str], str | None] = shutil.which,
) -> list[str]:
    """How to run ``script`` (not runnable by itself) whose first line is ``first_line``, on
    Windows or POSIX; ``which`` finds a program on PATH (pure but for ``which``)."""
    suffix = script.suffix.lower()
    if suffix == ".py":
        return [python, str(script)]
    if suffix == ".sh":
        shebang = _shebang(first_line, windows, which)
        return [*(shebang or [_found("sh", which)]), str(script)]
    if suffix in (".bat", ".cmd"):
        if not windows:
            raise RenderFailed(f"a {suffix} script needs a Windows peer")
        return [_found("cmd.exe", which), "/d", "/c", str(script)]
    if suffix == ".ps1":
        shell = _found("powershell" if windows else "pwsh", which)
        return [shell, "-NoProfile", "-ExecutionPolicy", "Bypass", "-File", str(script)]
    shebang = _shebang(first_line, windows, which)
    if shebang is None and windows and first_line.startswith(b"#!"):
        raise RenderFailed(f"this peer has no {first_line[2:].decode(errors='replace')!r}")
    return [*(shebang or [_found("sh", which) if windows else "/bin/sh"]), str(script)]


def _shebang(
    first_line: bytes, windows: bool, which: Callable[[str], str | None]
) -> list[str] | None:
    """The interpreter a ``#!`` line names; on Windows its program name looked up on PATH
    (None there when PATH has no such program)."""
    if not first_line.startswith(b"#!"):
        return None
    words = shlex.split(first_line[2:].decode("utf-8", "replace"))
    if not words or not windows:
        return words or None
    program = PurePath(words[0].replace("\\", "/")).name
    if program == "env" and len(words) > 1:
        words = words[1:]
        program = words[0]
    found = which(program)
    return [found, *words[1:]] if found else None


class CommandRenderer(Renderer):
    """Runs the scene script once per frame."""

    name: ClassVar[str] = "command"

    async def detect(self) -> RendererInfo | None:
        return RendererInfo(self.name, "1", {"mode": "script"})

    def expected_output(self, task: RenderTask) -> Expected:
        """At least one file per frame, unless the job was submitted with ``--no-output``."""
        return NOTHING if task.options.get(NO_OUTPUT) else Expected(files=1)

    def build_argv(self, task: RenderTask) -> list[str]:
        try:
            options = job_options.read(self.name, task.options)
        except job_options.OptionError as exc:
            raise RenderFailed(f"bad job option: {exc}") from None
        return [str(task.scene), *options.get("args", [])]

    def parse_line(self, line: str) -> Progress | None:
        match = PROGRESS_RE.match(line)
        if match is None:
            return None
        value = float(match["value"])
        fraction = value / 100 if match["percent"] else value
        return Progress(frame=None, fraction=min(max(fraction, 0.0), 1.0), message=line.strip())

    def _runnable_argv(self, task: RenderTask) -> list[str]:
        argv = self.build_argv(task)
        script = task.scene
        if not script.is_file():
            raise RenderFailed(f"script not found: {script}")
        windows = sys.platform == "win32" or platform.WINDOWS
        if not windows and os.access(script, os.X_OK):
            return [str(script.resolve()), *argv[1:]]
        with script.open("rb") as f:
            first_line = f.readline(4096).rstrip(b"\r\n")
        return interpreter_argv(first_line, script.resolve(), windows=windows) + argv[1:]

    async def render(
        self, task: RenderTask, *, on_progress: Callable[[Progress], None]
    ) -> RenderResult:
        if not task.allow_scripts:
            raise RenderFailed("the command renderer runs a script: the job needs allow_scripts")
        argv = self._runnable_argv(task)
        task.work_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        outputs: dict[int, list[Path]] = {}
        tail = ""
        # Each frame starts in an empty folder: the task's own at first, and again for the
        # next frame as long as each frame leaves it empty; after a frame left something
        # there, the next frame gets a new folder inside it (``frame_0002/``). A chunk of
        # frames that write nothing thus makes and removes no folder at all (each is a disk
        # metadata operation of milliseconds on a busy disk).
        frame_dir = task.output_dir.absolute()
        frame_dir.mkdir(parents=True, exist_ok=True)
        fresh = True
        for frame in task.frames:
            if not fresh:
                frame_dir = _new_folder(task.output_dir.absolute(), frame_stem(frame))
            env = child_env({"PEERFARM_FRAME": str(frame), "PEERFARM_OUTPUT_DIR": str(frame_dir)})

            def on_line(line: str, frame: int = frame) -> None:
                progress = self.parse_line(line)
                if progress is not None:
                    on_progress(Progress(frame, progress.fraction, progress.message))

            last = frame == task.frames[-1]
            run = await run_logged(argv, cwd=task.work_dir, env=env, on_line=on_line, last=last)
            tail = run.log_tail
            if run.returncode != 0:
                raise RenderFailed(
                    f"script exited with status {run.returncode} on frame {frame}", log_tail=tail
                )
            # A frame may leave no file (a script that writes elsewhere, a simulation step).
            left = list(frame_dir.rglob("*"))
            outputs[frame] = sorted(p for p in left if p.is_file())
            fresh = not left
            on_progress(Progress(frame, 1.0, f"frame {frame} done"))
        return RenderResult(outputs, time.monotonic() - started, tail)


def _new_folder(parent: Path, name: str) -> Path:
    """A new empty folder ``parent/name`` (``name-2``... if a script left one of that name)."""
    folder = parent / name
    for n in itertools.count(2):
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            folder = parent / f"{name}-{n}"
    raise AssertionError("unreachable")  # pragma: no cover
