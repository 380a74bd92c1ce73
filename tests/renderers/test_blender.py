"""Blender: CLI argv and progress parsing (pure), then the warm bpy worker for real.

The bpy tests render the example turntable (generated into a temp folder by
examples/blender/make_turntable.py). The CLI backend is tested only where a ``blender`` binary
is on PATH (Debian's is 780 MB and not installed by default).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import trio
from PIL import Image, ImageChops, ImageStat

from peerfarm.renderers.base import Progress, RenderFailed
from peerfarm.renderers.blender import PREPARE_EXPR, BlenderRenderer
from peerfarm.renderers.scenes import inspect_blend, pack_blend
from tests.renderers.conftest import (
    DATA,
    make_task,
    needs_blender_cli,
    needs_bpy,
    pid_gone,
)

# --- pure ---------------------------------------------------------------------------------


def test_cli_argv_puts_options_before_the_frames(tmp_path: Path) -> None:
    renderer = BlenderRenderer(mode="cli", executable="/opt/blender/blender")
    task = make_task(tmp_path, Path("/s/shot.blend"), (5,), options={"threads": 2})
    argv = renderer.build_argv(task)
    assert argv[:4] == ["/opt/blender/blender", "-b", "--disable-autoexec", "/s/shot.blend"]
    assert argv[argv.index("--python-expr") + 1] == PREPARE_EXPR
    assert argv[argv.index("-o") + 1] == f"{tmp_path / 'out'}/frame_####"
    assert argv[-2:] == ["-f", "5"]
    assert argv.index("-t") < argv.index("-f") and argv.index("-o") < argv.index("-f")
    assert "-F" not in argv  # the scene's own file format


def test_cli_argv_for_a_chunk_and_with_scripts_allowed(tmp_path: Path) -> None:
    task = make_task(
        tmp_path, Path("s.blend"), (3, 4, 5), allow_scripts=True, options={"format": "OPEN_EXR"}
    )
    argv = BlenderRenderer(mode="cli").build_argv(task)
    assert "--disable-autoexec" not in argv
    assert argv[-5:] == ["-s", "3", "-e", "5", "-a"]
    assert argv.index("-F") < argv.index("-s") and argv[argv.index("-F") + 1] == "OPEN_EXR"
    with pytest.raises(RenderFailed):
        BlenderRenderer(mode="cli").build_argv(make_task(tmp_path, Path("s.blend"), (1, 3)))


def test_prepare_expression_turns_denoising_off_without_oidn() -> None:
    compile(PREPARE_EXPR, "<prepare>", "exec")
    assert "with_openimagedenoise" in PREPARE_EXPR and "use_denoising = False" in PREPARE_EXPR


def test_parse_recorded_worker_log() -> None:
    renderer = BlenderRenderer()
    lines = (DATA / "blender_bpy_worker_frames_1_2.log").read_text().splitlines()
    parsed = [p for line in lines if (p := renderer.parse_line(line)) is not None]
    samples = [p for p in parsed if p.samples]
    assert [p.samples for p in samples if p.frame == 1] == ["0/8", "1/8", "8/8"]
    assert samples[1].fraction == pytest.approx(1 / 8) and samples[1].memory == "5M"
    saved = [p for p in parsed if p.message.startswith("saved")]
    assert [p.message for p in saved] == ["saved frame_0001.png", "saved frame_0002.png"]
    assert all(p.fraction == 1.0 for p in saved)
    assert {p.frame for p in parsed} >= {1, 2}


def test_parse_cli_style_lines() -> None:
    # The format Blender 3.x-4.x prints in background mode (one line per update).
    renderer = BlenderRenderer()
    line = (
        "Fra:12 Mem:11.05M (Peak 11.68M) | Time:00:00.30 | Remaining:00:00.11 | "
        "Mem:1.37M, Peak:1.38M | Scene, ViewLayer | Sample 5/8"
    )
    assert renderer.parse_line(line) == Progress(
        12, 5 / 8, "Scene, ViewLayer | Sample 5/8", samples="5/8", memory="11.05M"
    )
    saved = renderer.parse_line("Saved: '/tmp/out/frame_0012.png'")
    assert saved is not None and saved.fraction == 1.0 and saved.frame is None
    assert renderer.parse_line("Blender quit") is None


# --- warm bpy worker ------------------------------------------------------------------------


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.convert("RGB")


def _mean_difference(a: Path, b: Path) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(_rgb(a), _rgb(b))).mean) / 3


@needs_bpy
async def test_warm_worker_renders_frames_and_stays_loaded(
    turntable_dir: Path, tmp_path: Path
) -> None:
    renderer = BlenderRenderer(mode="bpy")
    scene = turntable_dir / "turntable.blend"
    timings: list[float] = []
    outputs: list[Path] = []
    seen: list[Progress] = []
    try:
        with trio.fail_after(120):
            info = await renderer.detect()
            assert info is not None and info.details["mode"] == "bpy"
            assert info.version.startswith(f"{inspect_blend(scene).version[0]}.")
            for frame in (1, 2, 3):
                started = time.monotonic()
                task = make_task(tmp_path, scene, (frame,), name=f"out{frame}")
                result = await renderer.render(task, on_progress=seen.append)
                timings.append(time.monotonic() - started)
                [path] = result.outputs[frame]
                assert path == task.output_dir / f"frame_{frame:04d}.png"
                outputs.append(path)
                if frame == 1:
                    first_pid = renderer.worker_pid
            assert renderer.worker_pid == first_pid  # one warm process for all three
    finally:
        await renderer.aclose()
    print(f"bpy worker seconds per frame (first includes start + load): {timings}")
    assert all(_rgb(p).size == (320, 240) for p in outputs)
    assert _mean_difference(outputs[0], outputs[1]) > 1.0
    assert _mean_difference(outputs[1], outputs[2]) > 1.0
    assert timings[1] < timings[0]  # recorded above; loose on purpose (shared CPUs)
    assert {p.samples for p in seen if p.frame == 2} >= {"8/8"}
    assert first_pid is not None and pid_gone(first_pid)  # aclose stops the worker


@needs_bpy
async def test_packed_scene_renders_with_its_texture_after_the_original_moves(
    turntable_dir: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(turntable_dir, project)
    packed = pack_blend(project / "turntable.blend", tmp_path / "packed")
    assert packed.missing == []
    assert any(p.name == "checker.png" for p in packed.files)
    (project / "textures").rename(tmp_path / "moved-away")
    missing = pack_blend(project / "turntable.blend", tmp_path / "p2").missing
    assert [Path(m).name for m in missing] == ["checker.png"]

    renderer = BlenderRenderer(mode="bpy")
    try:
        with trio.fail_after(120):
            with_texture = await renderer.render(
                make_task(tmp_path, tmp_path / "packed", (1,), name="packed-out"),
                on_progress=lambda p: None,
            )
            without_texture = await renderer.render(
                make_task(tmp_path, project / "turntable.blend", (1,), name="bare-out"),
                on_progress=lambda p: None,
            )
    finally:
        await renderer.aclose()
    # Blender draws a missing image in magenta: the floor differs a lot.
    diff = _mean_difference(with_texture.outputs[1][0], without_texture.outputs[1][0])
    assert diff > 5.0


@needs_bpy
async def test_cancel_kills_the_worker_and_the_next_render_restarts_it(
    turntable_dir: Path, tmp_path: Path
) -> None:
    renderer = BlenderRenderer(mode="bpy")
    scene = turntable_dir / "turntable.blend"
    try:
        with trio.fail_after(120):
            with trio.move_on_after(0.3):
                await renderer.render(
                    make_task(tmp_path, scene, (1,), name="a"), on_progress=lambda p: None
                )
            assert renderer.worker_pid is None or pid_gone(renderer.worker_pid)
            result = await renderer.render(
                make_task(tmp_path, scene, (4,), name="b"), on_progress=lambda p: None
            )
            assert result.outputs[4][0].is_file()
    finally:
        await renderer.aclose()


@needs_bpy
async def test_a_bad_scene_fails_and_the_worker_survives(
    turntable_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.blend"
    bad.write_bytes(b"BLENDER-v304" + bytes(64))
    renderer = BlenderRenderer(mode="bpy")
    try:
        with trio.fail_after(60):
            with pytest.raises(RenderFailed) as info:
                await renderer.render(make_task(tmp_path, bad, (1,)), on_progress=lambda p: None)
            assert "Failed to read blend file" in info.value.reason
            pid = renderer.worker_pid
            good = make_task(tmp_path, turntable_dir / "turntable.blend", (2,), name="good")
            result = await renderer.render(good, on_progress=lambda p: None)
            assert result.outputs[2][0].is_file()
            assert renderer.worker_pid == pid  # the same worker, not a restart
    finally:
        await renderer.aclose()


@needs_blender_cli
async def test_cli_renders_a_chunk_of_frames(tmp_path: Path) -> None:  # pragma: no cover
    blender = shutil.which("blender")
    assert blender is not None
    scene = tmp_path / "cube.blend"
    make = (
        "import bpy; s = bpy.context.scene; s.render.engine = 'CYCLES'; s.cycles.samples = 1; "
        "s.render.resolution_x = 64; s.render.resolution_y = 48; "
        "s.render.resolution_percentage = 100; "
        "cube = bpy.data.objects['Cube']; cube.location.x = 0; "
        "cube.keyframe_insert('location', frame=1); cube.location.x = 2; "
        "cube.keyframe_insert('location', frame=3); "
        f"bpy.ops.wm.save_as_mainfile(filepath={str(scene)!r})"
    )
    with trio.fail_after(120):
        await trio.run_process([blender, "-b", "--factory-startup", "--python-expr", make])
        renderer = BlenderRenderer(mode="cli")
        info = await renderer.detect()
        assert info is not None and info.details["mode"] == "cli"
        seen: list[Progress] = []
        result = await renderer.render(
            make_task(tmp_path, scene, (1, 2, 3)), on_progress=seen.append
        )
    paths = [result.outputs[f][0] for f in (1, 2, 3)]
    assert [p.name for p in paths] == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
    assert all(_rgb(p).size == (64, 48) for p in paths)
    assert _mean_difference(paths[0], paths[2]) > 0.5
    assert any(p.frame == 3 for p in seen)
