"""Turn uploaded bytes into a model-ready RGB image, safely, in memory.

Only JPEG, PNG, WebP, GIF, HEIC/HEIF (phone cameras, through ``pillow-heif``) and AVIF (Pillow's own
decoder) are opened, recognised by their content (never by the file name or the claimed type). The
header size is checked before any pixel is decoded, so a tiny file that claims a huge canvas costs
nothing; PNG chunk checksums are verified first, and of an animated image or an image sequence only
the first (primary) image is decoded. Large JPEGs are decoded at a reduced DCT scale
(``Image.draft``: 1/2, 1/4 or 1/8) but never below the size the model needs, which skips most of the
decoding work; on 788 validation photos upscaled to phone size it left the shipped model's accuracy
unchanged (79.7 % either way, against decoding at twice the input size).

A JPEG decoder fills whatever the file leaves out with grey rather than failing, so a few hundred
bytes that claim a 6000 x 6000 canvas would decode "successfully". Huffman coding spends at least one
bit per 8 x 8 block even on a blank picture, which gives every canvas a minimum size; a file below it
is incomplete and refused before it is decoded (:func:`jpeg_data_complete`).

An AVIF file's container declares a size (``ispe``) that its decoder does not obey: dav1d decodes the
frame the AV1 sequence header codes. That coded size is read first (:mod:`.avif`) and is what the pixel
limit, the upload's cost and the stored size go by; a file whose two sizes disagree is refused as corrupt.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import threading
import warnings
from contextlib import nullcontext
import zlib
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from .avif import AvifSizeError, avif_frames, item_count
from .errors import ImageRejected

# Depth maps, auxiliary images and embedded thumbnails are never used: not reading them is less work
# and less parser surface. libheif applies the container's rotation and mirroring itself (and resets
# the EXIF orientation to 1), so HEIF images come out upright like the others.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "HEIF", "AVIF")
# MPO is what Pillow calls a JPEG with extra frames (many phone cameras): a JPEG to everyone else.
CONTENT_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
                 "GIF": "image/gif", "HEIF": "image/heif", "AVIF": "image/avif"}
# What the file pickers are told to offer (the server still decides by content).
ACCEPTED_CONTENT_TYPES = tuple(sorted(set(CONTENT_TYPES.values()) | {"image/heic"}))
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, HEIC/HEIF or AVIF"
# ISO base media files (HEIF, AVIF) start with an ``ftyp`` box naming their brands. HEVC-coded brands
# are what iPhones write and are served as image/heic; the generic still-image brands as image/heif.
HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
HEIF_BRANDS = HEIC_BRANDS | {b"mif1", b"msf1", b"mif2", b"avif", b"avis"}
JPEG_FORMATS = ("JPEG", "MPO")
THUMBNAIL_MAX_SIDE = 320
THUMBNAIL_QUALITY = 85
# The decode keeps at least this many source pixels per model pixel. 2 changed the model input by
# resampling noise only, 1 by about twice that, at a third less decode and resize work per phone photo
# and the same accuracy (tests/inference/test_draft.py).
DRAFT_OVERSAMPLING = 1
# EXIF orientations 5..8 rotate by 90 degrees: the stored width is the displayed height.
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
EXIF_ORIENTATION_TAG = 0x0112
PAD_FILL = (0, 0, 0)
# First bytes of the allowed formats: a file that starts like one but does not parse is corrupt
# (``corrupt_image``), anything else is not an image we take (``unsupported_media_type``).
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
PNG_SIGNATURE = SIGNATURES[1]
# JPEG frame types coded with Huffman tables: baseline and extended sequential (every block costs a DC
# code and an AC code or end-of-block, 2 bits at least), progressive (1 bit at least in its DC scan).
# Only these are taken: arithmetic coding (SOF9-11, 13-15) can code a blank block in a small fraction of a
# bit, so no data size bounds the work its header asks for, and no camera or phone writes it, lossless
# (SOF3) or hierarchical (SOF5-7) frames either.
JPEG_MIN_BITS_PER_BLOCK = {0xC0: 2, 0xC1: 2, 0xC2: 1}
JPEG_FRAME_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0-15 (C4, C8, CC are other segments)
JPEG_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xDA)}  # TEM, RST0-7, SOI, EOI: no length field
# Where a scan's entropy-coded data ends: 0xFF followed by anything but a stuffed zero, a restart marker
# or another fill byte.
JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Only the first frame is decoded, but an animation declaring more frames than any photo has is refused.
MAX_FRAMES = 1000
# Decoding a large image that is not a JPEG (which is decoded at a reduced scale) takes several times the
# final RGB frame while the decoder works: 200-600 MB at 40 million pixels (benchmarks/memory_formats.py).
# One such decode at a time per process keeps two threads' uploads from stacking those peaks.
LARGE_DECODE_PIXELS = 8_000_000
_large_decode = threading.Lock()


@dataclass
class DecodedImage:
    """An upload decoded to RGB, with the facts that get logged.

    Attributes:
        image: RGB image, upright, possibly decoded at reduced scale (see ``draft_size``).
        width: Width of the upright original in pixels.
        height: Height of the upright original in pixels.
        content_type: MIME type of the detected format (not the one the client claimed).
        sha256: Hex digest of the uploaded bytes.
    """

    image: Image.Image
    width: int
    height: int
    content_type: str
    sha256: str


def _orientation(img: Image.Image) -> int:
    """EXIF orientation of ``img`` (1 when absent or unreadable)."""
    try:
        return int(img.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:  # broken EXIF blocks must not reject an otherwise good photo
        return 1


def scale_factors(width: int, height: int, target: tuple[int, int], resize_mode: str) -> tuple[float, float]:
    """Horizontal and vertical scale that :func:`fit_to_input` applies to a ``width x height`` image.

    Args:
        width: Source width.
        height: Source height.
        target: Model input ``(height, width)``.
        resize_mode: ``center_crop``, ``stretch`` or ``pad``.

    Returns:
        ``(sx, sy)`` output pixels per source pixel.
    """
    target_h, target_w = target
    if resize_mode == "stretch":
        return target_w / width, target_h / height
    pick = max if resize_mode == "center_crop" else min
    scale = pick(target_w / width, target_h / height)
    return scale, scale


def _apply_draft(img: Image.Image, target: tuple[int, int], resize_mode: str) -> None:
    """Let the JPEG decoder downscale by 1/2, 1/4 or 1/8 while keeping the needed resolution
    (and a full-size thumbnail)."""
    target_h, target_w = target
    if _orientation(img) in TRANSPOSING_ORIENTATIONS:
        target_h, target_w = target_w, target_h  # the decoder works on the stored, unrotated pixels
    sx, sy = scale_factors(img.width, img.height, (target_h, target_w), resize_mode)
    # The logged thumbnail is made from the same decode, so keep enough pixels for it too.
    thumb_scale = THUMBNAIL_MAX_SIDE / max(img.width, img.height)
    wanted = (math.ceil(img.width * min(1.0, max(sx * DRAFT_OVERSAMPLING, thumb_scale))),
              math.ceil(img.height * min(1.0, max(sy * DRAFT_OVERSAMPLING, thumb_scale))))
    img.draft(None, wanted)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparent pixels are composited on white (how a viewer shows them), 16- and 32-bit integer
    images are scaled down to 8 bits rather than clipped, and float images are taken as 0..1 or
    0..255 depending on their range.

    Args:
        img: A loaded image in any mode.

    Returns:
        An ``RGB`` image.
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0  # 65535 -> 255
        elif img.mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0
        gray = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    has_alpha = img.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
        img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def make_thumbnail(img: Image.Image, max_side: int = THUMBNAIL_MAX_SIDE) -> bytes:
    """Re-encode ``img`` as a JPEG no larger than ``max_side`` on either side, without metadata.

    Args:
        img: RGB image.
        max_side: Longest side of the thumbnail.

    Returns:
        JPEG bytes (no EXIF: nothing from the upload's metadata is kept).
    """
    scale = max_side / max(img.width, img.height)
    thumb = img
    if scale < 1:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        # reducing_gap=1: box-average by the whole factor first, then one short bilinear step. Half the
        # cost of a full bilinear pass on the request path, and no visible difference at this size.
        thumb = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


def decode_upload(data: bytes, *, max_pixels: int, target: tuple[int, int] | None = None,
                  resize_mode: str = "center_crop", format_max_pixels: dict[str, int] | None = None) -> DecodedImage:
    """Decode uploaded bytes into an upright RGB image, refusing what cannot be handled.

    Args:
        data: The uploaded file content (kept in memory only).
        max_pixels: Largest ``width * height`` accepted.
        target: Model input ``(height, width)``; enables JPEG draft decoding when given.
        resize_mode: How the image will be fitted to ``target`` (bounds the draft scale).
        format_max_pixels: Lower limits for some formats (Pillow's format name -> pixels), e.g. WebP,
            whose decoder needs more memory per pixel.

    Returns:
        The decoded image and its facts.

    Raises:
        ImageRejected: ``empty_file``, ``image_too_large``, ``too_many_frames``, ``unsupported_media_type``
            or ``corrupt_image``.
    """
    if not data:
        raise ImageRejected("empty_file", "The uploaded file is empty.")
    digest = hashlib.sha256(data).hexdigest()
    if data.startswith(PNG_SIGNATURE) and not png_checksums_ok(data):
        raise _corrupt()
    with warnings.catch_warnings():
        # Pillow's own bomb check warns below its hard limit; treat the warning as the refusal it is.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many_pixels(max_pixels) from None
        except UnidentifiedImageError:
            declared = declared_isobmff_size(data)
            if declared and declared[0] * declared[1] > max_pixels:
                # libavif refuses canvases over its own limit before Pillow sees a size: still too large.
                raise _too_many_pixels(max_pixels, *declared) from None
            items = item_count(data)
            if items is not None and items > MAX_FRAMES:
                # libheif refuses a file of more than 1,000 items before Pillow sees it: 413, as for an
                # animation of too many frames, not "corrupt".
                raise _too_many_frames() from None
            if looks_like_allowed_format(data):
                raise _corrupt() from None
            raise ImageRejected("unsupported_media_type",
                                f"The file is not an image in a supported format ({FORMAT_NAMES})."
                                ) from None
        except Exception:  # a header Pillow recognises but cannot parse
            raise _corrupt() from None
        max_pixels = min(max_pixels, (format_max_pixels or {}).get(img.format, max_pixels))
        if img.width * img.height > max_pixels:
            raise _too_many_pixels(max_pixels, img.width, img.height)
        if img.width < 1 or img.height < 1:
            raise _corrupt()
        if img.format in JPEG_FORMATS:
            frame_type = jpeg_frame_type(data)
            if frame_type is None:
                raise _corrupt()
            if frame_type not in JPEG_MIN_BITS_PER_BLOCK:
                raise ImageRejected("unsupported_media_type",
                                    "The JPEG uses arithmetic, lossless or hierarchical coding, which cameras "
                                    "do not write and this service does not decode; save it as an ordinary "
                                    "JPEG or PNG.")
            if not jpeg_data_complete(data):
                raise _corrupt()
        if img.format == "AVIF":
            check_avif_frames(data, img.size, max_pixels)
        if img.format != "GIF" and getattr(img, "n_frames", 1) > MAX_FRAMES:
            # APNG and WebP declare their frame count up front; a GIF would have to be read to the end.
            raise _too_many_frames()
        orientation = _orientation(img)
        width, height = img.size
        if orientation in TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        content_type = CONTENT_TYPES[img.format]
        if img.format == "HEIF" and _major_brand(data) in HEIC_BRANDS:
            content_type = "image/heic"
        large = img.format not in JPEG_FORMATS and width * height > LARGE_DECODE_PIXELS
        with _large_decode if large else nullcontext():
            try:
                if img.format in JPEG_FORMATS and target is not None:
                    _apply_draft(img, target, resize_mode)
                img.load()  # GIF: loads the first frame only
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise _too_many_pixels(max_pixels, width, height) from None
            except Exception:
                raise _corrupt() from None
            _release_decoder(img)
            try:
                # In place: the copy exif_transpose makes otherwise costs a full frame on every upload.
                ImageOps.exif_transpose(img, in_place=True)
            except Exception:  # malformed EXIF: keep the pixels as stored
                pass
            try:
                rgb = to_rgb(img)
            except Exception:
                raise _corrupt() from None
    return DecodedImage(image=rgb, width=width, height=height, content_type=content_type, sha256=digest)


def check_avif_frames(data: bytes, declared: tuple[int, int], max_pixels: int) -> None:
    """Refuse an AVIF whose coded frames are over the pixel limit, or whose coded size is not the declared one.

    Pillow takes the size from the container and then reads that many pixels out of whatever frame the
    decoder made, so a lie either way would be stored with the wrong size and the wrong pixels.

    Raises:
        ImageRejected: 413 when a coded frame is over ``max_pixels``, 422 when the sizes disagree or the
            AV1 data cannot be followed.
    """
    try:
        frames = avif_frames(data)
    except AvifSizeError:
        raise _corrupt() from None
    if frames is None:
        raise _corrupt()
    width, height = frames.size
    if max(frames.largest_coded, width * height) > max_pixels:
        raise _too_many_pixels(max_pixels, width, height)
    if frames.size != tuple(declared):
        raise _corrupt()


def _release_decoder(img: Image.Image) -> None:
    """Let go of what the WebP and AVIF plugins keep after loading: the decoder with its frame buffers,
    and a copy of the decoded pixels as bytes (120-160 MB at 40 million pixels) that would otherwise live
    as long as the request. Only the first frame is ever used, so nothing needs them again."""
    if img.format in ("WEBP", "AVIF"):
        img.fp = None
        if hasattr(img, "_decoder"):
            img._decoder = None


def declared_pixels(stream) -> int:
    """Width x height that an uploaded file's header declares, without decoding any pixel.

    Args:
        stream: A seekable binary file object; its position is restored.

    Returns:
        The pixel count, or 0 when the content is not an image this app opens.
    """
    try:
        position = stream.tell()
    except (OSError, AttributeError):
        return 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream, formats=ALLOWED_FORMATS) as img:
                pixels = img.width * img.height
                if img.format == "AVIF":
                    # What the decoder will make, not what the container says (a lie costs the same).
                    stream.seek(position)
                    frames = avif_frames(stream.read())
                    if frames is not None:
                        pixels = max(pixels, frames.largest_coded, frames.size[0] * frames.size[1])
                return pixels
    except Exception:  # not an image, or a bomb Pillow refuses even to open: the decoder answers it
        return 0
    finally:
        stream.seek(position)


def fit_to_input(img: Image.Image, target: tuple[int, int], resize_mode: str = "center_crop") -> np.ndarray:
    """Resize an RGB image to the model input as the artifact's metadata says.

    Args:
        img: RGB image.
        target: ``(height, width)`` of the model input.
        resize_mode: ``center_crop`` (shorter side to the input size, then a centred crop),
            ``stretch`` (ignore the aspect ratio) or ``pad`` (fit inside, black borders).

    Returns:
        ``uint8`` array of shape ``(height, width, 3)``.
    """
    target_h, target_w = target
    sx, sy = scale_factors(img.width, img.height, target, resize_mode)
    resample = Image.Resampling.BILINEAR
    if resize_mode == "center_crop":
        # Crop and resize in one pass: the box is the source region that maps onto the output.
        # min/max: float rounding may otherwise push the box a hair outside the image, which Pillow refuses.
        crop_w, crop_h = min(img.width, target_w / sx), min(img.height, target_h / sy)
        left, top = max(0.0, (img.width - crop_w) / 2), max(0.0, (img.height - crop_h) / 2)
        fitted = img.resize((target_w, target_h), resample, box=(left, top, left + crop_w, top + crop_h))
    elif resize_mode == "pad":
        inner = (max(1, round(img.width * sx)), max(1, round(img.height * sy)))
        fitted = Image.new("RGB", (target_w, target_h), PAD_FILL)
        fitted.paste(img.resize(inner, resample),
                     ((target_w - inner[0]) // 2, (target_h - inner[1]) // 2))
    else:
        fitted = img.resize((target_w, target_h), resample)
    return np.asarray(fitted, dtype=np.uint8)


def looks_like_allowed_format(data: bytes) -> bool:
    """Whether ``data`` starts like a JPEG, PNG, GIF, WebP, HEIF or AVIF file."""
    return (data.startswith(SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
            or _major_brand(data) in HEIF_BRANDS)


def _major_brand(data: bytes) -> bytes | None:
    """The major brand of an ISO base media file (``heic``, ``avif`` ...), ``None`` for anything else."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return data[8:12]
    return None


def declared_isobmff_size(data: bytes, search_bytes: int = 65536) -> tuple[int, int] | None:
    """The width and height of the first ``ispe`` (image spatial extent) box of a HEIF or AVIF file.

    Only used to tell a refused giant canvas (``image_too_large``) from a corrupt file (``corrupt_image``)
    when the decoder library would not open the file at all; the box is looked up by its type in the
    file's first bytes, which is enough for the metadata that writers put up front.

    Args:
        data: The uploaded bytes.
        search_bytes: How far into the file to look.

    Returns:
        ``(width, height)``, or ``None`` when the data is not such a file or has no readable box.
    """
    if _major_brand(data) not in HEIF_BRANDS:
        return None
    position = data.find(b"ispe", 0, search_bytes)
    # Box layout: size (4) "ispe" (4) version and flags (4) width (4) height (4).
    if position < 4 or position + 16 > len(data):
        return None
    width = int.from_bytes(data[position + 8:position + 12], "big")
    height = int.from_bytes(data[position + 12:position + 16], "big")
    return (width, height) if width and height else None


def jpeg_frame_type(data: bytes) -> int | None:
    """The SOF marker (0xC0-0xCF) of a JPEG's first frame header, ``None`` when there is none before a scan."""
    for marker, start, _ in _jpeg_segments(data):
        if marker in JPEG_FRAME_MARKERS:
            return marker
        if marker == 0xDA:
            return None
    return None


def _jpeg_segments(data: bytes):
    """``(marker, payload start, payload end)`` of each marker segment up to the first scan header.

    Bytes between segments that are not a marker are skipped, as Pillow and libjpeg skip them, so this
    walk sees the same frame header as the decoder.
    """
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            position += 1
            continue
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        length = int.from_bytes(data[position + 2:position + 4], "big")
        yield marker, position + 4, position + 2 + length
        if marker == 0xDA:
            return
        position += 2 + length


def jpeg_entropy_coded_bytes(data: bytes, scan_start: int) -> int:
    """Bytes of entropy-coded data in every scan from ``scan_start`` (just after the first scan header)
    up to the end-of-image marker.

    What follows the end-of-image marker (zeros, an archive) and the marker segments between the scans
    of a progressive file are not picture data and are not counted.
    """
    coded, position = 0, scan_start
    while position < len(data):
        found = JPEG_SCAN_END.search(data, position)
        end = found.start() if found else len(data)
        coded += end - position
        if found is None:
            break
        marker_at = found.start()
        marker = data[marker_at + 1]
        if marker == 0xD9:  # end of image
            break
        # Tables and further scan headers between scans: step over them to the next scan's data.
        position = marker_at
        while position + 4 <= len(data) and data[position] == 0xFF and data[position + 1] not in (0xD9, 0xDA):
            if data[position + 1] == 0xFF or data[position + 1] in JPEG_STANDALONE_MARKERS:
                position += 1 if data[position + 1] == 0xFF else 2
                continue
            position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if position + 4 > len(data) or data[position] != 0xFF or data[position + 1] == 0xD9:
            break
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")  # the next scan header
    return coded


def jpeg_data_complete(data: bytes) -> bool:
    """Whether a JPEG holds at least the coded data its frame header makes necessary.

    Every 8 x 8 block of every component needs :data:`JPEG_MIN_BITS_PER_BLOCK` bits in a Huffman-coded
    file, however plain the picture (a blank 6000 x 6000 photo is still over 200 kB). Only the
    entropy-coded bytes of the scans count (:func:`jpeg_entropy_coded_bytes`), so padding after the
    end-of-image marker buys nothing.

    Args:
        data: Bytes that Pillow identified as a JPEG.

    Returns:
        ``False`` when the coded data is too short for the declared size; ``True`` otherwise, also for
        headers this check cannot follow (the decoder judges those). Frame types other than Huffman
        coding are refused before this check (:func:`decode_upload`).
    """
    frame, scan_start = None, None
    for marker, start, end in _jpeg_segments(data):
        if frame is None and marker in JPEG_FRAME_MARKERS:
            frame = (marker, data[start:end])
        if marker == 0xDA:
            scan_start = end
    if frame is None or frame[0] not in JPEG_MIN_BITS_PER_BLOCK:
        return True
    marker, segment = frame
    if len(segment) < 6:
        return False
    height, width, count = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big"), segment[5]
    sampling = [(segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 0x0F) for i in range(count)
                if 8 + 3 * i <= len(segment)]
    if scan_start is None:
        return False  # a frame header with no picture data at all
    if not sampling or height == 0 or any(h == 0 or v == 0 for h, v in sampling):
        return True  # the height comes later (DNL) or the header is odd: the decoder judges it
    h_max, v_max = max(h for h, _ in sampling), max(v for _, v in sampling)
    blocks = sum(math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(math.ceil(height * v / v_max) / 8)
                 for h, v in sampling)
    return jpeg_entropy_coded_bytes(data, scan_start) * 8 >= blocks * JPEG_MIN_BITS_PER_BLOCK[marker]


def png_checksums_ok(data: bytes) -> bool:
    """Verify the CRC of every PNG chunk up to ``IEND`` (Pillow skips them for image data).

    A damaged transfer or a hand-edited file shows up here before any decoding. Bytes after ``IEND``
    are ignored, as every PNG reader does.

    Args:
        data: Bytes that start with the PNG signature.

    Returns:
        ``False`` when a checksum is wrong or a chunk runs past the end of the data.
    """
    position = len(PNG_SIGNATURE)
    view = memoryview(data)
    while position + 12 <= len(data):
        length = int.from_bytes(view[position:position + 4], "big")
        end = position + 8 + length
        if end + 4 > len(data):
            return False
        if zlib.crc32(view[position + 4:end]) != int.from_bytes(view[end:end + 4], "big"):
            return False
        if view[position + 4:position + 8] == b"IEND":
            return True
        position = end + 4
    return False


def _too_many_pixels(max_pixels: int, width: int | None = None, height: int | None = None) -> ImageRejected:
    size = f" ({width} x {height})" if width and height else ""
    return ImageRejected("image_too_large",
                         f"The image has too many pixels{size}; the limit is {max_pixels:,} pixels.")


def _too_many_frames() -> ImageRejected:
    return ImageRejected("too_many_frames",
                         f"The file holds too many images or frames; the limit is {MAX_FRAMES}.")


def _corrupt() -> ImageRejected:
    return ImageRejected("corrupt_image",
                         "The image is truncated or corrupt and cannot be decoded.")
