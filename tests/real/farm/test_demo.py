"""`peerfarm demo` with real peers on loopback (mDNS bound to 127.0.0.1): the one-time dashboard
login link (issue 17, item 2), giving up with the reason, and the example scene built by the
Blender that renders it."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from peerfarm import demo
from peerfarm.renderers.scenes import inspect_blend
from tests.support import EXAMPLES
from tests.support.blends import future_example
from tests.support.renderers import needs_blender_cli, needs_bpy

pytestmark = pytest.mark.mdns  # the demo's peers use mDNS bound to 127.0.0.1

SCRIPT = EXAMPLES / "command" / "render.sh"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the demo encodes a video: ffmpeg")
def test_the_demo_shows_a_one_time_login_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scene = demo.DemoScene(SCRIPT, "command-demo", "the command example", allow_command=True)
    monkeypatch.setattr(demo, "choose_scene", lambda: scene)
    monkeypatch.chdir(tmp_path)
    assert demo.run_demo(frames="1-2", out_root=tmp_path / "out") == 0
    out = capsys.readouterr().out
    assert re.search(
        r"dashboard at http://127\.0\.0\.1:\d+/\?login=[\w-]{40,} \(a one-time login link\)", out
    ), out
    video = tmp_path / "out" / "command-demo.mp4"
    assert f"demo: video  in {video}" in out and video.stat().st_size > 0


def test_the_demo_gives_up_with_the_reason_when_nothing_can_render_its_scene(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The scene claims Blender 9.0 saved it (no Blender needed)."""
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
