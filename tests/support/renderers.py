"""For renderer tests: recorded logs, skips for missing programs, tasks, process checks."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import psutil
import pytest

from peerfarm.renderers.base import RenderTask
from tests.support import DATA as ALL_DATA
from tests.support import EXAMPLES

__all__ = ["DATA", "EXAMPLES", "make_task", "needs_blender_cli", "needs_bpy", "needs_ffmpeg"]

#: Recorded renderer logs.
DATA = ALL_DATA / "renderers"

needs_povray = pytest.mark.skipif(shutil.which("povray") is None, reason="povray not on PATH")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")
needs_bpy = pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None,
    reason="bpy is not importable (pip install bpy, the 'blender' extra)",
)
needs_blender_cli = pytest.mark.skipif(
    shutil.which("blender") is None, reason="no blender binary on PATH (apt-get install blender)"
)


def make_task(tmp_path: Path, scene: Path, frames: tuple[int, ...], **kw: object) -> RenderTask:
    """A task whose output and work folders live under ``tmp_path``."""
    options = kw.pop("options", {})
    name = str(kw.pop("name", "out"))
    return RenderTask(
        job_id="job-1",
        frames=frames,
        scene=scene,
        scene_name=scene.name,
        options=options,  # type: ignore[arg-type]
        output_dir=tmp_path / name,
        work_dir=tmp_path / "work",
        allow_scripts=bool(kw.pop("allow_scripts", False)),
    )


def pid_running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie waiting for its reaper is not). Asks
    psutil, which knows on Linux, macOS and Windows: a missing /proc must not make every
    process look gone (and a test that checks for leftovers pass without checking)."""
    try:
        return bool(psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD))
    except psutil.NoSuchProcess:
        return False


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting for its reaper)."""
    return not pid_running(pid)
