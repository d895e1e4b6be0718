"""The hostile-upload corpus against the API and the page: a clear 4xx or a correct 201, never a 500.

For every case: the status and error code the corpus expects, a plain-language message, no stack
trace or internal detail in the body, the app still answering afterwards, and no row written for a
refused input (one row for an accepted one). ``hostile_files.py`` says why each 201 is right.
"""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

import hostile_files
from hostile_files import PAYLOAD

pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # the broken-EXIF case
CASES = {case.name: case for case in hostile_files.corpus()}
PAGE_CASES = [name for name, case in CASES.items() if not case.form]  # the page has no top_k field
LEAKS = ("Traceback", 'File "/', "PIL.", "sqlalchemy", "Werkzeug Debugger")


def row_count(app) -> int:
    from app.extensions import db
    from app.models import Prediction

    with app.app_context():
        return db.session.query(Prediction).count()


def assert_no_leak(body: str) -> None:
    for marker in LEAKS:
        assert marker not in body, f"{marker!r} in the response"
    assert PAYLOAD.decode() not in body


def csrf_token(client) -> str:
    page = client.get("/").get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


@pytest.mark.parametrize("name", list(CASES))
def test_api_answers_every_hostile_case(app, client, name):
    case = CASES[name]
    rows = row_count(app)
    response = client.post("/api/v1/predictions", data=case.multipart(), content_type="multipart/form-data")
    body = response.get_data(as_text=True)
    assert response.status_code == case.status, body
    assert_no_leak(body)
    if case.status == 201:
        assert row_count(app) == rows + 1
        check_accepted(app, client, case, response.json)
    else:
        error = response.json["error"]
        assert (error["status"], error["code"]) == (case.status, case.code)
        assert len(error["message"]) > 20 and error["message"].endswith(".")
        assert row_count(app) == rows
    assert client.get("/healthz").status_code == 200


def check_accepted(app, client, case, prediction: dict) -> None:
    """What an accepted odd input must look like once stored."""
    from app.extensions import db
    from app.models import Prediction

    with app.app_context():
        stored = db.session.scalar(db.select(Prediction).filter_by(public_id=prediction["id"]))
        name, thumbnail = stored.original_filename, stored.thumbnail
    if name is not None:
        assert len(name) <= 255 and "/" not in name and "\\" not in name and "\x00" not in name
        assert not any(ch in name for ch in "\u202e\x00")
    # Only a re-encoded JPEG thumbnail is kept: no trailing archive, no text chunk, no EXIF.
    assert thumbnail.startswith(b"\xff\xd8") and PAYLOAD not in thumbnail and b"PK\x03\x04" not in thumbnail
    served = client.get(f"/predictions/{prediction['id']}/thumbnail.jpg")
    assert served.data == thumbnail and served.mimetype == "image/jpeg"
    assert_no_leak(client.get(f"/predictions/{prediction['id']}").get_data(as_text=True))
    if case.name.startswith("exif orientation"):
        transposed = int(case.name.rsplit(" ", 1)[1]) >= 5
        assert (prediction["image"]["width"], prediction["image"]["height"]) == ((60, 120) if transposed else (120, 60))
        assert Image.open(io.BytesIO(thumbnail)).size == ((60, 120) if transposed else (120, 60))
    if case.name == "path traversal file name":
        assert name == "passwd.jpg"
    if case.name == "very long file name":
        assert len(name) == 255


@pytest.mark.parametrize("name", PAGE_CASES)
def test_page_answers_every_hostile_case(app, client, name):
    case = CASES[name]
    rows = row_count(app)
    form = {**case.multipart(), "csrf_token": csrf_token(client)}
    response = client.post("/", data=form, content_type="multipart/form-data")
    body = response.get_data(as_text=True)
    assert_no_leak(body)
    if case.status == 201:
        assert response.status_code == 303 and row_count(app) == rows + 1
        assert client.get(response.headers["Location"]).status_code == 200
    else:
        assert response.status_code == case.status
        assert "text/html" in response.content_type
        assert 'id="upload-form"' in body and 'role="alert"' in body  # the message, next to the form
        assert row_count(app) == rows


def test_corpus_covers_the_required_kinds():
    """Guard the corpus itself: every kind of hostile input the service must survive is in it."""
    names = " ".join(CASES)
    for kind in ("zero bytes", "text", "html", "svg", "pdf", "zip", "truncated jpeg", "truncated png",
                 "crc", "png bomb", "gif bomb", "1 x 1", "1 x 100000", "cmyk", "16-bit",
                 "palette png with transparency", "broken exif", "polyglot", "long file name",
                 "unicode file name", "path traversal", "wrong field", "several files",
                 "top_k=-1", "top_k=0", "top_k=21", "top_k=abc", "avif coding", "SOF9", "SOF10", "zeros after its end", "1001 images"):
        assert kind in names, kind
    assert {f"exif orientation {value}" for value in range(1, 9)} <= set(CASES)
    assert all(case.why_valid for case in CASES.values() if case.status == 201)


def test_bombs_are_refused_fast_and_without_their_pixels(tmp_path):
    """The bomb benchmark at a small size: every bomb a 413 in < 100 ms with no pixel buffer made."""
    from benchmarks import bomb

    report = bomb.main(["--repeat", "3", "--out", str(tmp_path / "bomb.json")])
    assert report["all_bombs_within_budget"], report["results"]
    control = report["results"]["control: genuine 4000x3000 png, decoded"]
    if report["peak_rss_resettable"]:  # the probe sees real pixel buffers, so its "no growth" means it
        assert control["rss_growth_kb"] > 30 * 1024
