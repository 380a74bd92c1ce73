"""The POV-Ray renderer: POV-Ray's console program, one process per contiguous run of frames.

This module owns POV-Ray's command line and its output. Options (checked by
``peerfarm.renderers.options``; a bad one fails the frame with a clear ``RenderFailed``):
``width`` (320), ``height`` (240), ``antialias`` (0.3 -> ``+A0.3``; 0 turns it off), ``threads``
(``+WT``), ``main`` (the main file of a folder or archive scene), and the animation clock, which
the rendering peer sets from the job: ``frame_first`` (1) and ``frames_total`` (default: up to
the task's last frame) give ``+KFI<first> +KFF<last> +KI0 +KF1``, so ``clock`` runs 0..1 over
the whole job whichever peer renders which frame. A scene is a .pov file, a folder, or a
.zip/.tar.gz archive unpacked once per job into ``work_dir``. POV-Ray runs in the main file's
folder (its I/O restrictions allow reads there), its image is renamed to ``frame_0001.png``.

Paths go to POV-Ray inside double quotes (``+O"/Users/me/Library/Application Support/..."``):
POV-Ray reads its command line as INI text, where a space ends an unquoted value. A path that
holds a double quote itself cannot be written there and fails the frame with a clear reason.
The program is ``povray`` on PATH (Linux, macOS with Homebrew or MacPorts, Windows builds
that have a console program); on Windows without one, POV-Ray for Windows' ``pvengine64.exe``
from its standard folder, run with ``/EXIT /RENDER`` (it shows a window and prints nothing to
follow, so progress is not reported; only its output files count).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PureWindowsPath
from typing import Any, ClassVar

from peerfarm import platform
from peerfarm.renderers import options as job_options
from peerfarm.renderers.archives import resolve_scene
from peerfarm.renderers.base import (
    Progress,
    Renderer,
    RendererInfo,
    RenderFailed,
    RenderResult,
    RenderTask,
    child_env,
    contiguous_runs,
    frame_stem,
    run_logged,
)
from peerfarm.renderers.checks import Expected

VERSION_RE = re.compile(r"POV-Ray\s+(?:Version\s+)?(\d+\.\d+[\w.\-]*)", re.IGNORECASE)
PIXELS_RE = re.compile(r"Rendered\s+(\d+)\s+of\s+(\d+)\s+pixels")
FRAME_OF_RE = re.compile(r"Rendering frame\s+(\d+)\s+of\s+(\d+)")
PARSING_RE = re.compile(r"^==== \[(Parsing|Rendering)\.\.\.\]")
ERROR_RE = re.compile(r"(Parse Error|Fatal error|Render error|Possible Parse Error):?\s*(.*)")
OUTPUT_NAME_RE = re.compile(r"^frame_(-?\d*)\.png$")

DEFAULT_WIDTH = 320
DEFAULT_HEIGHT = 240
DEFAULT_ANTIALIAS = 0.3


def task_options(task: RenderTask) -> dict[str, Any]:
    """The task's options checked for POV-Ray; a bad value is this frame's ``RenderFailed``."""
    try:
        return job_options.read(PovrayRenderer.name, task.options)
    except job_options.OptionError as exc:
        raise RenderFailed(f"bad job option: {exc}") from None


def clock_range(task: RenderTask) -> tuple[int, int]:
    """The job's first and last frame, between which ``clock`` runs from 0 to 1."""
    options = task_options(task)
    first = min(int(options.get("frame_first", 1)), *task.frames)
    total = options.get("frames_total")
    last = first + int(total) - 1 if total is not None else max(task.frames)
    return first, max(last, max(task.frames))


def quoted(flag: str, path: Path | str) -> str:
    """``+O"path"``: a path as one POV-Ray option value, spaces included (pure)."""
    text = str(path)
    if '"' in text:
        raise RenderFailed(f"POV-Ray cannot take a path with a double quote in it: {text}")
    return f'{flag}"{text}"'


def windows_programs(env: Mapping[str, str]) -> list[tuple[str, tuple[str, ...]]]:
    """POV-Ray for Windows' GUI programs in their standard folders, newest version first, with
    the flags that make them render and exit (pure but for the glob)."""
    roots = [env.get("ProgramFiles") or r"C:\Program Files", env.get("ProgramFiles(x86)") or ""]
    found: list[tuple[str, tuple[str, ...]]] = []
    for root in filter(None, roots):
        for name in ("pvengine64.exe", "pvengine.exe"):
            pattern = str(PureWindowsPath(root) / "POV-Ray" / "v3.*" / "bin" / name)
            found += [(path, ("/EXIT", "/RENDER")) for path in sorted(glob.glob(pattern))[::-1]]
    return found


def frame_index(line: str) -> int | None:
    """k from ``Rendering frame k of n`` (1-based, within this process's run)."""
    match = FRAME_OF_RE.search(line)
    return int(match.group(1)) if match else None


class PovrayRenderer(Renderer):
    """POV-Ray 3.7 through its command line."""

    name: ClassVar[str] = "povray"

    def __init__(self, executable: str = "povray", prefix: tuple[str, ...] = ()) -> None:
        self.executable = executable
        self.prefix = prefix  # flags a program needs before the options (pvengine: /EXIT)

    async def detect(self) -> RendererInfo | None:
        path = shutil.which(self.executable)
        if path is None and (sys.platform == "win32" or platform.WINDOWS):
            for program, prefix in windows_programs(os.environ):
                self.executable, self.prefix = program, prefix
                version = Path(program).parent.parent.name.lstrip("v")
                return RendererInfo(self.name, version, {"mode": "gui", "path": program})
        if path is None:
            return None
        try:
            run = await run_logged([path, "--version"])
        except RenderFailed:
            return None
        match = VERSION_RE.search(run.log_tail)
        if match is None:
            return None
        return RendererInfo(self.name, match.group(1), {"mode": "cli", "path": path})

    def expected_output(self, task: RenderTask) -> Expected:
        """An image of the job's width and height per frame."""
        try:
            options = task_options(task)
        except RenderFailed:
            return Expected(image=True)
        width = int(options.get("width", DEFAULT_WIDTH))
        height = int(options.get("height", DEFAULT_HEIGHT))
        return Expected(image=True, width=width, height=height)

    def build_argv(self, task: RenderTask) -> list[str]:
        """argv for ``task.frames`` (contiguous), ``task.scene`` being the main .pov file."""
        runs = contiguous_runs(task.frames)
        if len(runs) != 1:
            raise RenderFailed(f"povray renders one contiguous run of frames, not {runs}")
        start, end = runs[0]
        first, last = clock_range(task)
        options = task_options(task)
        width = int(options.get("width", DEFAULT_WIDTH))
        height = int(options.get("height", DEFAULT_HEIGHT))
        antialias = float(options.get("antialias", DEFAULT_ANTIALIAS))
        argv = [
            self.executable,
            *self.prefix,
            quoted("+I", task.scene.name),
            quoted("+O", task.output_dir / "frame_"),
            f"+W{width}",
            f"+H{height}",
            f"+A{antialias:g}" if antialias > 0 else "-A",
            "+FN",
            "-D",
            quoted("+L", task.scene.parent),
            f"+KFI{first}",
            f"+KFF{last}",
            "+KI0",
            "+KF1",
            f"+SF{start}",
            f"+EF{end}",
        ]
        threads = options.get("threads")
        if threads:
            argv.append(f"+WT{int(threads)}")
        return argv

    def parse_line(self, line: str) -> Progress | None:
        if match := PIXELS_RE.search(line):
            done, total = int(match.group(1)), int(match.group(2))
            return Progress(None, done / total if total else None, line.strip())
        if match := FRAME_OF_RE.search(line):
            return Progress(None, 0.0, line.strip())
        if match := PARSING_RE.search(line):
            return Progress(None, 0.0, match.group(1).lower())
        if match := ERROR_RE.search(line):
            return Progress(None, None, line.strip())
        return None

    async def render(
        self, task: RenderTask, *, on_progress: Callable[[Progress], None]
    ) -> RenderResult:
        main = resolve_scene(task, ".pov").resolve()
        output_dir = task.output_dir.resolve()
        output_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        outputs: dict[int, list[Path]] = {}
        tail = ""
        runs = contiguous_runs(task.frames)
        for start, end in runs:
            run_task = dataclasses.replace(
                task, frames=tuple(range(start, end + 1)), scene=main, output_dir=output_dir
            )
            current = [start]

            def on_line(line: str, start: int = start, current: list[int] = current) -> None:
                index = frame_index(line)
                if index is not None:
                    current[0] = start + index - 1
                progress = self.parse_line(line)
                if progress is not None:
                    on_progress(dataclasses.replace(progress, frame=current[0]))

            run = await run_logged(
                self.build_argv(run_task),
                cwd=main.parent,
                env=child_env(),
                on_line=on_line,
                last=(start, end) == runs[-1],
            )
            tail = run.log_tail
            if run.returncode != 0:
                raise RenderFailed(
                    f"povray exited with status {run.returncode} ({_first_error(tail)})",
                    log_tail=tail,
                )
            outputs.update(self._collect(output_dir, start, end, tail))
        return RenderResult(outputs, time.monotonic() - started, tail)

    @staticmethod
    def _collect(output_dir: Path, start: int, end: int, tail: str) -> dict[int, list[Path]]:
        """Rename POV-Ray's ``frame_07.png`` (or ``frame_.png`` for a one-frame job)."""
        produced: dict[int | None, Path] = {}
        for path in output_dir.iterdir():
            match = OUTPUT_NAME_RE.match(path.name)
            if match:
                produced[int(match.group(1)) if match.group(1) else None] = path
        outputs: dict[int, list[Path]] = {}
        for frame in range(start, end + 1):
            source = produced.get(frame) or (produced.get(None) if start == end else None)
            if source is None:
                raise RenderFailed(f"povray wrote no image for frame {frame}", log_tail=tail)
            target = output_dir / f"{frame_stem(frame)}.png"
            if source != target:
                platform.replace(source, target)
            outputs[frame] = [target]
        return outputs


def _first_error(tail: str) -> str:
    for line in tail.splitlines():
        if match := ERROR_RE.search(line):
            return match.group(0).strip()[:200]
    return tail.splitlines()[-1][:200] if tail.strip() else "no output"
