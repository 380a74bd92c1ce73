"""Blender: CLI argv, the choice of installation and progress parsing (pure), then for real.

Tests marked ``needs_bpy`` use the bpy module (the ``blender`` extra) and render the example
turntable (generated into a temp folder by examples/blender/make_turntable.py); tests marked
``needs_blender_cli`` use the Blender program on PATH (Debian's ``blender``, which ``./dev test``
installs when run as root), with scenes that program saves itself. Each says which it uses.
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
from peerfarm.renderers.installs import Installation
from peerfarm.renderers.scenes import inspect_blend, pack_blend
from tests.renderers.blends import brightness, future_copy, make_probe_scene, make_turntable
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
    argv = BlenderRenderer(mode="cli").build_argv(task, "/usr/bin/blender")
    # Blender's default is to run no script: allowing them takes --enable-autoexec.
    assert argv[:4] == ["/usr/bin/blender", "-b", "--enable-autoexec", "s.blend"]
    assert "--disable-autoexec" not in argv
    assert argv[-5:] == ["-s", "3", "-e", "5", "-a"]
    assert argv.index("-F") < argv.index("-s") and argv[argv.index("-F") + 1] == "OPEN_EXR"
    with pytest.raises(RenderFailed):
        BlenderRenderer(mode="cli").build_argv(make_task(tmp_path, Path("s.blend"), (1, 3)))


CLI_34 = Installation("cli", "3.4.1", "/usr/bin/blender", "PATH")
BPY_50 = Installation("bpy", "5.0.1", "/venv/bin/python", "bpy")


def test_each_task_gets_the_newest_installation_that_can_open_its_file(tmp_path: Path) -> None:
    renderer = BlenderRenderer()
    renderer.installs = [CLI_34, BPY_50]
    old = tmp_path / "old.blend"
    old.write_bytes(b"BLENDER-v304" + bytes(64))
    task = make_task(tmp_path, old, (1,))
    assert renderer.choose_for(task, old) == BPY_50  # newest, and warm
    renderer.installs = [CLI_34]
    assert renderer.choose_for(task, old) == CLI_34
    # The version given at submit counts before the header; else the header is read.
    future = make_task(tmp_path, old, (1,), options={"blend_version": "5.0"})
    with pytest.raises(RenderFailed) as info:
        renderer.choose_for(future, old)
    assert info.value.reason == (
        "no Blender on this peer can open a file saved by Blender 5.0 (installed: 3.4.1)"
    )
    renderer.installs = []
    with pytest.raises(RenderFailed, match="not installed"):
        renderer.choose_for(task, old)


def test_future_copies_claim_a_blender_that_does_not_exist(tmp_path: Path) -> None:
    legacy = tmp_path / "a.blend"
    legacy.write_bytes(b"BLENDER-v304REND" + bytes(32))
    assert inspect_blend(future_copy(legacy, tmp_path / "a9.blend")).version == (9, 0)
    large = tmp_path / "b.blend"
    large.write_bytes(b"BLENDER17-01v0500" + bytes(32))
    assert inspect_blend(future_copy(large, tmp_path / "b9.blend", 9, 1)).version == (9, 1)


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


@needs_bpy
async def test_the_worker_runs_scripts_only_when_allowed(tmp_path: Path) -> None:
    """Uses the bpy module: a Python driver runs when the task allows scripts, not otherwise."""
    scene = make_probe_scene(tmp_path / "probe.blend")
    renderer = BlenderRenderer(mode="bpy")
    try:
        with trio.fail_after(120):
            shown = {}
            for index, allow in enumerate((False, True, False)):  # the same worker reloads
                task = make_task(tmp_path, scene, (1,), name=f"o{index}", allow_scripts=allow)
                result = await renderer.render(task, on_progress=lambda p: None)
                shown[index] = brightness(result.outputs[1][0])
    finally:
        await renderer.aclose()
    assert shown[0] < 20 and shown[1] > 150 and shown[2] < 20, shown


@needs_blender_cli
async def test_cli_runs_scripts_only_when_allowed(tmp_path: Path) -> None:
    """Uses the Blender program: --enable-autoexec makes the file's Python driver run."""
    blender = shutil.which("blender")
    assert blender is not None
    scene = make_probe_scene(tmp_path / "probe.blend", blender)
    renderer = BlenderRenderer(mode="cli")
    with trio.fail_after(120):
        shown = {}
        for allow in (False, True):
            task = make_task(tmp_path, scene, (1,), name=f"o{allow}", allow_scripts=allow)
            result = await renderer.render(task, on_progress=lambda p: None)
            shown[allow] = brightness(result.outputs[1][0])
    assert shown[False] < 20 and shown[True] > 150, shown


@needs_blender_cli
@needs_bpy
async def test_a_peer_with_both_renders_each_file_with_a_blender_that_opens_it(
    tmp_path: Path,
) -> None:
    """Uses both: the program (Debian's 3.4) and bpy (5.x). A file saved by bpy 5 cannot be
    opened by 3.4; the renderer picks bpy for it, and refuses a file from the future."""
    blender = shutil.which("blender")
    assert blender is not None
    renderer = BlenderRenderer()
    scene = make_turntable(tmp_path / "new", compress=False)  # saved by bpy
    future = future_copy(scene, tmp_path / "new" / "future.blend")
    try:
        with trio.fail_after(180):
            info = await renderer.detect()
            assert info is not None and len(info.versions) >= 2
            assert renderer.installs is not None
            assert {i.kind for i in renderer.installs} == {"cli", "bpy"}
            result = await renderer.render(
                make_task(tmp_path, scene, (1,), name="new-out"), on_progress=lambda p: None
            )
            assert result.outputs[1][0].is_file()
            assert renderer.worker_pid is not None  # rendered by the warm bpy worker
            with pytest.raises(RenderFailed, match=r"saved by Blender 9\.0"):
                await renderer.render(
                    make_task(tmp_path, future, (1,), name="f-out"), on_progress=lambda p: None
                )
    finally:
        await renderer.aclose()


@needs_blender_cli
async def test_cli_renders_the_turntable_saved_by_the_program_itself(tmp_path: Path) -> None:
    """Uses the Blender program: the example scene, built by that Blender, with its texture."""
    blender = shutil.which("blender")
    assert blender is not None
    scene = make_turntable(tmp_path / "scene", blender)
    renderer = BlenderRenderer(mode="cli")
    with trio.fail_after(120):
        result = await renderer.render(make_task(tmp_path, scene, (1,)), on_progress=lambda p: None)
    with Image.open(result.outputs[1][0]) as image:
        colours = image.convert("RGB").getcolors(320 * 240) or []
    orange = sum(n for n, (r, g, b) in colours if r > 150 and 60 < g < 170 and b < 80)
    assert orange > 500, "the checker texture is missing"


@needs_blender_cli
async def test_cli_renders_a_chunk_of_frames(tmp_path: Path) -> None:
    """Uses the Blender program on PATH."""
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
