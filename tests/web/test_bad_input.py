"""Bad input that once got a wrong answer: huge ids, the last calendar day, JPEGs missing their data,
bodies shorter than announced, awkward labels in the export, and protocol details (405, form parts,
error shapes, ``top_k`` twice).
"""

from __future__ import annotations

import csv
import io
import socket
import sqlite3

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from PIL import Image

import bad_files
from admin_support import add_prediction, create_admin, login
from support import encode

BEYOND_64_BITS = 2**63
LARGEST_ROW_ID = 2**31 - 1  # the id columns are INTEGER: 4 bytes on PostgreSQL


@pytest.fixture
def prediction_id(app):
    with app.app_context():
        return add_prediction(1).id


def claiming_jpeg(size: tuple[int, int], *, progressive: bool) -> bytes:
    """A real small JPEG whose frame header was edited to claim ``size``: its data covers 64 x 48 only."""
    return bad_files.jpeg_claiming(size, frame=0xC2 if progressive else 0xC0)


def rows(app) -> int:
    from app.extensions import db
    from app.models import Prediction

    with app.app_context():
        return db.session.query(Prediction).count()


def test_ids_beyond_64_bits_are_404_everywhere(app, client, prediction_id):
    create_admin(app)
    admin = app.test_client()
    assert login(admin).status_code == 302
    for number in (BEYOND_64_BITS, 10**30, 2**63 - 1, LARGEST_ROW_ID + 1, LARGEST_ROW_ID):
        for path in (f"/predictions/{number}", f"/predictions/{number}/thumbnail.jpg",
                     f"/api/v1/predictions/{number}", f"/api/v1/predictions/{number}/explanation.png"):
            assert client.get(path).status_code == 404, path
        for path in (f"/admin/predictions/{number}", f"/admin/predictions/{number}/thumbnail.jpg"):
            assert admin.get(path).status_code == 404, path
        for path in (f"/admin/predictions/{number}/correction", f"/admin/predictions/{number}/correction/delete"):
            assert admin.post(path).status_code in (400, 404), path
    assert admin.get(f"/admin/predictions/{prediction_id}").status_code == 200


def test_the_last_calendar_day_is_ignored_like_any_unusable_filter(app, prediction_id):
    create_admin(app)
    admin = app.test_client()
    login(admin)
    for query in ("date_to=9999-12-31", "date_from=9999-12-31", "date_to=9999-12-31&date_from=2000-01-01"):
        page = admin.get(f"/admin/?{query}")
        assert page.status_code == 200, query
        assert f'data-id="{prediction_id}"' in page.get_data(as_text=True), query
        exported = admin.get(f"/admin/predictions.csv?{query}")
        assert exported.status_code == 200, query
        assert len(exported.get_data(as_text=True).splitlines()) == 2, query  # header + the one row
    # A real last day still filters.
    assert f'data-id="{prediction_id}"' not in admin.get("/admin/?date_to=2000-01-01").get_data(as_text=True)


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_jpeg_whose_data_is_far_short_of_its_header_is_422(app, client, progressive):
    data = claiming_jpeg((6000, 6000), progressive=progressive)
    assert len(data) < 2000
    response = client.post("/api/v1/predictions", data={"image": (io.BytesIO(data), "claims.jpg")})
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["code"] == "corrupt_image"
    assert rows(app) == 0


@pytest.mark.parametrize("mode,options", [("RGB", {"optimize": True}), ("RGB", {"progressive": True}),
                                          ("L", {"optimize": True}), ("RGB", {"subsampling": 0})])
def test_blank_large_jpegs_are_complete(mode, options):
    """The size floor is a true lower bound: the most compressible photos there are still pass it."""
    from inference.imaging import decode_upload, jpeg_data_complete

    data = encode(Image.new(mode, (4000, 3000), 128), "JPEG", **options)
    assert jpeg_data_complete(data)
    assert decode_upload(data, max_pixels=40_000_000, target=(32, 32)).width == 4000
    assert not jpeg_data_complete(data[:len(data) // 4])  # a floor: far-short files are caught


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"restart_marker_blocks": 4}],
                         ids=["baseline", "progressive", "restart markers"])
def test_only_entropy_coded_bytes_count_and_real_photos_still_pass(options):
    from inference.imaging import _jpeg_segments, jpeg_data_complete, jpeg_entropy_coded_bytes

    rng = np.random.default_rng(5)
    data = encode(Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)), "JPEG", **options)
    scan_start = next(end for marker, _, end in _jpeg_segments(data) if marker == 0xDA)
    coded = jpeg_entropy_coded_bytes(data, scan_start)
    # Every scan's data is counted (a progressive file has several, with tables between them) ...
    assert 0.9 * (len(data) - scan_start) < coded <= len(data) - scan_start
    # ... and nothing after the end-of-image marker.
    assert jpeg_entropy_coded_bytes(data + bytes(300_000), scan_start) == coded
    assert jpeg_data_complete(data) and jpeg_data_complete(data + bytes(300_000))
    assert not jpeg_data_complete(bad_files.jpeg_claiming((6000, 6000), padding=300_000))


def test_export_handles_long_accented_labels_and_formula_like_labels(app, runner, tmp_path):
    from app.extensions import db
    from app.models import Correction

    admin_id = create_admin(app)
    long_a, long_b = "é" * 200, "é" * 199 + "è"  # 400 bytes each in UTF-8, the same first 398
    labels = [long_a, long_b, "=SUM(A1:A2)", "+33 Coupé"]
    with app.app_context():
        for index, label in enumerate(labels):
            prediction = add_prediction(index)
            db.session.add(Correction(prediction=prediction, old_label="red", new_label=label,
                                      corrected_by_id=admin_id))
        db.session.commit()
    out = tmp_path / "export"
    result = runner.invoke(args=["export-corrections", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 4 photos in 4 label folders" in result.output
    with open(out / "corrections.csv", newline="", encoding="utf-8") as handle:
        manifest = list(csv.DictReader(handle))
    assert [row["label"] for row in manifest] == labels  # exactly as given, no apostrophe
    for row in manifest:
        folder, _ = row["path"].split("/")
        assert (out / row["path"]).is_file(), row["path"]
        assert len(folder.encode("utf-8")) <= 255
    folders = [row["path"].split("/")[0] for row in manifest]
    assert len(set(folders)) == 4 and folders[2:] == ["=SUM(A1:A2)", "+33 Coupé"]


def test_405_names_the_allowed_methods(client):
    for method, path, allowed in (("PUT", "/api/v1/predictions", {"POST"}), ("GET", "/api/v1/predictions", {"POST"}),
                                  ("DELETE", "/api/v1/model", {"GET", "HEAD"}), ("POST", "/healthz", {"GET", "HEAD"})):
        response = client.open(path, method=method)
        assert response.status_code == 405, (method, path)
        assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}, (method, path)


def test_more_form_parts_than_allowed_is_said_so(app, client, make_image):
    def form():
        return {"image": (io.BytesIO(make_image()), "car.jpg"), **{f"f{i}": "x" for i in range(1001)}}

    response = client.post("/api/v1/predictions", data=form())
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "form_too_large" and "1,000 parts" in error["message"], error
    assert "MB" not in error["message"]
    page = client.post("/", data=form())
    assert page.status_code == 413 and "1,000 parts" in page.get_data(as_text=True)
    assert rows(app) == 0


def test_admin_401_has_the_error_shape_of_the_api(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    validator = Draft202012Validator({"$ref": "#/components/schemas/Error", "components": spec["components"]})
    for path in ("/admin/", "/admin/predictions.csv"):
        response = client.get(path, headers={"Accept": "application/json"})
        assert response.status_code == 401
        assert validator.is_valid(response.get_json()), response.get_json()
        assert response.get_json()["error"]["status"] == 401


def test_openapi_states_the_minimums_the_server_enforces(client, make_image):
    spec = client.get("/api/v1/openapi.json").get_json()
    single = spec["paths"]["/api/v1/predictions"]["post"]["requestBody"]["content"]["multipart/form-data"]
    batch = spec["paths"]["/api/v1/predictions:batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert single["schema"]["properties"]["image"]["minLength"] == 1
    images = batch["schema"]["properties"]["images"]
    assert (images["minItems"], images["maxItems"]) == (1, 32)
    # ... and the server does refuse below them.
    assert client.post("/api/v1/predictions", data={"image": (io.BytesIO(b""), "e.jpg")}).status_code == 400
    assert client.post("/api/v1/predictions:batch", data={}, content_type="multipart/form-data").status_code == 400
    # In a batch an empty file is one more bad file (its own 400), so the schema lets it through.
    assert "minLength" not in images["items"]
    batch_response = client.post("/api/v1/predictions:batch", data={"images": [(io.BytesIO(b""), "e.jpg")]})
    assert batch_response.status_code == 200 and batch_response.get_json()["results"][0]["status"] == 400


@pytest.mark.parametrize("route", ["/api/v1/predictions", "/api/v1/predictions:batch"])
def test_top_k_sent_twice_must_agree(app, client, make_image, route):
    field = "image" if route.endswith("predictions") else "images"

    def post(query: str, form_top_k: str | None):
        data = {field: (io.BytesIO(make_image()), "car.jpg")}
        if form_top_k is not None:
            data["top_k"] = form_top_k
        return client.post(f"{route}{query}", data=data)

    for query, form in (("?top_k=abc", "3"), ("?top_k=2", "3"), ("?top_k=99", "3"), ("?top_k=3", "0")):
        response = post(query, form)
        assert response.status_code == 400, (query, form)
        assert response.get_json()["error"]["code"] in ("invalid_top_k", "conflicting_top_k")
    assert post("?top_k=2", "3").get_json()["error"]["code"] == "conflicting_top_k"
    agreed = post("?top_k=2", "2")
    assert agreed.status_code in (200, 201)
    body = agreed.get_json()
    answers = body["predictions"] if "predictions" in body else body["results"][0]["prediction"]["predictions"]
    assert len(answers) == 2
    assert len(post("?top_k=1", None).get_json().get("predictions", [None])) == 1


@pytest.mark.slow
def test_body_shorter_than_its_content_length_is_refused_not_stored(color_artifact, tmp_path, make_image):
    """A client that sends a whole multipart form but fewer bytes than announced, then gives up."""
    from gunicorn_support import running_gunicorn
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(method="POST", data={"image": (io.BytesIO(make_image()), "car.jpg")},
                             content_type="multipart/form-data").get_environ()
    body = environ["wsgi.input"].read()
    with running_gunicorn(color_artifact, tmp_path) as (server, database):
        answers = []
        for announced in (len(body) + 4096, len(body)):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
                connection.sendall(f"POST /api/v1/predictions HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                                   f"Content-Type: {environ['CONTENT_TYPE']}\r\nContent-Length: {announced}\r\n\r\n"
                                   .encode() + body)
                connection.shutdown(socket.SHUT_WR)  # nothing more will come
                reply = b""
                while chunk := connection.recv(65536):
                    reply += chunk
            answers.append(int(reply.split(b" ", 2)[1]))
        with sqlite3.connect(database) as db:
            stored = db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    assert answers == [400, 201]  # the short body refused, the same body with its true length taken
    assert stored == 1
