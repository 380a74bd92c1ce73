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
