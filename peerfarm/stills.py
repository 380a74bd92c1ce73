"""Split stills as jobs: the submit rule, and stitching the delivered tiles on the submitter.

A still split into N tiles is an ordinary job whose work units are the tiles: its "frames" are
the tile numbers 1..N, and two options peerfarm sets itself say what they are, ``tiles`` (N)
and ``tile_frame`` (the scene frame every tile renders). So every tile has its own claim, lease,
retry and takeover, and any peer may render any tile (``peerfarm.renderers.tiles`` has the
geometry; the Blender renderer renders ``tile_0001.png``...).

The submitter does not put tiles in the output folder: it fetches each tile into its content
store, marks it delivered, and once every tile is delivered stitches them into one image named
like the frame (``frame_0007.png``), through a partial file and the folder's naming rule
(``peer.naming.delivery_name``: never over a file the job did not write). Stitching the same
tiles again gives the same bytes, so a restarted submitter that stitches once more changes
nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peerfarm.errors import UsageError
from peerfarm.renderers import tiles
from peerfarm.renderers.base import frame_stem

#: Output formats a tiled job may ask for: the ones the submitter's Pillow stitches.
STITCHABLE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")


@dataclass(frozen=True, slots=True)
class Still:
    """A split still: ``count`` tiles of scene frame ``frame``."""

    count: int
    frame: int


def still_of(options: Mapping[str, Any]) -> Still | None:
    """The split still a job's options describe, or None for a job of frames (or options a
    newer or hostile peer got wrong: such a job is not stitched)."""
    count, frame = options.get("tiles"), options.get("tile_frame")
    if not isinstance(count, int) or not isinstance(frame, int) or isinstance(count, bool):
        return None
    try:
        return Still(tiles.check_count(count), frame)
    except tiles.TileError:
        return None


def plan_still(
    count: int,
    *,
    renderer: str,
    frames: tuple[int, ...],
    options: Mapping[str, Any],
    encode: bool,
) -> tuple[tuple[int, ...], dict[str, Any]]:
    """A submit with ``--tiles count``: the job's units (tiles 1..count) and its options.

    ``UsageError`` (one line) for a count out of range, more than one frame, a renderer other
    than Blender, a video, or an output format the submitter cannot stitch."""
    try:
        tiles.check_count(count)
    except tiles.TileError as exc:
        raise UsageError(str(exc)) from None
    if renderer != "blender":
        raise UsageError(f"tiles split a Blender still; a {renderer} job cannot be split")
    if len(frames) != 1:
        raise UsageError(f"tiles split one frame: give one frame number, not {len(frames)}")
    if encode:
        raise UsageError("a split still is one image: it cannot be encoded into a video")
    fmt = options.get("format")
    if fmt is not None and fmt not in STITCHABLE_FORMATS:
        raise UsageError(
            f"option format: a split still is stitched as {', '.join(STITCHABLE_FORMATS)}, "
            f"not {fmt}"
        )
    return tuple(range(1, count + 1)), {**options, "tiles": count, "tile_frame": frames[0]}


def stitched_name(still: Still, tile_name: str) -> str:
    """The stitched image's name: the frame's (``frame_0007``) with the tiles' extension."""
    suffix = Path(tile_name).suffix
    return frame_stem(still.frame) + suffix


def stitch_to(paths: list[Path], partial: Path) -> str:
    """Stitch ``paths`` (tiles in order) into ``partial``; the sha256 of what was written."""
    tiles.stitch(paths, partial)
    with partial.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
