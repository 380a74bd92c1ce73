"""Frame ranges as artists write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.errors import FrameRangeError
from peerfarm.frames import (
    MAX_FRAME_NUMBER,
    MAX_FRAMES,
    format_frames,
    from_runs,
    parse_frames,
    to_runs,
)
from peerfarm.ledger.codec import MAX_FRAME


@pytest.mark.parametrize(
    ("text", "frames"),
    [
        ("7", (7,)),
        ("0", (0,)),
        ("1-5", (1, 2, 3, 4, 5)),
        ("1,5,10-12", (1, 5, 10, 11, 12)),
        ("1, 5,  10-12", (1, 5, 10, 11, 12)),
        ("1-9x2", (1, 3, 5, 7, 9)),
        ("1-10x4", (1, 5, 9)),
        ("5,1-3,2", (5, 1, 2, 3)),  # order kept, duplicates merged
        ("3-3", (3,)),
    ],
)
def test_parses_what_artists_write(text: str, frames: tuple[int, ...]) -> None:
    assert parse_frames(text) == frames


def test_1_240() -> None:
    assert parse_frames("1-240") == tuple(range(1, 241))


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("1-", "'1-'"),
        ("a-b", "'a-b'"),
        ("10-1", "'10-1'"),
        ("1-10x0", "'1-10x0'"),
        ("1,,2", "''"),
        ("-3", "'-3'"),
        ("1.5", "'1.5'"),
        ("1-2000000", "'1-2000000'"),
        ("1 - 5", "'1 - 5'"),
    ],
)
def test_refuses_with_the_bad_part_quoted(text: str, quoted: str) -> None:
    with pytest.raises(FrameRangeError) as info:
        parse_frames(text)
    assert quoted in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["", "   "])
def test_refuses_empty(text: str) -> None:
    with pytest.raises(FrameRangeError, match="empty"):
        parse_frames(text)


def test_limit_counts_the_whole_job() -> None:
    half = MAX_FRAMES // 2 + 1
    with pytest.raises(FrameRangeError, match="too large"):
        parse_frames(f"0-{half},{half + 1}-{2 * half + 1}")


@given(st.lists(st.integers(0, 10_000), max_size=200))
def test_runs_round_trip(frames: list[int]) -> None:
    unique = list(dict.fromkeys(frames))
    assert from_runs(to_runs(unique)) == tuple(unique)


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=100))
def test_format_parses_back(frames: list[int]) -> None:
    unique = tuple(dict.fromkeys(frames))
    assert parse_frames(format_frames(unique)) == unique


@given(st.text(max_size=30))
def test_any_text_parses_or_raises_the_narrow_error(text: str) -> None:
    try:
        frames = parse_frames(text)
    except FrameRangeError:
        return
    assert frames and all(f >= 0 for f in frames)
    assert len(set(frames)) == len(frames)


@pytest.mark.parametrize(
    "text", ["99999999999999999999999999", "1-1000000001", "1-5x" + "9" * 30, "1" * 5000]
)
def test_frame_numbers_beyond_the_ledgers_range_are_refused_in_one_short_line(text: str) -> None:
    assert MAX_FRAME_NUMBER == MAX_FRAME
    with pytest.raises(FrameRangeError) as caught:
        parse_frames(text)
    assert len(str(caught.value)) < 150
    assert parse_frames(str(MAX_FRAME_NUMBER)) == (MAX_FRAME_NUMBER,)
