from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from peerfarm.control import SubmitRequest
from peerfarm.farm import Farm
from peerfarm.ledger.model import JobState
from peerfarm.testing import SimFarm


async def test_three_peers_render_a_job(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    scene = tmp_path / "render.sh"
    scene.write_text("#!/bin/sh\n")
    scene.chmod(0o755)
    with trio.fail_after(120):
        farm = SimFarm(tmp_path)
        async with farm.running():
            a = await farm.add_peer(name="a")
            b = await farm.add_peer(name="b", seeds=[a.address])
            c = await farm.add_peer(name="c", seeds=[a.address])
            await trio.sleep(3)
            assert len([m for m in a.node.members() if m.state == 0]) == 3
            facade = Farm(a.node)
            result = await facade.submit(SubmitRequest(scene=scene, frames="1-30", cwd=tmp_path))
            job = result["job"]
            while a.node.ledger.job_state(job) != JobState.DONE:
                await trio.sleep(0.5)
            while a.node.status_counts(job)["delivered"] < 30 if hasattr(a.node, "status_counts") else False:
                await trio.sleep(0.5)
            for _ in range(20):
                if len(farm.digests()) == 1:
                    break
                await trio.sleep(0.5)
            print("converged at", trio.current_time())
            assert farm.log.duplicates() == {}
            assert len(farm.digests()) == 1
            outs = sorted(p.name for p in (tmp_path / "peerfarm-out" / "render").iterdir())
            assert len(outs) == 30, outs
            by_node = {}
            for r in farm.log.completed():
                by_node[r.node] = by_node.get(r.node, 0) + 1
            print(by_node, trio.current_time())
            assert len(by_node) == 3
