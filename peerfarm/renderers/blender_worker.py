"""The warm Blender worker: a long-lived Blender process that keeps a scene loaded.

Two ways to run it, both started by ``blender.py``: ``python -m peerfarm.renderers.blender_worker``
with the interpreter that has ``bpy``, and ``blender -b --python blender_worker.py`` inside an
installed Blender program. So this file uses the standard library and ``bpy`` only, and runs on
the Python of any Blender from 3.x (3.10+); it loads ``tiles.py`` beside it by path.

This module owns the worker's side of the protocol: one JSON object per line on stdin, one JSON
object per line back on the protocol stream (the original stdout; lines there that are not JSON,
such as a Blender program's banner, are log). Blender's own prints go to stderr, which the
parent keeps as the log. Append-only protocol, version ``WORKER_PROTOCOL``:

    -> {"cmd": "load", "path": str, "allow_scripts": bool}
    <- {"event": "loaded", "path": str, "engine": str, "resolution": [x, y], ...}
    -> {"cmd": "render", "frame": int, "output": str, "script": str,
        "tile": [index, count]}
                         # output: path without extension; script: the job's settings (optional);
                         # tile: optional, a tile of a split still
    <- {"event": "progress", "frame": int, "line": str}    # zero or more, from render_stats
    <- {"event": "done", "frame": int, "files": [str, ...], "seconds": float}
    -> {"cmd": "quit"}
    <- {"event": "ready", "version": str, "protocol": int, "oidn": bool}   # once, at start
    <- {"event": "error", "message": str}                  # answers a command that failed

Every event but ``progress`` also carries ``"log": n`` (protocol 3), and the line ``LOG_MARK n``
is written to the log just before it: what Blender printed for the command is on the log
before that line, so the parent reads the log up to it before it takes the next command (the
two streams are separate pipes, read at their own pace).

The scene renders with its own settings; only the output path changes, Cycles denoising is
turned off when this build lacks OpenImageDenoise, and a movie output format becomes PNG (a farm
renders frames, the video is made afterwards). A tile is a border render cropped to the border
(``tiles.tile_rect``), in a format the submitter can stitch; the scene's own border comes back
for the next whole frame.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

WORKER_PROTOCOL = 3
#: Starts a line of the log that ends a command's output (see the protocol above).
LOG_MARK = "\x1epeerfarm-log-end "
#: Formats the submitter's Pillow reads and writes: a tile in any other becomes PNG.
STITCHABLE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "TARGA", "TARGA_RAW", "WEBP")


PROGRESS_INTERVAL = 0.25  # seconds between progress events of one render


def _open_protocol_stream() -> TextIO:
    """Keep the real stdout for the protocol and send everything else printed there to stderr."""
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", buffering=1, encoding="utf-8")


def load_tiles() -> ModuleType:
    """``tiles.py`` beside this file, loaded by path (Blender's Python has no peerfarm)."""
    name = "peerfarm_blender_tiles"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("tiles.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def apply_tile(scene: Any, index: int, count: int) -> None:
    """Make ``scene`` render tile ``index`` of ``count``: a border render, cropped."""
    tiles = load_tiles()
    render = scene.render
    width = render.resolution_x * render.resolution_percentage // 100
    height = render.resolution_y * render.resolution_percentage // 100
    rect = tiles.tile_rect(width, height, index, count)
    border = tiles.blender_border(width, height, rect)
    render.use_border = True
    render.use_crop_to_border = True
    render.border_min_x, render.border_max_x, render.border_min_y, render.border_max_y = border
    if render.image_settings.file_format not in STITCHABLE_FORMATS:
        render.image_settings.file_format = "PNG"


def _has_oidn() -> bool:
    try:
        import _cycles  # Cycles' own module: exists only inside Blender (bpy)
    except ImportError:
        return False
    return bool(getattr(_cycles, "with_openimagedenoise", False))


class Worker:
    """Holds the loaded scene; every method answers one command."""

    def __init__(self, out: TextIO) -> None:
        import bpy  # imported here so ``--help``-style checks do not need Blender

        self.bpy = bpy
        self.out = out
        self.oidn = _has_oidn()
        self.current_frame: int | None = None
        self._last_progress = 0.0
        self._marks = 0  # log marks written so far
        self._own: dict[str, Any] = {}  # the loaded scene's own settings a render may change

        def on_stats(stats: str, *_: Any) -> None:
            self._on_stats(stats)

        # persistent: survives open_mainfile, which clears every other handler
        bpy.app.handlers.render_stats.append(bpy.app.handlers.persistent(on_stats))

    def send(self, **message: Any) -> None:
        if message.get("event") != "progress":
            self._marks += 1
            message["log"] = self._marks
            sys.stderr.write(f"{LOG_MARK}{self._marks}\n")
            sys.stderr.flush()
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def _on_stats(self, stats: str) -> None:
        # Cycles reports many times a frame; every line costs CPU the render could use, here
        # and in the daemon, so progress goes out at most every PROGRESS_INTERVAL seconds.
        now = time.monotonic()
        if self.current_frame is not None and now - self._last_progress >= PROGRESS_INTERVAL:
            self._last_progress = now
            self.send(event="progress", frame=self.current_frame, line=str(stats))

    def load(self, path: str, allow_scripts: bool) -> None:
        bpy = self.bpy
        bpy.context.preferences.filepaths.use_scripts_auto_execute = allow_scripts
        bpy.ops.wm.open_mainfile(filepath=path, load_ui=False, use_scripts=allow_scripts)
        scene = bpy.context.scene
        render = scene.render
        self._own = {
            "use_border": render.use_border,
            "use_crop_to_border": render.use_crop_to_border,
            "border": (
                render.border_min_x,
                render.border_max_x,
                render.border_min_y,
                render.border_max_y,
            ),
            "file_format": render.image_settings.file_format,
            "threads_mode": render.threads_mode,
            "threads": render.threads,
        }
        self.send(
            event="loaded",
            path=path,
            scene=scene.name,
            engine=render.engine,
            resolution=[render.resolution_x, render.resolution_y],
            frame_range=[scene.frame_start, scene.frame_end],
            file_format=render.image_settings.file_format,
        )

    def prepare(self) -> None:
        """The scene's own settings back (a tile changed the border), and what every render
        changes."""
        scene = self.bpy.context.scene
        render = scene.render
        own = self._own
        if own:
            render.use_border = own["use_border"]
            render.use_crop_to_border = own["use_crop_to_border"]
            (
                render.border_min_x,
                render.border_max_x,
                render.border_min_y,
                render.border_max_y,
            ) = own["border"]
            render.image_settings.file_format = own["file_format"]
            render.threads_mode = own["threads_mode"]
            render.threads = own["threads"]
        if not self.oidn and hasattr(scene, "cycles"):
            scene.cycles.use_denoising = False
        if getattr(render, "is_movie_format", False):
            render.image_settings.file_format = "PNG"
        render.use_file_extension = True

    def render(self, command: dict[str, Any]) -> None:
        bpy = self.bpy
        scene = bpy.context.scene
        frame, output = int(command["frame"]), str(command["output"])
        script = str(command.get("script") or "")
        self.prepare()
        if script:  # the job's options (``blender_settings``): a failure answers with an error
            exec(compile(script, "<peerfarm settings>", "exec"), {"__name__": "__peerfarm__"})
        tile = command.get("tile")
        if tile:  # after the settings: a resolution percentage changes the tile's pixels
            apply_tile(scene, int(tile[0]), int(tile[1]))
        folder = Path(output).parent
        before = set(folder.iterdir()) if folder.is_dir() else set()
        started = time.monotonic()
        scene.frame_set(frame)
        scene.render.filepath = output
        self.current_frame = frame
        try:
            bpy.ops.render.render(write_still=True)
        finally:
            self.current_frame = None
        files = sorted(str(p) for p in set(folder.iterdir()) - before if p.is_file())
        self.send(event="done", frame=frame, files=files, seconds=time.monotonic() - started)

    def handle(self, command: dict[str, Any]) -> bool:
        """Run one command; False when the worker should exit."""
        kind = command.get("cmd")
        if kind == "quit":
            return False
        if kind == "load":
            self.load(str(command["path"]), bool(command.get("allow_scripts", False)))
        elif kind == "render":
            self.render(command)
        else:
            self.send(event="error", message=f"unknown command {kind!r}")
        return True


def main() -> int:
    out = _open_protocol_stream()
    try:
        worker = Worker(out)
    except Exception as exc:  # bpy missing or broken: tell the parent, then stop
        out.write(json.dumps({"event": "error", "message": f"cannot load bpy: {exc}"}) + "\n")
        return 3
    worker.send(
        event="ready",
        version=worker.bpy.app.version_string,
        protocol=WORKER_PROTOCOL,
        oidn=worker.oidn,
    )
    for raw in sys.stdin:
        if not raw.strip():
            continue
        try:
            command = json.loads(raw)
            if not isinstance(command, dict):
                raise ValueError("a command is a JSON object")
            if not worker.handle(command):
                break
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            worker.send(event="error", message=f"{type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
