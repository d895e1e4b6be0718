"""Property tests of ``decode_upload``: whatever the bytes, the only possible failure is ``ImageRejected``.

Three generators: raw arbitrary bytes, bytes behind a real format signature (so the decoders, not
just the format sniffing, see them), and real images with random byte edits and cuts. On success the
result must be a usable RGB image whose size respects the pixel limit.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.errors import status_of
from inference.imaging import ImageRejected, decode_upload, fit_to_input
from support import encode

MAX_PIXELS = 1_000_000
STATUSES = {400, 413, 415, 422}
SIGNATURES = [b"\xff\xd8\xff", b"\xff\xd8\xff\xe1", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a",
              b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8L", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"]
SEEDS = {fmt: encode(Image.fromarray(np.random.default_rng(9).integers(0, 256, (24, 32, 3), dtype=np.uint8)),
                     fmt, **kwargs)
         for fmt, kwargs in {"JPEG": {"quality": 80}, "PNG": {}, "WEBP": {}, "GIF": {}}.items()}
SEEDS["APNG"] = encode(Image.new("RGB", (16, 16), (200, 10, 10)), "PNG", save_all=True,
                       append_images=[Image.new("RGB", (16, 16), (10, 10, 200))])


def profile(examples: int) -> settings:
    """No deadline (the machine is shared), no example database folder in the repository."""
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def check_decode(data: bytes) -> None:
    """Decode ``data``; accept a valid result or an ``ImageRejected`` with a proper status and message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF" notices are expected here
        try:
            decoded = decode_upload(data, max_pixels=MAX_PIXELS, target=(32, 32))
        except ImageRejected as rejection:
            assert status_of(rejection) in STATUSES
            assert rejection.message.endswith(".") and len(rejection.message) > 10
            return
    assert decoded.image.mode == "RGB"
    assert decoded.width * decoded.height <= MAX_PIXELS
    assert decoded.content_type in {"image/jpeg", "image/png", "image/gif", "image/webp"}
    assert fit_to_input(decoded.image, (32, 32)).shape == (32, 32, 3)


@profile(1000)
@given(st.binary(max_size=4096))
@example(b"")
@example(b"\x00")
@example(b"\xff\xd8")
def test_arbitrary_bytes_only_raise_image_rejected(data):
    check_decode(data)


@profile(1000)
@given(signature=st.sampled_from(SIGNATURES), tail=st.binary(max_size=2048))
def test_bytes_behind_a_format_signature_only_raise_image_rejected(signature, tail):
    check_decode(signature + tail)


@profile(1000)
@given(fmt=st.sampled_from(sorted(SEEDS)), cut=st.floats(0.0, 1.0),
       edits=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=12),
       insert=st.binary(max_size=64), insert_at=st.floats(0.0, 1.0))
def test_damaged_real_images_only_raise_image_rejected(fmt, cut, edits, insert, insert_at):
    data = bytearray(SEEDS[fmt])
    for position, value in edits:
        data[min(len(data) - 1, int(position * len(data)))] = value
    at = int(insert_at * len(data))
    data[at:at] = insert
    check_decode(bytes(data[: max(1, int(cut * len(data)))] if cut < 0.97 else data))


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_the_seeds_themselves_decode(fmt):
    """The damaged-image property starts from images that are valid, or it would test nothing."""
    decoded = decode_upload(SEEDS[fmt], max_pixels=MAX_PIXELS)
    assert decoded.image.size in {(32, 24), (16, 16)}


def test_a_valid_header_claiming_too_many_pixels_is_413_whatever_follows():
    header = io.BytesIO()
    Image.new("L", (1, 1)).save(header, "GIF")
    claim = bytearray(header.getvalue())
    claim[6:10] = (4000).to_bytes(2, "little") + (4000).to_bytes(2, "little")
    with pytest.raises(ImageRejected) as info:
        decode_upload(bytes(claim), max_pixels=MAX_PIXELS)
    assert status_of(info.value) == 413
