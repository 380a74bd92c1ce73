"""Renderer process groups written down on disk and ended after a kill -9 of the daemon."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psutil

from peerfarm.renderers.groups import ProcessGroups


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def _gone(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.02)
    return False


def test_a_restart_ends_the_groups_a_killed_daemon_left_running(tmp_path: Path) -> None:
    path = tmp_path / "renders.pids"
    left, finished, recycled = _sleeper(), _sleeper(), _sleeper()
    try:
        before = ProcessGroups(path)  # the daemon's first life
        for proc in (left, finished):
            before.started(proc.pid)
        before.ended(finished.pid)  # this render ended normally
        # A pid written down, then recycled by another program (another start time).
        with path.open("a") as fh:
            fh.write(json.dumps({"pid": recycled.pid, "created": 12345.0}) + "\n")
        after = ProcessGroups(path)  # the next life, after a kill -9
        assert after.reap_previous() == 1
        assert _gone(left)
        assert finished.poll() is None and recycled.poll() is None
        assert after.reap_previous() == 0  # nothing left to end
    finally:
        for proc in (left, finished, recycled):
            proc.kill()
            proc.wait()


def test_the_file_stays_small(tmp_path: Path) -> None:
    groups = ProcessGroups(tmp_path / "renders.pids")
    proc = _sleeper()
    try:
        for _ in range(3000):
            groups.started(proc.pid)
            groups.ended(proc.pid)
        assert len((tmp_path / "renders.pids").read_text().splitlines()) < 2100
    finally:
        proc.kill()
        proc.wait()


def test_groups_written_by_an_older_version_or_spawned_long_ago(tmp_path: Path) -> None:
    """A line of an older version (the leader's own start time) is ended like one of this
    version; a pid written down as spawned minutes ago now leads another program: left alone."""
    path = tmp_path / "renders.pids"
    old, recycled = _sleeper(), _sleeper()
    try:
        created = psutil.Process(old.pid).create_time()
        lines = [
            {"pid": old.pid, "created": created},
            {"pid": recycled.pid, "spawned": time.time() - 300},
        ]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        assert ProcessGroups(path).reap_previous() == 1
        assert _gone(old) and recycled.poll() is None
    finally:
        for proc in (old, recycled):
            proc.kill()
            proc.wait()
