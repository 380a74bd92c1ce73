"""POV-Ray: argv and progress parsing on a recorded log (pure), then real renders."""

from __future__ import annotations

import itertools
import shutil
import zipfile
from pathlib import Path

import pytest
import trio
from PIL import Image, ImageChops

from peerfarm.renderers.base import Progress, RenderFailed
from peerfarm.renderers.povray import PovrayRenderer, clock_range, frame_index
from tests.renderers.conftest import DATA, EXAMPLES, make_task, needs_povray


def test_argv_sets_the_clock_over_the_whole_job(tmp_path: Path) -> None:
    task = make_task(
        tmp_path,
        Path("/scenes/spin/spin.pov"),
        (6, 7),
        options={"frames_total": 24, "width": 64, "height": 48, "antialias": 0.2},
    )
    argv = PovrayRenderer().build_argv(task)
    assert argv[0] == "povray"
    assert "+Ispin.pov" in argv
    assert f"+O{tmp_path / 'out'}/frame_" in argv
    for flag in ("+W64", "+H48", "+A0.2", "+FN", "-D", "+L/scenes/spin"):
        assert flag in argv
    assert argv[-6:] == ["+KFI1", "+KFF24", "+KI0", "+KF1", "+SF6", "+EF7"]


def test_argv_defaults_and_antialias_off(tmp_path: Path) -> None:
    task = make_task(tmp_path, Path("s.pov"), (3,), options={"antialias": 0, "threads": 2})
    argv = PovrayRenderer().build_argv(task)
    assert {"+W320", "+H240", "-A", "+KFF3", "+SF3", "+EF3", "+WT2"} <= set(argv)
    assert clock_range(make_task(tmp_path, Path("s.pov"), (5, 9))) == (1, 9)
    options = {"frame_first": 10, "frames_total": 5}
    assert clock_range(make_task(tmp_path, Path("s.pov"), (11,), options=options)) == (10, 14)


def test_argv_refuses_frames_that_are_not_contiguous(tmp_path: Path) -> None:
    with pytest.raises(RenderFailed, match="contiguous"):
        PovrayRenderer().build_argv(make_task(tmp_path, Path("s.pov"), (1, 3)))


def test_parse_recorded_log() -> None:
    renderer = PovrayRenderer()
    raw = (DATA / "povray_spin_frames_6_7.log").read_bytes().decode()
    lines = [line for line in raw.replace("\r", "\n").split("\n") if line.strip()]
    parsed = [p for line in lines if (p := renderer.parse_line(line)) is not None]
    pixel_reports = [p for p in parsed if p.message.startswith("Rendered")]
    assert pixel_reports[0].fraction == pytest.approx(1024 / 76800)
    assert pixel_reports[-1].fraction == 1.0
    assert sum(1 for p in pixel_reports if p.fraction == 1.0) == 2  # two frames finished
    assert [frame_index(line) for line in lines if frame_index(line)] == [1, 1, 2]
    assert renderer.parse_line("Trace Time: 0 hours") is None


def test_parse_recorded_error_log() -> None:
    renderer = PovrayRenderer()
    lines = (DATA / "povray_parse_error.log").read_text().splitlines()
    errors = [p for line in lines if (p := renderer.parse_line(line)) and p.fraction is None]
    assert any("Parse Error" in p.message for p in errors)
    assert renderer.parse_line("Rendered 0 of 0 pixels") == Progress(
        None, None, "Rendered 0 of 0 pixels"
    )


def _check_frames(outputs: dict[int, list[Path]], frames: list[int]) -> None:
    assert sorted(outputs) == frames
    images = []
    for frame in frames:
        [path] = outputs[frame]
        assert path.name == f"frame_{frame:04d}.png"
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (80, 60)
            images.append(image.convert("RGB"))
    for a, b in itertools.pairwise(images):
        assert ImageChops.difference(a, b).getbbox() is not None  # frames differ


@needs_povray
async def test_renders_a_folder_scene_with_its_include(tmp_path: Path) -> None:
    scene = tmp_path / "spin"
    shutil.copytree(EXAMPLES / "povray", scene)
    options = {"width": 80, "height": 60, "frames_total": 12}
    task = make_task(tmp_path, scene, (1, 2, 3), options=options)
    seen: list[Progress] = []
    with trio.fail_after(30):
        result = await PovrayRenderer().render(task, on_progress=seen.append)
    _check_frames(result.outputs, [1, 2, 3])
    assert sorted(p.name for p in task.output_dir.iterdir()) == [
        "frame_0001.png",
        "frame_0002.png",
        "frame_0003.png",
    ]
    assert {p.frame for p in seen if p.fraction == 1.0} == {1, 2, 3}


@needs_povray
async def test_renders_a_zip_scene_with_gaps_between_frames(tmp_path: Path) -> None:
    archive = tmp_path / "spin.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (EXAMPLES / "povray").iterdir():
            zf.write(path, f"spin/{path.name}")
    options = {"width": 80, "height": 60, "frames_total": 12}
    task = make_task(tmp_path, archive, (2, 5, 6), options=options)
    with trio.fail_after(30):
        result = await PovrayRenderer().render(task, on_progress=lambda p: None)
    _check_frames(result.outputs, [2, 5, 6])
    assert (task.work_dir / "scene" / "spin" / "spin_colors.inc").is_file()


@needs_povray
async def test_a_one_frame_job_gets_the_frame_name(tmp_path: Path) -> None:
    scene = tmp_path / "one.pov"
    scene.write_text("#version 3.7;\nbackground { rgb <clock, 0.5, 1> }\n")
    task = make_task(tmp_path, scene, (1,), options={"width": 16, "height": 8})
    with trio.fail_after(20):
        result = await PovrayRenderer().render(task, on_progress=lambda p: None)
    assert [p.name for p in result.outputs[1]] == ["frame_0001.png"]


@needs_povray
async def test_a_broken_scene_fails_with_the_parse_error(tmp_path: Path) -> None:
    scene = tmp_path / "bad.pov"
    scene.write_text("#version 3.7;\nsphere { 0, 1 pigment { colour Nope } }\n")
    task = make_task(tmp_path, scene, (1,), options={"width": 16, "height": 8})
    with trio.fail_after(20), pytest.raises(RenderFailed) as info:
        await PovrayRenderer().render(task, on_progress=lambda p: None)
    assert "Parse Error" in info.value.reason
    assert "Nope" in info.value.log_tail


@needs_povray
async def test_detect_reports_the_version() -> None:
    with trio.fail_after(10):
        info = await PovrayRenderer().detect()
    assert info is not None and info.version.startswith("3.")
    assert await PovrayRenderer("no-such-povray").detect() is None
