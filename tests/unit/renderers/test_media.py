"""Thumbnails, image sizes and the ffmpeg command line (pure: no ffmpeg runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from peerfarm.media import (
    FfmpegMissing,
    NotAnImage,
    concat_list,
    encode_video,
    ffmpeg_argv,
    image_size,
    make_thumbnail,
)


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
    argv = ffmpeg_argv(tmp_path / "list", tmp_path / "o.mp4", 24)
    assert argv[argv.index("-c:v") + 1] == "libx264"
    assert argv[argv.index("-pix_fmt") + 1] == "yuv420p"
    assert "trunc(iw/2)*2" in argv[argv.index("-vf") + 1]
    assert argv[argv.index("-r") + 1] == "24"
    assert argv[argv.index("-f") + 1 : argv.index("-i") + 2] == [
        "concat", "-safe", "0", "-i", str(tmp_path / "list"),
    ]  # fmt: skip


def test_concat_list_quotes_every_path_and_gives_each_frame_its_time() -> None:
    text = concat_list([Path("/a b/frame 1.png"), Path("/it's/0f3a")], 4)
    assert text.splitlines() == [
        "ffconcat version 1.0",
        "file '/a b/frame 1.png'",
        "duration 0.250000000",
        "file '/it'\\''s/0f3a'",
        "duration 0.250000000",
    ]


async def test_missing_ffmpeg_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FfmpegMissing, match="apt-get install ffmpeg"):
        await encode_video([tmp_path / "a.png"], tmp_path / "o.mp4", fps=24)
