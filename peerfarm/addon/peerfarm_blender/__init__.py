"""peerfarm's Blender add-on: submit the open file to the local peerfarm daemon.

A "peerfarm" panel in Output properties shows the farm (peers alive, slots free), the scene's
frame range, the job's priority, required peer tags and a few render options; its Submit
button saves unsaved changes and submits the file through the daemon's control API
(``farm.py``: standard library only), then shows the job's progress and why it waits.
``peerfarm addon PATH`` packs this folder as a zip that Blender 4.2+ installs as an extension
(``blender_manifest.toml``) and older Blenders as a legacy add-on (``bl_info``).

The panel never waits on the network while drawing: a timer starts a background thread that
fetches the farm's state every few seconds, and the panel draws what it last found.
"""

# No ``from __future__ import annotations``: Blender reads the property annotations of the
# classes below at registration, and older Blenders need them evaluated.
import threading
import time
from pathlib import Path
from typing import Any, Optional

import bpy

from . import farm

bl_info = {
    "name": "peerfarm",
    "author": "peerfarm",
    "version": (0, 1, 0),
    "blender": (3, 0, 0),
    "location": "Properties > Output > peerfarm",
    "description": "Submit this file to a peerfarm render farm",
    "category": "Render",
}

#: Seconds between two looks at the farm while Blender runs with a window.
POLL_INTERVAL_S = 3.0

#: What the panel shows; written by the fetching thread, read when drawing.
STATE: dict[str, Any] = {"farm": "", "job": "", "waiting": "", "error": "", "at": 0.0}
_lock = threading.Lock()
_fetching = threading.Event()


def _prefs(context: Any) -> Any:
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def _folder(context: Any) -> Path:
    prefs = _prefs(context)
    return farm.data_dir(prefs.data_dir if prefs is not None else "")


def refresh(folder: Path, job: str) -> dict[str, Any]:
    """Fetch the farm's state (and ``job``'s) into ``STATE``; returns the job's view or {}."""
    found: dict[str, Any] = {"error": "", "job": "", "waiting": "", "at": time.time()}
    view: dict[str, Any] = {}
    try:
        client = farm.Farm.connect(folder)
        status = client.status()
        found["farm"] = farm.farm_line(status)
        if job:
            view = farm.job_of(client.status(job), job) or {}
            if view:
                found["job"] = farm.job_line(view)
                found["waiting"] = farm.waiting_line(view) or ""
    except farm.FarmError as exc:
        found["farm"] = ""
        found["error"] = str(exc)
    with _lock:
        STATE.update(found)
    return view


def _fetch_in_background(folder: Path, job: str) -> None:
    try:
        refresh(folder, job)
    finally:
        _fetching.clear()


def _poll() -> Optional[float]:  # noqa: UP045 (evaluated at run time, Python 3.9 in 3.0)
    """Timer: start a fetch when none runs, redraw the properties editors."""
    context = bpy.context
    scene = getattr(context, "scene", None)
    if scene is None:
        return POLL_INTERVAL_S
    if not _fetching.is_set():
        _fetching.set()
        job = scene.peerfarm.job
        threading.Thread(
            target=_fetch_in_background, args=(_folder(context), job), daemon=True
        ).start()
    for window in getattr(context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()
    return POLL_INTERVAL_S


class PeerfarmPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    data_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Data folder",
        description="The peerfarm daemon's --data-dir (empty: the default, or $PEERFARM_DATA_DIR)",
        subtype="DIR_PATH",
        default="",
    )

    def draw(self, context: Any) -> None:
        self.layout.prop(self, "data_dir")


class PeerfarmSettings(bpy.types.PropertyGroup):
    priority: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Priority", description="Higher renders first", default=0, min=-1000, max=1000
    )
    require: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Requires",
        description="Peer tags the job needs, comma-separated (peers started with --tags)",
        default="",
    )
    chunk: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Chunk", description="Frames per task", default=1, min=1, max=10000
    )
    device: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Device",
        items=[
            ("SCENE", "Scene's", "Keep the scene's Cycles device"),
            ("CPU", "CPU", "Render on the CPU"),
            ("GPU", "GPU", "Render on a GPU (only peers that have one take the job)"),
        ],
        default="SCENE",
    )
    samples: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Samples", description="0: the scene's own", default=0, min=0, max=1000000
    )
    job: bpy.props.StringProperty(name="Job", default="")  # type: ignore[valid-type]


def job_options(settings: Any) -> dict[str, Any]:
    """The Blender options the panel sets (``peerfarm.renderers.options``)."""
    options: dict[str, Any] = {}
    if settings.device != "SCENE":
        options["device"] = settings.device
    if settings.samples > 0:
        options["samples"] = int(settings.samples)
    return options


def submit(context: Any) -> dict[str, Any]:
    """Save the file and submit it; returns the daemon's answer.

    The file is saved every time, not only when Blender marks it changed: changes made by
    scripts (and everything in background mode) do not mark it, and the farm must render
    what the artist sees."""
    if not bpy.data.filepath:
        raise farm.FarmError("save the file first: the farm renders a file on disk")
    try:
        bpy.ops.wm.save_mainfile()
    except RuntimeError as exc:
        raise farm.FarmError(f"cannot save {bpy.data.filepath}: {exc}") from None
    scene = context.scene
    settings = scene.peerfarm
    body = farm.submit_body(
        Path(bpy.path.abspath(bpy.data.filepath)),
        farm.frames_text(scene.frame_start, scene.frame_end, scene.frame_step),
        priority=settings.priority,
        require=settings.require,
        chunk=settings.chunk,
        options=job_options(settings),
    )
    answer = farm.Farm.connect(_folder(context)).submit(body)
    settings.job = str(answer["job"])
    with _lock:
        STATE.update({"job": f"{answer.get('name', '')}: submitted", "waiting": ""})
        STATE["waiting"] = str(answer.get("warning", ""))
    return answer


class PEERFARM_OT_submit(bpy.types.Operator):
    """Save the file and render it on the farm"""

    bl_idname = "peerfarm.submit"
    bl_label = "Submit to peerfarm"

    def execute(self, context: Any) -> set[str]:
        try:
            answer = submit(context)
        except farm.FarmError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"peerfarm: job {answer['job']} ({answer['frames']} frames)")
        if answer.get("warning"):
            self.report({"WARNING"}, str(answer["warning"]))
        return {"FINISHED"}


class PEERFARM_OT_refresh(bpy.types.Operator):
    """Look at the farm now"""

    bl_idname = "peerfarm.refresh"
    bl_label = "Refresh"

    def execute(self, context: Any) -> set[str]:
        refresh(_folder(context), context.scene.peerfarm.job)
        return {"FINISHED"}


class PEERFARM_PT_output(bpy.types.Panel):
    bl_label = "peerfarm"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "output"

    def draw(self, context: Any) -> None:
        layout = self.layout
        scene = context.scene
        settings = scene.peerfarm
        with _lock:
            state = dict(STATE)
        row = layout.row()
        row.label(text=state["farm"] or state["error"] or "looking for the farm...")
        row.operator("peerfarm.refresh", text="", icon="FILE_REFRESH")
        frames = farm.frames_text(scene.frame_start, scene.frame_end, scene.frame_step)
        layout.label(text=f"Frames {frames} (the scene's range)")
        col = layout.column()
        col.prop(settings, "priority")
        col.prop(settings, "chunk")
        col.prop(settings, "require")
        col.prop(settings, "device")
        col.prop(settings, "samples")
        layout.operator("peerfarm.submit", icon="RENDER_ANIMATION")
        if settings.job:
            box = layout.box()
            box.label(text=state["job"] or f"job {settings.job}")
            if state["waiting"]:
                box.label(text=state["waiting"])


CLASSES = (
    PeerfarmPreferences,
    PeerfarmSettings,
    PEERFARM_OT_submit,
    PEERFARM_OT_refresh,
    PEERFARM_PT_output,
)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.peerfarm = bpy.props.PointerProperty(type=PeerfarmSettings)
    if not bpy.app.background:
        bpy.app.timers.register(_poll, first_interval=1.0, persistent=True)


def unregister() -> None:
    if bpy.app.timers.is_registered(_poll):
        bpy.app.timers.unregister(_poll)
    del bpy.types.Scene.peerfarm
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
