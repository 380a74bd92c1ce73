"""Split stills: one frame rendered as a grid of tiles, and the tiles stitched back (pure).

This module owns the tile geometry and the stitching rule. A still split into ``count`` tiles
is a grid of ``cols`` x ``rows`` (``grid``: the most nearly square factorisation, rows >= cols,
so a prime count becomes horizontal strips). Tiles are numbered 1..count in reading order (left
to right, top to bottom); tile ``n`` covers pixels ``[x0, x1) x [y0, y1)`` of the full image,
top-left origin (``tile_rect``), and the tiles of a row or column share their edges exactly.

Blender renders a tile as a border render cropped to the border. Blender turns the border's
fractions into pixels by truncation (``int(fraction * width)``), so ``blender_border`` puts each
edge half a pixel inside its pixel boundary: float rounding can never move it to a neighbour.

Stitching needs no metadata: the tiles' own sizes give every offset (``stitch_layout``), and a
set of tiles whose sizes do not fit one grid is refused. Pillow is imported only by ``stitch``.

Standard library only at import time: Blender's own Python loads this file (the warm worker,
the per-frame prepare script) to compute the same rectangles inside Blender.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Most tiles a still may be split into (each is a unit of work with its own ledger entry).
MAX_TILES = 256
#: How a tile's output file is called (``tile_0001.png``): the tile number carries the name.
TILE_PREFIX = "tile_"


class TileError(ValueError):
    """Tiles that cannot be made or stitched; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class Rect:
    """Pixels ``[x0, x1) x [y0, y1)`` of an image, top-left origin."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def check_count(count: int) -> int:
    """``count`` when it is a tile count a still may have, else ``TileError``."""
    if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= MAX_TILES:
        raise TileError(f"tiles must be a whole number from 2 to {MAX_TILES}, got {count!r}")
    return count


def grid(count: int) -> tuple[int, int]:
    """(cols, rows) for ``count`` tiles: the divisor pair nearest a square, rows >= cols."""
    check_count(count)
    cols = max(d for d in range(1, math.isqrt(count) + 1) if count % d == 0)
    return cols, count // cols


def tile_rect(width: int, height: int, index: int, count: int) -> Rect:
    """The pixels tile ``index`` (1-based) of ``count`` covers in a ``width`` x ``height`` image."""
    cols, rows = grid(count)
    if not 1 <= index <= count:
        raise TileError(f"tile {index} is not one of 1-{count}")
    if width < cols or height < rows:
        raise TileError(
            f"a {width}x{height} image cannot be split into {count} tiles "
            f"({cols} columns, {rows} rows)"
        )
    row, col = divmod(index - 1, cols)
    return Rect(
        col * width // cols,
        row * height // rows,
        (col + 1) * width // cols,
        (row + 1) * height // rows,
    )


def blender_border(width: int, height: int, rect: Rect) -> tuple[float, float, float, float]:
    """Blender's ``border_min_x, border_max_x, border_min_y, border_max_y`` for ``rect``.

    Blender's y axis points up; every edge sits half a pixel inside its pixel boundary (see the
    module's docstring), clamped to 1.0 at the far edges."""
    return (
        (rect.x0 + 0.5) / width,
        min(1.0, (rect.x1 + 0.5) / width),
        (height - rect.y1 + 0.5) / height,
        min(1.0, (height - rect.y0 + 0.5) / height),
    )


def tile_name(index: int, suffix: str) -> str:
    """``tile_0001.png`` (``suffix`` with its dot)."""
    return f"{TILE_PREFIX}{index:04d}{suffix}"


Size = tuple[int, int]


def stitch_layout(sizes: Sequence[Size]) -> tuple[Size, list[Size]]:
    """The full image's size and each tile's top-left offset, from the tiles' sizes in order.

    Refuses sizes that do not make one grid (a row of unequal heights, rows of unequal widths)."""
    cols, rows = grid(len(sizes))
    widths = [sizes[c][0] for c in range(cols)]
    heights = [sizes[r * cols][1] for r in range(rows)]
    offsets: list[tuple[int, int]] = []
    for index, (w, h) in enumerate(sizes):
        row, col = divmod(index, cols)
        if w != widths[col] or h != heights[row]:
            raise TileError(
                f"tile {index + 1} is {w}x{h}, but its column is {widths[col]} wide and its "
                f"row {heights[row]} high: the tiles are not of one render"
            )
        offsets.append((sum(widths[:col]), sum(heights[:row])))
    return (sum(widths), sum(heights)), offsets


def stitch(tiles: Sequence[Path], target: Path) -> tuple[int, int]:
    """Paste ``tiles`` (in tile order) into one image at ``target``; returns its size.

    Written through a partial file and a rename; the format follows ``target``'s suffix."""
    from PIL import Image  # only the submitter stitches; Blender's Python has no Pillow

    from peerfarm import platform  # nor peerfarm: this file is loaded by path there

    images = []
    try:
        for path in tiles:
            image = Image.open(path)
            images.append(image)
        size, offsets = stitch_layout([image.size for image in images])
        modes = {image.mode for image in images}
        if len(modes) != 1:
            raise TileError(f"the tiles have different colour modes: {', '.join(sorted(modes))}")
        canvas = Image.new(modes.pop(), size)
        for image, offset in zip(images, offsets, strict=True):
            canvas.paste(image, offset)
        partial = target.with_name(f".{target.name}.part")
        canvas.save(partial, format=images[0].format)
        platform.replace(partial, target)  # retries while Windows holds the file
        return size
    finally:
        for image in images:
            image.close()
