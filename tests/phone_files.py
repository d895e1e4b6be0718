"""Real HEIC/HEIF and AVIF files for the upload tests, written by ``pillow-heif`` and Pillow's AVIF encoder.

iPhones save HEIC by default and browsers increasingly export AVIF; these are the same containers,
made in memory, plus the byte edits a hostile or damaged upload would carry.
"""

from __future__ import annotations

import struct

import pillow_heif
from PIL import Image

from support import COLOR_RGB, encode

# Writing HEIF needs the plugin's saver; the app registers the same plugin for reading.
pillow_heif.register_heif_opener()
FORMATS = ("HEIF", "AVIF")


def halves(size: tuple[int, int] = (120, 64), left: str = "red", right: str = "blue") -> Image.Image:
    """An RGB picture whose left half is ``left`` and right half ``right``."""
    img = Image.new("RGB", size, COLOR_RGB[left])
    img.paste(Image.new("RGB", (size[0] // 2, size[1]), COLOR_RGB[right]), (size[0] // 2, 0))
    return img


def photo(fmt: str, color: str = "green", size: tuple[int, int] = (96, 64), **save_kwargs) -> bytes:
    """A flat-colour photo as HEIC (``fmt="HEIF"``) or AVIF."""
    return encode(Image.new("RGB", size, COLOR_RGB[color]), fmt, quality=90, **save_kwargs)


def rotated(fmt: str, orientation: int = 6) -> bytes:
    """A 120x64 picture stored sideways (left red, right blue) with an EXIF orientation, as a camera writes it.

    pillow-heif turns the tag into the container's rotation (``irot``); Pillow's AVIF writer does the same.
    """
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "CameraMaker"
    return encode(halves(), fmt, quality=90, exif=exif.tobytes())


def sequence(fmt: str, colors: tuple[str, ...] = ("red", "blue", "green")) -> bytes:
    """Several images in one file (a burst or an animation); the first is ``colors[0]``."""
    frames = [Image.new("RGB", (64, 64), COLOR_RGB[c]) for c in colors]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], quality=90)


def declared_size(fmt: str, width: int, height: int) -> bytes:
    """A small valid file whose image spatial extent (``ispe`` box) claims ``width x height``.

    A 64x64 picture needs no clean-aperture crop, so the ``ispe`` box alone states its size.
    """
    data = photo(fmt, "red", size=(64, 64))
    position = data.find(b"ispe")
    assert position > 0 and data.count(b"ispe") == 1, "expected exactly one ispe box"
    return data[:position + 8] + struct.pack(">II", width, height) + data[position + 16:]


def truncated(fmt: str, keep: float = 0.5) -> bytes:
    """A noisy photo cut to ``keep`` of its length (an interrupted upload)."""
    import numpy as np

    rng = np.random.default_rng(5)
    data = encode(Image.fromarray(rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)), fmt, quality=90)
    return data[: int(len(data) * keep)]


def collection(fmt: str, count: int) -> bytes:
    """A file of ``count`` tiny images (an image collection or a burst), each 16x16."""
    frames = [Image.new("RGB", (16, 16), (index % 256, 0, 0)) for index in range(count)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], quality=10)
