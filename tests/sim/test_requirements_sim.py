"""Job requirements on the simulated farm (issue 18): real nodes, fake renderers, virtual time.

A job submitted with ``require=("gpu",)`` renders only on the peer whose metadata carries the
tag, to the end, with every frame delivered; a peer that advertises it predates requirements
(no ``req`` in its metadata) is named in the submit's warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio.testing

from peerfarm.control import SubmitRequest
from peerfarm.farm import Farm
from peerfarm.testing import SimFarm, SimPeer


def advertise(peer: SimPeer, *, tags: tuple[str, ...] = (), **meta: Any) -> None:
    """Change what ``peer`` tells the farm about itself (as a restart with new flags would)."""
    peer.node.parts.tags = tags
    peer.node.parts.extra_meta.update(meta)
    peer.node.membership.update_meta(peer.node.meta(), peer.node.now())


async def test_a_required_tag_keeps_the_job_on_tagged_peers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm = SimFarm(tmp_path / "sim", seed=11)
    async with farm.running():
        gpu, plain, old = await farm.start(3)
        advertise(gpu, tags=("gpu",))
        advertise(old, req=0)  # what a peer from before requirements advertises (no ``req``)

        def everyone_sees_it() -> bool:
            for peer in farm.live():
                metas = {m.node_id: m.meta for m in peer.node.members()}
                if metas[gpu.node_id].get("tags") != ["gpu"] or metas[old.node_id].get("req"):
                    return False
            return True

        await farm.wait_until(everyone_sees_it, timeout=30, what="new metadata everywhere")
        scene = farm.root / "job.sh"
        scene.write_text("#!/bin/sh\n")
        scene.chmod(0o755)
        request = SubmitRequest(
            scene=scene, frames="1-12", renderer="command", cwd=farm.root, require=("gpu",)
        )
        answer = await Farm(plain.node).submit(request)
        job = answer["job"]
        farm.submitters[job] = plain.node_id
        assert answer["capable_peers"] == 1
        assert answer["warning"] == (
            f"{old.name} run an older peerfarm that ignores job requirements and may render "
            "this job: upgrade them"
        )
        await farm.wait_until(lambda: farm.job_finished(job), timeout=120, what="job finished")
        assert {r.node for r in farm.log.completed(job)} == {gpu.node_id}
        assert farm.log.duplicates() == {}
