"""Placeholder PNG outputs: small, valid, and byte-for-byte the same for the same inputs.

Built with ``zlib`` and ``struct`` only: a diagonal gradient between two colours with a
checker overlay, all derived from sha256 of the seed and the prompt.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BASE_SIDE = 64
MAX_SIDE = 1024


def dimensions(aspect_ratio: str, side: int = BASE_SIDE) -> tuple[int, int]:
    """Width and height for ``aspect_ratio`` ("16:9" -> 64x36); anything unparsable is square."""
    try:
        ratio_w, ratio_h = (int(part) for part in aspect_ratio.split(":"))
    except ValueError:
        return side, side
    if ratio_w <= 0 or ratio_h <= 0:
        return side, side
    if ratio_w >= ratio_h:
        return side, max(1, round(side * ratio_h / ratio_w))
    return max(1, round(side * ratio_w / ratio_h)), side


@functools.lru_cache(maxsize=128)
def render_png(seed: int, prompt: str, width: int, height: int) -> bytes:
    """An RGB PNG of ``width`` x ``height``; its pattern depends only on ``seed`` and ``prompt``."""
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ValueError(f"width and height must be between 1 and {MAX_SIDE}")
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    pixels = b"".join(b"\x00" + _row(digest, y, width, height) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        PNG_MAGIC
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(pixels, 9))
        + _chunk(b"IEND", b"")
    )


def _row(digest: bytes, y: int, width: int, height: int) -> bytes:
    start, end, accent = digest[0:3], digest[3:6], digest[6:9]
    cell = 4 + digest[9] % 8
    span = max(1, width + height - 2)
    row = bytearray()
    for x in range(width):
        t = (x + y) / span
        checker = ((x // cell) + (y // cell)) % 2 == 1
        for channel in range(3):
            value = start[channel] + (end[channel] - start[channel]) * t
            if checker:
                value = (3 * value + accent[channel]) / 4
            row.append(int(value))
    return bytes(row)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
