"""Issue 14 with real daemons: every Blender a peer has, and a job no peer can open says why.

``test_each_scene_renders_with_a_blender_that_opens_it`` uses both the Blender program on PATH
(Debian's 3.4, which ``./dev test`` installs as root) and bpy 5 (the ``blender`` extra): one
peer has both, the other only the program (its Python is made unable to import bpy, like a
Python without a bpy wheel). The waiting-reason test needs no Blender at all: its scene claims
Blender 9.0 saved it, which no peer can open (or the peers have no Blender).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from PIL import Image

from peerfarm.testing.daemons import PEERFARM, PEERFARM_WITHOUT_BPY, LocalFarm, wait_until
from tests.support.blends import brightness, future_example, make_probe_scene, make_turntable
from tests.support.renderers import needs_blender_cli, needs_bpy


def orange_pixels(path: Path) -> int:
    """Pixels of the checker texture's orange (a missing texture renders magenta)."""
    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(image.width * image.height) or []
    return sum(n for n, (r, g, b) in colours if r > 150 and 60 < g < 170 and b < 80)


@needs_blender_cli
@needs_bpy
def test_each_scene_renders_with_a_blender_that_opens_it(farm: LocalFarm, tmp_path: Path) -> None:
    """Uses both the Blender program (3.4 on PATH) and bpy (5.x)."""
    program = shutil.which("blender")
    assert program is not None
    both = farm.start("both")
    old = farm.start("old", join=both, launcher=PEERFARM_WITHOUT_BPY)
    wait_until(lambda: old.alive_names() == {"both", "old"}, 20, "farm formed")
    peers = {p["name"]: p for p in old.cli_json("peers")["peers"]}
    newer = peers["both"]["renderers"]["blender"]
    older = peers["old"]["renderers"]["blender"]
    assert isinstance(newer, list) and len(newer) >= 2 and newer == sorted(newer)
    assert older == newer[0] and isinstance(older, str)  # the program only: one version
    assert "blender " + "/".join(newer) in " ".join(old.cli("peers").stdout.split())

    # Saved by bpy 5: only the peer that has bpy can open it, whoever submits it.
    new_scene = make_turntable(tmp_path / "new")
    out = tmp_path / "out-new"
    submitted = old.cli("submit", str(new_scene), "1-2", "--output", str(out), "--json")
    assert "warning" not in json.loads(submitted.stdout) and submitted.stderr == ""
    job = json.loads(submitted.stdout)["job"]
    wait_until(lambda: old.status(job)["jobs"][0]["frames_delivered"] == 2, 180, "bpy frames")
    assert {f["peer"] for f in old.status(job)["frames"]} == {"both"}
    assert all(orange_pixels(p) > 500 for p in sorted(out.glob("frame_*.png")))

    # Saved by the program itself: the program renders it, texture and all.
    assert both.stop() == 0
    wait_until(lambda: old.alive_names() == {"old"}, 20, "both left")
    old_scene = make_turntable(tmp_path / "old", program)
    out = tmp_path / "out-old"
    job = old.cli_json("submit", str(old_scene), "5-6", "--output", str(out))["job"]
    wait_until(lambda: old.status(job)["jobs"][0]["frames_delivered"] == 2, 180, "3.4 frames")
    assert {f["peer"] for f in old.status(job)["frames"]} == {"old"}
    frames = sorted(out.glob("frame_*.png"))
    assert [p.name for p in frames] == ["frame_0005.png", "frame_0006.png"]
    assert all(orange_pixels(p) > 500 for p in frames)

    # bpy 5's file, with only the program left: submit warns and status says why.
    submitted = old.cli("submit", str(new_scene), "1", "--json")
    assert "blender 3.4.1 is older than the file (5.0)" in submitted.stderr
    job = json.loads(submitted.stdout)["job"]
    view = old.status(job)["jobs"][0]
    assert view["waiting"] == {"old": f"blender {older} is older than the file (5.0)"}
    assert (
        view["blocked"]
        == f"no peer can render it: old: blender {older} is older than the file (5.0)"
    )


def test_a_scene_no_peer_can_open_says_why_everywhere(farm: LocalFarm, tmp_path: Path) -> None:
    """Needs no Blender: the scene claims Blender 9.0 saved it."""
    a = farm.start("a")
    b = farm.start("b", join=a)
    wait_until(lambda: a.alive_names() == {"a", "b"}, 20, "farm formed")
    scene = future_example(tmp_path / "future")

    submitted = a.cli("submit", str(scene), "1-4", "--json")
    assert submitted.returncode == 0
    answer = json.loads(submitted.stdout)
    assert answer["warning"].startswith("future-9-0 waits: no peer can render it: a, b: ")
    assert f"peerfarm: warning: {answer['warning']}" in " ".join(submitted.stderr.split())
    job = answer["job"]

    def reasons_everywhere() -> bool:
        views = [d.status(job)["jobs"][0] for d in (a, b)]
        return all(set(v["waiting"]) == {"a", "b"} and v["blocked"] for v in views)

    wait_until(reasons_everywhere, 20, "both peers to say why")
    view = b.status(job)["jobs"][0]
    for reason in view["waiting"].values():
        assert reason == "no blender" or reason.endswith("older than the file (9.0)")
    assert view["blocked"].startswith("no peer can render it: a, b: ")
    assert view["frames_pending"] == 4 and view["frames_rendering"] == 0
    assert b.status()["jobs"][0]["blocked"] == view["blocked"]  # the farm view too

    shown = " ".join(b.cli("status").stdout.split())  # the human view: a line under the job
    assert f"waits: {view['blocked']}" in shown
    detail = " ".join(b.cli("status", job).stdout.split())
    assert "a: " in detail and "b: " in detail
    logs = b.cli_json("logs", job, "3")
    assert logs["state"] == "pending" and logs["blocked"] == view["blocked"]
    assert f"waits: {view['blocked']}" in " ".join(b.cli("logs", job, "3").stdout.split())
    assert "waits: no peer can render it" in a.log()  # and the daemon's own log

    # Only an active job lists reasons in status; a pending frame's log still says why.
    a.cli("pause", job)
    wait_until(lambda: b.status(job)["jobs"][0]["state"] == "paused", 10, "paused")
    assert b.status(job)["jobs"][0]["waiting"] == {}
    assert b.cli_json("logs", job, "3")["waiting"] == view["waiting"]  # lasting reasons first
    a.cli("cancel", job)
    wait_until(lambda: b.status(job)["jobs"][0]["state"] == "cancelled", 10, "cancelled")
    assert b.status(job)["jobs"][0]["blocked"] is None


def test_submit_wait_shows_the_reason_instead_of_waiting_silently(
    farm: LocalFarm, tmp_path: Path
) -> None:
    a = farm.start("solo")
    scene = future_example(tmp_path / "future")
    command = [*PEERFARM, "submit", str(scene), "1-2", "--wait", "--data-dir", str(a.data_dir)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        seen = ""
        assert proc.stderr is not None
        while time.monotonic() < deadline and "waits: no peer can render it" not in seen:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert "waits: no peer can render it: solo: " in seen, seen
        assert proc.poll() is None  # still waiting: a peer that can may yet join
    finally:
        proc.kill()
        proc.wait(timeout=10)


@needs_bpy
def test_scripts_run_through_the_farm_only_when_job_and_peer_allow_them(
    farm: LocalFarm, tmp_path: Path
) -> None:
    """Uses bpy (the peer's newest Blender): the scene's Python driver turns the world white."""
    scene = make_probe_scene(tmp_path / "probe.blend")
    allowing = farm.start("allowing", "--allow-scripts")
    results = {}
    for allow in (False, True):
        out = tmp_path / f"out-{allow}"
        flags = ["--allow-scripts"] if allow else []
        job = allowing.cli_json("submit", str(scene), "1", "--output", str(out), *flags)["job"]
        wait_until(
            lambda j=job: allowing.status(j)["jobs"][0]["frames_delivered"] == 1, 120, "probe"
        )
        results[allow] = brightness(next(out.glob("frame_0001.*")))
    assert results[False] < 20 and results[True] > 150, results
    assert allowing.stop() == 0
    strict = farm.start("strict")  # the job allows scripts, this peer does not
    out = tmp_path / "out-strict"
    job = strict.cli_json("submit", str(scene), "1", "--output", str(out), "--allow-scripts")["job"]
    wait_until(lambda: strict.status(job)["jobs"][0]["frames_delivered"] == 1, 120, "strict")
    assert brightness(next(out.glob("frame_0001.*"))) < 20
