"""A job's Blender options as a small Python script that runs inside Blender before a render.

This module owns turning the options ``device``, ``samples``, ``percentage``, ``camera``,
``view_layer``, ``threads`` and ``format`` (checked by ``renderers.options``) into Python source
(:func:`settings_script`). The program backend runs it with ``--python-expr`` after
``PREPARE_EXPR``; the warm ``bpy`` worker runs it before every frame. The file is never edited:
everything the options do not name keeps the scene's own setting.

The script is generated from checked values only, every one written with ``repr`` (names are
data, never code). A setting the scene cannot take (no camera of that name, no CUDA device in
Cycles) raises ``RuntimeError("peerfarm: ...")``: Blender stops with an error exit
(``--python-exit-code``) and :func:`failure_line` finds the reason in the log for the frame's
error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peerfarm.renderers.options import GPU_BACKENDS

#: What Blender exits with when the settings script fails (``--python-exit-code``).
SCRIPT_EXIT_CODE = 86
#: The prefix of every error the script raises.
ERROR_PREFIX = "peerfarm: "

_HEAD = "import bpy\nscene = bpy.context.scene\n"

_DEVICE = """\
def _peerfarm_device(want):
    if not hasattr(scene, 'cycles'):
        raise RuntimeError('peerfarm: device ' + want + ' needs Cycles, which this Blender lacks')
    if want == 'CPU':
        scene.cycles.device = 'CPU'
        return
    prefs = bpy.context.preferences.addons['cycles'].preferences
    for backend in ({backends!r} if want == 'GPU' else (want,)):
        try:
            prefs.compute_device_type = backend
        except (TypeError, ValueError):
            continue
        refresh = getattr(prefs, 'refresh_devices', None) or getattr(prefs, 'get_devices')
        refresh()
        found = [d for d in prefs.devices if d.type == backend]
        if found:
            for d in prefs.devices:
                d.use = d.type == backend
            scene.cycles.device = 'GPU'
            return
    raise RuntimeError('peerfarm: no ' + want + ' device for Cycles on this peer')
_peerfarm_device({device!r})
"""

_CAMERA = """\
_cam = bpy.data.objects.get({name!r})
if _cam is None or _cam.type != 'CAMERA':
    _names = sorted(o.name for o in bpy.data.objects if o.type == 'CAMERA')
    raise RuntimeError('peerfarm: no camera named ' + repr({name!r}) + ' (cameras: '
                       + (', '.join(_names) or 'none') + ')')
scene.camera = _cam
"""

_VIEW_LAYER = """\
_names = [v.name for v in scene.view_layers]
if {name!r} not in _names:
    raise RuntimeError('peerfarm: no view layer named ' + repr({name!r}) + ' (view layers: '
                       + ', '.join(_names) + ')')
for _layer in scene.view_layers:
    _layer.use = _layer.name == {name!r}
"""


def settings_script(options: Mapping[str, Any]) -> str:
    """Python that applies the job's Blender options to ``bpy.context.scene`` ('' if none)."""
    parts: list[str] = []
    if (device := options.get("device")) is not None:
        parts.append(_DEVICE.format(backends=GPU_BACKENDS, device=str(device)))
    if (samples := options.get("samples")) is not None:
        count = int(samples)
        parts.append(
            f"if hasattr(scene, 'cycles'): scene.cycles.samples = {count}\n"
            f"if hasattr(scene, 'eevee'): scene.eevee.taa_render_samples = {count}\n"
        )
    if (percentage := options.get("percentage")) is not None:
        parts.append(f"scene.render.resolution_percentage = {int(percentage)}\n")
    if (camera := options.get("camera")) is not None:
        parts.append(_CAMERA.format(name=str(camera)))
    if (layer := options.get("view_layer")) is not None:
        parts.append(_VIEW_LAYER.format(name=str(layer)))
    if (threads := options.get("threads")) is not None:
        if int(threads) > 0:
            fixed = f"scene.render.threads_mode = 'FIXED'\nscene.render.threads = {int(threads)}\n"
            parts.append(fixed)
        else:
            parts.append("scene.render.threads_mode = 'AUTO'\n")
    if (fmt := options.get("format")) is not None:
        parts.append(f"scene.render.image_settings.file_format = {str(fmt)!r}\n")
    return _HEAD + "".join(parts) if parts else ""


def failure_line(log: str) -> str | None:
    """The settings script's error in a Blender log (``peerfarm: no camera named ...``)."""
    marker = "RuntimeError: " + ERROR_PREFIX
    for line in reversed(log.splitlines()):
        if line.strip().startswith(marker):
            return line.strip()[len(marker) :]
    return None
