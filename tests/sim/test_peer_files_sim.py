"""What a peer keeps on disk and what it does with it (issue 17, items 5, 6 and 11; issue 16).

Simulated farms (real nodes, real files, virtual time): per-slot scratch with one copy of the
scene per job, work folders removed when the job ends and counted against the store limit, old
uploads removed, a planted symlink in the output folder, a submitter restarted before it fetched
its frames, and an exception inside each real renderer plugin.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from peerfarm.ledger.model import JobState
from peerfarm.peer.blobs import UPLOADS, folder_bytes
from peerfarm.renderers import BlenderRenderer, CommandRenderer, PovrayRenderer
from peerfarm.renderers.base import Progress, Renderer, RenderResult, RenderTask, frame_stem
from peerfarm.testing import SimFarm, output_files
from peerfarm.testing.fakes import FakeRenderer, RenderLog


async def test_two_slots_share_one_copy_of_the_scene(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """With --slots 2 both slots start on one job at once; the scene is fetched and placed
    once (it used to be copied by both to the same partial file, failing one frame)."""
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=51, renderer_seconds=0.2, slots=2)
        scene = tmp_path / "render.sh"  # a scene of some size: copying it takes a while
        scene.write_text("#!/bin/sh\n" + "# padding\n" * 3_000_000)
        async with farm.running():
            submitter, renderer = await farm.start(2, renderers=1)
            job = await farm.submit(renderer, "1-20")
            await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="done")
            ledger = submitter.node.ledger
            assert ledger.attempts_of_job(job) == []  # not one failed attempt
            assert ledger.job_state(job) == JobState.DONE
            starts = sorted(r.started for r in farm.log.of_job(job))
            assert any(b - a < 0.01 for a, b in itertools.pairwise(starts))


async def test_work_folders_go_when_the_job_ends_and_count_against_the_limit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=52, renderer_seconds=0.2)
        async with farm.running():
            renderer, submitter = await farm.start(2, renderers=1)
            job = await farm.submit(submitter, "1-4")
            work = renderer.node.work_dir / job
            await farm.wait_until(work.is_dir, timeout=30, what="work folder")
            await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="done")
            await farm.wait_until(lambda: not work.exists(), timeout=30, what="work removed")
            # Scratch counts against --store-limit: a limit below it refuses to make room.
            scratch = renderer.node.work_dir / "leftover"
            scratch.mkdir()
            (scratch / "big").write_bytes(b"x" * 5000)
            assert folder_bytes(renderer.node.work_dir) >= 5000
            renderer.node.store.limit_bytes = 4000
            with pytest.raises(Exception, match="store limit"):
                await renderer.node.blobs.make_room(10)
            renderer.node.store.limit_bytes = None


async def test_old_uploads_and_videos_of_archived_jobs_are_removed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=53)
        async with farm.running():
            (peer,) = await farm.start(1)
            uploads = peer.node.data_dir / UPLOADS
            old = uploads / "upload-0123456789abcdef"
            fresh = uploads / "upload-fedcba9876543210"
            for folder in (old, fresh):
                folder.mkdir(parents=True)
                (folder / "scene.pov").write_text("sphere {}")
            hour_ago = time.time() - 7200
            os.utime(old, (hour_ago, hour_ago))
            (uploads / "videos").mkdir()
            orphan = uploads / "videos" / "0123456789abcdef.mp4"
            orphan.write_bytes(b"old video")
            await peer.node.blobs.tidy()
            await farm.wait_until(lambda: not orphan.exists(), timeout=5, what="video removed")
            assert not old.exists() and fresh.exists()


async def test_a_symlink_planted_in_the_output_folder_is_never_written_through(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The frame goes to ``frame_0002 (2).txt`` at once; the link and its target stay."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "submit" / "peerfarm-out" / "render"
    out.mkdir(parents=True)
    (out / "frame_0002.txt").symlink_to(victim)
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=54, renderer_seconds=0.2)
        async with farm.running():
            submitter, _ = await farm.start(2)
            job = await farm.submit(submitter, "1-3")
            await farm.wait_until(lambda: farm.job_finished(job), timeout=20, what="delivered")
            expected = farm.expected_files(job)
    assert victim.read_text() == "precious\n"
    assert (out / "frame_0002.txt").is_symlink()
    files = output_files(out)
    assert files["frame_0002 (2).txt"] == expected["frame_0002.txt"]
    assert files["frame_0001.txt"] == expected["frame_0001.txt"]


async def test_a_submitter_restarted_before_fetching_renders_nothing_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Frames the submitter knew were done but had not fetched when it died are fetched from
    their renderers when it comes back: a restarted peer that knows nobody yet must not take
    them for lost and render them again."""
    out = tmp_path / "submit" / "peerfarm-out" / "render"
    out.parent.mkdir(parents=True)
    out.write_text("not a folder yet")  # delivery fails until the user fixes this
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=55, renderer_seconds=0.2)
        async with farm.running():
            submitter = await farm.add_peer(renderer=False, name="submitter")
            for index in range(3):
                await farm.add_peer(seeds=[submitter.address], name=f"renderer{index}")
            await farm.wait_until(farm.membership_converged, timeout=30, what="membership")
            job = await farm.submit(submitter, "1-12")
            await farm.wait_until(
                lambda: submitter.node.ledger.counts(job).done == 12, timeout=60, what="done"
            )
            await trio.sleep(1.0)  # saved on the submitter's disk, still undelivered
            assert not any(submitter.node.ledger.delivered(job, f) for f in range(1, 13))
            farm.crash(submitter.node_id)
            out.unlink()
            await farm.restart(submitter.node_id)
            await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="delivered")
            counts: dict[int, int] = {}
            for render in farm.log.completed(job):
                counts[render.frame] = counts.get(render.frame, 0) + 1
            assert counts == {frame: 1 for frame in range(1, 13)}


class _Broken:
    """Wraps a real renderer plugin so that its render raises an unexpected exception."""

    def __init__(self, inner: Renderer) -> None:
        self.inner = inner

    async def render(self, task: object, *, on_progress: object) -> object:
        raise ValueError(f"injected into {self.inner.name}")


@pytest.mark.parametrize("plugin", [CommandRenderer, PovrayRenderer, BlenderRenderer])
async def test_an_exception_inside_any_renderer_fails_the_frame_not_the_daemon(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, plugin: type[Renderer]
) -> None:
    with trio.fail_after(60):
        farm = SimFarm(tmp_path, seed=56, renderer_seconds=0.1)
        async with farm.running():
            (peer,) = await farm.start(1)
            broken = plugin()
            broken.render = _Broken(broken).render  # type: ignore[method-assign,assignment]
            peer.node.parts.renderers["command"] = broken
            job = await farm.submit(peer, "1-2", retries=1)
            await farm.wait_until(
                lambda: peer.node.ledger.job_state(job) == JobState.FAILED,
                timeout=30,
                what="failed",
            )
            error = peer.node.ledger.frame(job, 1).error
            assert error == f"ValueError: injected into {plugin.name}"
            assert not peer.done.is_set()  # the node runs on
            assert peer.node.ledger.halted(job) or peer.node.ledger.counts(job).failed == 2


class _Scratchy(FakeRenderer):
    """Writes a file on frames divisible by 10, leaves an empty sub-folder on frame 15 and
    writes nothing on the others; notes each render's frames, folder and whether it was
    empty when the render began."""

    def __init__(self, node: str, log: RenderLog) -> None:
        super().__init__(node, log, seconds=0.1)
        self.renders: list[tuple[tuple[int, ...], Path, bool]] = []

    async def render(
        self, task: RenderTask, *, on_progress: Callable[[Progress], None]
    ) -> RenderResult:
        folder = task.output_dir
        self.renders.append((tuple(task.frames), folder, not any(folder.iterdir())))
        outputs: dict[int, list[Path]] = {}
        for frame in task.frames:
            await trio.sleep(0.1)
            if frame % 10 == 0:
                out = folder / f"{frame_stem(frame)}.txt"
                out.write_text(f"{frame}\n")
                outputs[frame] = [out]
            elif frame == 15:
                (folder / "left-behind").mkdir()
        return RenderResult(outputs, len(task.frames) * 0.1, "")


async def test_a_slot_reuses_the_empty_scratch_folder_of_a_frame_that_wrote_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Short frames that write no file (a simulation step, a script that writes elsewhere)
    do not make and remove a folder each: the slot keeps the empty folder for its next
    render. A folder something was left in is never handed out again."""
    with trio.fail_after(120):
        farm = SimFarm(tmp_path, seed=57, renderer_seconds=0.1)
        async with farm.running():
            (peer,) = await farm.start(1)
            scratchy = _Scratchy(peer.name, farm.log)
            peer.node.parts.renderers["command"] = scratchy
            job = await farm.submit(peer, "1-40")
            await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="done")
            assert peer.node.ledger.counts(job).done == 40
    renders = scratchy.renders
    assert sorted(f for frames, _, _ in renders for f in frames) == list(range(1, 41))
    assert all(empty for _, _, empty in renders), "a render began in a folder holding something"
    used = [folder for _, folder, _ in renders]
    assert len(set(used)) <= 10, f"{len(set(used))} scratch folders for {len(renders)} renders"
    for index, (frames, folder, _) in enumerate(renders):
        if any(f % 10 == 0 or f == 15 for f in frames):
            assert folder not in used[index + 1 :], f"{folder.name} handed out after use"
