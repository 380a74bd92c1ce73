"""Images and videos made from rendered frames: thumbnails, sizes, and a video of a job.

This module owns everything peerfarm does to finished frames: Pillow for thumbnails and image
sizes, ffmpeg (libx264, yuv420p, even dimensions) for a preview video. Decoding is bounded: an
image's size is read from its header first, JPEGs are decoded straight at a reduced scale
(``draft``), and an image that would still need more than ``MAX_DECODE_PIXELS`` decoded pixels
gets no thumbnail (``ImageTooLarge``) instead of the daemon's memory. Frames may have gaps or
odd names (or none: blobs of the content store), so they are fed to ffmpeg as a concat list
(``ffconcat``: one quoted absolute path and a duration per frame) in a temporary folder, never
as symlinks, which Windows allows only in Developer Mode. ffmpeg runs through
``run_logged``, so a cancelled encode leaves no process behind.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from peerfarm.errors import RendererError, UsageError
from peerfarm.renderers.base import RenderFailed, run_logged

# make_thumbnail checks every image's size itself before decoding anything; Pillow's own
# "decompression bomb" warning (a global check at ~90 megapixels) would only be noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

DEFAULT_THUMBNAIL_SIZE = (160, 120)
#: Most pixels decoded for one thumbnail: 8K UHD (7680x4320) fits; each costs up to 4 bytes.
MAX_DECODE_PIXELS = 36_000_000


class NotAnImage(UsageError):
    """A file Pillow cannot read as an image; the message names it."""


class ImageTooLarge(NotAnImage):
    """An image too large to decode for a preview; the message gives its size."""


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
    """The image, opened lazily: only its header is read (size, mode, format)."""
    try:
        return Image.open(path)
    except FileNotFoundError as exc:
        raise NotAnImage(f"{path}: no such file") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{path.name} is too large to preview ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise NotAnImage(f"{path} is not an image Pillow can read ({exc})") from exc


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header (nothing is decoded)."""
    with _open(path) as image:
        width, height = image.size
        return width, height


def make_thumbnail(
    image: Path, out: Path, max_size: tuple[int, int] = DEFAULT_THUMBNAIL_SIZE
) -> Path:
    """Write a thumbnail of ``image`` fitting in ``max_size`` (aspect kept) to ``out``.

    The format follows ``out``'s extension (PNG when it has none Pillow knows). At most
    ``MAX_DECODE_PIXELS`` are decoded (a JPEG at a reduced scale); a larger image raises
    ``ImageTooLarge`` before any of it is decoded.
    """
    with _open(image) as source:
        width, height = source.size
        source.draft("RGB", max_size)  # JPEG: decode at 1/2, 1/4 or 1/8 scale; others: no-op
        decoded = source.size[0] * source.size[1]
        if decoded > MAX_DECODE_PIXELS:
            megapixels = width * height / 1e6
            raise ImageTooLarge(
                f"{image.name} is {width}x{height} ({megapixels:.0f} megapixels): too large "
                f"to preview (at most {MAX_DECODE_PIXELS / 1e6:.0f})"
            )
        try:
            source.load()
            if source.mode not in ("RGB", "RGBA", "L", "LA"):
                source = source.convert("RGBA" if "A" in source.getbands() else "RGB")
            source.thumbnail(max_size, Image.Resampling.LANCZOS)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise NotAnImage(f"{image} is not an image Pillow can read ({exc})") from exc
        thumb = source.convert("RGBA" if "A" in source.getbands() else "RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(out.suffix.lower(), "PNG")
    if fmt == "JPEG" and thumb.mode == "RGBA":
        thumb = thumb.convert("RGB")
    thumb.save(out, format=fmt)
    return out


def concat_list(frames: list[Path], fps: float) -> str:
    """ffmpeg's concat list of ``frames``, each shown for 1/``fps`` s (pure).

    Paths are absolute with forward slashes (ffmpeg reads them so on Windows too) inside
    single quotes, a quote in a name written as ``'\\''``."""
    lines = ["ffconcat version 1.0"]
    for frame in frames:
        text = frame.as_posix().replace("'", "'\\''")
        lines += [f"file '{text}'", f"duration {1 / fps:.9f}"]
    return "\n".join(lines) + "\n"


def ffmpeg_argv(concat: Path, out: Path, fps: float, ffmpeg: str = "ffmpeg") -> list[str]:
    """ffmpeg's command line for the frames of the concat list ``concat`` -> H.264 ``out``
    at ``fps`` frames per second (pure)."""
    return [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        str(concat),
        "-r",
        f"{fps:g}",
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
    out.parent.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        if not frame.is_file():
            raise UsageError(f"frame file not found: {frame}")
    with tempfile.TemporaryDirectory(prefix="peerfarm-video-") as tmp:
        listing = Path(tmp) / "frames.ffconcat"
        listing.write_text(concat_list([f.resolve() for f in frames], fps), encoding="utf-8")
        argv = ffmpeg_argv(listing, out, fps, ffmpeg)
        try:
            run = await run_logged(argv)
        except RenderFailed as exc:
            raise EncodeFailed(f"cannot run ffmpeg: {exc.reason}") from exc
    if run.returncode != 0 or not out.is_file():
        last = run.log_tail.splitlines()[-1] if run.log_tail.strip() else "no output"
        message = f"ffmpeg failed (status {run.returncode}): {last}"
        raise EncodeFailed(message, log_tail=run.log_tail)
    return out
