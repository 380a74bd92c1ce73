"""Small .blend files for tests, made on the spot by the Blender that will read them.

``make_probe_scene`` saves tests/support/probe_scene.py's scene with a Blender program or
with bpy; ``make_turntable`` the example turntable (examples/blender/make_turntable.py) the
same way; ``make_cube_scene`` a tiny moving cube for the Blender program; ``future_copy``
patches a copy's header so it claims a Blender that does not exist yet (no Blender here can
open it), instead of shipping big files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageStat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROBE = HERE / "probe_scene.py"
TURNTABLE = ROOT / "examples" / "blender" / "make_turntable.py"

_LEGACY = re.compile(rb"^(BLENDER[_-][vV])(\d{3})")
_LARGE = re.compile(rb"^(BLENDER\d\d-\d\d[vV])(\d{4})")


def run_script(script: Path, args: list[str], blender: str | None) -> None:
    """Run a bpy script with the Blender program ``blender``, or with bpy when None."""
    if blender is None:
        argv = [sys.executable, str(script), *args]
    else:
        argv = [blender, "-b", "--factory-startup", "--python", str(script), "--", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    if done.returncode != 0 or "Traceback" in done.stdout + done.stderr:
        raise AssertionError(f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def make_probe_scene(out: Path, blender: str | None = None) -> Path:
    """The scene whose render is white when its Python driver ran, black otherwise."""
    run_script(PROBE, [str(out)], blender)
    return out


def make_turntable(folder: Path, blender: str | None = None, *, compress: bool = True) -> Path:
    """The example turntable and its texture in ``folder``; returns the .blend."""
    run_script(TURNTABLE, ["--out", str(folder), *([] if compress else ["--no-compress"])], blender)
    return folder / "turntable.blend"


def make_cube_scene(path: Path, *, samples: int = 2, size: tuple[int, int] = (64, 48)) -> Path:
    """A Cycles cube moving over frames 1-10 (fixed seed, no denoising), saved by the Blender
    program on PATH."""
    blender = shutil.which("blender")
    assert blender is not None
    script = (
        "import bpy; s = bpy.context.scene; s.render.engine = 'CYCLES'; "
        f"s.cycles.samples = {samples}; s.cycles.use_denoising = False; "
        f"s.render.resolution_x = {size[0]}; s.render.resolution_y = {size[1]}; "
        "s.render.resolution_percentage = 100; s.frame_start = 1; s.frame_end = 10; "
        "cube = bpy.data.objects['Cube']; cube.location.x = 0; "
        "cube.keyframe_insert('location', frame=1); cube.location.x = 2; "
        "cube.keyframe_insert('location', frame=10); "
        f"bpy.ops.wm.save_as_mainfile(filepath={str(path)!r})"
    )
    subprocess.run(
        [blender, "-b", "--factory-startup", "--python-expr", script],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


def future_copy(source: Path, target: Path, major: int = 9, minor: int = 0) -> Path:
    """A copy of an uncompressed .blend whose header says Blender ``major.minor`` saved it."""
    data = bytearray(source.read_bytes())
    if match := _LEGACY.match(data):
        digits = f"{major}{minor:02d}".encode()
    elif match := _LARGE.match(data):
        digits = f"{major:02d}{minor:02d}".encode()
    else:
        raise ValueError(f"{source} is not an uncompressed .blend")
    start = match.end(1)
    data[start : start + len(digits)] = digits
    target.write_bytes(bytes(data))
    return target


def brightness(path: Path) -> float:
    """Mean brightness of an image, 0 (black) to 255 (white)."""
    with Image.open(path) as image:
        return float(sum(ImageStat.Stat(image.convert("RGB")).mean) / 3)


def future_example(folder: Path, major: int = 9, minor: int = 0) -> Path:
    """The shipped example turntable, uncompressed, claiming Blender ``major.minor`` saved it,
    with its texture beside it: a scene no Blender here can open, made without any Blender."""
    import zstandard

    example = ROOT / "examples" / "blender"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(example / "textures", folder / "textures", dirs_exist_ok=True)
    plain = folder / "plain.blend"
    with (example / "turntable.blend").open("rb") as source, plain.open("wb") as out:
        zstandard.ZstdDecompressor().copy_stream(source, out)
    future = future_copy(plain, folder / f"future-{major}-{minor}.blend", major, minor)
    plain.unlink()
    return future
