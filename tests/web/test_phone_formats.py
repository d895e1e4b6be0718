"""HEIC/HEIF and AVIF uploads: decoded like the other formats, on the page, the API and the batch route.

The files are real, written by pillow-heif (HEIC) and Pillow's AVIF encoder, with the same hardening
checks as JPEG and PNG: header size before decoding, EXIF orientation, first image, truncation.
"""

from __future__ import annotations

import io
import re
import time

import pytest
from PIL import Image

import hostile_files
import phone_files
from app.extensions import db
from app.errors import status_of
from inference.avif import avif_frames
from inference.imaging import ImageRejected, declared_pixels, decode_upload
from app.models import Prediction
from support import COLOR_RGB
from test_errors import csrf_token

LIMIT = 40_000_000
CONTENT_TYPE = {"HEIF": "image/heic", "AVIF": "image/avif"}


def close_to(pixel, rgb, tolerance=20) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, rgb))


def rejection(data: bytes) -> tuple[int, str]:
    with pytest.raises(ImageRejected) as info:
        decode_upload(data, max_pixels=LIMIT)
    return status_of(info.value), info.value.code


@pytest.mark.parametrize("fmt", phone_files.FORMATS)
def test_decodes_to_rgb_with_the_content_type_of_its_bytes(fmt):
    decoded = decode_upload(phone_files.photo(fmt, "green", size=(96, 64)), max_pixels=LIMIT)
    assert decoded.content_type == CONTENT_TYPE[fmt]
    assert (decoded.width, decoded.height) == (96, 64) and decoded.image.mode == "RGB"
    assert close_to(decoded.image.getpixel((48, 32)), COLOR_RGB["green"])


@pytest.mark.parametrize("fmt", phone_files.FORMATS)
def test_a_sideways_camera_photo_comes_out_upright(fmt):
    decoded = decode_upload(phone_files.rotated(fmt, orientation=6), max_pixels=LIMIT)
    assert (decoded.width, decoded.height) == (64, 120) and decoded.image.size == (64, 120)
    # Orientation 6 turns the stored picture 90 degrees clockwise: its left (red) half ends on top.
    assert close_to(decoded.image.getpixel((32, 10)), COLOR_RGB["red"])
    assert close_to(decoded.image.getpixel((32, 110)), COLOR_RGB["blue"])


@pytest.mark.parametrize("fmt", phone_files.FORMATS)
def test_of_a_sequence_only_the_first_image_is_used(fmt):
    data = phone_files.sequence(fmt, ("red", "blue", "green"))
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3  # the file really holds three
    decoded = decode_upload(data, max_pixels=LIMIT)
    assert close_to(decoded.image.getpixel((32, 32)), COLOR_RGB["red"])


@pytest.mark.parametrize("fmt", phone_files.FORMATS)
@pytest.mark.parametrize("width,height", [(7000, 7000), (100_000, 100_000)])
def test_a_huge_declared_canvas_is_refused_from_the_header(fmt, width, height):
    data = phone_files.declared_size(fmt, width, height)
    started = time.perf_counter()
    assert rejection(data) == (413, "image_too_large")
    # Decoding 49 million pixels takes most of a second here; reading a header, milliseconds.
    assert time.perf_counter() - started < 0.2


@pytest.mark.parametrize("fmt", phone_files.FORMATS)
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.95])
def test_a_truncated_file_is_corrupt_not_unsupported(fmt, keep):
    assert rejection(phone_files.truncated(fmt, keep)) == (422, "corrupt_image")


def test_an_avif_is_limited_and_charged_by_the_frame_it_codes_not_the_size_it_declares():
    # A real 1200 x 1000 frame whose ispe box says 100 x 100, against a 1-megapixel limit: the same lie
    # as a 16000 x 16000 frame against the real limit, at a size the test can encode.
    data = hostile_files.avif_declaring((1200, 1000), (100, 100))
    with pytest.raises(ImageRejected, match=r"1200 x 1000\); the limit is 1,000,000") as refused:
        decode_upload(data, max_pixels=1_000_000)
    assert status_of(refused.value) == 413
    assert declared_pixels(io.BytesIO(data)) == 1_200_000


@pytest.mark.parametrize("coded,declared", [((16_000, 16_000), (100, 100)), ((64, 64), (64, 64))])
def test_the_coded_frame_size_is_read_from_the_av1_sequence_header(coded, declared):
    frames = avif_frames(hostile_files.avif_coding(coded, declared))
    assert (frames.size, frames.declared, frames.largest_coded) == (coded, declared, coded[0] * coded[1])


def test_an_avif_sequence_is_measured_by_its_first_sample():
    frames = avif_frames(phone_files.sequence("AVIF"))
    assert frames.size == frames.declared == (64, 64)
    assert avif_frames(phone_files.photo("HEIF")) is None  # HEVC: libheif checks its own sizes


def test_webp_has_its_own_lower_pixel_limit(make_image):
    data = make_image("red", size=(200, 100), fmt="WEBP")
    with pytest.raises(ImageRejected, match="the limit is 19,999 pixels") as refused:
        decode_upload(data, max_pixels=40_000_000, format_max_pixels={"WEBP": 19_999})
    assert status_of(refused.value) == 413
    assert decode_upload(data, max_pixels=40_000_000, format_max_pixels={"WEBP": 20_000}).width == 200
    # The other formats keep the general limit.
    assert decode_upload(make_image("red", size=(200, 100), fmt="PNG"), max_pixels=40_000_000,
                         format_max_pixels={"WEBP": 19_999}).width == 200


def test_the_app_applies_max_webp_pixels(color_artifact, tmp_path, make_image):
    from trust_support import dispose, make_app

    application = make_app(color_artifact, f"sqlite:///{tmp_path / 'w.db'}", MAX_WEBP_PIXELS=19_999)
    try:
        client = application.test_client()
        webp = client.post("/api/v1/predictions", data={"image": (io.BytesIO(make_image("red", size=(200, 100),
                                                                                          fmt="WEBP")), "a.webp")})
        assert webp.status_code == 413 and webp.get_json()["error"]["code"] == "image_too_large"
        png = client.post("/api/v1/predictions", data={"image": (io.BytesIO(make_image("red", size=(200, 100),
                                                                                         fmt="PNG")), "a.png")})
        assert png.status_code == 201
    finally:
        dispose(application)


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF"])
def test_the_decoders_buffers_are_let_go_once_the_pixels_are_in(make_image, fmt):
    """The WebP and AVIF plugins keep their decoder and a bytes copy of the frame after loading."""
    decoded = decode_upload(make_image("red", size=(64, 48), fmt=fmt), max_pixels=40_000_000)
    assert decoded.image.fp is None and getattr(decoded.image, "_decoder", None) is None
    assert decoded.image.getpixel((10, 10))[0] > 200


def test_the_pixel_limit_applies_to_the_real_size():
    data = phone_files.photo("HEIF", size=(200, 100))
    with pytest.raises(ImageRejected, match="19,999 pixels"):
        decode_upload(data, max_pixels=19_999)
    assert decode_upload(data, max_pixels=20_000).width == 200


def test_the_api_takes_an_iphone_photo_and_keeps_only_a_clean_jpeg_thumbnail(client, app):
    data = phone_files.rotated("HEIF")
    response = client.post("/api/v1/predictions", data={"image": (io.BytesIO(data), "IMG_0042.HEIC")},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.json
    assert response.json["image"]["width"] == 64 and response.json["image"]["height"] == 120
    with app.app_context():
        row = db.session.scalar(db.select(Prediction).filter_by(public_id=response.json["id"]))
        assert row.content_type == "image/heic" and row.original_filename == "IMG_0042.HEIC"
        thumbnail = Image.open(io.BytesIO(row.thumbnail))
    assert thumbnail.format == "JPEG" and thumbnail.size == (64, 120)
    assert not thumbnail.getexif() and "exif" not in thumbnail.info


def test_the_name_does_not_decide(client, app):
    avif_named_jpg = client.post("/api/v1/predictions",
                                 data={"image": (io.BytesIO(phone_files.photo("AVIF", "blue")), "car.jpg")},
                                 content_type="multipart/form-data")
    assert avif_named_jpg.status_code == 201
    assert avif_named_jpg.json["predictions"][0]["label"] == "blue"
    with app.app_context():
        assert db.session.scalar(db.select(Prediction).filter_by(public_id=avif_named_jpg.json["id"])).content_type == "image/avif"
    text_named_heic = client.post("/api/v1/predictions",
                                  data={"image": (io.BytesIO(b"not a photo at all"), "IMG_0001.HEIC")},
                                  content_type="multipart/form-data")
    assert text_named_heic.status_code == 415
    assert "HEIC/HEIF or AVIF" in text_named_heic.json["error"]["message"]


@pytest.mark.parametrize("fmt,color", [("HEIF", "red"), ("AVIF", "green")])
def test_the_page_form_classifies_it(client, fmt, color):
    response = client.post("/", data={"csrf_token": csrf_token(client),
                                      "image": (io.BytesIO(phone_files.photo(fmt, color)), "photo")},
                           content_type="multipart/form-data")
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert re.findall(r'<span class="label">([^<]+)</span>', page)[0] == color


def test_the_page_offers_a_camera_and_lists_the_formats(client):
    page = client.get("/").get_data(as_text=True)
    camera = re.search(r'<input[^>]*id="camera-input"[^>]*>', page).group(0)
    assert 'capture="environment"' in camera and 'accept="image/*"' in camera
    assert "name=" not in camera  # its photo travels in the form's one image field (upload.js)
    assert "Take a photo" in page
    picker = re.search(r'<input[^>]*name="image"[^>]*>', page).group(0)
    assert "image/heic" in picker and "image/heif" in picker and "image/avif" in picker
    assert "HEIC" in page and "AVIF" in page


def test_the_batch_route_takes_them_and_reports_the_broken_one(client):
    files = [("a.heic", phone_files.photo("HEIF", "red")), ("b.avif", phone_files.photo("AVIF", "blue")),
             ("c.heic", phone_files.truncated("HEIF")), ("d.avif", phone_files.declared_size("AVIF", 9000, 9000))]
    response = client.post("/api/v1/predictions:batch",
                           data={"images": [(io.BytesIO(body), name) for name, body in files]},
                           content_type="multipart/form-data")
    assert response.status_code == 200
    results = response.json["results"]
    assert [r["status"] for r in results] == [201, 201, 422, 413]
    assert [r["prediction"]["predictions"][0]["label"] for r in results[:2]] == ["red", "blue"]
