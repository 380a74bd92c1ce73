"""Python inside a scene runs only where the job and the peer both allow it (issue 10): a simulated
peer, the RenderTask its renderer receives."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from peerfarm.ledger.model import SceneRef
from peerfarm.renderers.base import RenderTask
from peerfarm.testing import FakeRenderer, SimFarm


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
