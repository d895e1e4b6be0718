"""Answers at every level through the web layer: API, batch, result page, CSV export, admin filter, model card."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
from PIL import Image

from admin_support import create_admin, login
from support import encode
from trust_support import dispose, make_app, post_image

# The colours model (red / green / blue) with two groupings: hue (2 labels) is more specific than tone (1).
GROUPS = {
    "tone": {"labels": ["colourful"], "of": {"red": "colourful", "green": "colourful", "blue": "colourful"},
             "confidence": {"threshold": 0.5, "target_precision": 0.95, "coverage": 1.0, "accuracy": 1.0,
                            "curve": [{"threshold": t, "coverage": 1.0, "accuracy": 1.0} for t in (0.0, 0.5, 0.9)]},
             "metrics": {"split": "val", "accuracy": 1.0, "num_images": 40}},
    "hue": {"labels": ["cool", "warm"], "of": {"red": "warm", "green": "cool", "blue": "cool"},
            "confidence": {"threshold": 0.8, "target_precision": 0.95, "coverage": 0.7, "accuracy": 0.96,
                           "curve": [{"threshold": t, "coverage": round(1 - t / 2, 3), "accuracy": 0.9 + t / 10}
                                     for t in (0.0, 0.5, 0.8, 0.9)]},
            "metrics": {"split": "val", "accuracy": 0.925, "num_images": 40}},
}


@pytest.fixture
def grouped_app(color_artifact, tmp_path, database_url):
    """The colours model with a 0.9 class threshold and the hue / tone groupings, no vehicle gate."""
    artifact = tmp_path / "colors-grouped"
    shutil.copytree(color_artifact, artifact)
    path = artifact / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["confidence"] = {"threshold": 0.9, "target_precision": 0.95, "coverage": 0.5, "accuracy": 0.97,
                              "curve": []}
    metadata["groups"] = GROUPS
    path.write_text(json.dumps(metadata))
    application = make_app(artifact, database_url, VEHICLE_GATE_DIR="none")
    yield application
    dispose(application)


def stripes(*colours, size=(60, 60)) -> bytes:
    """A PNG of equal vertical stripes: the colours model scores each colour by its share of the pixels."""
    image = Image.new("RGB", size)
    width = size[0] // len(colours)
    for index, colour in enumerate(colours):
        image.paste(colour, (index * width, 0, (index + 1) * width if index < len(colours) - 1 else size[0], size[1]))
    return encode(image, "PNG")


RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def test_each_photo_is_answered_at_the_finest_sure_level(grouped_app):
    client = grouped_app.test_client()
    clear = post_image(client, stripes(RED), "red.png").json
    assert clear["answer"] == {"level": "class", "label": "red", "score": pytest.approx(clear["predictions"][0]["score"]),
                               "source": "model"}
    assert clear["verdict"] == "ok"
    cool = post_image(client, stripes(GREEN, BLUE), "cool.png").json
    assert cool["verdict"] == "uncertain"
    assert cool["answer"]["level"] == "hue" and cool["answer"]["label"] == "cool"
    scores = {p["label"]: p["score"] for p in cool["predictions"]}
    assert cool["groups"]["hue"][0] == {"label": "cool", "score": pytest.approx(scores["green"] + scores["blue"], abs=1e-6)}
    assert [g["label"] for g in cool["groups"]["hue"]] == ["cool", "warm"]
    mixed = post_image(client, stripes(RED, GREEN, BLUE), "mixed.png").json
    assert mixed["answer"]["level"] == "tone" and mixed["answer"]["score"] == pytest.approx(1.0, abs=1e-5)
    assert list(mixed["groups"]) == ["hue", "tone"]  # most specific first
    # Stored: the read-back is the same answer.
    assert client.get(f"/api/v1/predictions/{cool['id']}").json["answer"] == cool["answer"]


def test_a_model_without_groupings_or_threshold_answers_with_its_class(color_artifact, database_url):
    application = make_app(color_artifact, database_url, VEHICLE_GATE_DIR="none")
    try:
        body = post_image(application.test_client(), stripes(GREEN, GREEN, BLUE, RED), "green.png").json
    finally:
        dispose(application)
    assert body["groups"] == {} and body["verdict"] == "ok"
    assert body["predictions"][0]["label"] == "green" and body["predictions"][0]["score"] < 0.9
    assert body["answer"] == {"level": "class", "label": "green",
                              "score": pytest.approx(body["predictions"][0]["score"]), "source": "model"}


def test_the_batch_route_answers_each_photo(grouped_app):
    files = [(io.BytesIO(stripes(RED)), "a.png"), (io.BytesIO(stripes(GREEN, BLUE)), "b.png")]
    response = grouped_app.test_client().post("/api/v1/predictions:batch", data={"images": files},
                                              content_type="multipart/form-data")
    assert response.status_code == 200
    answers = [r["prediction"]["answer"]["level"] for r in response.json["results"]]
    assert answers == ["class", "hue"]
    assert all(set(r["prediction"]["groups"]) == {"hue", "tone"} for r in response.json["results"])


def test_the_result_page_leads_with_the_answer_and_a_line_per_group(grouped_app):
    client = grouped_app.test_client()
    pages = {}
    for name, data in {"red": stripes(RED), "cool": stripes(GREEN, BLUE), "mixed": stripes(RED, GREEN, BLUE)}.items():
        created = post_image(client, data, f"{name}.png").json
        pages[name] = client.get(f"/predictions/{created['id']}").get_data(as_text=True)
    assert 'data-level="class"' in pages["red"] and ">red</h1>" in pages["red"]
    assert "A cool car" in pages["cool"] and "the model is not sure which one" in pages["cool"]
    assert "A colourful car" in pages["mixed"] and "not sure of the hue" in pages["mixed"]
    assert "Not sure</h1>" not in pages["cool"]
    for page in pages.values():
        assert 'data-group="hue"' in page and 'data-group="tone"' in page
        assert 'id="predictions"' in page  # the fine top-k bars stay


def test_csv_export_and_admin_filter_by_answer_level(grouped_app):
    client = grouped_app.test_client()
    public_ids = {name: post_image(client, data, f"{name}.png").json["id"]
                  for name, data in {"red": stripes(RED), "cool": stripes(GREEN, BLUE)}.items()}
    from app.extensions import db
    from app.models import Prediction

    with grouped_app.app_context():  # the CSV lists the row ids
        ids = {name: db.session.scalar(db.select(Prediction.id).filter_by(public_id=public_id))
               for name, public_id in public_ids.items()}
    create_admin(grouped_app)
    login(client)
    rows = list(csv.DictReader(io.StringIO(client.get("/admin/predictions.csv").get_data(as_text=True))))
    by_id = {int(r["id"]): r for r in rows}
    assert (by_id[ids["cool"]]["answer_level"], by_id[ids["cool"]]["answer_label"]) == ("hue", "cool")
    assert by_id[ids["red"]]["answer_level"] == "class" and float(by_id[ids["red"]]["answer_score"]) > 0.9
    only_hue = list(csv.DictReader(io.StringIO(
        client.get("/admin/predictions.csv?answer_level=hue").get_data(as_text=True))))
    assert [int(r["id"]) for r in only_hue] == [ids["cool"]]
    assert client.get("/admin/predictions.csv?answer_level=none").get_data(as_text=True).count("\n") == 1
    page = client.get("/admin/?answer_level=class").get_data(as_text=True)
    assert 'id="answer_level"' in page and '<option value="hue">' in page


def test_the_model_card_shows_each_grouping(grouped_app):
    page = grouped_app.test_client().get("/model/").get_data(as_text=True)
    section = page[page.index('id="groups"'):]
    assert section.index('id="group-hue"') < section.index('id="group-tone"')
    assert "92.5 %" in section and "0.800" in section and "70.0 %" in section
    assert section.count("group-threshold-table") == 2
