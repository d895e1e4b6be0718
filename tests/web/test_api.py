"""JSON API: create a prediction, read it back, describe the model."""

from __future__ import annotations

import hashlib
import io

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Prediction


def post(client, data: bytes, filename="car.jpg", query="", **fields):
    fields["image"] = (io.BytesIO(data), filename)
    return client.post(f"/api/v1/predictions{query}", data=fields, content_type="multipart/form-data")


def test_create_prediction(client, app, make_image):
    data = make_image("green", size=(200, 150))
    response = post(client, data)
    assert response.status_code == 201
    body = response.json
    assert response.headers["Location"] == f"/api/v1/predictions/{body['id']}"
    assert set(body) == {"id", "created_at", "model", "predictions", "image", "latency_ms", "verdict",
                         "vehicle_score", "groups", "answer", "headline"}
    # The headline and the answer lead the body; the top-k is the detail under them.
    assert list(body)[:4] == ["id", "headline", "answer", "verdict"]
    # The shipped vehicle gate (on by default) sees no car in a flat green picture, and a photo that is not
    # a car gets no answer at any level (the class-level answer of the colours model without a gate is in
    # test_answers_web).
    assert body["verdict"] == "not_a_car" and body["vehicle_score"] < app.extensions["vehicle_gate"].threshold
    assert body["groups"] == {} and body["answer"] is None
    assert body["model"] == {"name": "colors", "version": "0.0.1-test"}
    assert [p["label"] for p in body["predictions"]][0] == "green"
    assert len(body["predictions"]) == 3  # TOP_K 5, capped at the model's 3 classes
    assert body["image"] == {"width": 200, "height": 150, "sha256": hashlib.sha256(data).hexdigest()}
    assert body["latency_ms"] > 0
    assert body["created_at"].endswith("Z")

    with app.app_context():
        row = db.session.scalar(db.select(Prediction).filter_by(public_id=body["id"]))
        assert row.source == "api"
        assert row.top_label == "green" and row.top_score == body["predictions"][0]["score"]
        assert row.content_type == "image/jpeg" and row.original_filename == "car.jpg"
        assert row.thumbnail[:2] == b"\xff\xd8"


def test_read_back_gives_the_same_body(client, make_image):
    created = post(client, make_image("blue"))
    fetched = client.get(created.headers["Location"])
    assert fetched.status_code == 200
    assert fetched.json == created.json


def test_creation_writes_the_row_and_answers_without_reading_it_back(client, app, make_image):
    """The response is built from the values just committed: no query reads the new row again."""
    from sqlalchemy import event

    statements = []
    with app.app_context():
        engine = db.engine
    record = lambda conn, cursor, statement, *rest: statements.append(statement.split()[0].upper())  # noqa: E731
    event.listen(engine, "before_cursor_execute", record)
    try:
        created = post(client, make_image("red"))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert created.status_code == 201 and statements.count("INSERT") == 1
    assert "SELECT" not in statements[statements.index("INSERT"):], statements
    assert client.get(created.headers["Location"]).json == created.json


def test_top_k_from_form_or_query(client, make_image):
    assert len(post(client, make_image(), top_k="1").json["predictions"]) == 1
    assert len(post(client, make_image(), query="?top_k=2").json["predictions"]) == 2
    assert len(post(client, make_image(), query="?top_k=2", top_k="2").json["predictions"]) == 2
    assert post(client, make_image(), query="?top_k=1", top_k="2").status_code == 400  # they must agree


def test_the_client_content_type_and_name_are_not_trusted(client, app, make_image):
    response = client.post("/api/v1/predictions", data={
        "image": (io.BytesIO(make_image("red", fmt="PNG")), "../../etc/\x00passwd.jpg", "image/jpeg")},
        content_type="multipart/form-data")
    assert response.status_code == 201
    with app.app_context():
        row = db.session.scalar(db.select(Prediction).filter_by(public_id=response.json["id"]))
        assert row.content_type == "image/png"
        assert row.original_filename == "passwd.jpg"


def test_model_description(client):
    body = client.get("/api/v1/model").json
    assert body["name"] == "colors" and body["version"] == "0.0.1-test"
    assert body["runtime"] == "litert" and body["variant"] == "float32"
    assert body["labels"] == ["red", "green", "blue"]
    assert body["metadata"]["image_size"] == [32, 32]


def test_model_description_publishes_no_path_of_the_training_machine(color_artifact, tmp_path):
    """The shipped artifact's metadata names its run folder, checkpoints, runs_dir and dataset location."""
    import json
    import shutil

    from app import create_app

    artifact = tmp_path / "artifact"
    shutil.copytree(color_artifact, artifact)
    metadata = json.loads((artifact / "metadata.json").read_text())
    metadata["training_config"] = {
        "run_dir": "/work/runs/colors-20261129-211956", "command": "python -m training train --data ../shared/x",
        "config": {"train": {"runs_dir": "/work/runs"}, "data": {"path": "../shared/datasets/colors"}},
        "phases": [{"checkpoint": "/work/runs/colors/checkpoints/head.best.weights.h5"}]}
    metadata["dataset"] = {"root": "/home/trainer/datasets/colors", "counts": {"train": 30, "val": 9}}
    metadata["metrics"] = {"accuracy": 0.9, "report": "C:\\runs\\colors\\report.json"}
    metadata["confidence"] = {"threshold": 0.6, "plot": "~/runs/confidence.png"}
    (artifact / "metadata.json").write_text(json.dumps(metadata))
    application = create_app({"TESTING": True, "MODEL_DIR": str(artifact), "SECRET_KEY": "test-secret",
                              "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}", "RATELIMIT_ENABLED": False})
    body = application.test_client().get("/api/v1/model").get_json()
    published = json.dumps(body)
    for fragment in ("/work", "runs", "checkpoint", "shared", "/home", "C:\\", "~/", str(artifact), str(tmp_path)):
        assert fragment not in published, fragment
    # What a client needs stays: name, version, metrics, labels, groups, the dataset's counts.
    assert (body["name"], body["labels"]) == ("colors", ["red", "green", "blue"])
    assert body["metadata"]["metrics"]["accuracy"] == 0.9 and body["metadata"]["confidence"]["threshold"] == 0.6
    assert body["metadata"]["dataset"] == {"counts": {"train": 30, "val": 9}}
    assert body["metadata"]["image_size"] == [32, 32]


def test_api_needs_no_csrf_token_and_sets_no_cookie(client, make_image):
    response = post(client, make_image())
    assert response.status_code == 201
    assert "Set-Cookie" not in response.headers


def test_every_prediction_is_logged(client, app, make_image):
    for color in ("red", "green", "blue"):
        post(client, make_image(color))
    with app.app_context():
        labels = db.session.scalars(select(Prediction.top_label).order_by(Prediction.id)).all()
    assert labels == ["red", "green", "blue"]
