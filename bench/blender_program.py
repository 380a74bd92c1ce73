"""Blender program benchmark (issue 18): the warm program worker, a process per frame, and one
plain ``blender -b -a`` run of the same frames.

    python bench/blender_program.py [--frames 24] [--json OUT]

The scene is the example turntable (Cycles, 8 samples, 320x240) saved by the Blender program on
PATH itself (examples/blender/make_turntable.py run inside it), so that program opens it.

- ``peer_s``: one real daemon whose Python cannot import bpy, so it renders with the program's
  warm worker (``blender -b --python blender_worker.py``); from the submit call to every frame
  done. ``peer_submit_s`` is the submit call alone (it packs the scene and its texture), and the
  target compares the peer after it (``peer_after_submit_s``);
- ``warm_s``: the renderer alone (``BlenderRenderer``, no farm), its warm worker given the frames
  one at a time, as a peer's slot gets them;
- ``per_frame_s``: the same renderer with ``warm=False``: one ``blender -b -f N`` per frame (what
  a peer did before, and still does when the warm worker cannot start);
- ``plain_s``: one plain ``blender -b scene -s 1 -e N -a`` with the same preparation (denoising
  off on a build without OpenImageDenoise), run before and after the others and averaged, since
  the machine's load drifts. The floor: no farm, no worker, one process.

Target: the peer within 5% of ``plain_s``. Skipped when no ``blender`` is on PATH.

Each figure has a ``*_cpu_s`` twin: the CPU seconds (user + system) of every process involved,
the daemon and its worker included for the peer (read from /proc between the submit and the
last frame). On a shared machine whose load drifts, CPU seconds compare the work each way does
far better than wall time (``*_cpu_overhead``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ROOT, START_TIMEOUT_S, BenchError
from peerfarm.renderers.base import RenderTask
from peerfarm.renderers.blender import PREPARE_EXPR, BlenderRenderer
from peerfarm.testing.daemons import PEERFARM_WITHOUT_BPY, LocalFarm, descendants

TARGET_OVERHEAD = 0.05
MAKE_TURNTABLE = ROOT / "examples" / "blender" / "make_turntable.py"


def children_cpu() -> float:
    """CPU seconds of every finished, reaped descendant of this process so far."""
    times = os.times()  # portable: no ``resource`` module on Windows
    return times.children_user + times.children_system


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and every descendant, live or reaped by its parent (/proc)."""
    total = 0.0
    for each in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def make_scene(blender: str, folder: Path) -> Path:
    """The turntable and its texture, saved by ``blender``."""
    argv = [blender, "-b", "--factory-startup", "--python", str(MAKE_TURNTABLE)]
    done = subprocess.run(
        [*argv, "--", "--out", str(folder)], capture_output=True, text=True, check=False
    )
    scene = folder / "turntable.blend"
    if done.returncode != 0 or not scene.is_file():
        raise BenchError(f"cannot make the turntable with {blender}: {done.stderr[-600:]}")
    return scene


def plain_run(blender: str, scene: Path, frames: int) -> tuple[float, float]:
    """One ``blender -b -a`` of frames 1..frames, from process start to exit: (wall, CPU)."""
    with tempfile.TemporaryDirectory(prefix="peerfarm-bench-program-") as tmp:
        argv = [
            blender, "-b", "--disable-autoexec", str(scene), "--python-expr", PREPARE_EXPR,
            "-o", f"{tmp}/frame_####", "-s", "1", "-e", str(frames), "-a",
        ]  # fmt: skip
        started, cpu = time.monotonic(), children_cpu()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        took, cpu = time.monotonic() - started, children_cpu() - cpu
        if done.returncode != 0 or len(list(Path(tmp).glob("frame_*"))) != frames:
            raise BenchError(f"plain blender -a failed: {done.stderr[-600:]!r}")
    return took, cpu


def renderer_run(scene: Path, frames: int, *, warm: bool) -> tuple[float, float]:
    """The renderer given frames 1..frames one at a time (as a slot gets them): (wall, CPU of
    the Blender processes)."""

    async def main() -> float:
        renderer = BlenderRenderer(mode="cli", warm=warm)
        await renderer.detect()
        with tempfile.TemporaryDirectory(prefix="peerfarm-bench-program-") as tmp:
            started = time.monotonic()
            try:
                for frame in range(1, frames + 1):
                    task = RenderTask(
                        job_id="bench",
                        frames=(frame,),
                        scene=scene,
                        scene_name=scene.name,
                        options={},
                        output_dir=Path(tmp) / f"f{frame}",
                        work_dir=Path(tmp) / "work",
                    )
                    await renderer.render(task, on_progress=lambda p: None)
            finally:
                await renderer.aclose()
            return time.monotonic() - started

    cpu = children_cpu()
    took = trio.run(main)
    return took, children_cpu() - cpu


def peer_run(scene: Path, frames: int) -> tuple[float, float, float]:
    """(submit to every frame done, the submit call alone, CPU of the daemon and its renders
    after the submit) on one daemon without bpy."""
    with LocalFarm(preset="lan", ready_timeout=START_TIMEOUT_S) as farm:
        peer = farm.start("peer1", slots=1, launcher=PEERFARM_WITHOUT_BPY)
        started = time.monotonic()
        job = farm.submit(peer, scene, f"1-{frames}", renderer="blender", name="turntable")
        submitted, cpu = time.monotonic(), tree_cpu(peer.pid)
        done = farm.wait_job(peer, job, frames * 60 + 120, interval=0.05)
        return done - started, submitted - started, tree_cpu(peer.pid) - cpu


def run(frames: int = 24) -> dict[str, Any]:
    blender = shutil.which("blender")
    if blender is None:
        return {"skipped": "no blender on PATH (apt-get install blender)"}
    with tempfile.TemporaryDirectory(prefix="peerfarm-bench-scene-") as tmp:
        scene = make_scene(blender, Path(tmp))
        version = subprocess.run(
            [blender, "-b", "--factory-startup", "--version"], capture_output=True, text=True
        ).stdout.split("\n")[0]
        before, before_cpu = plain_run(blender, scene, frames)
        peer, submit, peer_cpu = peer_run(scene, frames)
        warm, warm_cpu = renderer_run(scene, frames, warm=True)
        per_frame, per_frame_cpu = renderer_run(scene, frames, warm=False)
        after, after_cpu = plain_run(blender, scene, frames)
    plain, plain_cpu = (before + after) / 2, (before_cpu + after_cpu) / 2
    load = os.getloadavg()[0]
    return {
        "frames": frames,
        "blender": version.strip(),
        "peer_s": round(peer, 3),
        "peer_submit_s": round(submit, 3),
        "peer_after_submit_s": round(peer - submit, 3),
        "warm_s": round(warm, 3),
        "per_frame_s": round(per_frame, 3),
        "plain_s": round(plain, 3),
        "plain_runs_s": [round(before, 3), round(after, 3)],
        "peer_overhead": round((peer - submit) / plain - 1, 4),
        "warm_overhead": round(warm / plain - 1, 4),
        "per_frame_overhead": round(per_frame / plain - 1, 4),
        "target_overhead": TARGET_OVERHEAD,
        "peer_cpu_s": round(peer_cpu, 3),
        "warm_cpu_s": round(warm_cpu, 3),
        "per_frame_cpu_s": round(per_frame_cpu, 3),
        "plain_cpu_s": round(plain_cpu, 3),
        "plain_runs_cpu_s": [round(before_cpu, 3), round(after_cpu, 3)],
        "peer_cpu_overhead": round(peer_cpu / plain_cpu - 1, 4),
        "warm_cpu_overhead": round(warm_cpu / plain_cpu - 1, 4),
        "per_frame_cpu_overhead": round(per_frame_cpu / plain_cpu - 1, 4),
        "load_average_at_end": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.frames)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
