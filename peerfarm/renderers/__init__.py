"""Renderer plugins and the registry that names them.

This package owns turning a scene and some frame numbers into image files on this peer. Each
plugin (``command``, ``povray``, ``blender``) implements ``base.Renderer``: a pure
``build_argv``/``parse_line`` pair and a ``render`` that runs the real program in its own process
group. ``available_renderers()`` gives fresh instances (one per render slot);
``renderer_for_scene()`` picks a plugin from a scene's file name at submit time.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from peerfarm.errors import UsageError
from peerfarm.renderers.base import (
    Progress,
    Renderer,
    RendererInfo,
    RenderFailed,
    RenderResult,
    RenderTask,
    run_logged,
)
from peerfarm.renderers.blender import BlenderRenderer
from peerfarm.renderers.command import CommandRenderer
from peerfarm.renderers.povray import PovrayRenderer

__all__ = [
    "BlenderRenderer",
    "CommandRenderer",
    "PovrayRenderer",
    "Progress",
    "RenderFailed",
    "RenderResult",
    "RenderTask",
    "Renderer",
    "RendererInfo",
    "available_renderers",
    "renderer_for_scene",
    "run_logged",
]

_BY_SUFFIX = {".blend": "blender", ".pov": "povray", ".sh": "command"}


def available_renderers() -> dict[str, Renderer]:
    """A fresh instance of every plugin, by name (``detect()`` says which are installed)."""
    return {
        CommandRenderer.name: CommandRenderer(),
        PovrayRenderer.name: PovrayRenderer(),
        BlenderRenderer.name: BlenderRenderer(),
    }


def _archive_names(path: Path) -> list[str]:
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                return zf.namelist()
        with tarfile.open(path) as tf:
            return tf.getnames()
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise UsageError(f"cannot read the archive {path}: {exc}") from exc


def _by_contents(names: list[str]) -> str | None:
    suffixes = {Path(name).suffix.lower() for name in names}
    if ".pov" in suffixes:
        return "povray"
    if ".blend" in suffixes:
        return "blender"
    return None


def renderer_for_scene(path: Path) -> str:
    """The plugin for a scene: .blend -> blender; .pov, or a folder/.zip/.tar.gz holding a
    .pov -> povray (holding only a .blend -> blender); .sh -> command. Else ``UsageError``."""
    name = path.name.lower()
    if path.is_dir():
        found = _by_contents([p.name for p in path.rglob("*") if p.is_file()])
        if found is None:
            raise UsageError(
                f"no .pov or .blend file in the folder {path}: choose one with --renderer"
            )
        return found
    if name.endswith((".zip", ".tar.gz", ".tgz", ".tar")):
        if not path.exists():
            return "povray"
        found = _by_contents(_archive_names(path))
        return found or "povray"
    suffix = path.suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    shown = suffix or "(no extension)"
    raise UsageError(
        f"no renderer for scenes ending in {shown} ({path.name}): "
        "choose one with --renderer (command, povray, blender)"
    )
