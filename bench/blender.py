"""Blender benchmark (renderers issue): the warm bpy worker against plain bpy, same frames.

    python bench/blender.py [--frames 24] [--scene examples/blender/turntable.blend] [--json OUT]

Three ways to render frames 1..``frames`` of the example turntable (Cycles, 8 samples, 320x240):

- ``peer_s``: one real daemon with its warm ``bpy`` worker; from the submit call (which packs the
  scene and its texture: ``peer_submit_s``) to every frame done; ``peer_render_s`` sums the
  render seconds the peer recorded per frame. The target (``peer_overhead``) compares the
  peer after the submit, i.e. the warm worker with everything the farm adds per frame, with
  the single process; ``peer_overhead_with_submit`` includes the one-time packing;
- ``single_s``: one plain Python process that imports bpy, opens the scene once and renders every
  frame (the floor: no farm at all), timed from process start to exit; run before and after the
  peer and averaged, since the machine's load drifts;
- ``per_frame_s``: one such process per frame (what a farm without a warm worker pays).

All three render the scene with its own settings and denoising off when this bpy lacks
OpenImageDenoise, as the worker does. Target: the peer within 5% of ``single_s``. Skipped when
``bpy`` is not installed (``pip install -e .[blender]``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ROOT, BenchError, local_farm
from bench.install import have_module

SCENE = ROOT / "examples" / "blender" / "turntable.blend"
TARGET_OVERHEAD = 0.05

RENDER_SCRIPT = """
import sys
import bpy
scene_path, out_dir, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
bpy.ops.wm.open_mainfile(filepath=scene_path, load_ui=False, use_scripts=False)
scene = bpy.context.scene
try:
    import _cycles
    oidn = bool(getattr(_cycles, "with_openimagedenoise", False))
except ImportError:
    oidn = False
if not oidn and hasattr(scene, "cycles"):
    scene.cycles.use_denoising = False
for frame in range(first, last + 1):
    scene.frame_set(frame)
    scene.render.filepath = f"{out_dir}/frame_{frame:04d}"
    bpy.ops.render.render(write_still=True)
"""


def _plain(scene: Path, out: Path, first: int, last: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RENDER_SCRIPT, str(scene), str(out), str(first), str(last)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"plain bpy render failed: {result.stderr[-600:]}")


def single_process(scene: Path, frames: int) -> float:
    with tempfile.TemporaryDirectory(prefix="peerfarm-bench-bpy-") as tmp:
        started = time.monotonic()
        _plain(scene, Path(tmp), 1, frames)
        took = time.monotonic() - started
        if len(list(Path(tmp).glob("frame_*"))) != frames:
            raise BenchError("plain bpy did not write every frame")
    return took


def process_per_frame(scene: Path, frames: int) -> float:
    with tempfile.TemporaryDirectory(prefix="peerfarm-bench-bpy-") as tmp:
        started = time.monotonic()
        for frame in range(1, frames + 1):
            _plain(scene, Path(tmp), frame, frame)
        return time.monotonic() - started


def warm_peer(scene: Path, frames: int) -> tuple[float, float, float]:
    """(submit to all done, the submit call alone, sum of the frames' render seconds)."""
    with local_farm(1) as farm:
        peer = farm.daemons[0]
        started = time.monotonic()
        job = farm.submit(peer, scene, f"1-{frames}", renderer="blender", name="turntable")
        submitted = time.monotonic()
        done = farm.wait_job(peer, job, frames * 30 + 120, interval=0.02)
        rendered = sum(f["seconds"] or 0.0 for f in peer.status(job)["frames"])
        return done - started, submitted - started, rendered


def run(frames: int = 24, scene: Path = SCENE) -> dict[str, Any]:
    if not have_module("bpy"):
        return {"skipped": "bpy is not installed (pip install -e .[blender])"}
    # single before and after the peer, averaged: the machine's load drifts during the run
    before = single_process(scene, frames)
    peer, submit, rendered = warm_peer(scene, frames)
    after = single_process(scene, frames)
    single = (before + after) / 2
    per_frame = process_per_frame(scene, frames)
    return {
        "frames": frames,
        "scene": str(scene.relative_to(ROOT) if scene.is_relative_to(ROOT) else scene),
        "peer_s": round(peer, 3),
        "peer_submit_s": round(submit, 3),
        "peer_render_s": round(rendered, 3),
        "single_s": round(single, 3),
        "single_runs_s": [round(before, 3), round(after, 3)],
        "per_frame_s": round(per_frame, 3),
        # The target compares rendering: the peer from its first claim (the submit's one-time
        # packing of the scene and its texture is reported apart) against the single process.
        "peer_after_submit_s": round(peer - submit, 3),
        "peer_overhead": round((peer - submit) / single - 1, 4),
        "peer_overhead_with_submit": round(peer / single - 1, 4),
        "per_frame_overhead": round(per_frame / single - 1, 4),
        "target_overhead": TARGET_OVERHEAD,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--scene", type=Path, default=SCENE)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.frames, args.scene.resolve())
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
