"""The HTML flow: upload page, form post, 303 to the result page, thumbnail."""

from __future__ import annotations

import io
import re

from PIL import Image

from app.extensions import db
from app.models import Prediction
from test_errors import csrf_token


def test_upload_page(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in page
    assert 'id="drop-zone"' in page and 'type="file"' in page and 'id="preview"' in page
    assert "/static/js/upload.js" in page
    assert "bootstrap" in page
    assert re.search(r"<script>\s*\S", page) is None  # no inline script: the CSP forbids it
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_post_redirects_to_the_result_page(client, app, make_image):
    data = make_image("blue", size=(640, 480))
    response = client.post("/", data={"csrf_token": csrf_token(client),
                                      "image": (io.BytesIO(data), "my car.jpg")},
                           content_type="multipart/form-data")
    assert response.status_code == 303
    match = re.fullmatch(r"/predictions/([A-Za-z0-9_-]{22})", response.headers["Location"])
    prediction_id = match.group(1)  # the public id: 128 random bits, never the row number

    result = client.get(response.headers["Location"])
    assert result.status_code == 200
    page = result.get_data(as_text=True)
    assert f"/predictions/{prediction_id}/thumbnail.jpg" in page
    assert page.count('class="progress-bar') == 3
    labels = re.findall(r'<span class="label">([^<]+)</span>', page)
    assert labels[0] == "blue" and sorted(labels) == ["blue", "green", "red"]
    assert "colors" in page and "0.0.1-test" in page and " ms" in page
    assert "my car.jpg" in page

    with app.app_context():
        row = db.session.scalar(db.select(Prediction).filter_by(public_id=prediction_id))
        assert row.source == "web" and row.top_label == "blue"

    thumbnail = client.get(f"/predictions/{prediction_id}/thumbnail.jpg")
    assert thumbnail.status_code == 200 and thumbnail.mimetype == "image/jpeg"
    image = Image.open(io.BytesIO(thumbnail.data))
    assert image.size == (320, 240)
    assert "immutable" in thumbnail.headers["Cache-Control"]


def test_file_name_is_escaped_on_the_page(client, make_image):
    response = client.post("/", data={"csrf_token": csrf_token(client),
                                      "image": (io.BytesIO(make_image()), "<img src=x onerror=alert(1)>.jpg")},
                           content_type="multipart/form-data", follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.jpg" in page


def post_photo(client, data: bytes, token: str | None, filename="car.jpg"):
    """What the page's script sends for each of several photos."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["X-CSRFToken"] = token
    return client.post("/photos", data={"image": (io.BytesIO(data), filename)}, headers=headers,
                       content_type="multipart/form-data")


def test_the_several_photo_route_answers_json_and_logs_a_page_upload(client, app, make_image):
    response = post_photo(client, make_image("green"), csrf_token(client))
    assert response.status_code == 201
    body = response.json
    assert body["predictions"][0]["label"] == "green"
    assert response.headers["Location"] == f"/predictions/{body['id']}"
    with app.app_context():
        assert db.session.scalar(db.select(Prediction).filter_by(public_id=body["id"])).source == "web"


def test_the_several_photo_route_needs_the_page_token_and_a_photo(client, app, make_image):
    refused = post_photo(client, make_image("green"), token=None)
    assert refused.status_code == 400 and refused.json["error"]["code"] == "csrf_failed"
    not_a_photo = post_photo(client, b"plain text", csrf_token(client), filename="notes.txt")
    assert not_a_photo.status_code == 415 and not_a_photo.json["error"]["code"] == "unsupported_media_type"
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(Prediction.id))).scalar_one() == 0


def test_a_refused_upload_names_the_file(client):
    """With several tabs or a phone's cryptic names, "not an image" alone does not say which file."""
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get("/").get_data(as_text=True))
    data = {"image": (io.BytesIO(b"meeting notes"), "notes.txt")}
    if token:
        data["csrf_token"] = token.group(1)
    response = client.post("/", data=data, content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code == 415
    assert '<strong id="rejected-file">notes.txt</strong>:' in page
