"""The add-on's standard-library client, pure parts (no bpy, no daemon): the data dir, the
submit body, and the panel's lines. The add-on itself runs for real in tests/real/addon."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import platformdirs
import pytest

from peerfarm.addon import SOURCE


def load_farm() -> ModuleType:
    """``peerfarm_blender/farm.py`` on its own: the package's ``__init__`` needs bpy."""
    spec = importlib.util.spec_from_file_location("addon_farm", SOURCE / "farm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["addon_farm"] = module
    spec.loader.exec_module(module)
    return module


farm: Any = load_farm()


def test_the_default_data_dir_is_where_peerfarm_up_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"HOME": str(tmp_path)}
    assert farm.default_data_dir(env, "linux") == tmp_path / ".local" / "share" / "peerfarm"
    xdg = {**env, "XDG_DATA_HOME": str(tmp_path / "x")}
    assert farm.default_data_dir(xdg, "linux") == tmp_path / "x" / "peerfarm"
    mac = farm.default_data_dir(env, "darwin")
    assert mac == tmp_path / "Library" / "Application Support" / "peerfarm"
    win = farm.default_data_dir({"LOCALAPPDATA": "C:/Users/a/AppData/Local"}, "win32")
    assert win == Path("C:/Users/a/AppData/Local/peerfarm/peerfarm")
    assert farm.default_data_dir({"PEERFARM_DATA_DIR": "/d"}, "linux") == Path("/d")
    assert farm.data_dir(" /pref ", {"PEERFARM_DATA_DIR": "/d"}) == Path("/pref")
    monkeypatch.delenv("PEERFARM_DATA_DIR", raising=False)
    assert farm.default_data_dir() == Path(platformdirs.user_data_dir("peerfarm"))


def test_no_daemon_is_one_line_that_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(farm.FarmError, match=r"^no peerfarm daemon running for .*peerfarm up"):
        farm.Farm.connect(tmp_path)
    (tmp_path / "control.json").write_text("{not json")
    with pytest.raises(farm.FarmError, match=r"unreadable: restart the daemon$"):
        farm.Farm.connect(tmp_path)
    (tmp_path / "control.json").write_text(json.dumps({"url": "http://127.0.0.1:1", "token": "t"}))
    client = farm.Farm.connect(tmp_path)
    with pytest.raises(farm.FarmError, match="does not answer"):
        client.status()


@pytest.mark.parametrize(
    ("start", "end", "step", "text"),
    [(1, 48, 1, "1-48"), (7, 7, 1, "7"), (1, 240, 2, "1-240x2"), (5, 3, 1, "5")],
)
def test_the_scene_range_is_written_as_peerfarm_reads_it(
    start: int, end: int, step: int, text: str
) -> None:
    assert farm.frames_text(start, end, step) == text


def test_the_submit_body_is_the_apis() -> None:
    from peerfarm.control import SubmitBody

    body = farm.submit_body(
        Path("/work/shot.blend"), "1-3", priority=5, require="gpu, big", options={"samples": 4}
    )
    assert set(body) <= set(SubmitBody.__annotations__)
    assert body == {
        "scene": "/work/shot.blend",
        "frames": "1-3",
        "priority": 5,
        "chunk": 1,
        "cwd": "/work",  # outputs land in /work/peerfarm-out/shot/
        "options": {"samples": 4},
        "require": ["gpu", "big"],
    }
    assert "require" not in farm.submit_body(Path("/s.blend"), "1", require=" , ")


def test_the_panel_lines() -> None:
    peers = [
        {"state": "alive", "slots": 2, "busy": 1},
        {"state": "alive", "slots": 1, "busy": 0},
        {"state": "dead", "slots": 4, "busy": 0},
    ]
    assert farm.farm_line({"peers": peers}) == "2 peers alive, 2 of 3 slots free"
    assert farm.farm_line({"peers": peers[:1]}) == "1 peer alive, 1 of 2 slots free"
    view = {
        "id": "j1",
        "name": "shot",
        "state": "active",
        "frames_total": 48,
        "frames_done": 12,
        "frames_rendering": 2,
        "frames_failed": 1,
        "frames_pending": 33,
        "waiting": {"b": "not tagged gpu", "a": "paused"},
        "blocked": None,
    }
    assert farm.job_of({"jobs": [view]}, "j1") == view and farm.job_of({}, "j1") is None
    assert farm.job_line(view) == "shot: active, 12/48 done, 2 rendering, 1 failed"
    assert farm.waiting_line(view) == "waiting: a: paused; b: not tagged gpu"
    blocked = {**view, "blocked": "no peer can render it: b: not tagged gpu"}
    assert farm.waiting_line(blocked) == "no peer can render it: b: not tagged gpu"
    assert farm.waiting_line({**view, "frames_pending": 0}) is None
    assert not farm.finished(view) and farm.finished({"state": "done"})
