"""Blender, pure: CLI argv, the choice of installation for a file, and progress parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerfarm.renderers.base import Progress, RenderFailed
from peerfarm.renderers.blender import PREPARE_EXPR, BlenderRenderer
from peerfarm.renderers.blender_settings import settings_script
from peerfarm.renderers.installs import Installation
from peerfarm.renderers.scenes import inspect_blend
from tests.support.blends import future_copy
from tests.support.renderers import (
    DATA,
    make_task,
)


def test_cli_argv_puts_options_before_the_frames(tmp_path: Path) -> None:
    renderer = BlenderRenderer(mode="cli", executable="/opt/blender/blender")
    task = make_task(tmp_path, Path("/s/shot.blend"), (5,), options={"threads": 2})
    argv = renderer.build_argv(task)
    assert argv[:4] == ["/opt/blender/blender", "-b", "--disable-autoexec", "/s/shot.blend"]
    # The job's options run as a generated script after the preparation (blender_settings).
    expr = argv[argv.index("--python-expr") + 1]
    assert expr == PREPARE_EXPR + settings_script({"threads": 2})
    assert argv.index("--python-exit-code") < argv.index("--python-expr")
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
