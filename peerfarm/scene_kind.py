"""Which renderer a scene is for, from its file name (and an archive's or folder's contents).

Kept outside the renderers package, whose plugins take about 0.1 s to import: ``peerfarm
submit`` asks this first and must start quickly.
"""

from __future__ import annotations

from pathlib import Path

from peerfarm.errors import UsageError

_BY_SUFFIX = {".blend": "blender", ".pov": "povray", ".sh": "command"}


def _archive_names(path: Path) -> list[str]:
    import tarfile  # here: a submit of a plain scene does not load them
    import zipfile

    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                return zf.namelist()
        with tarfile.open(path) as tf:
            return tf.getnames()
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise UsageError(f"cannot read the archive {path}: {exc}") from exc


def _by_contents(names: list[str]) -> str | None:
    suffixes = {Path(name).suffix.lower() for name in names}
    if ".pov" in suffixes:
        return "povray"
    if ".blend" in suffixes:
        return "blender"
    return None


def renderer_for_scene(path: Path) -> str:
    """The plugin for a scene: .blend -> blender; .pov, or a folder/.zip/.tar.gz holding a
    .pov -> povray (holding only a .blend -> blender); .sh -> command. Else ``UsageError``."""
    name = path.name.lower()
    if path.is_dir():
        found = _by_contents([p.name for p in path.rglob("*") if p.is_file()])
        if found is None:
            raise UsageError(
                f"no .pov or .blend file in the folder {path}: choose one with --renderer"
            )
        return found
    if name.endswith((".zip", ".tar.gz", ".tgz", ".tar")):
        if not path.exists():
            return "povray"
        found = _by_contents(_archive_names(path))
        return found or "povray"
    suffix = path.suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    shown = suffix or "(no extension)"
    raise UsageError(
        f"no renderer for scenes ending in {shown} ({path.name}): "
        "choose one with --renderer (command, povray, blender)"
    )
