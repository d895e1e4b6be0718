"""POST /api/v1/predictions:batch: one result or one error per file, in order, never one failure for all."""

from __future__ import annotations

import io

import pytest

from app.batch import BATCH_MAX_IMAGES
from trust_support import dispose, make_app


@pytest.fixture
def batch_app(color_artifact, tmp_path, database_url):
    application = make_app(color_artifact, database_url, VEHICLE_GATE_DIR="none")
    yield application
    dispose(application)


def post_batch(client, files, **fields):
    data = {"images": [(io.BytesIO(body), name) for name, body in files], **fields}
    return client.post("/api/v1/predictions:batch", data=data, content_type="multipart/form-data")


def test_each_file_gets_its_own_result_in_order(batch_app, make_image):
    from app.extensions import db
    from app.models import Prediction

    files = [("red.jpg", make_image("red")), ("notes.txt", b"not an image at all"),
             ("green.png", make_image("green", fmt="PNG")), ("empty.jpg", b""),
             ("cut.jpg", make_image("blue", size=(300, 200))[:400]), ("blue.webp", make_image("blue", fmt="WEBP"))]
    response = post_batch(batch_app.test_client(), files, top_k="2")
    assert response.status_code == 200
    body = response.json
    assert [r["index"] for r in body["results"]] == list(range(len(files)))
    assert [r["filename"] for r in body["results"]] == [name for name, _ in files]
    assert [r["status"] for r in body["results"]] == [201, 415, 201, 400, 422, 201]
    assert (body["succeeded"], body["failed"]) == (3, 3)
    good = [r["prediction"] for r in body["results"] if r["status"] == 201]
    assert [p["predictions"][0]["label"] for p in good] == ["red", "green", "blue"]
    assert all(len(p["predictions"]) == 2 and p["verdict"] == "ok" for p in good)
    assert body["results"][1]["error"]["code"] == "unsupported_media_type"
    assert body["results"][3]["error"]["code"] == "empty_file"
    with batch_app.app_context():
        stored = db.session.execute(db.select(Prediction.public_id, Prediction.source)).all()
    assert sorted(stored) == sorted((p["id"], "api") for p in good)


def test_an_unexpected_failure_on_one_file_spares_the_others(batch_app, make_image):
    """A classifier that breaks on one particular photo (web-layer test: the failure is injected)."""
    real = batch_app.extensions["classifier"]

    class BreaksOnWidth77:
        def __getattr__(self, name):
            return getattr(real, name)

        def predict(self, image, top_k=5):
            if image.width == 77:
                raise RuntimeError("boom")
            return real.predict(image, top_k=top_k)

    batch_app.extensions["classifier"] = BreaksOnWidth77()
    files = [("a.jpg", make_image("red")), ("b.jpg", make_image("green", size=(77, 50))),
             ("c.jpg", make_image("blue"))]
    body = post_batch(batch_app.test_client(), files).json
    assert [r["status"] for r in body["results"]] == [201, 500, 201]
    assert body["results"][1]["error"]["code"] == "internal_error"
    assert "boom" not in str(body)


def test_limits_of_a_batch(batch_app, make_image):
    client = batch_app.test_client()
    too_many = [(f"{i}.png", make_image("red", size=(8, 8), fmt="PNG")) for i in range(BATCH_MAX_IMAGES + 1)]
    response = post_batch(client, too_many)
    assert response.status_code == 400 and response.json["error"]["code"] == "too_many_images"
    response = client.post("/api/v1/predictions:batch", data={}, content_type="multipart/form-data")
    assert response.status_code == 400 and response.json["error"]["code"] == "no_file"
    response = post_batch(client, [("a.png", make_image("red", fmt="PNG"))], top_k="99")
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_top_k"
    full = post_batch(client, too_many[:BATCH_MAX_IMAGES])
    assert full.status_code == 200 and full.json["succeeded"] == BATCH_MAX_IMAGES
