"""Reading .blend headers (plain, gzip, zstd; legacy and Blender 5 layouts) and can_open."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.errors import UsageError
from peerfarm.renderers.scenes import (
    BlendInfo,
    NotABlendFile,
    can_open,
    inspect_blend,
    parse_blend_header,
    parse_version,
)
from tests.support.renderers import EXAMPLES

LEGACY_34 = b"BLENDER-v304REND" + bytes(100)  # Blender 3.4, 64-bit, little endian
LARGE_50 = b"BLENDER17-01v0500" + bytes(100)  # Blender 5.0's header layout


def test_parse_headers() -> None:
    assert parse_blend_header(LEGACY_34) == (3, 4)
    assert parse_blend_header(b"BLENDER_V279") == (2, 79)
    assert parse_blend_header(LARGE_50) == (5, 0)
    assert parse_blend_header(b"BLENDER17-01v0405") == (4, 5)
    with pytest.raises(NotABlendFile):
        parse_blend_header(b"PK\x03\x04 not a blend")


@pytest.mark.parametrize(
    ("body", "wrap", "expected"),
    [
        (LEGACY_34, lambda b: b, BlendInfo((3, 4), False, None)),
        (LEGACY_34, gzip.compress, BlendInfo((3, 4), True, "gzip")),
        (LARGE_50, zstandard.ZstdCompressor().compress, BlendInfo((5, 0), True, "zstd")),
        (LARGE_50, lambda b: b, BlendInfo((5, 0), False, None)),
    ],
)
def test_inspect_files(tmp_path: Path, body: bytes, wrap: object, expected: BlendInfo) -> None:
    path = tmp_path / "s.blend"
    path.write_bytes(wrap(body))  # type: ignore[operator]
    assert inspect_blend(path) == expected


def test_inspect_the_committed_example() -> None:
    info = inspect_blend(EXAMPLES / "blender" / "turntable.blend")
    assert info.version >= (4, 2)


def test_inspect_errors_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        inspect_blend(tmp_path / "missing.blend")
    bad = tmp_path / "bad.blend"
    bad.write_bytes(b"\x28\xb5\x2f\xfd garbage")
    with pytest.raises(NotABlendFile):
        inspect_blend(bad)
    text = tmp_path / "t.blend"
    text.write_text("hello")
    with pytest.raises(NotABlendFile, match=r"not a \.blend header"):
        inspect_blend(text)


def test_can_open_never_a_newer_file() -> None:
    assert can_open((3, 4), (5, 0))
    assert can_open((5, 0), (5, 0))
    assert not can_open((5, 0), (3, 4))
    assert not can_open((4, 5), (4, 2))
    assert parse_version("Blender 3.4.1") == (3, 4)
    assert parse_version("5.0.1") == (5, 0)


versions = st.tuples(st.integers(2, 9), st.integers(0, 99))


@given(versions, versions)
def test_can_open_is_the_version_order(a: tuple[int, int], b: tuple[int, int]) -> None:
    assert can_open(a, b) == (a <= b)
    assert can_open(a, a)


@pytest.mark.parametrize("mover", ["bat", "peerfarm"])
def test_a_packed_file_moved_at_once_by_the_copier_thread_is_not_lost(
    tmp_path: Path, mover: str
) -> None:
    """The pack's copier thread may move a queued file before the queueing thread reads its
    size (a loaded machine): blender-asset-tracer 1.23 then raised FileNotFoundError and the
    submit failed; peerfarm's mover reads the size first. Here the queue moves each file the
    moment it is put, as the quickest copier thread would."""
    from blender_asset_tracer.pack import filesystem

    from peerfarm.renderers.scenes import packer_class

    if mover == "bat":
        copier = filesystem.FileCopier()
    else:
        cls = packer_class()
        packer = cls.__new__(cls)  # no blend file needed to make its mover
        packer.compress = False
        copier = packer._create_file_transferer()

    class MovesAtOnce:
        def put(self, item: tuple[Path, Path, object], **_kw: object) -> None:
            src, dst, _action = item
            src.rename(dst)

    copier.queue = MovesAtOnce()
    src = tmp_path / "pack-info.txt"
    src.write_text("This is a Blender Asset Tracer pack.\n")
    dst = tmp_path / "out.txt"
    if mover == "bat":  # the race, as it is in blender-asset-tracer itself
        with pytest.raises(FileNotFoundError):
            copier.queue_move(src, dst)
        return
    copier.queue_move(src, dst)
    assert dst.read_text().startswith("This is a Blender Asset Tracer pack.")
    assert copier.total_queued_bytes == dst.stat().st_size
