"""Preview videos for real: ffmpeg encodes frames with gaps and odd sizes, or fails with its log."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import trio
from PIL import Image

from peerfarm.media import (
    EncodeFailed,
    encode_video,
)
from tests.support.renderers import needs_ffmpeg


def _image(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def _probe(path: Path) -> dict[str, object]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=width,height,pix_fmt,codec_name,nb_read_frames",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    stream: dict[str, object] = json.loads(out)["streams"][0]
    return stream


@needs_ffmpeg
async def test_encode_frames_with_gaps_and_odd_size(tmp_path: Path) -> None:
    frames = [
        _image(tmp_path / f"frame_{n:04d}.png", (65, 49), (n * 20, 100, 200)) for n in (1, 2, 5, 9)
    ]
    with trio.fail_after(30):
        out = await encode_video(frames, tmp_path / "video" / "job.mp4", fps=12)
    stream = _probe(out)
    assert stream["codec_name"] == "h264" and stream["pix_fmt"] == "yuv420p"
    assert (stream["width"], stream["height"]) == (64, 48)
    assert stream["nb_read_frames"] == "4"


@needs_ffmpeg
async def test_encode_failure_carries_the_log(tmp_path: Path) -> None:
    bogus = tmp_path / "frame_0001.png"
    bogus.write_text("not a png")
    with trio.fail_after(30), pytest.raises(EncodeFailed) as info:
        await encode_video([bogus], tmp_path / "out.mp4", fps=24)
    assert info.value.log_tail
