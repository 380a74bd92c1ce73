"""The warm worker inside an installed Blender program (Debian's 3.4 on PATH), for real.

Every test here uses the Blender program (``needs_blender_cli``) with tiny Cycles scenes that
program saves itself: one warm ``blender -b --python blender_worker.py`` per renderer instance
renders the frames it is given, is restarted when it dies, is killed when its render is
cancelled (what a lost claim does), and a program whose worker cannot start renders a process
per frame instead. Split-still tiles render through both paths and stitch into the frame.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path

import pytest
import trio
from PIL import Image, ImageChops, ImageStat

from peerfarm.renderers.base import Progress, RenderFailed
from peerfarm.renderers.blender import WORKER_SCRIPT, BlenderRenderer
from peerfarm.renderers.tiles import stitch
from tests.support.blends import make_cube_scene
from tests.support.renderers import make_task, needs_blender_cli, pid_gone

pytestmark = needs_blender_cli


def _ignore(progress: Progress) -> None:
    pass


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _difference(a: Path, b: Path) -> float:
    return float(sum(ImageStat.Stat(ImageChops.difference(_rgb(a), _rgb(b))).mean) / 3)


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [part.decode() for part in f.read().split(b"\0") if part]


async def test_the_program_worker_renders_frames_in_one_warm_process(tmp_path: Path) -> None:
    scene = make_cube_scene(tmp_path / "cube.blend")
    renderer = BlenderRenderer(mode="cli")
    seen: list[Progress] = []
    try:
        with trio.fail_after(180):
            outputs = []
            for frame in (1, 5, 10):
                task = make_task(tmp_path, scene, (frame,), name=f"o{frame}")
                result = await renderer.render(task, on_progress=seen.append)
                [path] = result.outputs[frame]
                assert path == task.output_dir / f"frame_{frame:04d}.png"
                outputs.append(path)
                if frame == 1:
                    pid = renderer.worker_pid
                    assert pid is not None
                    argv = _cmdline(pid)
                    assert argv[0] == shutil.which("blender") and str(WORKER_SCRIPT) in argv
                assert renderer.worker_pid == pid  # one process for every frame
            chunk = await renderer.render(
                make_task(tmp_path, scene, (2, 3), name="chunk"), on_progress=seen.append
            )
            assert sorted(chunk.outputs) == [2, 3] and renderer.worker_pid == pid
    finally:
        await renderer.aclose()
    assert all(_rgb(p).size == (64, 48) for p in outputs)
    assert _difference(outputs[0], outputs[2]) > 0.5  # the cube moved
    assert {p.frame for p in seen} >= {1, 5, 10}
    assert pid_gone(pid)  # aclose ends it


async def test_a_killed_program_worker_is_restarted(tmp_path: Path) -> None:
    scene = make_cube_scene(tmp_path / "cube.blend")
    slow = make_cube_scene(tmp_path / "slow.blend", samples=100_000, size=(160, 120))
    renderer = BlenderRenderer(mode="cli")
    try:
        with trio.fail_after(240):
            await renderer.render(make_task(tmp_path, scene, (1,), name="a"), on_progress=_ignore)
            first = renderer.worker_pid
            assert first is not None
            os.killpg(first, signal.SIGKILL)  # between renders
            while renderer._worker is not None and renderer._worker.alive:
                await trio.sleep(0.01)  # gone (the next render finds it dead)
            result = await renderer.render(
                make_task(tmp_path, scene, (2,), name="b"), on_progress=_ignore
            )
            assert result.outputs[2][0].is_file()
            second = renderer.worker_pid
            assert second is not None and second != first and pid_gone(first)

            # During a render: that render fails saying so, the next one gets a new worker.
            killed = trio.Event()

            def kill_once(progress: Progress) -> None:
                if not killed.is_set() and renderer.worker_pid is not None:
                    killed.set()
                    os.killpg(renderer.worker_pid, signal.SIGKILL)

            with pytest.raises(RenderFailed, match="the Blender worker exited"):
                await renderer.render(
                    make_task(tmp_path, slow, (1,), name="c"), on_progress=kill_once
                )
            assert killed.is_set()
            result = await renderer.render(
                make_task(tmp_path, scene, (3,), name="d"), on_progress=_ignore
            )
            assert result.outputs[3][0].is_file()
            assert renderer.worker_pid not in (None, first, second)
    finally:
        await renderer.aclose()


async def test_a_cancelled_render_kills_the_program_worker(tmp_path: Path) -> None:
    """What a lost claim does: the daemon cancels the render's scope; the worker's whole
    process group ends at once, and the next render starts a fresh worker."""
    scene = make_cube_scene(tmp_path / "cube.blend")
    slow = make_cube_scene(tmp_path / "slow.blend", samples=100_000, size=(160, 120))
    renderer = BlenderRenderer(mode="cli")
    try:
        with trio.fail_after(240):
            await renderer.render(make_task(tmp_path, scene, (1,), name="a"), on_progress=_ignore)
            pid = renderer.worker_pid
            assert pid is not None
            with trio.CancelScope() as scope:

                def lose_claim(progress: Progress) -> None:
                    if progress.frame == 4:
                        scope.cancel()

                await renderer.render(
                    make_task(tmp_path, slow, (4,), name="b"), on_progress=lose_claim
                )
            assert scope.cancelled_caught  # it was rendering when the claim went
            assert pid_gone(pid) and renderer.worker_pid is None
            # No frame file is asserted: on a quiet machine Cycles' adaptive sampling may end
            # the cube before the first (throttled) progress event, and then the frame is saved
            # before the cancel; the ledger's claim, not the file, fences a lost frame.
            result = await renderer.render(
                make_task(tmp_path, scene, (2,), name="c"), on_progress=_ignore
            )
            assert result.outputs[2][0].is_file() and renderer.worker_pid not in (None, pid)
    finally:
        await renderer.aclose()


async def test_a_program_whose_worker_cannot_start_renders_a_process_per_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.which("blender")
    assert real is not None
    wrapper = tmp_path / "bin" / "blender"
    wrapper.parent.mkdir()
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = --python ] && { echo "no Python here" >&2; exit 7; }; done\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    scene = make_cube_scene(tmp_path / "cube.blend")
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    renderer = BlenderRenderer(mode="cli", standard=False)  # the wrapper: first on PATH
    caplog.set_level(logging.WARNING, logger="peerfarm")
    with trio.fail_after(180):
        await renderer.detect()
        assert renderer.installs is not None
        assert [i.path for i in renderer.installs] == [str(wrapper)]
        for frame in (1, 2):
            result = await renderer.render(
                make_task(tmp_path, scene, (frame,), name=f"o{frame}"), on_progress=_ignore
            )
            assert result.outputs[frame][0].is_file()
            assert renderer.worker_pid is None
    warnings = [r.getMessage() for r in caplog.records if "did not start" in r.getMessage()]
    assert len(warnings) == 1  # said once, not per frame
    assert str(wrapper) in warnings[0] and "exited (status 7)" in warnings[0]


async def test_tiles_from_both_paths_stitch_into_the_frame(tmp_path: Path) -> None:
    scene = make_cube_scene(tmp_path / "still.blend", size=(67, 51))
    warm, cold = BlenderRenderer(mode="cli"), BlenderRenderer(mode="cli", warm=False)
    options = {"tiles": 4, "tile_frame": 7}
    try:
        with trio.fail_after(240):
            whole = await cold.render(
                make_task(tmp_path, scene, (7,), name="whole"), on_progress=_ignore
            )
            tiles = {}
            for index in (1, 2, 3, 4):  # alternate: any peer may render any tile
                renderer = warm if index % 2 else cold
                task = make_task(tmp_path, scene, (index,), name=f"t{index}", options=options)
                result = await renderer.render(task, on_progress=_ignore)
                [tiles[index]] = result.outputs[index]
                assert tiles[index].name == f"tile_{index:04d}.png"
            assert warm.worker_pid is not None and cold.worker_pid is None
    finally:
        await warm.aclose()
    stitched = tmp_path / "frame_0007.png"
    assert stitch([tiles[i] for i in (1, 2, 3, 4)], stitched) == (67, 51)
    difference = ImageChops.difference(_rgb(stitched), _rgb(whole.outputs[7][0]))
    assert max(high for _low, high in difference.getextrema()) <= 8  # Cycles' float noise
    assert sum(ImageStat.Stat(difference).mean) / 3 < 1.0
