"""The cameras and view layers a .blend holds, read at submit without Blender.

This module owns the submit-time check of the Blender options that name something in the file
(``camera``, ``view_layer``): :func:`check_names` refuses a name the file lacks with one line
that lists the names it has. It reads the file with blender-asset-tracer (which reads Blender
3.4 to 5.x files, zstd-compressed ones too). A file it cannot read is not refused here: the
render-time check of the generated settings script (``blender_settings``) still holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peerfarm.renderers.options import OptionError

#: ``Object.type`` of a camera in Blender's DNA (``OB_CAMERA``).
OB_CAMERA = 11


@dataclass(frozen=True, slots=True)
class BlendNames:
    cameras: tuple[str, ...]  # camera objects, in file order
    view_layers: tuple[str, ...]  # every scene's view layers, in file order


def names_in(path: Path) -> BlendNames | None:
    """The file's camera objects and view layers; None when the file cannot be read."""
    from blender_asset_tracer import blendfile  # heavy import, only where a file is read

    try:
        bfile = blendfile.BlendFile(path)
    except Exception:  # not a .blend, damaged, or a format this reader does not know
        return None
    try:
        cameras = [
            (block.id_name or b"OB")[2:].decode("utf-8", "replace")
            for block in bfile.find_blocks_from_code(b"OB")
            if block[b"type"] == OB_CAMERA
        ]
        layers: list[str] = []
        for scene in bfile.find_blocks_from_code(b"SC"):
            layer = scene.get_pointer((b"view_layers", b"first"))
            while layer is not None and len(layers) < 10_000:
                layers.append(str(layer.get(b"name", as_str=True)))
                layer = layer.get_pointer(b"next")
        return BlendNames(tuple(cameras), tuple(dict.fromkeys(layers)))
    except Exception:  # a layout this reader does not expect: leave it to the render
        return None
    finally:
        bfile.close()


def check_names(path: Path, options: Mapping[str, Any]) -> None:
    """Refuse a ``camera`` or ``view_layer`` option that names nothing in the file."""
    wanted = {key: options[key] for key in ("camera", "view_layer") if key in options}
    if not wanted:
        return
    found = names_in(path)
    if found is None:
        return
    if "camera" in wanted and wanted["camera"] not in found.cameras:
        have = ", ".join(found.cameras) or "none"
        raise OptionError(
            f"option camera: no camera named {wanted['camera']!r} in {path.name} (cameras: {have})"
        )
    if "view_layer" in wanted and wanted["view_layer"] not in found.view_layers:
        have = ", ".join(found.view_layers) or "none"
        raise OptionError(
            f"option view_layer: no view layer named {wanted['view_layer']!r} in {path.name} "
            f"(view layers: {have})"
        )
