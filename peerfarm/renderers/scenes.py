"""What a .blend file is, read from its header only, and packing a scene with its assets.

This module owns two questions asked before a Blender job is submitted or claimed:

* which Blender saved this file, and can this peer's Blender open it (``inspect_blend``,
  ``can_open``). The header is the first bytes of the (possibly gzip- or zstd-compressed) file:
  legacy ``BLENDER`` + pointer size (``_``/``-``) + endianness (``v``/``V``) + 3 digits
  (``304`` = 3.4); Blender 5's ``BLENDER`` + header size ``17`` + ``-`` + format ``01`` + ``v`` +
  4 digits (``0500`` = 5.0), the layout blender-asset-tracer reads.
* which files a scene needs, gathered into one folder that renders anywhere (``pack_blend``, with
  blender-asset-tracer, like ``bat pack``). Missing assets are reported, never ignored.
"""

from __future__ import annotations

import functools
import gzip
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import zstandard

from peerfarm.errors import UsageError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
HEADER_BYTES = 17
LEGACY_HEADER_RE = re.compile(rb"^BLENDER[_-][vV](\d{3})")
LARGE_HEADER_RE = re.compile(rb"^BLENDER(\d\d)-(\d\d)[vV](\d{4})")


class NotABlendFile(UsageError):
    """A file that is not a .blend Blender can read (the message says what was found)."""


@dataclass(frozen=True, slots=True)
class BlendInfo:
    """The Blender version that saved a file, e.g. (5, 0), and whether it is compressed."""

    version: tuple[int, int]
    compressed: bool
    compression: str | None = None  # "gzip" | "zstd" | None


@dataclass(frozen=True, slots=True)
class PackResult:
    """A packed scene: its main .blend, every file in the pack, and assets that were missing."""

    main: Path
    files: list[Path]
    missing: list[str]


def parse_blend_header(header: bytes) -> tuple[int, int]:
    """The (major, minor) version in an uncompressed .blend header (pure)."""
    if match := LEGACY_HEADER_RE.match(header):
        number = int(match.group(1))
        return number // 100, number % 100
    if match := LARGE_HEADER_RE.match(header):
        number = int(match.group(3))
        return number // 100, number % 100
    raise NotABlendFile(f"not a .blend header: {header[:HEADER_BYTES]!r}")


def _read_header(path: Path) -> tuple[bytes, str | None]:
    with path.open("rb") as f:
        start = f.read(HEADER_BYTES)
        if start.startswith(GZIP_MAGIC):
            f.seek(0)
            with gzip.GzipFile(fileobj=f) as gz:
                return gz.read(HEADER_BYTES), "gzip"
        if start.startswith(ZSTD_MAGIC):
            f.seek(0)
            with zstandard.ZstdDecompressor().stream_reader(f) as zs:
                return zs.read(HEADER_BYTES), "zstd"
        return start, None


def inspect_blend(path: Path) -> BlendInfo:
    """Version and compression of a .blend, from its header only."""
    try:
        header, compression = _read_header(path)
    except FileNotFoundError as exc:
        raise NotABlendFile(f"{path}: no such file") from exc
    except (OSError, EOFError, ValueError, zstandard.ZstdError) as exc:
        raise NotABlendFile(f"{path}: cannot read the header ({exc})") from exc
    try:
        version = parse_blend_header(header)
    except NotABlendFile as exc:
        raise NotABlendFile(f"{path}: {exc}") from None
    return BlendInfo(version, compression is not None, compression)


def parse_version(text: str) -> tuple[int, int]:
    """``"5.0.1"`` or ``"Blender 3.4.1"`` -> (5, 0) / (3, 4)."""
    match = re.search(r"(\d+)\.(\d+)", text)
    if match is None:
        raise ValueError(f"no version number in {text!r}")
    return int(match.group(1)), int(match.group(2))


def can_open(file_version: tuple[int, int], blender_version: tuple[int, int]) -> bool:
    """Whether a Blender opens a file: never a newer one (3.4 cannot read 5.0 files)."""
    return tuple(file_version) <= tuple(blender_version)


@functools.cache
def packer_class() -> Any:
    """blender-asset-tracer's ``Packer`` with a file mover that reads a file's size before it
    queues the move. BAT 1.23 queues a move and then reads the source's size; its copier
    thread, already running, may have moved the file away by then, and the submit failed with
    "FileNotFoundError: .../bat-...-batpack/pack-info.txt" (seen on a loaded machine)."""
    from blender_asset_tracer import pack  # heavy import, only where packing happens
    from blender_asset_tracer.pack import filesystem, transfer

    class SizeFirstCopier(filesystem.FileCopier):
        def queue_move(self, src: Path, dst: PurePath) -> None:
            if src.is_dir():
                raise TypeError(f"only files can be moved, not directories: {src}")
            if self.has_error:
                return
            size = src.stat().st_size  # before the copier thread can take it
            self.queue.put((src, dst, transfer.Action.MOVE))
            self.total_queued_bytes += size

    class SizeFirstPacker(pack.Packer):
        def _create_file_transferer(self) -> Any:
            if self.compress:  # peerfarm never compresses: BAT's own then
                return super()._create_file_transferer()
            return SizeFirstCopier()  # type: ignore[no-untyped-call]

    return SizeFirstPacker


def pack_blend(path: Path, out_dir: Path, *, project: Path | None = None) -> PackResult:
    """Copy ``path`` and every file it uses into ``out_dir`` (``bat pack`` equivalent).

    ``project`` (default: the file's folder) is the root whose layout is kept; assets outside
    it land under ``_outside_project/``. Paths are rewritten so the copy renders after the
    originals move away. Missing assets are listed in ``missing`` (the caller refuses the
    submit); the rest is still packed.
    """
    blend = path.resolve()
    inspect_blend(blend)
    root = (project or blend.parent).resolve()
    if not blend.is_relative_to(root):
        raise UsageError(f"{blend} is not inside the project folder {root}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with packer_class()(blend, root, str(out_dir.resolve())) as packer:
        try:
            packer.strategise()
        except Exception as exc:  # blender-asset-tracer's many errors on a damaged file
            raise UsageError(f"cannot read {blend.name}: {type(exc).__name__}: {exc}") from None
        missing = sorted(str(p) for p in packer.missing_files)
        packer.execute()
        main = Path(packer.output_path)
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    return PackResult(main=main, files=files, missing=missing)
