"""The demo's pure parts: which scene it picks, how it starts peers, and free loopback ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from peerfarm import demo


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
    monkeypatch.setattr("peerfarm.renderers.blender.bpy_available", lambda: False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    chosen = demo.choose_scene(tmp_path)
    assert chosen.path.name == "render.sh" and chosen.allow_command
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/povray" * (name == "povray"))
    assert demo.choose_scene(tmp_path).path.name == "spin.pov"
    monkeypatch.setattr("peerfarm.renderers.blender.bpy_available", lambda: True)
    assert demo.choose_scene(tmp_path).name == "turntable"
    with pytest.raises(demo.DemoError):
        demo.choose_scene(tmp_path / "nowhere")


def test_free_port_is_free_for_tcp_and_udp() -> None:
    port = demo.free_port()
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", port))
        udp.bind(("127.0.0.1", port))
