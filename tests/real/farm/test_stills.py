"""Issue 18 with real daemons: a still split into tiles across peers, stitched on the submitter;
and the warm program worker of a peer that lost its claim is stopped.

Uses the Blender program on PATH (Debian's 3.4) through its warm worker: both peers run a
Python that cannot import bpy, so the program renders every tile. The scene is a tiny Cycles
cube with the default fixed seed and no denoising, so the stitched image equals the frame that
one peer renders whole, up to Cycles' float noise.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from PIL import Image, ImageChops, ImageStat

from peerfarm.testing.daemons import (
    PEERFARM_WITHOUT_BPY,
    Daemon,
    LocalFarm,
    descendants,
    wait_until,
)
from tests.support.blends import make_cube_scene
from tests.support.renderers import needs_blender_cli, pid_gone


def _rgba(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGBA")


@needs_blender_cli
def test_a_four_tile_still_equals_the_frame_rendered_whole(farm: LocalFarm, tmp_path: Path) -> None:
    a = farm.start("a", slots=1, launcher=PEERFARM_WITHOUT_BPY)
    b = farm.start("b", join=a, slots=1, launcher=PEERFARM_WITHOUT_BPY)
    wait_until(lambda: a.alive_names() == {"a", "b"}, 20, "farm formed")
    scene = make_cube_scene(tmp_path / "still.blend", samples=8, size=(96, 72))

    # A bad split is refused at submit, in one line.
    refused = a.cli("submit", str(scene), "1-2", "--tiles", "4", check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "one frame number" in refused.stderr
    refused = a.cli("submit", str(scene), "7", "--tiles", "1", check=False)
    assert refused.returncode == 2 and "from 2 to 256" in refused.stderr

    # The tiles first, while both peers are idle: each takes its own home tiles at once (the
    # whole frame first could keep one peer busy while the other took every tile).
    tiled_out = tmp_path / "tiled"
    answer = a.cli_json("submit", str(scene), "7", "--tiles", "4", "--output", str(tiled_out))
    tiled = answer["job"]
    assert answer["frames"] == 4
    whole_out = tmp_path / "whole"
    whole = a.cli_json("submit", str(scene), "7", "--output", str(whole_out))["job"]

    wait_until(lambda: a.job(whole)["frames_delivered"] == 1, 180, "the whole frame")
    wait_until(lambda: a.job(tiled)["frames_delivered"] == 4, 180, "every tile")
    image = tiled_out / "frame_0007.png"
    wait_until(image.is_file, 30, "the stitched image")

    assert sorted(p.name for p in tiled_out.iterdir()) == ["frame_0007.png"]  # no tiles left
    status = a.status(tiled)
    view = status["jobs"][0]
    assert view["tiles"] == 4 and view["tile_frame"] == 7 and view["state"] == "done"
    peers = {tile["peer"] for tile in status["frames"]}
    assert peers == {"a", "b"}, status["frames"]  # tiles rendered by both peers
    assert [t["outputs"][0]["name"] for t in status["frames"]] == [
        f"tile_{i:04d}.png" for i in (1, 2, 3, 4)
    ]

    stitched, reference = _rgba(image), _rgba(whole_out / "frame_0007.png")
    assert stitched.size == reference.size == (96, 72)
    difference = ImageChops.difference(stitched, reference)
    assert max(high for _low, high in difference.getextrema()) <= 8
    assert sum(ImageStat.Stat(difference).mean) / 4 < 1.0

    shown = " ".join(b.cli("status", tiled).stdout.split())
    assert "4/4 tiles" in shown and "Tiles of frame 7 (4 of 4 shown)" in shown
    assert "stitched 4 tiles" in a.log()
    assert json.loads(a.cli("status", "--json").stdout)["jobs"]  # the farm view still works


def _worker_of(daemon: Daemon) -> int | None:
    """The pid of the warm program worker a daemon runs, if any."""
    for pid in descendants(daemon.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"blender_worker.py") for part in cmdline) and not pid_gone(pid):
            return pid
    return None


@needs_blender_cli
def test_a_lost_claim_stops_the_warm_program_worker(farm: LocalFarm, tmp_path: Path) -> None:
    """The peer rendering a long frame is frozen (SIGSTOP) until the other peer takes the frame
    over; thawed, it learns the frame is not its own any more and kills its warm worker."""
    a = farm.start("a", slots=1, launcher=PEERFARM_WITHOUT_BPY)
    b = farm.start("b", join=a, slots=1, launcher=PEERFARM_WITHOUT_BPY)
    wait_until(lambda: a.alive_names() == {"a", "b"}, 20, "farm formed")
    slow = make_cube_scene(tmp_path / "slow.blend", samples=1_000_000, size=(160, 120))
    job = a.cli_json("submit", str(slow), "3")["job"]
    by_name = {"a": a, "b": b}

    def owner() -> str | None:
        [frame] = a.status(job)["frames"]
        return frame["peer"] if frame["state"] == "rendering" else None

    first = by_name[wait_until(owner, 60, "a peer to claim the frame")]
    other = b if first is a else a
    worker = wait_until(lambda: _worker_of(first), 60, "its warm worker")
    first.signal(signal.SIGSTOP)
    try:

        def taken_over() -> bool:
            [frame] = other.status(job)["frames"]
            return frame["state"] == "rendering" and frame["peer"] == other.name

        wait_until(taken_over, 60, "the other peer to take the frame over")
        assert not pid_gone(worker)  # the frozen peer's worker still renders
    finally:
        first.signal(signal.SIGCONT)
    wait_until(lambda: pid_gone(worker), 30, "the worker of the lost claim to end")
    wait_until(lambda: "another peer owns it" in first.log(), 10, "the reason in the log")
    other.cli("cancel", job)
