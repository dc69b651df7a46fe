"""A tiny dependency-free PNG encoder and bar chart, for the demo 1C base's pictures.

The demo base needs real images (a chart tool, a logo resource, a tool icon) without pulling in
Pillow, so this writes truecolour PNGs with nothing but zlib and struct.

    png = bar_chart([120.5, 80, 240], width=240, height=120)
    icon = bar_chart([2, 4, 3], width=16, height=16)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

Colour = tuple[int, int, int]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BACKGROUND: Colour = (255, 255, 255)
AXIS: Colour = (64, 64, 64)
# 1C's own palette (yellow/red/grey), so the demo pictures look like they came from a 1C report.
PALETTE: tuple[Colour, ...] = ((244, 196, 48), (214, 69, 65), (120, 144, 156), (76, 175, 80))


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def encode_png(width: int, height: int, pixels: Sequence[Sequence[Colour]]) -> bytes:
    """Encode `height` rows of `width` RGB pixels as an 8-bit truecolour PNG."""
    if width <= 0 or height <= 0 or len(pixels) != height:
        raise ValueError("pixels must hold `height` rows of a positive size")
    raw = bytearray()
    for row in pixels:
        if len(row) != width:
            raise ValueError("every row must hold `width` pixels")
        raw.append(0)  # filter type "None" for every scanline: simplest valid choice
        for r, g, b in row:
            raw += bytes((r, g, b))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bit, RGB, deflate, no interlace
    return (
        PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + _chunk(b"IEND", b"")
    )


def _bar_heights(values: Sequence[float], plot_height: int) -> list[int]:
    top = max((v for v in values if v > 0), default=0.0)
    if top <= 0:
        return [0 for _ in values]
    # A positive value always gets at least one pixel, so small sales stay visible.
    return [max(1, round(v / top * plot_height)) if v > 0 else 0 for v in values]


def bar_chart(values: Sequence[float], width: int = 240, height: int = 120) -> bytes:
    """Draw one vertical bar per value (negative values draw nothing) on a white canvas."""
    canvas = [[BACKGROUND] * width for _ in range(height)]
    margin = 1 if min(width, height) < 32 else 4
    plot_height = height - 2 * margin - 1
    plot_width = width - 2 * margin - 1
    if values and plot_height > 0 and plot_width > 0:
        slot = plot_width / len(values)
        for index, bar in enumerate(_bar_heights(values, plot_height)):
            left = margin + 1 + int(index * slot + slot * 0.15)
            right = margin + 1 + max(int((index + 1) * slot - slot * 0.15), int(index * slot + slot * 0.15) + 1)
            colour = PALETTE[index % len(PALETTE)]
            for y in range(height - margin - 1 - bar, height - margin - 1):
                for x in range(left, min(right, width - margin)):
                    canvas[y][x] = colour
    for x in range(margin, width - margin):  # x axis
        canvas[height - margin - 1][x] = AXIS
    for y in range(margin, height - margin):  # y axis
        canvas[y][margin] = AXIS
    return encode_png(width, height, canvas)
