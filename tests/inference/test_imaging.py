"""Decoding uploads: formats, modes, orientation, limits, resizing and thumbnails."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import bad_files
from app.errors import status_of
from inference.imaging import ImageRejected, decode_upload, fit_to_input, make_thumbnail, to_rgb
from support import COLOR_RGB, encode

LIMIT = 40_000_000


def decode(data: bytes, **kwargs):
    return decode_upload(data, max_pixels=kwargs.pop("max_pixels", LIMIT), **kwargs)


def close_to(pixel, rgb, tolerance=12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, rgb))


@pytest.mark.parametrize("fmt,content_type", [("JPEG", "image/jpeg"), ("PNG", "image/png"),
                                              ("WEBP", "image/webp"), ("GIF", "image/gif")])
def test_supported_formats_decode_to_rgb(make_image, fmt, content_type):
    data = make_image("green", size=(50, 30), fmt=fmt)
    decoded = decode(data)
    assert decoded.content_type == content_type
    assert (decoded.width, decoded.height) == (50, 30)
    assert decoded.image.mode == "RGB"
    assert close_to(decoded.image.getpixel((25, 15)), COLOR_RGB["green"], tolerance=20)


def test_multi_picture_jpeg_from_a_phone_uses_the_first_picture():
    first, second = Image.new("RGB", (640, 480), COLOR_RGB["red"]), Image.new("RGB", (640, 480), COLOR_RGB["blue"])
    buffer = io.BytesIO()
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    decoded = decode(buffer.getvalue(), target=(32, 32))
    assert decoded.content_type == "image/jpeg"
    assert (decoded.width, decoded.height) == (640, 480)
    assert close_to(decoded.image.getpixel((5, 5)), COLOR_RGB["red"], tolerance=20)


def test_sha256_is_of_the_uploaded_bytes(make_image):
    import hashlib

    data = make_image("red")
    assert decode(data).sha256 == hashlib.sha256(data).hexdigest()


def test_other_formats_are_refused_even_if_pillow_reads_them(make_image):
    for fmt in ("BMP", "TIFF"):
        with pytest.raises(ImageRejected) as info:
            decode(make_image("red", fmt=fmt))
        assert status_of(info.value) == 415


@pytest.mark.parametrize("data,status,code", [
    (b"", 400, "empty_file"),
    (bad_files.text_renamed_jpg(), 415, "unsupported_media_type"),
    (bad_files.truncated_jpeg(), 422, "corrupt_image"),
    (bad_files.png_with_header_size(100_000, 100_000), 413, "image_too_large"),
    (bad_files.png_with_header_size(7000, 7000), 413, "image_too_large"),  # under Pillow's own limit
])
def test_bad_files_are_rejected_with_status(data, status, code):
    with pytest.raises(ImageRejected) as info:
        decode(data)
    assert (status_of(info.value), info.value.code) == (status, code)
    assert info.value.message.endswith(".")


def test_pixel_limit_is_configurable(make_image):
    data = make_image("red", size=(200, 100))
    with pytest.raises(ImageRejected, match="19,999 pixels"):
        decode(data, max_pixels=19_999)
    assert decode(data, max_pixels=20_000).width == 200


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour():
    decoded = decode(bad_files.cmyk_jpeg("blue"))
    assert decoded.image.mode == "RGB"
    assert close_to(decoded.image.getpixel((10, 10)), COLOR_RGB["blue"], tolerance=25)


def test_16_bit_png_is_scaled_not_clipped():
    decoded = decode(bad_files.png16((32896, 65535)))
    assert decoded.image.getpixel((5, 5)) == (128, 128, 128)
    assert decoded.image.getpixel((70, 5)) == (255, 255, 255)


def test_transparency_is_composited_on_white():
    decoded = decode(bad_files.rgba_png("green"))
    assert decoded.image.getpixel((2, 2)) == (255, 255, 255)
    assert decoded.image.getpixel((45, 45)) == COLOR_RGB["green"]


def test_palette_with_transparency_and_grey_alpha():
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (10, 0, 20, 20))
    palette.info["transparency"] = 0
    rgb = to_rgb(palette)
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((15, 5)) == (0, 0, 255)
    grey_alpha = Image.new("LA", (4, 4), (100, 0))
    assert to_rgb(grey_alpha).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (4, 4), 100)).getpixel((0, 0)) == (100, 100, 100)
    assert to_rgb(Image.new("F", (4, 4), 0.5)).getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied_and_reported_size_is_upright():
    decoded = decode(bad_files.exif_rotated_jpeg(orientation=6))
    assert (decoded.width, decoded.height) == (60, 120)
    assert decoded.image.size == (60, 120)
    # orientation 6 = rotate 90 degrees clockwise to display: the stored left (red) ends on top.
    assert close_to(decoded.image.getpixel((30, 10)), COLOR_RGB["red"], tolerance=25)
    assert close_to(decoded.image.getpixel((30, 110)), COLOR_RGB["blue"], tolerance=25)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_broken_exif_is_tolerated(make_image):
    data = encode(Image.new("RGB", (40, 40), COLOR_RGB["red"]), "JPEG",
                  exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff garbage")
    decoded = decode(data)
    assert decoded.image.size == (40, 40)


def test_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (30, 30), COLOR_RGB[c]) for c in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = decode(buffer.getvalue())
    assert close_to(decoded.image.getpixel((15, 15)), COLOR_RGB["red"], tolerance=30)


def test_one_pixel_image_is_accepted():
    decoded = decode(bad_files.one_pixel_png("blue"))
    assert (decoded.width, decoded.height) == (1, 1)
    assert fit_to_input(decoded.image, (32, 32)).shape == (32, 32, 3)


def test_big_jpeg_is_draft_decoded_but_keeps_the_target_size():
    data = encode(Image.new("RGB", (4000, 3000), COLOR_RGB["red"]), "JPEG", quality=80)
    decoded = decode(data, target=(224, 224))
    assert (decoded.width, decoded.height) == (4000, 3000)  # the facts are about the original
    assert decoded.image.size == (500, 375)  # 1/8 scale: 375 still covers 224
    wide = decode(data, target=(448, 896), resize_mode="stretch")
    assert wide.image.size == (1000, 750)  # 1/4 scale: 1/8 would leave 500 < 896
    tiny_target = decode(data, target=(32, 32))
    assert tiny_target.image.size == (500, 375)  # 1/8 is the decoder's largest reduction
    full = decode(data)
    assert full.image.size == (4000, 3000)


def test_draft_respects_exif_rotation():
    img = Image.new("RGB", (3000, 1000), COLOR_RGB["red"])
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode(encode(img, "JPEG", exif=exif.tobytes()), target=(224, 224))
    assert (decoded.width, decoded.height) == (1000, 3000)
    assert min(decoded.image.size) >= 224


def striped(width=300, height=100) -> Image.Image:
    """Left third red, middle third green, right third blue."""
    img = Image.new("RGB", (width, height), COLOR_RGB["red"])
    img.paste(COLOR_RGB["green"], (width // 3, 0, 2 * width // 3, height))
    img.paste(COLOR_RGB["blue"], (2 * width // 3, 0, width, height))
    return img


def test_center_crop_keeps_the_middle():
    pixels = fit_to_input(striped(), (32, 32), "center_crop")
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    # Only the outermost columns may blend in a little red or blue from beyond the crop box.
    assert (np.abs(pixels[:, 1:-1].astype(int) - COLOR_RGB["green"]) <= 2).all()
    assert (np.abs(pixels[:, [0, -1]].astype(int) - COLOR_RGB["green"]) <= 30).all()


def test_stretch_keeps_everything():
    pixels = fit_to_input(striped(), (32, 48), "stretch")
    assert pixels.shape == (32, 48, 3)
    assert tuple(pixels[16, 2]) == COLOR_RGB["red"] and tuple(pixels[16, 45]) == COLOR_RGB["blue"]


def test_pad_letterboxes_with_black():
    pixels = fit_to_input(striped(), (30, 30), "pad")
    assert pixels.shape == (30, 30, 3)
    assert tuple(pixels[0, 15]) == (0, 0, 0) and tuple(pixels[29, 15]) == (0, 0, 0)
    assert tuple(pixels[15, 15]) == COLOR_RGB["green"]


def test_thumbnail_is_small_jpeg_without_exif():
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x8825] = {1: "N"}  # a GPS block that must not leak
    source = Image.open(io.BytesIO(encode(Image.new("RGB", (1000, 500), COLOR_RGB["red"]), "JPEG",
                                          exif=exif.tobytes())))
    thumb = Image.open(io.BytesIO(make_thumbnail(source.convert("RGB"))))
    assert thumb.format == "JPEG"
    assert thumb.size == (320, 160)
    assert len(thumb.getexif()) == 0 and "exif" not in thumb.info


@settings(max_examples=300, deadline=None, database=None)  # no .hypothesis/ folder in the repo
@given(width=st.integers(1, 3000), height=st.integers(1, 3000), target_h=st.integers(1, 300),
       target_w=st.integers(1, 300), mode=st.sampled_from(["center_crop", "stretch", "pad"]))
def test_fit_to_input_handles_any_geometry(width, height, target_h, target_w, mode):
    pixels = fit_to_input(Image.new("RGB", (width, height), (10, 20, 30)), (target_h, target_w), mode)
    assert pixels.shape == (target_h, target_w, 3)
