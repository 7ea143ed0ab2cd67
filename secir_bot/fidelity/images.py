"""Width and height of PNG, GIF and JPEG images, read from their headers.

Matrix clients lay out an image before they have it when its ``info`` gives ``w`` and
``h``. Reading them takes a few fixed header fields; decoding the image (Pillow) would put
an image library, and its history of advisories, in front of every file members send, for
no gain. Anything unexpected gives None: the sizes are optional.
"""

from __future__ import annotations

import struct

MAX_SIDE = 100_000  # larger claims are not believed
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_JPEG_SCAN_LIMIT = 512 * 1024  # the frame header comes before the image data


def _sane(width: int, height: int) -> tuple[int, int] | None:
    if 0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE:
        return width, height
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    pos = 2
    end = min(len(data), _JPEG_SCAN_LIMIT)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            return None
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return _sane(width, height)
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        pos += 2 + length
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, GIF or JPEG image, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return _sane(width, height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return _sane(width, height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    return None
