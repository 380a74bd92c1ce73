"""Putting a copy of a file into a folder a user named, without following what is planted there.

``place_copy(source, folder, name)`` is how ``fetch`` writes frames: the name must be one safe
file name (``names.safe_name``); the bytes go to a fresh temporary file created with
``O_EXCL | O_NOFOLLOW`` in that folder, which then replaces the directory entry ``name``
(``os.replace``). A symlink planted at ``name``, or at any temporary name, is replaced or
refused, never written through, so nothing outside the folder is touched. ``safe_join(folder,
name)`` is the only way a name from the network is joined to a folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from peerfarm import platform
from peerfarm.files.names import UnsafeName, safe_name

__all__ = ["place_copy", "safe_join"]

_COPY_BUFFER = 1024 * 1024


def place_copy(source: Path, folder: Path, name: str) -> Path:
    """Copy ``source`` to ``folder/name`` (replacing whatever entry is there); the new path.

    Raises ``UnsafeName`` for a name that is not one plain file name, ``OSError`` when the
    folder cannot be made or written.
    """
    checked = safe_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / checked
    tmp = folder / f".{checked[:40]}.{secrets.token_hex(6)}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, _COPY_BUFFER)
        platform.replace(tmp, target)
    except BaseException:
        platform.remove(tmp)
        raise
    return target


def safe_join(folder: Path, name: str) -> Path:
    """Return ``folder / name`` after checking ``name``; the result is a direct child of folder.

    Besides ``safe_name``, the joined path is resolved (following an existing symlink of that
    name) and must land directly inside the resolved folder, so a planted symlink cannot
    redirect a write elsewhere.
    """
    checked = safe_name(name)
    joined = folder / checked
    base = folder.resolve()
    if joined.resolve().parent != base:
        raise UnsafeName(name, f"resolves outside {folder}")
    return joined
