"""A hostile-upload corpus generated in memory: every file is built here, nothing is downloaded.

Each :class:`Case` says what a correct server answers: a 4xx status and error code for inputs that
must be refused, or 201 for inputs that are odd but genuinely valid images (the reason is written on
the case). The same corpus feeds the in-process tests and the gunicorn fault run.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np
from PIL import Image

import bad_files
import phone_files
from benchmarks.bomb import gif_bomb, png_bomb
from benchmarks.bomb import png_chunk as chunk
from support import COLOR_RGB, encode

# Every EXIF orientation: 1 upright, 2-4 mirrored/rotated 180, 5-8 transposed (width and height swap).
ORIENTATIONS = range(1, 9)
# A mark that must never come back from the server (thumbnails are re-encoded, originals never served).
PAYLOAD = b"<script>alert('uploaded')</script>"


@dataclass
class Case:
    """One hostile request.

    Attributes:
        name: Short description shown in test ids.
        make: Builds the file content (``None``: no file part at all); called once, on first use.
        status: The expected status: 201, or the 4xx the server must answer.
        code: The expected error code (``None`` for 201).
        filename: Client-side file name.
        field_name: Multipart field name the file is sent in.
        extra_files: Further files in the same request.
        form: Further form fields (e.g. ``top_k``).
        why_valid: For 201 cases, why accepting the input is right.
    """

    name: str
    make: Callable[[], bytes | None]
    status: int
    code: str | None = None
    filename: str = "car.jpg"
    field_name: str = "image"
    extra_files: tuple[tuple[str, bytes, str], ...] = ()
    form: dict = field(default_factory=dict)
    why_valid: str = ""

    @cached_property
    def data(self) -> bytes | None:
        """The file content, built on first use (the bombs take a moment)."""
        return self.make()

    def multipart(self) -> dict:
        """The request's form: the file(s) and fields, as the Flask test client takes them."""
        form: dict = dict(self.form)
        files = [] if self.data is None else [(self.field_name, self.data, self.filename)]
        for name, content, filename in [*files, *self.extra_files]:
            form.setdefault(name, []).append((io.BytesIO(content), filename))
        return form


def photo(color: str = "red", size=(96, 64), fmt: str = "JPEG", **kwargs) -> bytes:
    return encode(Image.new("RGB", size, COLOR_RGB[color]), fmt, **kwargs)


def truncated_png() -> bytes:
    rng = np.random.default_rng(11)
    data = encode(Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)), "PNG")
    return data[: len(data) // 2]


def png_with_bad_crc(chunk_type: bytes) -> bytes:
    """A valid PNG whose ``chunk_type`` chunk (IHDR or IDAT) has its CRC flipped."""
    data = bytearray(photo("green", fmt="PNG"))
    start = data.index(chunk_type) - 4
    length = struct.unpack(">I", data[start:start + 4])[0]
    crc_at = start + 8 + length
    data[crc_at:crc_at + 4] = bytes(b ^ 0xFF for b in data[crc_at:crc_at + 4])
    return bytes(data)


def jpeg_with_exif(orientation: int) -> bytes:
    return bad_files.exif_rotated_jpeg(orientation)


def jpeg_with_broken_exif() -> bytes:
    """An APP1 Exif block whose IFD offset points far outside the block."""
    return photo("red", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xf0\x00\x00garbage")


def palette_png_with_transparency() -> bytes:
    img = Image.new("P", (40, 40), 0)
    img.putpalette([0, 0, 0, *COLOR_RGB["blue"]] + [0] * 762)
    img.paste(1, (10, 10, 30, 30))
    return encode(img, "PNG", transparency=0)


def zip_file() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("car.jpg", photo())
    return buffer.getvalue()


def pdf_file() -> bytes:
    return (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
            b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")


def svg_file() -> bytes:
    return (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
            b'<rect width="100" height="100" fill="red"/>' + PAYLOAD + b"</svg>")


def html_file() -> bytes:
    return b"<!doctype html><html><body><h1>car</h1>" + PAYLOAD + b"</body></html>"


def jpeg_zip_polyglot() -> bytes:
    """A real JPEG with a ZIP archive appended: a JPEG to image viewers, an archive to unzip."""
    return photo("red") + zip_file()


def gif_javascript_polyglot() -> bytes:
    """The classic GIF/JavaScript polyglot: a GIF header that is also the start of a script."""
    return b"GIF89a/*\x01\x00\x01\x00\x00\xff\x00,*/=1;" + PAYLOAD + b"//;"


def png_with_html_chunk() -> bytes:
    """A valid PNG that carries HTML in a text chunk (an image to Pillow, HTML to a sniffing browser)."""
    data = photo("green", fmt="PNG")
    return data[:-12] + chunk(b"tEXt", b"Comment\x00" + PAYLOAD) + data[-12:]


def apng(frames_declared: int | None = None) -> bytes:
    """A two-frame animated PNG (red, then blue); ``frames_declared`` rewrites the count in ``acTL``."""
    frames = [Image.new("RGB", (32, 32), COLOR_RGB[color]) for color in ("red", "blue")]
    data = bytearray(encode(frames[0], "PNG", save_all=True, append_images=frames[1:]))
    if frames_declared is not None:
        start = data.index(b"acTL") - 4
        body = struct.pack(">II", frames_declared, 0)
        data[start:start + 20] = chunk(b"acTL", body)
    return bytes(data)


def html_behind_jpeg_magic() -> bytes:
    return b"\xff\xd8\xff\xe0" + html_file()


def _bits(value: int, count: int) -> str:
    return format(value, f"0{count}b") if count else ""


def _with_frame_size(sequence_header: bytes, width: int, height: int) -> bytes:
    """An AV1 sequence header (reduced still-picture form, as libaom writes for AVIF) with a new frame size."""
    bits = "".join(format(byte, "08b") for byte in sequence_header)
    bits = bits[:bits.rindex("1")]  # drop the trailing bits: a one, then zeros to the byte
    assert bits[4] == "1", "expected a reduced still-picture sequence header"
    width_bits, height_bits = int(bits[10:14], 2) + 1, int(bits[14:18], 2) + 1
    rest = bits[18 + width_bits + height_bits:]
    new_width_bits, new_height_bits = max(width - 1, 1).bit_length(), max(height - 1, 1).bit_length()
    bits = (bits[:10] + _bits(new_width_bits - 1, 4) + _bits(new_height_bits - 1, 4)
            + _bits(width - 1, new_width_bits) + _bits(height - 1, new_height_bits) + rest + "1")
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def avif_coding(coded: tuple[int, int], declared: tuple[int, int]) -> bytes:
    """A small AVIF whose AV1 bitstream codes a ``coded`` frame while its ``ispe`` box declares ``declared``.

    Pillow writes a 64x64 AVIF; its sequence header in ``mdat`` is rewritten for the coded size (so the
    decoder would allocate that frame), then the 8 bytes after ``ispe`` are patched with the declared size.
    Encoding a real 16000 x 16000 frame takes 10 s and 4.7 GB here; the lie costs the server the same.
    """
    data = bytearray(photo("red", size=(64, 64), fmt="AVIF", speed=10))
    mdat = data.index(b"mdat") - 4
    assert mdat + struct.unpack(">I", data[mdat:mdat + 4])[0] == len(data), "expected mdat last"
    position = mdat + 8
    while data[position] >> 3 & 0x0F != 1:  # OBUs before the sequence header (a temporal delimiter)
        position += 2 + data[position + 1]
    size = data[position + 1]
    assert size < 0x80, "expected a one-byte OBU size"
    header = _with_frame_size(bytes(data[position + 2:position + 2 + size]), *coded)
    data[position + 1:position + 2 + size] = bytes([len(header)]) + header
    grown = len(header) - size
    data[mdat:mdat + 4] = struct.pack(">I", struct.unpack(">I", data[mdat:mdat + 4])[0] + grown)
    # The one item's one extent (iloc version 0, 4-byte offset and length): its length grows too.
    iloc = data.index(b"iloc") - 4
    assert data[iloc + 8] == 0 and data[iloc + 12:iloc + 14] == b"\x44\x00", "expected Pillow's iloc layout"
    length_at = iloc + 8 + 4 + 2 + 2 + 2 + 2 + 2 + 4
    data[length_at:length_at + 4] = struct.pack(">I", struct.unpack(">I", data[length_at:length_at + 4])[0] + grown)
    ispe = data.index(b"ispe")
    data[ispe + 8:ispe + 16] = struct.pack(">II", *declared)
    return bytes(data)


def avif_declaring(real: tuple[int, int], declared: tuple[int, int]) -> bytes:
    """A real AVIF of ``real`` pixels whose ``ispe`` box is patched to declare ``declared``."""
    data = bytearray(photo("red", size=real, fmt="AVIF", speed=10))
    position = data.index(b"ispe")
    data[position + 8:position + 16] = struct.pack(">II", *declared)
    return bytes(data)


def corpus() -> list[Case]:
    """All hostile cases; each file is built on first use of ``Case.data``."""
    cases = [
        Case("zero bytes", lambda: b"", 400, "empty_file"),
        Case("text renamed .jpg", bad_files.text_renamed_jpg, 415, "unsupported_media_type"),
        Case("html renamed .jpg", html_file, 415, "unsupported_media_type"),
        Case("svg renamed .jpg", svg_file, 415, "unsupported_media_type"),
        Case("pdf renamed .jpg", pdf_file, 415, "unsupported_media_type"),
        Case("zip renamed .jpg", zip_file, 415, "unsupported_media_type"),
        Case("bmp (decodable, not allowed)", lambda: photo(fmt="BMP"), 415, "unsupported_media_type"),
        Case("truncated jpeg", bad_files.truncated_jpeg, 422, "corrupt_image"),
        Case("truncated png", truncated_png, 422, "corrupt_image"),
        Case("png with a wrong IHDR crc", lambda: png_with_bad_crc(b"IHDR"), 422, "corrupt_image"),
        Case("png with a wrong IDAT crc", lambda: png_with_bad_crc(b"IDAT"), 422, "corrupt_image"),
        Case("png header claims 100000 x 100000", lambda: bad_files.png_with_header_size(100_000, 100_000),
             413, "image_too_large"),
        Case("png bomb 20000 x 20000 of zeros", lambda: png_bomb(20_000, 20_000), 413, "image_too_large"),
        Case("gif bomb 65535 x 65535", lambda: gif_bomb(65_535, 65_535), 413, "image_too_large"),
        Case("gif with a small screen and a huge frame",
             lambda: gif_bomb(16, 16, frame=(65_535, 65_535)), 413, "image_too_large"),
        Case("html behind jpeg magic bytes", html_behind_jpeg_magic, 422, "corrupt_image"),
        # Its header bytes are also JavaScript, and read as GIF they claim a frame of 15419 x 29539.
        Case("gif/javascript polyglot", gif_javascript_polyglot, 413, "image_too_large"),
        Case("apng declaring a million frames", lambda: apng(frames_declared=1_000_000),
             413, "too_many_frames"),
        # The container's size box lies; the AV1 sequence header is what the decoder allocates.
        Case("avif coding 16000 x 16000 while declaring 100 x 100",
             lambda: avif_coding((16_000, 16_000), (100, 100)), 413, "image_too_large"),
        Case("avif coding 614 x 224 while declaring 6000 x 6000",
             lambda: avif_declaring((614, 224), (6000, 6000)), 422, "corrupt_image"),
        Case("avif coding 640 x 480 while declaring 100 x 100",
             lambda: avif_declaring((640, 480), (100, 100)), 422, "corrupt_image"),
        # A JPEG decoder fills in what the data leaves out: only the entropy-coded bytes count, and frame
        # types whose data size bounds nothing are not taken.
        Case("jpeg claiming 6000 x 6000 as SOF9 (arithmetic)",
             lambda: bad_files.jpeg_claiming((6000, 6000), frame=0xC9), 415, "unsupported_media_type"),
        Case("jpeg claiming 6324 x 6324 as SOF10 (progressive arithmetic)",
             lambda: bad_files.jpeg_claiming((6324, 6324), frame=0xCA), 415, "unsupported_media_type"),
        Case("jpeg claiming 6000 x 6000 padded with 300 kB of zeros after its end",
             lambda: bad_files.jpeg_claiming((6000, 6000), padding=300_000), 422, "corrupt_image"),
        # libheif opens at most 1,000 items: a larger collection is too many frames, not a corrupt file.
        Case("heic holding 1001 images", lambda: phone_files.collection("HEIF", 1001), 413, "too_many_frames"),
        Case("file in the wrong field", photo, 400, "no_file", field_name="file"),
        Case("no file at all", lambda: None, 400, "no_file"),
    ]
    cases += [Case(f"top_k={value}", photo, 400, "invalid_top_k", form={"top_k": value})
              for value in ("-1", "0", "21", "abc")]
    valid = [
        Case("1 x 1 png", bad_files.one_pixel_png, 201, why_valid="the smallest image is valid too"),
        Case("1 x 100000 png", lambda: photo("red", size=(1, 100_000), fmt="PNG"), 201,
             why_valid="100,000 pixels are far under the pixel limit; extreme shapes are cropped"),
        Case("cmyk jpeg", bad_files.cmyk_jpeg, 201, why_valid="print-shop JPEGs are JPEGs"),
        Case("animated png", apng, 201, why_valid="the first frame is classified, the others never decoded"),
        Case("16-bit png", bad_files.png16, 201, why_valid="PNG allows 16 bits per sample"),
        Case("palette png with transparency", palette_png_with_transparency, 201,
             why_valid="transparent pixels are composited on white"),
        Case("jpeg with a broken exif block", jpeg_with_broken_exif, 201,
             why_valid="the pixels are intact; unreadable EXIF is ignored"),
        Case("jpeg + zip polyglot", jpeg_zip_polyglot, 201,
             why_valid="the JPEG part decodes; trailing bytes are never stored or served"),
        Case("png carrying html in a text chunk", png_with_html_chunk, 201,
             why_valid="a valid PNG; only a re-encoded thumbnail is kept, without the chunk"),
        Case("several files in the image field", lambda: photo("red"), 400, code="several_files",
             extra_files=(("image", photo("blue"), "second.jpg"),)),
        Case("very long file name", photo, 201, filename="a" * 5000 + ".jpg",
             why_valid="the name is only displayed, cut to 255 characters"),
        Case("unicode file name with controls", photo, 201,
             filename="\u202egpj.exe\u0000 \U0001F697.jpg",
             why_valid="control characters are dropped from the displayed name"),
        Case("path traversal file name", photo, 201, filename="../../../../etc/passwd.jpg",
             why_valid="names are never used as paths; only the last part is displayed"),
        Case("windows path file name", photo, 201, filename="C:\\Windows\\system32\\car.jpg",
             why_valid="names are never used as paths; only the last part is displayed"),
    ]
    valid += [Case(f"exif orientation {value}", lambda value=value: jpeg_with_exif(value), 201,
                   why_valid="every EXIF orientation is applied to the pixels") for value in ORIENTATIONS]
    return cases + valid
