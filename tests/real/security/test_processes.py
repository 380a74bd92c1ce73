"""What runs, and that nothing outlives it (issue 10), on real daemons on 127.0.0.1.

A command job whose script starts a grandchild ``sleep 1000`` and then sleeps itself: cancelling
the job, or stopping the daemon with SIGTERM, must leave neither process running (the renderer's
process group is killed). The flags that gate code execution are checked on the node too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from peerfarm.ledger.model import SceneRef
from peerfarm.renderers.base import RenderTask
from peerfarm.testing import FakeRenderer, SimFarm
from tests.integration.farmhand import Farmhand, wait_until

SPAWNER = """#!/bin/sh
sleep 1000 &
echo $! > "{pids}/grandchild-$PEERFARM_FRAME"
echo $$ > "{pids}/child-$PEERFARM_FRAME"
sleep 1000
"""


def running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


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


def test_cancel_kills_the_script_and_its_grandchild(farm: Farmhand, tmp_path: Path) -> None:
    scene, pids = _spawner(tmp_path)
    daemon = farm.start("a", "--allow-command")
    job = daemon.json("submit", str(scene), "1", "--renderer", "command")["job"]
    procs = wait_until(lambda: _started(pids), 30, "script and grandchild running")
    daemon.cli("cancel", job)
    wait_until(lambda: not any(running(p) for p in procs), 10, "no process left after cancel")
    assert daemon.alive()


def test_daemon_sigterm_kills_the_script_and_its_grandchild(farm: Farmhand, tmp_path: Path) -> None:
    scene, pids = _spawner(tmp_path)
    daemon = farm.start("a", "--allow-command")
    daemon.json("submit", str(scene), "1", "--renderer", "command")
    procs = wait_until(lambda: _started(pids), 30, "script and grandchild running")
    assert daemon.stop(timeout=15) == 0
    survivors = [p for p in procs if running(p)]
    for pid in survivors:  # clean up before failing
        os.kill(pid, 9)
    assert survivors == []


def test_command_jobs_wait_for_an_allow_command_peer(farm: Farmhand, tmp_path: Path) -> None:
    scene, pids = _spawner(tmp_path)
    daemon = farm.start("a")  # no --allow-command
    job = daemon.json("submit", str(scene), "1", "--renderer", "command")["job"]
    status = daemon.status()
    assert "command" not in status["peers"][0].get("renderers", {})
    time.sleep(2)
    assert not list(pids.iterdir())
    (frame,) = daemon.status(job)["frames"]
    assert frame["state"] == "pending"


@pytest.mark.parametrize(
    ("job_allows", "peer_allows", "expected"),
    [(False, False, False), (True, False, False), (False, True, False), (True, True, True)],
)
async def test_python_in_a_scene_runs_only_where_job_and_peer_both_allow_it(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    job_allows: bool,
    peer_allows: bool,
    expected: bool,
) -> None:
    """The RenderTask a blender renderer receives carries allow_scripts = job AND peer."""
    seen: list[RenderTask] = []

    class Recording(FakeRenderer):
        name = "blender"

        async def render(self, task: RenderTask, *, on_progress):  # type: ignore[no-untyped-def]
            seen.append(task)
            return await super().render(task, on_progress=on_progress)

    # The job is written straight into the ledger, not submitted here: never delivered.
    farm = SimFarm(tmp_path, seed=31, renderer_seconds=0.1, invariants="converged")
    async with farm.running():
        (peer,) = await farm.start(1)
        peer.node.parts.renderers = {"blender": Recording(peer.node_id, farm.log)}
        peer.node.parts.allow_scripts = peer_allows
        peer.node.parts.allow_command = False
        meta = {**peer.node.meta(), "renderers": {"blender": "4.5"}}
        peer.node.membership.update_meta(meta, trio.current_time())
        scene = tmp_path / "scene.blend"
        scene.write_bytes(b"BLENDER-v405 not really")
        digest = bytes.fromhex(peer.node.store.put_file(scene))
        spec = peer.node.ledger.new_job(
            name="py",
            submitter_name="p",
            renderer="blender",
            options={"allow_scripts": True} if job_allows else {},
            scene=SceneRef(digest, "scene.blend", scene.stat().st_size),
            frames=[1],
            wall_ms=farm.wall_ms(),
        )
        await peer.node.write(lambda ledger, wall: ledger.submit(spec))
        await farm.wait_until(lambda: bool(seen), timeout=30, what="render started")
    assert seen[0].allow_scripts is expected
