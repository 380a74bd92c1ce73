"""Split stills, pure: tile geometry, Blender's border fractions, stitching, the submit rule."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageChops

from peerfarm.errors import UsageError
from peerfarm.renderers import tiles
from peerfarm.renderers.blender import BlenderRenderer, tile_expr, tiling
from peerfarm.renderers.tiles import Rect, TileError
from peerfarm.stills import Still, plan_still, still_of, stitched_name
from tests.support.renderers import make_task

counts = st.integers(min_value=2, max_value=tiles.MAX_TILES)


def test_grid_is_nearest_to_square_and_primes_are_strips() -> None:
    assert tiles.grid(4) == (2, 2)
    assert tiles.grid(6) == (2, 3)
    assert tiles.grid(7) == (1, 7)
    assert tiles.grid(12) == (3, 4)
    assert tiles.grid(16) == (4, 4)


@pytest.mark.parametrize("bad", [0, 1, -3, tiles.MAX_TILES + 1, True, 2.5, "4"])
def test_a_bad_count_is_refused_in_one_line(bad: object) -> None:
    with pytest.raises(TileError) as info:
        tiles.check_count(bad)  # type: ignore[arg-type]
    assert "\n" not in str(info.value) and "from 2 to" in str(info.value)


@given(counts, st.integers(1, 600), st.integers(1, 400))
def test_tiles_cover_the_image_exactly_once(count: int, width: int, height: int) -> None:
    cols, rows = tiles.grid(count)
    if width < cols or height < rows:
        with pytest.raises(TileError, match="cannot be split"):
            tiles.tile_rect(width, height, 1, count)
        return
    rects = [tiles.tile_rect(width, height, i, count) for i in range(1, count + 1)]
    assert sum(r.width * r.height for r in rects) == width * height
    assert all(r.width >= 1 and r.height >= 1 for r in rects)
    # Reading order: a row's tiles share their top and bottom; columns meet edge to edge.
    for index, rect in enumerate(rects):
        row, col = divmod(index, cols)
        if col:
            assert rect.x0 == rects[index - 1].x1 and rect.y0 == rects[index - 1].y0
        if row:
            assert rect.y0 == rects[index - cols].y1
    assert rects[-1].x1 == width and rects[-1].y1 == height


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


@given(counts, st.integers(1, 8000), st.integers(1, 8000), st.data())
def test_blender_turns_the_border_back_into_the_same_pixels(
    count: int, width: int, height: int, data: st.DataObject
) -> None:
    """Blender keeps the fractions as 32-bit floats and truncates ``fraction * size``."""
    cols, rows = tiles.grid(count)
    if width < cols or height < rows:
        return
    index = data.draw(st.integers(1, count))
    rect = tiles.tile_rect(width, height, index, count)
    min_x, max_x, min_y, max_y = (_float32(f) for f in tiles.blender_border(width, height, rect))
    assert 0.0 <= min_x < max_x <= 1.0 and 0.0 <= min_y < max_y <= 1.0
    assert int(_float32(min_x * width)) == rect.x0
    assert int(_float32(max_x * width)) == rect.x1
    assert int(_float32(min_y * height)) == height - rect.y1  # Blender's y axis points up
    assert int(_float32(max_y * height)) == height - rect.y0


@given(counts, st.integers(1, 300), st.integers(1, 300))
def test_the_layout_comes_back_from_the_tile_sizes(count: int, width: int, height: int) -> None:
    cols, rows = tiles.grid(count)
    if width < cols or height < rows:
        return
    rects = [tiles.tile_rect(width, height, i, count) for i in range(1, count + 1)]
    size, offsets = tiles.stitch_layout([(r.width, r.height) for r in rects])
    assert size == (width, height)
    assert offsets == [(r.x0, r.y0) for r in rects]


def test_tiles_of_different_renders_are_refused() -> None:
    with pytest.raises(TileError, match="tile 4 is 30x20"):
        tiles.stitch_layout([(33, 25), (34, 25), (33, 26), (30, 20)])


def _gradient(width: int, height: int) -> Image.Image:
    image = Image.new("RGBA", (width, height))
    image.putdata(
        [
            (x * 255 // width, y * 255 // height, (x * y) % 256, 255)
            for y in range(height)
            for x in range(width)
        ]
    )
    return image


@pytest.mark.parametrize("count", [2, 4, 6, 7])
def test_stitching_cut_tiles_gives_the_image_back(tmp_path: Path, count: int) -> None:
    full = _gradient(67, 51)
    paths = []
    for index in range(1, count + 1):
        rect = tiles.tile_rect(67, 51, index, count)
        path = tmp_path / tiles.tile_name(index, ".png")
        full.crop((rect.x0, rect.y0, rect.x1, rect.y1)).save(path)
        paths.append(path)
    target = tmp_path / "frame_0007.png"
    assert tiles.stitch(paths, target) == (67, 51)
    with Image.open(target) as stitched:
        assert stitched.format == "PNG" and stitched.mode == "RGBA"
        assert ImageChops.difference(stitched, full).getbbox() is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_rect_sizes() -> None:
    assert Rect(3, 4, 10, 12).width == 7 and Rect(3, 4, 10, 12).height == 8


# --- the job: submit rule and options ---------------------------------------------------------


def test_a_split_still_is_a_job_of_tiles() -> None:
    frames, options = plan_still(
        4, renderer="blender", frames=(7,), options={"threads": 2}, encode=False
    )
    assert frames == (1, 2, 3, 4)
    assert options == {"threads": 2, "tiles": 4, "tile_frame": 7}
    assert still_of(options) == Still(4, 7)
    assert still_of({"threads": 2}) is None
    assert still_of({"tiles": "4", "tile_frame": 7}) is None  # a peer's bad options: no still
    assert stitched_name(Still(4, 7), "tile_0001.png") == "frame_0007.png"


@pytest.mark.parametrize(
    ("count", "renderer", "frames", "options", "encode", "says"),
    [
        (1, "blender", (7,), {}, False, "tiles must be a whole number from 2 to 256, got 1"),
        (300, "blender", (7,), {}, False, "from 2 to 256"),
        (4, "povray", (7,), {}, False, "a povray job cannot be split"),
        (4, "blender", (1, 2), {}, False, "give one frame number, not 2"),
        (4, "blender", (7,), {}, True, "cannot be encoded"),
        (4, "blender", (7,), {"format": "OPEN_EXR"}, False, "not OPEN_EXR"),
    ],
)
def test_a_bad_split_is_refused_in_one_line(
    count: int,
    renderer: str,
    frames: tuple[int, ...],
    options: dict[str, object],
    encode: bool,
    says: str,
) -> None:
    with pytest.raises(UsageError) as info:
        plan_still(count, renderer=renderer, frames=frames, options=options, encode=encode)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_tile_renders_the_still_frame_in_one_process(tmp_path: Path) -> None:
    renderer = BlenderRenderer(mode="cli", executable="/opt/blender/blender")
    task = make_task(tmp_path, Path("/s/still.blend"), (3,), options={"tiles": 4, "tile_frame": 7})
    assert tiling(task) == (4, 7)
    argv = renderer.build_argv(task)
    assert argv[argv.index("-o") + 1] == f"{tmp_path / 'out'}/tile_0003_####"
    assert argv[-4:] == ["--python-expr", tile_expr(3, 4), "-f", "7"]
    assert "apply_tile(bpy.context.scene, 3, 4)" in tile_expr(3, 4)
    with pytest.raises(Exception, match="one tile"):
        renderer.build_argv(
            make_task(
                tmp_path, Path("/s/still.blend"), (1, 2), options={"tiles": 4, "tile_frame": 7}
            )
        )
    assert tiling(make_task(tmp_path, Path("/s/a.blend"), (1,))) is None
