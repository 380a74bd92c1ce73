"""Images and videos made from rendered frames: thumbnails, sizes, and a video of a job.

This module owns everything peerfarm does to finished frames: Pillow for thumbnails and image
sizes, ffmpeg (libx264, yuv420p, even dimensions) for a preview video. Frames may have gaps or
odd names, so they are fed to ffmpeg as numbered symlinks in a temporary folder. ffmpeg runs
through ``run_logged``, so a cancelled encode leaves no process behind.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from peerfarm.errors import RendererError, UsageError
from peerfarm.renderers.base import RenderFailed, run_logged

DEFAULT_THUMBNAIL_SIZE = (160, 120)


class NotAnImage(UsageError):
    """A file Pillow cannot read as an image; the message names it."""


class FfmpegMissing(UsageError):
    """ffmpeg is not on PATH."""

    def __init__(self) -> None:
        super().__init__("ffmpeg is not installed: install ffmpeg: apt-get install ffmpeg")


class EncodeFailed(RendererError):
    """ffmpeg ran and failed; ``log_tail`` holds the end of its output."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError as exc:
        raise NotAnImage(f"{path}: no such file") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise NotAnImage(f"{path} is not an image Pillow can read ({exc})") from exc
    return image


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file."""
    with _open(path) as image:
        width, height = image.size
        return width, height


def make_thumbnail(
    image: Path, out: Path, max_size: tuple[int, int] = DEFAULT_THUMBNAIL_SIZE
) -> Path:
    """Write a thumbnail of ``image`` fitting in ``max_size`` (aspect kept) to ``out``.

    The format follows ``out``'s extension (PNG when it has none Pillow knows).
    """
    with _open(image) as source:
        thumb = source.convert("RGBA" if "A" in source.getbands() else "RGB")
        thumb.thumbnail(max_size, Image.Resampling.LANCZOS)
        out.parent.mkdir(parents=True, exist_ok=True)
        fmt = Image.registered_extensions().get(out.suffix.lower(), "PNG")
        if fmt == "JPEG" and thumb.mode == "RGBA":
            thumb = thumb.convert("RGB")
        thumb.save(out, format=fmt)
    return out


def ffmpeg_argv(pattern: str, out: Path, fps: float, ffmpeg: str = "ffmpeg") -> list[str]:
    """ffmpeg's command line for numbered frames ``pattern`` -> H.264 ``out`` (pure)."""
    return [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-framerate",
        f"{fps:g}",
        "-i",
        pattern,
        "-vf",
        "scale=trunc(iw/2)*2:trunc(ih/2)*2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(out),
    ]


async def encode_video(frames: list[Path], out: Path, fps: float) -> Path:
    """Encode ``frames`` (in the given order, gaps allowed) into an H.264 video at ``out``."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FfmpegMissing()
    if not frames:
        raise UsageError("no frames to encode")
    if fps <= 0:
        raise UsageError(f"frames per second must be positive, not {fps}")
    suffix = frames[0].suffix.lower() or ".png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peerfarm-video-") as tmp:
        for index, frame in enumerate(frames):
            if not frame.is_file():
                raise UsageError(f"frame file not found: {frame}")
            (Path(tmp) / f"{index:06d}{suffix}").symlink_to(frame.resolve())
        argv = ffmpeg_argv(str(Path(tmp) / f"%06d{suffix}"), out, fps, ffmpeg)
        try:
            run = await run_logged(argv)
        except RenderFailed as exc:
            raise EncodeFailed(f"cannot run ffmpeg: {exc.reason}") from exc
    if run.returncode != 0 or not out.is_file():
        last = run.log_tail.splitlines()[-1] if run.log_tail.strip() else "no output"
        message = f"ffmpeg failed (status {run.returncode}): {last}"
        raise EncodeFailed(message, log_tail=run.log_tail)
    return out
