"""How outputs are named: in the content store's records and in the submitter's folder. Pure.

Two rules live here:

* :func:`output_names` — what a frame's files are called in the job's output folder: the
  renderer's own name when it carries the frame number (``frame_0001.png``), otherwise prefixed
  with it, so frames never overwrite each other;
* :func:`delivery_name` — where one output goes in a folder that may already hold files: never
  over a file this job did not write. Its own name when that is free, holds the same bytes, was
  written by this job before (a retried frame), or the job asked to overwrite; otherwise the first
  free (or identical, or ours) ``stem (2).ext``, ``stem (3).ext``... The folder is asked through
  a probe, so the rule is tested without a disk.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from ..errors import StoreError
from ..files.names import safe_name
from ..renderers.base import frame_stem

MAX_VARIANTS = 1000


class Slot(enum.Enum):
    """What a folder holds under one name, as far as one output is concerned."""

    FREE = "free"  # nothing there
    SAME = "same"  # a file with this output's exact bytes
    OTHER = "other"  # something else (another file, a folder, a link)


def output_names(frame: int, files: Sequence[Path]) -> list[str]:
    """Names in the job's output folder for the files one frame produced."""
    stem = frame_stem(frame)
    digits = stem.split("_")[-1]
    names = []
    for path in files:
        name = path.name
        if digits in name:
            names.append(safe_name(name))
        elif len(files) == 1:
            names.append(safe_name(stem + path.suffix))
        else:
            names.append(safe_name(f"{stem}_{name}"))
    return names


def split_suffix(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    return (name, "") if dot <= 0 else (name[:dot], name[dot:])


def delivery_name(
    name: str,
    probe: Callable[[str], Slot],
    *,
    overwrite: bool,
    ours: Collection[str],
) -> str | None:
    """The name to deliver an output called ``name`` under; None when the folder already
    holds it (same bytes). ``ours`` are the names this job wrote into the folder before."""
    stem, suffix = split_suffix(name)
    for n in range(1, MAX_VARIANTS):
        candidate = name if n == 1 else f"{stem} ({n}){suffix}"
        slot = probe(candidate)
        if slot is Slot.FREE:
            return candidate
        if slot is Slot.SAME:
            return None
        if overwrite or candidate in ours:
            return candidate
    raise StoreError(f"no free name for {name}")
