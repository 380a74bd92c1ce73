"""Thumbnails, image sizes and preview videos."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import trio
from PIL import Image

from peerfarm.media import (
    EncodeFailed,
    FfmpegMissing,
    NotAnImage,
    encode_video,
    ffmpeg_argv,
    image_size,
    make_thumbnail,
)
from tests.renderers.conftest import needs_ffmpeg


def _image(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def test_thumbnail_keeps_the_aspect_ratio(tmp_path: Path) -> None:
    source = _image(tmp_path / "f.png", (320, 240), (200, 10, 10))
    thumb = make_thumbnail(source, tmp_path / "thumbs" / "f.jpg")
    assert image_size(thumb) == (160, 120)
    with Image.open(thumb) as image:
        assert image.format == "JPEG"
    tall = _image(tmp_path / "tall.png", (100, 400), (0, 0, 0))
    assert image_size(make_thumbnail(tall, tmp_path / "t.png", (64, 64))) == (16, 64)


def test_non_images_give_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(NotAnImage, match=r"notes\.png is not an image"):
        make_thumbnail(text, tmp_path / "x.png")
    with pytest.raises(NotAnImage, match="no such file"):
        image_size(tmp_path / "missing.png")


def test_ffmpeg_argv_makes_even_yuv420p_h264(tmp_path: Path) -> None:
    argv = ffmpeg_argv("in/%06d.png", tmp_path / "o.mp4", 24)
    assert argv[argv.index("-c:v") + 1] == "libx264"
    assert argv[argv.index("-pix_fmt") + 1] == "yuv420p"
    assert "trunc(iw/2)*2" in argv[argv.index("-vf") + 1]
    assert argv[argv.index("-framerate") + 1] == "24"


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


async def test_missing_ffmpeg_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FfmpegMissing, match="apt-get install ffmpeg"):
        await encode_video([tmp_path / "a.png"], tmp_path / "o.mp4", fps=24)
