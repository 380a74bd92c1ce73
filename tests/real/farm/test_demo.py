"""`peerfarm demo` shows a one-time dashboard login link (issue 17, item 2): real peers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from peerfarm import demo

pytestmark = pytest.mark.mdns  # the demo's peers use mDNS bound to 127.0.0.1

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "command" / "render.sh"


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
