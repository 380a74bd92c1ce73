"""Save a tiny scene that shows whether Python inside a .blend ran: run by Blender or bpy.

    blender -b --factory-startup --python tests/support/probe_scene.py -- OUT.blend
    python tests/support/probe_scene.py OUT.blend            # with bpy importable

Cycles, 1 sample, 32x24, a camera looking at the world. The world's colour is black, but a
Python driver (``bpy.app.version``: an expression Blender refuses to run without auto-exec)
turns it white. So a render is white when scripts ran and black when they did not. Saved
uncompressed, so tests can patch the header's version. Works with Blender 3.4 to 5.x.
"""

from __future__ import annotations

import sys

import bpy

DRIVER = "float(bpy.app.version[0] > 0)"


def main(out: str) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.render.resolution_x = 32
    scene.render.resolution_y = 24
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, 2
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    world = bpy.data.worlds.new("World")
    scene.world = world
    if world.node_tree is None:  # Blender < 5 creates worlds without nodes
        world.use_nodes = True
    colour = world.node_tree.nodes["Background"].inputs["Color"]
    for channel in range(3):
        curve = colour.driver_add("default_value", channel)
        curve.driver.type = "SCRIPTED"
        curve.driver.expression = DRIVER
    colour.default_value = (0.0, 0.0, 0.0, 1.0)  # what is saved: black until the driver runs
    bpy.ops.wm.save_as_mainfile(filepath=out, compress=False)


if __name__ == "__main__":
    args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    main(args[0])
