"""The content store's disk budget (--store-limit) and a full disk (issue 10).

A renderer peer with a store limit evicts what no live job needs before it stores or fetches;
when room cannot be made the frame that hit it fails with a clear error in the ledger, the node
keeps running, and the next attempt works; when the disk itself is full (a real 1 MiB tmpfs)
the peer hands the frame back, says why it takes no work, and recovers once space is freed.
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from peerfarm.control import SubmitRequest
from peerfarm.farm import Farm
from peerfarm.ledger.model import JobState
from peerfarm.testing import SimFarm, SimPeer, output_files


async def _submit(peer: SimPeer, root: Path, name: str, frames: str, retries: int = 3) -> str:
    scene = root / f"{name}.sh"
    scene.write_text(f"#!/bin/sh\n# {name}\n")
    request = SubmitRequest(
        scene=scene,
        frames=frames,
        renderer="command",
        name=name,
        output=root / "out" / name,
        retries=retries,
        cwd=root,
    )
    return str((await Farm(peer.node).submit(request))["job"])


async def test_lru_eviction_keeps_a_renderer_under_its_store_limit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm = SimFarm(tmp_path, seed=21, renderer_seconds=0.2)
    async with farm.running():
        submitter = await farm.add_peer(renderer=False, name="submitter")
        renderer = await farm.add_peer(seeds=[submitter.address], name="renderer")
        await farm.wait_until(farm.membership_converged, timeout=30, what="membership")
        limit = 130
        renderer.node.store.limit_bytes = limit
        jobs = []
        for name in ("first", "second", "third"):
            job = await _submit(submitter, tmp_path, name, "1-3")
            await farm.wait_until(functools.partial(farm.job_finished, job), timeout=60, what=name)
            assert renderer.node.store.usage() <= limit
            jobs.append(job)
            assert sorted(output_files(tmp_path / "out" / name)) == [
                f"frame_{f:04d}.txt" for f in (1, 2, 3)
            ]
        assert renderer.node.ledger.job_state(jobs[-1]) == JobState.DONE
        farm.check_invariants()  # every delivered file holds the bytes the ledger names


async def test_store_limit_too_small_fails_the_frame_clearly_and_the_node_recovers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm = SimFarm(tmp_path, seed=22, renderer_seconds=0.2)
    async with farm.running():
        submitter = await farm.add_peer(renderer=False, name="submitter")
        renderer = await farm.add_peer(seeds=[submitter.address], name="renderer")
        await farm.wait_until(farm.membership_converged, timeout=30, what="membership")
        renderer.node.store.limit_bytes = 30  # the scene fits, a scene plus an output does not
        job = await _submit(submitter, tmp_path, "tight", "1", retries=1)
        ledger = submitter.node.ledger
        await farm.wait_until(
            lambda: ledger.job_state(job) == JobState.FAILED, timeout=60, what="failed"
        )
        assert "store limit" in ledger.frame(job, 1).error
        assert not renderer.done.is_set()  # the daemon is still up
        renderer.node.store.limit_bytes = 10_000  # the operator raises --store-limit
        await Farm(submitter.node).act(job, "retry")
        await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="retried")
        assert ledger.job_state(job) == JobState.DONE


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs at the renderer's store (root only; skipped elsewhere)."""
    mount = tmp_path / "renderer" / "store"
    mount.mkdir(parents=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_is_the_peers_problem_not_the_frames_and_it_recovers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, tiny_disk: Path
) -> None:
    """A renderer whose disk fills hands the frame back (no failed attempt, no ban), says so in
    its metadata (every peer's status shows why it takes nothing), and takes work again once
    space is freed, without the user retrying anything."""
    farm = SimFarm(tmp_path, seed=23, renderer_seconds=0.2)
    async with farm.running():
        submitter = await farm.add_peer(renderer=False, name="submitter")
        renderer = await farm.add_peer(seeds=[submitter.address], name="renderer")
        await farm.wait_until(farm.membership_converged, timeout=30, what="membership")
        filler = tiny_disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk to the last byte
            while os.write(fd, b"\0" * 512):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        job = await _submit(submitter, tmp_path, "full", "1", retries=1)
        ledger = submitter.node.ledger

        def problem_seen() -> str:
            member = submitter.node.membership.get(renderer.node_id)
            return str(member.meta.get("problem", "")) if member else ""

        await farm.wait_until(lambda: "disk full" in problem_seen(), timeout=60, what="problem")
        assert "No space left on device" in problem_seen()
        assert ledger.job_state(job) == JobState.ACTIVE
        assert ledger.attempts(job, 1) == [] and ledger.banned(job) == {}
        assert not renderer.done.is_set()
        filler.unlink()  # the user frees some space
        await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="recovered")
        assert ledger.job_state(job) == JobState.DONE
        assert problem_seen() == ""
        await farm.wait_until(farm.converged, timeout=30, what="converged")
        farm.check_invariants()
    assert sorted(output_files(tmp_path / "out" / "full")) == ["frame_0001.txt"]
