"""Build the example turntable scene: ``examples/blender/turntable.blend``.

Run it with the Blender that will render it, so the file is never newer than its renderer: the
interpreter that has ``bpy`` (the venv's, with the ``blender`` extra), or a Blender program
(Blender 3.4 or later; arguments after ``--``)::

    .venv/bin/python examples/blender/make_turntable.py [--out DIR] [--no-compress]
    blender -b --factory-startup --python examples/blender/make_turntable.py -- [--out DIR]

It writes ``DIR/textures/checker.png`` and ``DIR/turntable.blend``: a few objects on a floor
that uses the checker as an external IMAGE TEXTURE (a relative path, so the texture has to
travel with the scene), a camera orbiting the origin over 48 frames, Cycles at 8 samples,
320x240, 24 fps. Each frame renders well under a second on one CPU core. Only the standard
library and ``bpy`` are used, so Blender's own Python runs it too.
"""

from __future__ import annotations

import argparse
import math
import struct
import sys
import zlib
from pathlib import Path

import bpy

HERE = Path(__file__).resolve().parent
FRAMES = 48
CHECKER_CELLS = 8
CHECKER_PIXELS = 256


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def make_checker(path: Path) -> Path:
    """Write an orange/blue checker PNG, so a missing texture (pink) is easy to see."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = CHECKER_PIXELS // CHECKER_CELLS
    colours = (bytes((235, 140, 30)), bytes((30, 70, 200)))
    rows = b"".join(
        b"\x00" + b"".join(colours[(x // cell + y // cell) % 2] for x in range(CHECKER_PIXELS))
        for y in range(CHECKER_PIXELS)
    )
    header = struct.pack(">IIBBBBB", CHECKER_PIXELS, CHECKER_PIXELS, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows, 9))
        + _png_chunk(b"IEND", b"")
    )
    return path


def plain_material(name: str, rgb: tuple[float, float, float]) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender < 5 creates materials without nodes
        material.use_nodes = True
    bsdf = material.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    return material


def texture_material(texture: Path) -> bpy.types.Material:
    material = bpy.data.materials.new("Checker")
    if material.node_tree is None:
        material.use_nodes = True
    nodes = material.node_tree.nodes
    image_node = nodes.new("ShaderNodeTexImage")
    image_node.image = bpy.data.images.load(str(texture))
    material.node_tree.links.new(
        image_node.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"]
    )
    return material


def build_scene(texture: Path) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.edit.keyframe_new_interpolation_type = "LINEAR"
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 8
    scene.cycles.use_denoising = False  # 8 noisy samples are fine for a preview, and fast
    scene.cycles.device = "CPU"
    scene.render.resolution_x = 320
    scene.render.resolution_y = 240
    scene.render.resolution_percentage = 100
    scene.render.fps = 24
    scene.frame_start = 1
    scene.frame_end = FRAMES
    scene.render.image_settings.file_format = "PNG"

    world = bpy.data.worlds.new("World")
    world.color = (0.05, 0.05, 0.08)
    scene.world = world

    bpy.ops.mesh.primitive_plane_add(size=8)
    floor = bpy.context.object
    floor.data.uv_layers.active = floor.data.uv_layers[0]
    floor.data.materials.append(texture_material(texture))

    bpy.ops.mesh.primitive_cube_add(size=1.2, location=(-1.2, 0.0, 0.6))
    bpy.context.object.data.materials.append(plain_material("Red", (0.8, 0.1, 0.1)))
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.7, location=(1.2, 0.3, 0.7))
    bpy.context.object.data.materials.append(plain_material("Green", (0.1, 0.7, 0.2)))
    bpy.ops.mesh.primitive_cone_add(radius1=0.5, depth=1.4, location=(0.0, -1.4, 0.7))
    bpy.context.object.data.materials.append(plain_material("White", (0.9, 0.9, 0.9)))

    bpy.ops.object.light_add(type="SUN", rotation=(math.radians(40), 0, math.radians(30)))
    bpy.context.object.data.energy = 3.0

    bpy.ops.object.empty_add(location=(0, 0, 0))
    pivot = bpy.context.object
    pivot.name = "Pivot"
    bpy.ops.object.camera_add(location=(0.0, -7.0, 3.5), rotation=(math.radians(65), 0, 0))
    camera = bpy.context.object
    camera.parent = pivot
    scene.camera = camera

    pivot.rotation_euler = (0, 0, 0)
    pivot.keyframe_insert("rotation_euler", index=2, frame=1)
    pivot.rotation_euler = (0, 0, 2 * math.pi * FRAMES / (FRAMES + 1))
    pivot.keyframe_insert("rotation_euler", index=2, frame=FRAMES)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the scene")
    parser.add_argument("--no-compress", action="store_true", help="save uncompressed")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    texture = make_checker(out / "textures" / "checker.png")
    build_scene(texture)
    blend = out / "turntable.blend"
    bpy.ops.wm.save_as_mainfile(
        filepath=str(blend), relative_remap=True, compress=not args.no_compress
    )
    print(f"wrote {blend}")
    return 0


if __name__ == "__main__":
    # Under a Blender program, this script's own arguments follow "--".
    args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    sys.exit(main(args))
