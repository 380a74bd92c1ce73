"""The content store's disk budget (--store-limit) and a full disk (issue 10).

A renderer peer with a store limit evicts what no live job needs before it stores or fetches;
when room cannot be made, or the disk itself is full (a real 1 MiB tmpfs), the frame that hit it
fails with a clear error in the ledger, the node keeps running, and the next attempt works.
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
from peerfarm.testing import SimFarm, SimPeer, expected_output, output_files


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
        assert renderer.node.ledger.job_state(jobs[-1]) == JobState.DONE
    for name, job in zip(("first", "second", "third"), jobs, strict=True):
        assert output_files(tmp_path / "out" / name) == {
            f"frame_{f:04d}.txt": expected_output(job, f) for f in (1, 2, 3)
        }


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


async def test_full_disk_fails_the_frame_and_the_next_attempt_works(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, tiny_disk: Path
) -> None:
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
        await farm.wait_until(
            lambda: ledger.job_state(job) == JobState.FAILED, timeout=60, what="failed"
        )
        error = ledger.frame(job, 1).error
        assert "No space left on device" in error, error
        assert not renderer.done.is_set()
        filler.unlink()  # the user frees some space
        await Farm(submitter.node).act(job, "retry")
        await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="retried")
        assert ledger.job_state(job) == JobState.DONE
        # The ledger is healthy on both sides: same state everywhere.
        await farm.wait_until(farm.converged, timeout=30, what="converged")
    assert output_files(tmp_path / "out" / "full") == {"frame_0001.txt": expected_output(job, 1)}
