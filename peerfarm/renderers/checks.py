"""Output checks: what a frame must produce to count as done, and checking a frame's files.

A renderer plugin declares, per task, an :class:`Expected` (``Renderer.expected_output``):
POV-Ray an image of the job's width and height, Blender an image (its size is set inside the
.blend, so only that it is a readable image), the command renderer at least one file unless the
job was submitted with ``--no-output`` (the ``no_output`` spec option). A render that exits 0
without what it declared fails that frame with the reason :func:`check_files` gives, and the
frame is retried by the normal retry rules.

Image headers are read with Pillow (``Image.open`` reads the header only; ``verify`` checks
the file's structure without decoding every pixel). Also used by ``peerfarm check`` to judge
delivered files against the ledger's digests (:func:`damaged`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

#: The spec option of ``submit --no-output`` (wire name: never rename).
NO_OUTPUT = "no_output"


@dataclass(frozen=True, slots=True)
class Expected:
    """What one frame must leave in its output folder."""

    files: int = 1  # at least this many files (0: nothing required)
    image: bool = False  # the first file must be a readable image
    width: int | None = None  # ... of exactly this size, when known
    height: int | None = None


NOTHING = Expected(files=0)


def check_files(expected: Expected, files: list[Path]) -> str | None:
    """Why ``files`` are not what a frame had to produce, in one line; None when they are."""
    if len(files) < expected.files:
        return (
            "exited 0 but wrote no output file"
            if not files
            else (f"exited 0 but wrote {len(files)} of {expected.files} output files")
        )
    if not expected.image or not files:
        return None
    path = files[0]
    if path.stat().st_size == 0:
        return f"exited 0 but its image {path.name} is empty"
    try:
        with Image.open(path) as image:
            size = image.size
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"exited 0 but {path.name} is not a readable image ({type(exc).__name__})"
    want = (expected.width, expected.height)
    if None not in want and size != want:
        return (
            f"exited 0 but {path.name} is {size[0]}x{size[1]}, not the expected {want[0]}x{want[1]}"
        )
    return None


def file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.digest()


def damaged(path: Path | None, digest: bytes) -> str | None:
    """Why a delivered file is not the one the ledger names (missing, changed), or None."""
    if path is None or not path.is_file():
        return "missing"
    try:
        if file_digest(path) != digest:
            return "damaged (its bytes differ from the rendered frame's)"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None
