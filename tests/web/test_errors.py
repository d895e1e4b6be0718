"""Every bad upload gets its status and a message a person understands, never a 500."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import bad_files
from support import encode

BAD_UPLOADS = {
    "text renamed .jpg": (bad_files.text_renamed_jpg, 415, "unsupported_media_type"),
    "truncated jpeg": (bad_files.truncated_jpeg, 422, "corrupt_image"),
    "zero bytes": (lambda: b"", 400, "empty_file"),
    "huge png header": (lambda: bad_files.png_with_header_size(100_000, 100_000), 413, "image_too_large"),
    "over the pixel limit": (lambda: bad_files.png_with_header_size(8000, 6000), 413, "image_too_large"),
}
GOOD_ODD_UPLOADS = {
    "1x1 image": (bad_files.one_pixel_png, "red"),
    "cmyk jpeg": (bad_files.cmyk_jpeg, "blue"),
    "16-bit png": (lambda: bad_files.png16((0, 0)), None),
    "rgba png": (bad_files.rgba_png, None),
    "exif-rotated jpeg": (bad_files.exif_rotated_jpeg, None),
}


def post_api(client, data: bytes | None, filename="car.jpg", **fields):
    form = dict(fields)
    if data is not None:
        form["image"] = (io.BytesIO(data), filename)
    return client.post("/api/v1/predictions", data=form, content_type="multipart/form-data")


def csrf_token(client) -> str:
    page = client.get("/").get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def post_page(client, data: bytes | None, filename="car.jpg"):
    form = {"csrf_token": csrf_token(client)}
    if data is not None:
        form["image"] = (io.BytesIO(data), filename)
    return client.post("/", data=form, content_type="multipart/form-data")


def assert_json_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.data
    assert response.is_json
    error = response.json["error"]
    assert error["status"] == status and error["code"] == code
    assert len(error["message"]) > 10
    return error["message"]


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_api_rejects_bad_upload(client, case):
    make, status, code = BAD_UPLOADS[case]
    assert_json_error(post_api(client, make()), status, code)


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_page_shows_the_same_message_with_the_same_status(client, case):
    make, status, code = BAD_UPLOADS[case]
    message = post_api(client, make()).json["error"]["message"]
    response = post_page(client, make())
    assert response.status_code == status
    assert "text/html" in response.content_type
    page = response.get_data(as_text=True)
    assert message.replace("'", "&#39;") in page
    assert 'id="upload-form"' in page  # the user can try again right there


@pytest.mark.parametrize("case", list(GOOD_ODD_UPLOADS))
def test_unusual_but_valid_images_are_classified(client, case):
    make, expected = GOOD_ODD_UPLOADS[case]
    response = post_api(client, make())
    assert response.status_code == 201, response.data
    if expected:
        assert response.json["predictions"][0]["label"] == expected


def test_missing_file_field(client):
    assert_json_error(post_api(client, None), 400, "no_file")
    response = post_page(client, None)
    assert response.status_code == 400 and "No image was uploaded" in response.get_data(as_text=True)


@pytest.mark.parametrize("value", ["0", "21", "-1", "three", "2.5"])
def test_top_k_out_of_range(client, make_image, value):
    assert_json_error(post_api(client, make_image(), top_k=value), 400, "invalid_top_k")
    response = client.post(f"/api/v1/predictions?top_k={value}",
                           data={"image": (io.BytesIO(make_image()), "car.jpg")})
    assert response.status_code == 400


def test_body_larger_than_the_limit(client, app):
    too_big = b"\xff\xd8" + b"\0" * app.config["MAX_CONTENT_LENGTH"]
    message = assert_json_error(post_api(client, too_big), 413, "payload_too_large")
    assert "10 MB" in message
    response = client.post("/", data={"image": (io.BytesIO(too_big), "car.jpg")},
                           content_type="multipart/form-data")
    assert response.status_code == 413 and "10 MB" in response.get_data(as_text=True)


def test_page_post_without_csrf_token_is_refused(client, make_image):
    response = client.post("/", data={"image": (io.BytesIO(make_image()), "car.jpg")},
                           content_type="multipart/form-data")
    assert response.status_code == 400
    assert "Reload the page" in response.get_data(as_text=True)
    json_response = client.post("/", data={"image": (io.BytesIO(make_image()), "car.jpg")},
                                headers={"Accept": "application/json"}, content_type="multipart/form-data")
    assert_json_error(json_response, 400, "csrf_failed")


def test_not_found_and_wrong_method(client):
    assert_json_error(client.get("/api/v1/predictions/999"), 404, "not_found")
    assert_json_error(client.get("/api/v1/nothing"), 404, "not_found")
    assert_json_error(client.delete("/api/v1/predictions"), 405, "method_not_allowed")
    page = client.get("/predictions/999")
    assert page.status_code == 404 and "text/html" in page.content_type
    assert client.get("/predictions/999/thumbnail.jpg").status_code == 404


def test_unexpected_error_is_a_logged_generic_500(app, client, make_image, monkeypatch, caplog):
    classifier = app.extensions["classifier"]

    def explode(*_args, **_kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(classifier, "predict", explode)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = post_api(client, make_image())
    message = assert_json_error(response, 500, "internal_error")
    assert "secret" not in message
    assert "secret internal detail" in caplog.text


SEEDS = {fmt: encode(Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 60, 3), dtype=np.uint8)), fmt)
         for fmt in ("JPEG", "PNG", "WEBP", "GIF")}


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(sorted(SEEDS)), cut=st.floats(0.0, 1.0),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=8))
def test_damaged_images_never_cause_a_server_error(client, fmt, cut, flips):
    """Real images with bytes overwritten and tails cut off: always a 201 or a 4xx with a message."""
    data = bytearray(SEEDS[fmt])
    for position, value in flips:
        data[min(len(data) - 1, int(position * len(data)))] = value
    data = bytes(data[: max(1, int(cut * len(data)))]) if cut < 0.98 else bytes(data)
    response = post_api(client, data)
    assert response.status_code in {201, 400, 413, 415, 422}, response.data
    if response.status_code != 201:
        assert response.json["error"]["message"]
