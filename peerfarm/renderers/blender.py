"""The Blender renderer: every Blender on this peer, the ``blender`` program or a warm ``bpy``.

This module owns both backends, the choice between installations for each task, and the parsing
of Blender's progress output. ``peerfarm.renderers.installs`` finds the installations.

* Choice: per task, the newest installation that can open the task's file (its version comes
  from the job's ``blend_version`` option, else the .blend header); a file newer than every
  installation fails the task with that reason (the scheduler does not claim such jobs: the
  peer advertises every version it has).
* Warm workers: one long-lived ``blender_worker`` process per renderer instance (one instance per
  render slot), so the scene stays loaded between frames: ``python -m
  peerfarm.renderers.blender_worker`` for ``bpy``, ``blender -b --disable-autoexec --python
  blender_worker.py`` for a program. Reloaded when the scene (path, size, mtime or script
  permission) changes; restarted when it dies. A cancelled render (a lost claim, a pause, a
  cancel) kills the worker's process group; the next render starts a fresh one. One render at a
  time per instance.
* A program whose warm worker cannot start (an old or odd build) renders a process per frame
  instead, with the reason logged; the warm worker is tried again after ``WARM_RETRY_S``.
  ``warm=False`` always renders a process per frame (the bench compares the two).
* CLI: ``blender -b (--disable-autoexec | --enable-autoexec) SCENE --python-expr PREPARE -o
  OUT/frame_#### [-F FMT] [-t N] (-f N | -s A -e B -a)``. Options come before ``-f``/``-a``
  (Blender runs its arguments in order); the autoexec switch comes before the file: scripts and
  Python drivers in the file run only when the task allows scripts (Blender's own default is
  off, so allowing them needs ``--enable-autoexec``). PREPARE turns Cycles denoising off when
  the build has no OpenImageDenoise (Debian's) and a movie output format into PNG. Contiguous
  frames render in one process.
* Split stills (the job's ``tiles`` and ``tile_frame`` options, ``peerfarm.renderers.tiles``):
  the task's "frames" are tile numbers; each renders frame ``tile_frame`` as a border render
  cropped to its tile, into ``tile_0001.<ext>``.

Outputs are ``frame_0001.<ext>`` (``tile_0001.<ext>``) in the task's output folder, in the
scene's own format.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import trio

from peerfarm.renderers import options as job_options
from peerfarm.renderers import tiles
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
from peerfarm.renderers.blender_settings import SCRIPT_EXIT_CODE, failure_line, settings_script
from peerfarm.renderers.blender_warm import (
    WORKER_SCRIPT,
    WarmWorker,
    WorkerDidNotStart,
    _SceneKey,
    worker_argv,
)
from peerfarm.renderers.checks import Expected
from peerfarm.renderers.installs import (
    Installation,
    advertised,
    cannot_open_reason,
    choose,
    discover,
)
from peerfarm.renderers.scenes import NotABlendFile, inspect_blend, parse_version

log = logging.getLogger("peerfarm")

FRAME_RE = re.compile(r"\bFra:\s*(\d+)")
SAMPLE_RE = re.compile(r"\bSample\s+(\d+)\s*/\s*(\d+)")
MEMORY_RE = re.compile(r"\bMem:\s*([\d.]+\s*[KMGT]?)")
TIME_RE = re.compile(r"\bTime:\s*([\d:.]+)")
SAVED_RE = re.compile(r"\bSaved:\s*'([^']+)'")
FINISHED_RE = re.compile(r"\|\s*Finished\s*$")
STATS_FIELD_RE = re.compile(r"^(Fra|Mem|Time|Remaining|Peak)\b:?", re.IGNORECASE)
OUTPUT_NAME_RE = re.compile(r"^frame_(-?\d+)\.\w+$")

#: Runs inside Blender before rendering (CLI backend); the worker does the same in ``prepare``.
PREPARE_EXPR = (
    "import bpy\n"
    "try:\n"
    "    import _cycles; oidn = bool(_cycles.with_openimagedenoise)\n"
    "except Exception:\n"
    "    oidn = False\n"
    "for s in bpy.data.scenes:\n"
    "    if not oidn and hasattr(s, 'cycles'): s.cycles.use_denoising = False\n"
    "    if getattr(s.render, 'is_movie_format', False):\n"
    "        s.render.image_settings.file_format = 'PNG'\n"
    "    s.render.use_file_extension = True\n"
)

#: Seconds before a program whose warm worker could not start is tried warm again.
WARM_RETRY_S = 600.0

Mode = Literal["auto", "cli", "bpy"]


#: Blender output formats whose files Pillow can read (the others are only checked to exist).
PILLOW_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF", "TARGA", "TARGA_RAW", "WEBP"})


class BlenderRenderer(Renderer):
    """Every Blender here, each through a warm worker (a program: a process per frame when
    its worker cannot start, or with ``warm=False``).

    ``mode`` limits the backends: ``"cli"`` programs only, ``"bpy"`` the module only,
    ``"auto"`` both. ``executables`` are the ``--blender PATH`` given (``executable``: one of
    them, kept for callers that name a single program); ``standard`` also searches the usual
    install locations. Installations are found by ``detect()`` (or at the first render).
    """

    name: ClassVar[str] = "blender"

    def __init__(
        self,
        *,
        mode: Mode = "auto",
        executable: str | Path | None = None,
        executables: Sequence[str | Path] = (),
        python: str | None = None,
        frame_timeout: float = 24 * 3600.0,
        standard: bool = True,
        warm: bool = True,
    ) -> None:
        self.requested_mode: Mode = mode
        given = [executable] if executable else []
        self.executables = [str(p) for p in [*given, *executables]]
        self.executable = self.executables[0] if self.executables else None
        self.python = python or sys.executable
        self.frame_timeout = frame_timeout
        self.standard = standard
        self.installs: list[Installation] | None = None  # ascending; None until detected
        self.warm = warm
        self._worker: WarmWorker | None = None
        self._cold: dict[str, float] = {}  # program -> when its warm worker failed to start
        self._lock = trio.Lock()

    # --- detection --------------------------------------------------------------------------

    async def find_installs(self) -> list[Installation]:
        """Every installation this instance may use (see ``installs.discover``), ascending."""
        self.installs = await discover(
            self.executables,
            programs=self.requested_mode in ("auto", "cli"),
            standard=self.standard,
            module=self.requested_mode in ("auto", "bpy"),
            python=self.python,
        )
        return self.installs

    async def detect(self) -> RendererInfo | None:
        installs = await self.find_installs()
        newest = choose(installs, None)
        if newest is None:
            return None
        details = {
            "mode": newest.kind,
            "path": newest.path,
            "installs": "; ".join(i.describe() for i in installs),
        }
        return RendererInfo(self.name, newest.version, details, tuple(advertised(installs)))

    def choose_for(self, task: RenderTask, scene: Path) -> Installation:
        """The installation that renders ``task``: the newest that can open its file."""
        installs = self.installs or []
        if not installs:
            raise RenderFailed("Blender is not installed on this peer (no blender, no bpy)")
        file_version = _file_version(task, scene)
        install = choose(installs, file_version)
        if install is None:
            assert file_version is not None
            raise RenderFailed(cannot_open_reason(installs, file_version))
        return install

    # --- pure -----------------------------------------------------------------------------

    def expected_output(self, task: RenderTask) -> Expected:
        """A file per frame; a readable image when Pillow reads its format (the size is set
        inside the .blend, so it is not checked)."""
        fmt = str(task.options.get("format") or "PNG").upper()
        return Expected(image=fmt in PILLOW_FORMATS)

    def build_argv(self, task: RenderTask, executable: str | None = None) -> list[str]:
        """CLI argv for ``task.frames`` (one contiguous run), ``task.scene`` the .blend."""
        runs = contiguous_runs(task.frames)
        if len(runs) != 1:
            raise RenderFailed(f"one Blender process renders one run of frames, not {runs}")
        start, end = runs[0]
        split = tiling(task)
        argv = [executable or self.executable or "blender", "-b"]
        argv.append("--enable-autoexec" if task.allow_scripts else "--disable-autoexec")
        argv += [str(task.scene), "--python-exit-code", str(SCRIPT_EXIT_CODE)]
        argv += ["--python-expr", PREPARE_EXPR + settings_script(task.options)]
        if split is not None:
            if start != end:
                raise RenderFailed(f"one Blender process renders one tile, not {runs}")
            argv += ["-o", f"{task.output_dir}/{tiles.tile_name(start, '')}_####"]
        else:
            argv += ["-o", f"{task.output_dir}/frame_####"]
        if fmt := task.options.get("format"):
            argv += ["-F", str(fmt)]
        if threads := task.options.get("threads"):
            argv += ["-t", str(int(threads))]
        if split is not None:
            argv += ["--python-expr", tile_expr(start, split[0])]
            start = end = split[1]
        if start == end:
            argv += ["-f", str(start)]
        else:
            argv += ["-s", str(start), "-e", str(end), "-a"]
        return argv

    def parse_line(self, line: str) -> Progress | None:
        frame_match = FRAME_RE.search(line)
        sample_match = SAMPLE_RE.search(line)
        memory_match = MEMORY_RE.search(line)
        saved_match = SAVED_RE.search(line)
        if not (frame_match or sample_match or saved_match):
            return None
        frame = int(frame_match.group(1)) if frame_match else None
        fraction: float | None = None
        samples: str | None = None
        if sample_match:
            done, total = int(sample_match.group(1)), int(sample_match.group(2))
            samples = f"{done}/{total}"
            fraction = done / total if total else None
        if saved_match or FINISHED_RE.search(line):
            fraction = 1.0
        memory = memory_match.group(1).replace(" ", "") if memory_match else None
        time_match = TIME_RE.search(line)
        parts = [p.strip() for p in line.split("|") if p.strip()]
        words = [p for p in parts if not STATS_FIELD_RE.match(p)] or parts
        message = " | ".join(words)
        if saved_match:
            message = f"saved {Path(saved_match.group(1)).name}"
        elif time_match and not sample_match:
            message = f"time {time_match.group(1)}"
        return Progress(frame, fraction, message, samples=samples, memory=memory)

    # --- rendering ----------------------------------------------------------------------------

    async def render(
        self, task: RenderTask, *, on_progress: Callable[[Progress], None]
    ) -> RenderResult:
        if self.installs is None:
            await self.find_installs()
        scene = resolve_scene(task, ".blend").resolve()
        install = self.choose_for(task, scene)
        output_dir = task.output_dir.resolve()
        output_dir.mkdir(parents=True, exist_ok=True)
        try:  # a job from the network: its options checked before any reaches Blender
            options = job_options.read(self.name, task.options)
        except job_options.OptionError as exc:
            raise RenderFailed(f"bad job option: {exc}") from None
        task = dataclasses.replace(task, scene=scene, output_dir=output_dir, options=options)
        async with self._lock:
            if install.kind == "bpy":
                return await self._render_warm(task, install, on_progress)
            if self.warm and self._may_try_warm(install.path):
                try:
                    return await self._render_warm(task, install, on_progress)
                except WorkerDidNotStart as exc:
                    self._cold[install.path] = time.monotonic()
                    log.warning(
                        "the warm Blender worker of %s did not start (%s): rendering a process "
                        "per frame for %g s",
                        install.path,
                        exc.reason,
                        WARM_RETRY_S,
                    )
            return await self._render_cli(task, install.path, on_progress)

    def _may_try_warm(self, program: str) -> bool:
        failed = self._cold.get(program)
        return failed is None or time.monotonic() - failed >= WARM_RETRY_S

    def _progress_relay(
        self, on_progress: Callable[[Progress], None], default_frame: list[int], *, fixed: bool
    ) -> Callable[[str], None]:
        """Lines to ``on_progress``; ``fixed``: every report is about ``default_frame`` (a tile
        is one unit whatever frame Blender names)."""

        def on_line(line: str) -> None:
            progress = self.parse_line(line)
            if progress is None:
                return
            if progress.frame is None or fixed:
                progress = dataclasses.replace(progress, frame=default_frame[0])
            else:
                default_frame[0] = progress.frame
            on_progress(progress)

        return on_line

    async def _render_cli(
        self, task: RenderTask, executable: str, on_progress: Callable[[Progress], None]
    ) -> RenderResult:
        started = time.monotonic()
        tail = ""
        split = tiling(task)
        runs = [(t, t) for t in task.frames] if split else contiguous_runs(task.frames)
        outputs: dict[int, list[Path]] = {}
        for start, end in runs:
            frames = tuple(range(start, end + 1))
            argv = self.build_argv(dataclasses.replace(task, frames=frames), executable)
            relay = self._progress_relay(on_progress, [start], fixed=split is not None)
            run = await run_logged(
                argv,
                cwd=task.scene.parent,
                env=child_env(),
                on_line=relay,
                last=(start, end) == runs[-1],
            )
            tail = run.log_tail
            if run.returncode != 0:
                reason = failure_line(tail) if run.returncode == SCRIPT_EXIT_CODE else None
                reason = reason or f"blender exited with status {run.returncode}"
                raise RenderFailed(reason, log_tail=tail)
            if split is not None:
                outputs[start] = [_name_tile(task.output_dir, start, tail)]
        if split is None:
            outputs = _collect_outputs(task.output_dir, task.frames, tail)
        return RenderResult(outputs, time.monotonic() - started, tail)

    async def _render_warm(
        self, task: RenderTask, install: Installation, on_progress: Callable[[Progress], None]
    ) -> RenderResult:
        """Render with this instance's warm worker in ``install`` (started or restarted as
        needed). A cancellation kills the worker (``WarmWorker._exchange``)."""
        started = time.monotonic()
        argv = worker_argv(install)
        if self._worker is not None and self._worker.argv != argv:
            await self.aclose()
        if self._worker is None:
            self._worker = WarmWorker(argv)
        worker = self._worker
        stat = task.scene.stat()
        settings = settings_script(task.options)
        key = _SceneKey(
            str(task.scene), stat.st_size, stat.st_mtime_ns, task.allow_scripts, settings
        )
        await worker.ensure_scene(key)
        split = tiling(task)
        outputs: dict[int, list[Path]] = {}
        for unit in task.frames:
            relay = self._progress_relay(on_progress, [unit], fixed=split is not None)
            if split is None:
                frame, tile, target = unit, None, task.output_dir / frame_stem(unit)
            else:
                frame, tile = split[1], [unit, split[0]]
                target = task.output_dir / tiles.tile_name(unit, "")
            answer = await worker.render(
                frame, target, relay, self.frame_timeout, settings, tile=tile
            )
            files = [Path(f) for f in answer.get("files", [])]
            if not files:
                what = f"tile {unit}" if split else f"frame {frame}"
                raise RenderFailed(f"Blender wrote no file for {what}", log_tail=worker.tail.text())
            outputs[unit] = sorted(files)
        return RenderResult(outputs, time.monotonic() - started, worker.tail.text())

    async def aclose(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()

    @property
    def worker_pid(self) -> int | None:
        """The warm worker's pid (tests and diagnostics)."""
        worker = self._worker
        return worker.process.pid if worker and worker.process else None


def tiling(task: RenderTask) -> tuple[int, int] | None:
    """(tile count, the still's frame) of a split still's task; None for a task of frames."""
    count, frame = task.options.get("tiles"), task.options.get("tile_frame")
    if count is None and frame is None:
        return None
    try:
        return tiles.check_count(int(count)), int(frame)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise RenderFailed(f"bad tile options (tiles={count!r}, tile_frame={frame!r})") from exc


def tile_expr(index: int, count: int) -> str:
    """Python run inside a Blender program that makes its scene render tile ``index``."""
    return (
        "import importlib.util, bpy\n"
        "spec = importlib.util.spec_from_file_location("
        f"'peerfarm_worker', {str(WORKER_SCRIPT)!r})\n"
        "worker = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(worker)\n"
        f"worker.apply_tile(bpy.context.scene, {int(index)}, {int(count)})\n"
    )


def _name_tile(output_dir: Path, index: int, tail: str) -> Path:
    """The one file a tile's process wrote (``tile_0001_0007.png``), renamed ``tile_0001.png``."""
    prefix = tiles.tile_name(index, "_")
    found = [p for p in output_dir.iterdir() if p.name.startswith(prefix) and p.is_file()]
    if len(found) != 1:
        raise RenderFailed(f"blender wrote {len(found)} images for tile {index}", log_tail=tail)
    target = output_dir / tiles.tile_name(index, found[0].suffix)
    found[0].replace(target)
    return target


def _file_version(task: RenderTask, scene: Path) -> tuple[int, int] | None:
    """The Blender version that saved the task's file: the job's ``blend_version`` (read at
    submit), else the header; None when neither says (Blender itself will report the file)."""
    given = task.options.get("blend_version")
    if given:
        try:
            return parse_version(str(given))
        except ValueError:
            pass
    try:
        return inspect_blend(scene).version
    except NotABlendFile:
        return None


def _collect_outputs(output_dir: Path, frames: tuple[int, ...], tail: str) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    for path in sorted(output_dir.iterdir()):
        match = OUTPUT_NAME_RE.match(path.name)
        if match and path.is_file():
            found.setdefault(int(match.group(1)), []).append(path)
    missing = [f for f in frames if f not in found]
    if missing:
        raise RenderFailed(f"blender wrote no image for frames {missing}", log_tail=tail)
    return {f: found[f] for f in frames}
