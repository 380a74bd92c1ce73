"""Runs inside Blender (the program: ``blender -b --factory-startup --python THIS -- ARGS``, or
bpy: ``python THIS ARGS``): installs and enables the peerfarm add-on from its zip, saves a tiny
scene, changes it (unsaved), presses the panel's Submit button and follows the job until it
ends through the add-on's own polling. Prints one line ``PEERFARM-RESULT {json}``.

ARGS: ZIP BLEND. The daemon comes from ``$PEERFARM_DATA_DIR`` (the add-on's default).
"""

import json
import sys
import time
from pathlib import Path

import bpy


def install(zip_path: str) -> str:
    """Install and enable the add-on; returns its module name."""
    if bpy.app.version >= (4, 2, 0):
        bpy.ops.extensions.package_install_files(
            filepath=zip_path, repo="user_default", enable_on_install=True
        )
        return "bl_ext.user_default.peerfarm_blender"
    bpy.ops.preferences.addon_install(filepath=zip_path)
    bpy.ops.preferences.addon_enable(module="peerfarm_blender")
    return "peerfarm_blender"


def main(zip_path: str, blend: str) -> dict:
    module_name = install(zip_path)
    addon = sys.modules[module_name]
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = 32, 24
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, 2
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    scene.frame_end = 3  # unsaved changes: the submit saves them first
    scene.render.resolution_x = 40
    scene.peerfarm.priority = 5
    scene.peerfarm.samples = 2
    result = bpy.ops.peerfarm.submit()
    job = scene.peerfarm.job
    folder = addon._folder(bpy.context)
    view: dict = {}
    lines = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        view = addon.refresh(folder, job)
        lines.append(addon.STATE["job"])
        if view and addon.farm.finished(view):
            break
        time.sleep(0.5)
    return {
        "module": module_name,
        "version": bpy.app.version_string,
        "result": sorted(result),
        "dirty_after": bpy.data.is_dirty,
        "job": job,
        "view": view,
        "farm": addon.STATE["farm"],
        "lines": lines,
        "error": addon.STATE["error"],
    }


if __name__ == "__main__":
    args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    outcome = main(*args[:2])
    print("PEERFARM-RESULT " + json.dumps(outcome), flush=True)
    Path(args[1] + ".result.json").write_text(json.dumps(outcome))
