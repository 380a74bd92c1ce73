"""Scenes that travel as archives or folders, unpacked safely: where a render finds its main file.

A ClusterRay-style scene (a folder of includes and textures) travels as a zip or tar archive.
This module owns unpacking it once per job (members checked: no escaping paths, no links, a
cap on members and unpacked bytes; unpacked into a staging folder and renamed into place, so
two slots never see half an archive) and finding the file a renderer opens
(``resolve_scene``: the scene itself, or the ``main`` option / the single ``.pov`` or
``.blend`` inside the unpacked folder).
"""

from __future__ import annotations

import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from peerfarm import platform
from peerfarm.renderers.base import RenderFailed, RenderTask

#: Archive unpacking caps: total uncompressed bytes and member count.
MAX_UNPACKED_BYTES = 4 * 1024**3
MAX_ARCHIVE_MEMBERS = 100_000
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(ARCHIVE_SUFFIXES)


def _safe_member_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise RenderFailed(f"archive member escapes the scene folder: {name!r}")
    return path


def _unpack_zip(archive: Path, into: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise RenderFailed(f"archive has too many members ({len(members)})")
        if sum(m.file_size for m in members) > max_bytes:
            raise RenderFailed(f"archive unpacks to more than {max_bytes} bytes")
        for member in members:
            name = _safe_member_name(member.filename)
            mode = member.external_attr >> 16
            if mode and (mode & 0o170000) == 0o120000:
                raise RenderFailed(f"archive member is a symlink: {member.filename!r}")
            target = into.joinpath(*name.parts)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(member) as src, target.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > member.file_size:
                        raise RenderFailed(f"archive member lies about its size: {name}")
                    dst.write(chunk)


def _unpack_tar(archive: Path, into: Path, max_bytes: int) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise RenderFailed(f"archive has too many members ({len(members)})")
        if sum(m.size for m in members if m.isfile()) > max_bytes:
            raise RenderFailed(f"archive unpacks to more than {max_bytes} bytes")
        for member in members:
            _safe_member_name(member.name)
            if member.issym() or member.islnk():
                raise RenderFailed(f"archive member is a link: {member.name!r}")
        tf.extractall(into, members=members, filter="data")


def unpack_archive_once(
    archive: Path, work_dir: Path, *, max_bytes: int = MAX_UNPACKED_BYTES
) -> Path:
    """Unpack a .zip/.tar(.gz) scene into ``work_dir/scene`` once per job and return it.

    Refuses absolute paths, ``..``, links and archives over ``max_bytes``. Unpacks into a
    temporary folder and renames it into place, so a crash or a second slot never sees half.
    """
    target = work_dir / "scene"
    if target.is_dir():
        return target
    work_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=work_dir))
    try:
        try:
            if archive.name.lower().endswith(".zip"):
                _unpack_zip(archive, staging, max_bytes)
            else:
                _unpack_tar(archive, staging, max_bytes)
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
            raise RenderFailed(f"cannot unpack {archive.name}: {exc}") from exc
        try:
            platform.rename(staging, target)
        except OSError as exc:
            if not target.is_dir():  # else another slot won the race: use its copy
                raise RenderFailed(f"cannot unpack {archive.name}: {exc}") from exc
    finally:
        platform.remove_tree(staging)
    return target


def find_main_file(root: Path, suffix: str, main: str | None = None) -> Path:
    """The scene's main file: ``main`` if given, else the only ``*suffix`` at the top level,
    else the only one anywhere below."""
    if main:
        candidate = (root / main).resolve()
        if not candidate.is_relative_to(root.resolve()) or not candidate.is_file():
            raise RenderFailed(f"main file {main!r} is not in the scene folder")
        return candidate
    for found in (sorted(root.glob(f"*{suffix}")), sorted(root.rglob(f"*{suffix}"))):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(str(p.relative_to(root)) for p in found[:5])
            raise RenderFailed(f"several {suffix} files ({names}): set the 'main' option")
    raise RenderFailed(f"no {suffix} file in the scene folder")


def resolve_scene(task: RenderTask, suffix: str) -> Path:
    """The main scene file of ``task``: the file itself, or found in a folder or archive."""
    scene = task.scene
    if is_archive(scene):
        scene = unpack_archive_once(scene, task.work_dir)
    if scene.is_dir():
        main = task.options.get("main")
        return find_main_file(scene, suffix, str(main) if main else None)
    if not scene.is_file():
        raise RenderFailed(f"scene not found: {scene}")
    return scene
