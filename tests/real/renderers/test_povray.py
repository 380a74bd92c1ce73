"""POV-Ray for real: folder and zip scenes, frame names, parse errors, its version."""

from __future__ import annotations

import itertools
import shutil
import zipfile
from pathlib import Path

import pytest
import trio
from PIL import Image, ImageChops

from peerfarm.renderers.base import Progress, RenderFailed
from peerfarm.renderers.povray import PovrayRenderer
from tests.support.renderers import EXAMPLES, make_task, needs_povray


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
async def test_renders_where_every_path_has_spaces(tmp_path: Path) -> None:
    """macOS's default data dir is ``~/Library/Application Support/peerfarm``."""
    support = tmp_path / "Library" / "Application Support" / "peerfarm"
    scene = support / "my scene"
    shutil.copytree(EXAMPLES / "povray", scene)
    (scene / "spin.pov").rename(scene / "the spin.pov")
    options = {"width": 80, "height": 60, "frames_total": 12}
    task = make_task(support / "work dir", scene, (4, 5), options=options)
    with trio.fail_after(30):
        result = await PovrayRenderer().render(task, on_progress=lambda p: None)
    _check_frames(result.outputs, [4, 5])
    assert " " in str(result.outputs[4][0].parent)


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
