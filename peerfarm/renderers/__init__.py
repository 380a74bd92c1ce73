"""Renderer plugins and the registry that names them.

This package owns turning a scene and some frame numbers into image files on this peer. Each
plugin (``command``, ``povray``, ``blender``) implements ``base.Renderer``: a pure
``build_argv``/``parse_line`` pair and a ``render`` that runs the real program in its own process
group. ``available_renderers()`` gives fresh instances (one per render slot);
``renderer_for_scene()`` picks a plugin from a scene's file name at submit time.
"""

from __future__ import annotations

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
from peerfarm.scene_kind import renderer_for_scene

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


def available_renderers() -> dict[str, Renderer]:
    """A fresh instance of every plugin, by name (``detect()`` says which are installed)."""
    return {
        CommandRenderer.name: CommandRenderer(),
        PovrayRenderer.name: PovrayRenderer(),
        BlenderRenderer.name: BlenderRenderer(),
    }
