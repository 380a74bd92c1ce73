"""Big PNG files written row by row (zlib streaming): a 1.6-gigapixel image costs 1 s, not GBs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))


def write_png(path: Path, width: int, height: int, *, bit_depth: int = 8, grey: int = 0) -> Path:
    """A greyscale PNG of one shade (``bit_depth`` 1 or 8), written without holding it whole."""
    row = b"\x00" + bytes([grey]) * ((width * bit_depth + 7) // 8)  # filter byte + pixels
    compressor = zlib.compressobj(9)
    with path.open("wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack("!IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)))
        pending = bytearray()
        for _ in range(height):
            pending += compressor.compress(row)
            if len(pending) > 1 << 20:
                f.write(_chunk(b"IDAT", bytes(pending)))
                pending.clear()
        pending += compressor.flush()
        f.write(_chunk(b"IDAT", bytes(pending)))
        f.write(_chunk(b"IEND", b""))
    return path
