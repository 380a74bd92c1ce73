"""What runs, and that nothing outlives it (issue 10), on real daemons on 127.0.0.1.

A command job whose script starts a grandchild ``sleep 1000`` and then sleeps itself: cancelling
the job, or stopping the daemon with SIGTERM, must leave neither process running (the renderer's
process group is killed). Command jobs wait for a peer started with ``--allow-command``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from peerfarm.testing.daemons import LocalFarm, wait_until
from tests.support.renderers import pid_running

SPAWNER = """#!/bin/sh
sleep 1000 &
echo $! > "{pids}/grandchild-$PEERFARM_FRAME"
echo $$ > "{pids}/child-$PEERFARM_FRAME"
sleep 1000
"""


def running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    return pid_running(pid)


def _spawner(tmp_path: Path) -> tuple[Path, Path]:
    pids = tmp_path / "pids"
    pids.mkdir()
    scene = tmp_path / "spawner.sh"
    scene.write_text(SPAWNER.format(pids=pids))
    scene.chmod(0o755)
    return scene, pids


def _started(pids: Path) -> list[int]:
    files = [pids / "child-1", pids / "grandchild-1"]
    if not all(f.exists() and f.read_text().strip() for f in files):
        return []
    found = [int(f.read_text()) for f in files]
    return found if all(running(p) for p in found) else []


def test_cancel_kills_the_script_and_its_grandchild(farm: LocalFarm, tmp_path: Path) -> None:
    scene, pids = _spawner(tmp_path)
    daemon = farm.start("a", "--allow-command")
    job = daemon.cli_json("submit", str(scene), "1", "--renderer", "command")["job"]
    procs = wait_until(lambda: _started(pids), 30, "script and grandchild running")
    daemon.cli("cancel", job)
    wait_until(lambda: not any(running(p) for p in procs), 10, "no process left after cancel")
    assert daemon.alive()


def test_daemon_sigterm_kills_the_script_and_its_grandchild(
    farm: LocalFarm, tmp_path: Path
) -> None:
    scene, pids = _spawner(tmp_path)
    daemon = farm.start("a", "--allow-command")
    daemon.cli_json("submit", str(scene), "1", "--renderer", "command")
    procs = wait_until(lambda: _started(pids), 30, "script and grandchild running")
    assert daemon.stop(timeout=15) == 0
    survivors = [p for p in procs if running(p)]
    for pid in survivors:  # clean up before failing
        os.kill(pid, 9)
    assert survivors == []


def test_command_jobs_wait_for_an_allow_command_peer(farm: LocalFarm, tmp_path: Path) -> None:
    scene, pids = _spawner(tmp_path)
    daemon = farm.start("a")  # no --allow-command
    job = daemon.cli_json("submit", str(scene), "1", "--renderer", "command")["job"]
    status = daemon.status()
    assert "command" not in status["peers"][0].get("renderers", {})
    time.sleep(2)
    assert not list(pids.iterdir())
    (frame,) = daemon.status(job)["frames"]
    assert frame["state"] == "pending"
