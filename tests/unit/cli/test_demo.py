"""The demo's choices, pure: which scene it renders, which Blender builds it, and how."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerfarm import demo
from peerfarm.renderers.installs import Installation

CLI_34 = Installation("cli", "3.4.1", "/usr/bin/blender", "PATH")
BPY_50 = Installation("bpy", "5.0.1", "/venv/bin/python", "bpy")


def test_choose_scene_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for rel in ("blender/turntable.blend", "povray/spin.pov", "command/render.sh"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    monkeypatch.setattr("shutil.which", lambda name: None)
    chosen = demo.choose_scene(tmp_path, [])
    assert chosen.path.name == "render.sh" and chosen.allow_command and chosen.builder is None
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/povray" * (name == "povray"))
    assert demo.choose_scene(tmp_path, []).path.name == "spin.pov"
    with pytest.raises(demo.DemoError):
        demo.choose_scene(tmp_path / "nowhere", [])


def test_the_newest_blender_builds_the_scene_and_the_note_says_which(tmp_path: Path) -> None:
    (tmp_path / "blender").mkdir()
    (tmp_path / "blender" / "turntable.blend").write_text("x")
    both = demo.choose_scene(tmp_path, [CLI_34, BPY_50])
    assert both.name == "turntable" and both.builder == BPY_50
    assert "Blender 5.0.1 (bpy)" in both.note
    program = demo.choose_scene(tmp_path, [CLI_34])
    assert program.builder == CLI_34
    assert "no bpy in this Python, so the Blender program is used" in program.note
    assert demo.build_argv(CLI_34, Path("/e/make.py"), Path("/o")) == [
        "/usr/bin/blender", "-b", "--factory-startup", "--python", "/e/make.py", "--",
        "--out", "/o",
    ]  # fmt: skip
    assert demo.build_argv(BPY_50, Path("/e/make.py"), Path("/o")) == [
        "/venv/bin/python",
        "/e/make.py",
        "--out",
        "/o",
    ]
