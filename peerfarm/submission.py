"""What a submit asks for, checked and turned into a job's parts before anything is stored.

``peerfarm.farm.Farm.submit`` calls :func:`plan_submit` first: the scene must exist and be
readable, the frames parse, the renderer is known (or guessed from the scene's suffix), the
options pass the renderer's schema, a split still becomes its tiles, and ``--after``,
``--notify``, ``--no-output``, ``--require``, ``--fps`` and ``--allow-scripts`` become spec
options; every mistake is one ``UsageError`` line. :func:`prepare_scene` (run in a thread) then
gives the file to store: a folder zipped (ClusterRay style), a .blend with its external files
packed and its version read, else the scene itself.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import platform
from .control import RENDERERS, SubmitRequest
from .errors import UsageError
from .files.names import folder_name
from .frames import parse_frames
from .renderers import checks, renderer_for_scene
from .renderers.blend_names import check_names
from .renderers.options import requirements
from .renderers.options import validate as validate_options
from .renderers.scenes import inspect_blend, pack_blend
from .scheduler import dependencies, notices
from .stills import plan_still


@dataclass(frozen=True, slots=True)
class PlannedSubmit:
    """A checked submit: the scene to read, the job's name, renderer, frames, output, options."""

    scene: Path
    name: str
    renderer: str
    frames: tuple[int, ...]
    output: Path
    options: dict[str, Any]


def plan_submit(
    request: SubmitRequest, shared_root: Path | None, resolve_job: Callable[[str], str]
) -> PlannedSubmit:
    """Check ``request`` and work out the job's parts (``resolve_job``: a job reference -> id)."""
    scene = Path(request.scene).expanduser()
    if not scene.exists():
        raise UsageError(f"scene not found: {scene}")
    if scene.is_file():
        try:
            with scene.open("rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise UsageError(f"cannot read the scene {scene}: {exc.strerror}") from None
    frames = parse_frames(request.frames)
    renderer = request.renderer or renderer_for_scene(scene)
    if renderer not in RENDERERS:
        raise UsageError(f"unknown renderer {renderer!r}: choose one of {', '.join(RENDERERS)}")
    if request.chunk < 1:
        raise UsageError("--chunk must be at least 1")
    name = (request.name or scene.stem or "job")[:200]
    cwd = request.cwd or Path.cwd()
    output = request.output or (cwd / "peerfarm-out" / folder_name(name))
    output = output if output.is_absolute() else cwd / output
    options = validate_options(renderer, request.options)
    if request.tiles is not None:
        frames, options = plan_still(
            request.tiles,
            renderer=renderer,
            frames=frames,
            options=options,
            encode=request.encode is not None,
        )
    options.update(submit_extras(request, renderer, resolve_job))
    if request.allow_scripts:
        options["allow_scripts"] = True
    if request.fps:
        options["fps"] = request.fps
    if request.require:
        options["require"] = requirements(list(request.require))
    if shared_root is not None:  # paths as the disk spells them (case-insensitive disks)
        output = platform.on_disk_case(output.resolve())
        scene = platform.on_disk_case(scene.resolve())
    return PlannedSubmit(scene, name, renderer, frames, output, options)


def submit_extras(
    request: SubmitRequest, renderer: str, resolve_job: Callable[[str], str]
) -> dict[str, Any]:
    """Spec options from ``--after/--per-frame``, ``--notify`` and ``--no-output``."""
    extra: dict[str, Any] = {}
    if request.after:
        parent = resolve_job(request.after)
        extra.update(dependencies.dependency_options(parent, request.per_frame))
    elif request.per_frame:
        raise UsageError("--per-frame goes with --after JOB")
    if request.notify:
        extra[notices.NOTIFY] = notices.check_targets(request.notify)
    if request.no_output:
        if renderer != "command":
            raise UsageError("--no-output is for command jobs: an image renderer writes its frame")
        extra[checks.NO_OUTPUT] = True
    return extra


def prepare_scene(
    scene: Path, renderer: str, tmp: Path, options: dict[str, Any] | None = None
) -> tuple[Path, list[tuple[str, Path]], dict[str, Any]]:
    """The scene file to store, its assets (relative name, path) and options it implies."""
    extra: dict[str, Any] = {}
    if scene.is_dir():
        archive = tmp / f"{scene.name}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(scene.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(scene).as_posix())
        return archive, [], extra
    if renderer == "blender" and scene.suffix.lower() == ".blend":
        info = inspect_blend(scene)
        extra["blend_version"] = f"{info.version[0]}.{info.version[1]}"
        check_names(scene, options or {})  # a camera or view layer the file lacks
        packed = pack_blend(scene, tmp / "packed")
        if packed.missing:
            raise UsageError(
                f"{scene.name} uses files that are missing: {', '.join(packed.missing[:5])}"
                + (" ..." if len(packed.missing) > 5 else "")
            )
        root = packed.main.parent
        assets = [
            (p.relative_to(root).as_posix(), p)
            for p in packed.files
            if p != packed.main and p.is_file()
        ]
        return packed.main, assets, extra
    return scene, [], extra
