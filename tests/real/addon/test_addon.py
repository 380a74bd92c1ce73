"""The Blender add-on for real (issue 18): installed from the zip ``peerfarm addon`` writes,
enabled, and its Submit operator sends the open scene to a real daemon, which renders it.

``test_the_addon_submits_from_the_blender_program`` uses Debian's Blender 3.4 (the legacy
``bl_info`` add-on form), ``test_the_addon_submits_from_bpy`` bpy 5 (the 4.2+ extension form,
``blender_manifest.toml``). Blender's user folders point into the test's temp folder, so
nothing is installed for the machine's user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from peerfarm.testing.daemons import PEERFARM, Daemon, LocalFarm, daemon_env, wait_until
from tests.support import ROOT
from tests.support.renderers import needs_blender_cli, needs_bpy

SESSION = ROOT / "tests" / "support" / "addon_session.py"


def addon_zip(tmp_path: Path) -> Path:
    done = subprocess.run(
        [*PEERFARM, "addon", str(tmp_path)], capture_output=True, text=True, env=daemon_env()
    )
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path == tmp_path / "peerfarm_blender.zip" and path.is_file()
    assert "Install from Disk" in done.stderr
    return path


def blender_env(tmp_path: Path, peer: Daemon) -> dict[str, str]:
    """Blender's user folders in the temp folder; the add-on finds the daemon by data dir."""
    user = tmp_path / "blender-user"
    env = {
        "PEERFARM_DATA_DIR": str(peer.data_dir),
        "BLENDER_USER_CONFIG": str(user / "config"),
        "BLENDER_USER_SCRIPTS": str(user / "scripts"),
        "BLENDER_USER_EXTENSIONS": str(user / "extensions"),
        "BLENDER_USER_DATAFILES": str(user / "datafiles"),
        "BLENDER_USER_RESOURCES": str(user),
        "PYTHONWARNINGS": "ignore",
    }
    return daemon_env(env)


def run_session(argv: list[str], env: dict[str, str], blend: Path) -> dict[str, Any]:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=400)
    result = blend.with_name(blend.name + ".result.json")
    assert result.is_file(), (
        f"{argv} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return dict(json.loads(result.read_text()))


def check(outcome: dict[str, Any], peer: Daemon, blend: Path) -> None:
    assert outcome["result"] == ["FINISHED"], outcome
    assert outcome["farm"] == "1 peer alive, 1 of 1 slots free" or "peer alive" in outcome["farm"]
    view = outcome["view"]
    assert view["state"] == "done" and view["frames_total"] == 3, outcome  # the saved range
    assert view["priority"] == 5 and view["name"] == blend.stem
    assert any(line.startswith(f"{blend.stem}: ") for line in outcome["lines"])
    out = blend.parent / "peerfarm-out" / blend.stem  # beside the file
    wait_until(lambda: len(list(out.glob("frame_*.png"))) == 3, 60, "frames delivered")
    for path in out.glob("frame_*.png"):  # the change made after the first save was saved
        with Image.open(path) as image:
            assert image.size == (40, 24)


@needs_blender_cli
def test_the_addon_submits_from_the_blender_program(farm: LocalFarm, tmp_path: Path) -> None:
    """Uses Debian's Blender program (3.4: the legacy add-on) to submit; the peer renders
    with whichever Blender it prefers."""
    blender = shutil.which("blender")
    assert blender is not None
    peer = farm.start("p")
    zip_path = addon_zip(tmp_path)
    blend = tmp_path / "scenes" / "cube34.blend"
    blend.parent.mkdir()
    argv = [blender, "-b", "--factory-startup", "--python", str(SESSION), "--"]
    outcome = run_session([*argv, str(zip_path), str(blend)], blender_env(tmp_path, peer), blend)
    assert outcome["module"] == "peerfarm_blender" and outcome["version"].startswith("3.")
    check(outcome, peer, blend)


@needs_bpy
def test_the_addon_submits_from_bpy(farm: LocalFarm, tmp_path: Path) -> None:
    """Uses bpy 5 (the extension form of the add-on) to submit and to render."""
    peer = farm.start("p")
    zip_path = addon_zip(tmp_path)
    blend = tmp_path / "scenes" / "cube5.blend"
    blend.parent.mkdir()
    argv = [sys.executable, str(SESSION), str(zip_path), str(blend)]
    outcome = run_session(argv, blender_env(tmp_path, peer), blend)
    assert outcome["module"] == "bl_ext.user_default.peerfarm_blender"
    check(outcome, peer, blend)


@pytest.mark.parametrize("where", ["file", "folder"])
def test_addon_writes_a_zip_blender_can_read(tmp_path: Path, where: str) -> None:
    import tomllib
    import zipfile

    target = tmp_path / "x.zip" if where == "file" else tmp_path
    done = subprocess.run(
        [*PEERFARM, "addon", str(target), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **daemon_env()},
    )
    path = Path(json.loads(done.stdout)["zip"])
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        manifest = tomllib.loads(archive.read("peerfarm_blender/blender_manifest.toml").decode())
        init = archive.read("peerfarm_blender/__init__.py").decode()
    assert names == [
        "peerfarm_blender/__init__.py",
        "peerfarm_blender/blender_manifest.toml",
        "peerfarm_blender/farm.py",
    ]
    assert manifest["id"] == "peerfarm_blender" and manifest["type"] == "add-on"
    assert "bl_info = {" in init  # the legacy form for Blenders before 4.2
