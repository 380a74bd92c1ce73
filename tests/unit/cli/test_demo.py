"""The demo's parts: which scene it picks and which Blender builds it, how it starts peers, free
loopback ports, and building the example scene with the Blender that will render it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from peerfarm import demo
from peerfarm.renderers.installs import Installation
from peerfarm.renderers.scenes import inspect_blend
from tests.renderers.conftest import needs_blender_cli, needs_bpy

CLI_34 = Installation("cli", "3.4.1", "/usr/bin/blender", "PATH")
BPY_50 = Installation("bpy", "5.0.1", "/venv/bin/python", "bpy")


def test_peer_argv_binds_everything_to_loopback(tmp_path: Path) -> None:
    argv = demo.peer_argv("py", tmp_path / "p2", "demo-2", 4000, 4001, tmp_path / "k", 3000, True)
    assert argv[:4] == ["py", "-m", "peerfarm", "up"]
    pairs = dict(zip(argv[4::2], argv[5::2], strict=False))
    assert pairs["--listen"] == "127.0.0.1:4000" and pairs["--web"] == "127.0.0.1:4001"
    assert pairs["--interface"] == "127.0.0.1" and pairs["--join"] == "127.0.0.1:3000"
    assert "--allow-command" in argv
    first = demo.peer_argv("py", tmp_path, "demo-1", 1, 2, tmp_path / "k", None, False)
    assert "--join" not in first and "--allow-command" not in first


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


@pytest.mark.parametrize(
    "kind", [pytest.param("cli", marks=needs_blender_cli), pytest.param("bpy", marks=needs_bpy)]
)
def test_the_built_scene_is_never_newer_than_its_builder(kind: str, tmp_path: Path) -> None:
    """Uses the Blender program (cli) or the bpy module (bpy), whichever the case names."""
    found = [i for i in demo.find_blenders() if i.kind == kind]
    builder = max(found, key=lambda i: i.version_key)
    shipped = demo.choose_scene(installs=[builder])
    built = demo.build_scene(shipped, tmp_path / "scene")
    assert built.path == tmp_path / "scene" / "turntable.blend"
    assert (tmp_path / "scene" / "textures" / "checker.png").is_file()
    assert inspect_blend(built.path).version == builder.version_key[:2]


def test_free_port_is_free_for_tcp_and_udp() -> None:
    port = demo.free_port()
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", port))
        udp.bind(("127.0.0.1", port))


def test_the_demo_gives_up_with_the_reason_when_nothing_can_render_its_scene(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real peers on loopback; the scene claims Blender 9.0 saved it (no Blender needed)."""
    import tempfile
    import time

    from tests.renderers.blends import future_example

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the kept peer dirs land here
    scene = future_example(tmp_path / "scene")
    chosen = demo.DemoScene(scene, "future", "a scene from the future")
    monkeypatch.setattr(demo, "choose_scene", lambda: chosen)
    monkeypatch.setattr(demo, "GIVE_UP_S", 3.0)
    started = time.monotonic()
    with pytest.raises(demo.DemoError) as info:
        demo.run_demo(frames="1-2", out_root=tmp_path / "out")
    assert time.monotonic() - started < 60
    assert "giving up after 3 s: no peer can render it: demo-1, demo-2, demo-3: " in str(info.value)
    printed = capsys.readouterr().out
    assert "demo: warning: future waits: no peer can render it" in printed
