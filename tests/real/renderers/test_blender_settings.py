"""Blender job options for real (issue 18): the generated settings script changes the render,
through the program and through the warm bpy worker, and a name the scene lacks fails the
frame with that reason. The scene is saved by the Blender program (Debian's 3.4), which both
backends can open; each test says which backend it uses."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
from PIL import Image

from peerfarm.renderers.base import RenderFailed
from peerfarm.renderers.blender import BlenderRenderer
from tests.support.renderers import make_task, needs_blender_cli, needs_bpy

#: A 64x48 Cycles scene (1 sample) with a second camera, "Side".
MAKE_SCENE = (
    "import bpy; s = bpy.context.scene; s.render.engine = 'CYCLES'; s.cycles.samples = 1; "
    "s.render.resolution_x = 64; s.render.resolution_y = 48; "
    "s.render.resolution_percentage = 100; s.cycles.use_denoising = False; "
    "o = bpy.data.objects.new('Side', bpy.data.cameras.new('Side')); "
    "s.collection.objects.link(o); o.location = (0, -8, 0); o.rotation_euler = (1.5708, 0, 0); "
    "bpy.ops.wm.save_as_mainfile(filepath={path!r})"
)

OPTIONS: dict[str, Any] = {
    "percentage": 50,
    "camera": "Side",
    "samples": 2,
    "device": "CPU",
    "threads": 1,
    "format": "JPEG",
    "view_layer": "ViewLayer",
}

BACKENDS = [
    pytest.param("cli", marks=needs_blender_cli, id="program"),
    pytest.param("bpy", marks=[needs_blender_cli, needs_bpy], id="bpy"),
]


async def scene(tmp_path: Path) -> Path:
    blender = shutil.which("blender")
    assert blender is not None
    path = tmp_path / "two-cameras.blend"
    make = MAKE_SCENE.format(path=str(path))
    await trio.run_process([blender, "-b", "--factory-startup", "--python-expr", make])
    return path


@pytest.mark.parametrize("mode", BACKENDS)
async def test_options_change_the_render_not_the_file(
    tmp_path: Path, mode: Literal["cli", "bpy"]
) -> None:
    """Uses the Blender program to save the scene, and the backend named by ``mode``."""
    renderer = BlenderRenderer(mode=mode)
    try:
        with trio.fail_after(240):
            path = await scene(tmp_path)
            before = path.read_bytes()
            task = make_task(tmp_path, path, (1,), options=OPTIONS)
            result = await renderer.render(task, on_progress=lambda p: None)
            (output,) = result.outputs[1]
            assert output.name == "frame_0001.jpg"
            with Image.open(output) as image:
                assert image.size == (32, 24) and image.format == "JPEG"
            # Another job of the same file without options: the scene's own settings again.
            plain = make_task(tmp_path, path, (1,), name="plain")
            result = await renderer.render(plain, on_progress=lambda p: None)
            with Image.open(result.outputs[1][0]) as image:
                assert image.size == (64, 48) and image.format == "PNG"
            assert path.read_bytes() == before
    finally:
        await renderer.aclose()


@pytest.mark.parametrize("mode", BACKENDS)
@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"camera": "Top"}, "no camera named 'Top' (cameras: Camera, Side)"),
        ({"view_layer": "Fog"}, "no view layer named 'Fog' (view layers: ViewLayer)"),
        ({"device": "OPTIX"}, "no OPTIX device for Cycles on this peer"),
    ],
)
async def test_a_setting_the_scene_cannot_take_fails_the_frame_with_the_reason(
    tmp_path: Path, mode: Literal["cli", "bpy"], options: dict[str, Any], reason: str
) -> None:
    """Uses the Blender program to save the scene, and the backend named by ``mode``."""
    renderer = BlenderRenderer(mode=mode)
    try:
        with trio.fail_after(240):
            path = await scene(tmp_path)
            task = make_task(tmp_path, path, (1,), options=options)
            with pytest.raises(RenderFailed) as failed:
                await renderer.render(task, on_progress=lambda p: None)
            assert reason in str(failed.value)
            assert "\n" not in str(failed.value)
    finally:
        await renderer.aclose()
