"""Real problem files for the upload tests, made in memory with Pillow and a few byte edits."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from support import COLOR_RGB, encode


def text_renamed_jpg() -> bytes:
    """A text file someone renamed to ``car.jpg``."""
    return b"This is a shopping list, not a photo.\nmilk\neggs\n"


def truncated_jpeg() -> bytes:
    """A real noisy JPEG cut to 60% of its length (an interrupted upload)."""
    rng = np.random.default_rng(3)
    data = encode(Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)), "JPEG", quality=90)
    return data[: int(len(data) * 0.6)]


def jpeg_claiming(size: tuple[int, int], *, frame: int = 0xC0, padding: int = 0) -> bytes:
    """A real small JPEG whose frame header claims ``size``: its data covers 64 x 48 only.

    ``frame`` rewrites the SOF marker (0xC9: arithmetic, 0xCA: progressive arithmetic, which the decoder
    then reads the Huffman data as); ``padding`` appends that many zero bytes after the end-of-image marker.
    """
    progressive = frame in (0xC2, 0xCA)
    data = bytearray(encode(Image.new("RGB", (64, 48), (200, 30, 30)), "JPEG", quality=90,
                            progressive=progressive))
    position = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    assert position > 0
    data[position + 1] = frame
    data[position + 5:position + 9] = struct.pack(">HH", size[1], size[0])
    return bytes(data) + bytes(padding)


def png_with_header_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR claims ``width x height`` (CRC fixed, so the header parses)."""
    data = bytearray(encode(Image.new("RGB", (8, 8), COLOR_RGB["red"]), "PNG"))
    ihdr_start = 8 + 8  # signature, then chunk length + type
    data[ihdr_start:ihdr_start + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr_start + 13])) & 0xFFFFFFFF
    data[ihdr_start + 13:ihdr_start + 17] = struct.pack(">I", crc)
    return bytes(data)


def cmyk_jpeg(color: str = "blue") -> bytes:
    """A print-shop CMYK JPEG of a flat colour."""
    return encode(Image.new("RGB", (96, 64), COLOR_RGB[color]).convert("CMYK"), "JPEG", quality=95)


def png16(levels: tuple[int, int] = (0, 65535)) -> bytes:
    """A 16-bit greyscale PNG: left half ``levels[0]``, right half ``levels[1]``."""
    values = np.full((40, 80), levels[0], dtype=np.uint16)
    values[:, 40:] = levels[1]
    return encode(Image.fromarray(values), "PNG")


def rgba_png(color: str = "green") -> bytes:
    """An RGBA PNG: an opaque colour block in the middle of a fully transparent canvas."""
    img = Image.new("RGBA", (90, 90), (0, 0, 0, 0))
    img.paste(Image.new("RGBA", (50, 50), (*COLOR_RGB[color], 255)), (20, 20))
    return encode(img, "PNG")


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """A 120x60 JPEG stored sideways: left half red, right half blue, with an EXIF orientation tag."""
    img = Image.new("RGB", (120, 60), COLOR_RGB["red"])
    img.paste(Image.new("RGB", (60, 60), COLOR_RGB["blue"]), (60, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "CameraMaker"
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def one_pixel_png(color: str = "red") -> bytes:
    return encode(Image.new("RGB", (1, 1), COLOR_RGB[color]), "PNG")
