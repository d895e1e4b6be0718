"""Teaching labels by example, on the shipped model and real photos: the CLI, the API's answer, the admin
page "Teach a car", the one-click teaching of a correction, and the export for the next training run.

The photo asked about is a mirrored, slightly cropped copy of a taught photo: another photo of the same
car, as close as a photo can be, so the test holds for any model whose own answer on it is not surer
than that similarity (the test picks such a photo with the model's answer first).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from admin_support import create_admin, csrf_token, login
from support import REPO_ROOT, SHARED, encode

MODEL_DIR = REPO_ROOT / "model_artifacts" / "default"
TAUGHT_DIR = SHARED / "datasets" / "web-makes" / "other-makes" / "train" / "Tata"
PHOTOS = 5


def taught_photos() -> list[Path]:
    if not TAUGHT_DIR.is_dir():
        pytest.skip(f"real photos not available: {TAUGHT_DIR} is missing (shared datasets not mounted)")
    return sorted(TAUGHT_DIR.glob("*.jpg"))[:PHOTOS]


def variant(path: Path) -> bytes:
    """Another photo of the same car: mirrored, 4 % cropped off each side, re-encoded."""
    image = ImageOps.mirror(Image.open(path).convert("RGB"))
    width, height = image.size
    return encode(image.crop((width // 25, height // 25, width - width // 25, height - height // 25)), "JPEG",
                  quality=88)


@pytest.fixture
def car_app(database_url, tmp_path):
    """The app serving the shipped model, the gallery checked on every request."""
    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db

    application = create_app({"TESTING": True, "MODEL_DIR": str(MODEL_DIR), "DATABASE_URL": database_url,
                              "SECRET_KEY": "test-secret", "INFERENCE_THREADS": 1, "RATELIMIT_ENABLED": False,
                              "RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimits.db'}",
                              "EXPLANATION_CACHE_DIR": str(tmp_path / "explanations"),
                              "GALLERY_CHECK_SECONDS": 0})
    with application.app_context():
        upgrade()
    yield application
    with application.app_context():
        db.engine.dispose()


def post_photo(client, data: bytes, name: str = "car.jpg"):
    return client.post("/api/v1/predictions", data={"image": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def weakest_variant(client, photos: list[Path]) -> bytes:
    """The variant whose own model answer is least sure (so a near-duplicate's similarity beats it)."""
    scored = []
    for path in photos:
        data = variant(path)
        answer = post_photo(client, data).json["answer"]
        scored.append(((answer or {"score": 0.0})["score"], data))
    return min(scored, key=lambda pair: pair[0])[1]


def test_cli_teaches_a_make_the_api_answers_with_it_and_remove_restores_the_model(car_app):
    photos = taught_photos()
    client, runner = car_app.test_client(), car_app.test_cli_runner()
    asked = weakest_variant(client, photos)
    before = post_photo(client, asked).json["answer"]
    assert before is None or before["source"] == "model"

    result = runner.invoke(args=["gallery", "add", "--label", "Tata", "--level", "make", *map(str, photos)])
    assert result.exit_code == 0, result.output
    assert f"taught Tata (make) with {PHOTOS} photos" in result.output
    listed = runner.invoke(args=["gallery", "list"])
    assert listed.exit_code == 0 and f"Tata\tmake\t{PHOTOS} photos\tleave-one-out" in listed.output

    taught = post_photo(client, asked).json
    assert taught["answer"]["source"] == "gallery"
    assert taught["answer"]["label"] == "Tata" and taught["answer"]["level"] == "make"
    assert taught["answer"]["learned_from"] == PHOTOS and 0 < taught["answer"]["score"] <= 1.000001
    assert client.get(f"/api/v1/predictions/{taught['id']}").json["answer"] == taught["answer"]
    classified = runner.invoke(args=["classify", str(photos[0])])
    assert classified.exit_code == 0 and "answer make Tata" in classified.output
    assert f"learned from {PHOTOS} photos you added" in classified.output

    removed = runner.invoke(args=["gallery", "remove", "Tata"])
    assert removed.exit_code == 0 and f"removed Tata ({PHOTOS} photos)" in removed.output
    after = post_photo(client, asked).json["answer"]
    assert after == before or (after is not None and after["source"] == "model")
    assert runner.invoke(args=["gallery", "list"]).output.strip() == "the gallery is empty"
    assert runner.invoke(args=["gallery", "remove", "Tata"]).exit_code != 0


def test_cli_refuses_what_is_not_a_photo_and_a_blank_label(car_app, tmp_path):
    runner = car_app.test_cli_runner()
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    result = runner.invoke(args=["gallery", "add", "--label", "Tata", str(junk)])
    assert result.exit_code != 0 and "no photo could be taught" in result.output
    assert runner.invoke(args=["gallery", "add", "--label", "  ", str(junk)]).exit_code != 0


def test_an_empty_gallery_reads_no_feature_map(car_app, monkeypatch):
    photos = taught_photos()
    classifier = car_app.extensions["classifier"]

    def refuse(*_args, **_kwargs):
        raise AssertionError("the feature map was read with an empty gallery")

    monkeypatch.setattr(classifier, "outputs_and_embedding", refuse)
    body = post_photo(car_app.test_client(), photos[0].read_bytes()).json
    assert body["answer"] is None or body["answer"]["source"] == "model"


def test_admin_page_teaches_lists_and_removes(car_app):
    photos = taught_photos()
    create_admin(car_app)
    client = car_app.test_client()
    assert client.get("/admin/gallery").status_code == 302  # signed out: to the sign-in page
    login(client)
    token = csrf_token(client, "/admin/gallery")
    files = [(io.BytesIO(p.read_bytes()), p.name) for p in photos[:3]] + [(io.BytesIO(b"junk"), "junk.jpg")]
    response = client.post("/admin/gallery", data={"csrf_token": token, "label": "  Tata  ", "level": "make",
                                                   "photos": files}, content_type="multipart/form-data",
                           follow_redirects=True)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "Taught Tata with 3 photos." in page
    assert "junk.jpg" in page  # the refused photo is named
    assert 'data-label="Tata"' in page and '<td class="count">3</td>' in page
    with car_app.app_context():
        from app.models import GalleryExample
        from app.extensions import db

        example = db.session.scalars(db.select(GalleryExample)).first()
        assert example.added_by == "alice" and example.source == "upload" and example.level == "make"
    answers = [post_photo(client, variant(p)).json["answer"] for p in photos[:3]]
    assert any(a and a["source"] == "gallery" for a in answers)
    listed = client.get("/admin/").get_data(as_text=True)
    assert 'class="badge text-bg-info taught-note"' in listed and "Tata: learned" in listed
    image = client.get(f"/admin/gallery/examples/{example.id}.jpg")
    assert image.status_code == 200 and image.data[:2] == b"\xff\xd8"
    bad = client.post("/admin/gallery", data={"csrf_token": token, "label": "X", "level": "segment",
                                              "photos": [(io.BytesIO(photos[0].read_bytes()), "a.jpg")]},
                      content_type="multipart/form-data")
    assert bad.status_code == 400
    removed = client.post("/admin/gallery/remove", data={"csrf_token": token, "label": "Tata"},
                          follow_redirects=True)
    assert removed.status_code == 200 and "Nothing taught yet" in removed.get_data(as_text=True)


def test_a_correction_is_taught_in_one_click_and_exported_for_training(car_app, tmp_path):
    photos = taught_photos()
    create_admin(car_app)
    client = car_app.test_client()
    prediction = post_photo(client, photos[0].read_bytes()).json
    login(client)
    with car_app.app_context():
        from app.models import Prediction
        from app.extensions import db

        row_id = db.session.scalar(db.select(Prediction.id).where(Prediction.public_id == prediction["id"]))
    detail = f"/admin/predictions/{row_id}"
    token = csrf_token(client, detail)
    client.post(f"{detail}/correction", data={"csrf_token": token, "label": "Tata Nexon 2023",
                                              "save_label": "1"})
    page = client.get(detail).get_data(as_text=True)
    assert 'id="teach-correction"' in page and "Tata Nexon 2023" in page
    taught = client.post(f"{detail}/teach", data={"csrf_token": token, "level": "class"}, follow_redirects=True)
    assert "Taught Tata Nexon 2023 with this photo (1 in all)." in taught.get_data(as_text=True)
    runner = car_app.test_cli_runner()
    assert runner.invoke(args=["gallery", "add", "--label", "Tata", "--level", "make",
                               *map(str, photos[1:3])]).exit_code == 0

    out = tmp_path / "export"
    result = runner.invoke(args=["export-corrections", str(out)])
    assert result.exit_code == 0 and "exported 3 taught photos in 2 label folders" in result.output
    assert len(list((out / "Tata Nexon 2023").glob("gallery-*.jpg"))) == 1
    assert len(list((out / "makes" / "Tata").glob("gallery-*.jpg"))) == 2
    rows = list(csv.DictReader((out / "gallery.csv").open(encoding="utf-8")))
    assert sorted((r["label"], r["level"], r["source"]) for r in rows) == [
        ("Tata", "make", "upload"), ("Tata", "make", "upload"), ("Tata Nexon 2023", "class", "correction")]
    assert all((out / r["path"]).is_file() for r in rows)


def test_negatives_raise_the_threshold_above_what_they_match(car_app, tmp_path):
    photos = taught_photos()
    client, runner = car_app.test_client(), car_app.test_cli_runner()
    asked = weakest_variant(client, photos)
    assert runner.invoke(args=["gallery", "add", "--label", "Tata", "--level", "make",
                               *map(str, photos)]).exit_code == 0
    assert post_photo(client, asked).json["answer"]["source"] == "gallery"
    with car_app.app_context():
        from app.gallery import current_gallery

        before = current_gallery().threshold
    # A photo of a car the model knows that looks just like the taught ones: no taught answer may match it.
    known = tmp_path / "known" / "Some known car"
    known.mkdir(parents=True)
    (known / "lookalike.jpg").write_bytes(asked)
    (known / "broken.jpg").write_bytes(b"not a photo")
    result = runner.invoke(args=["gallery", "negatives", str(tmp_path / "known")])
    assert result.exit_code == 0 and "stored 1 negatives for" in result.output, result.output
    assert float(result.output.rsplit("threshold now ", 1)[1]) > before
    answer = post_photo(client, asked).json["answer"]
    assert answer is None or answer["source"] == "model"


def test_the_page_script_path_teaches_one_photo_per_request_in_json(car_app):
    photos = taught_photos()
    create_admin(car_app)
    client = car_app.test_client()
    login(client)
    token = csrf_token(client, "/admin/gallery")
    headers = {"Accept": "application/json"}

    def send(files, label="Tata"):
        return client.post("/admin/gallery", data={"csrf_token": token, "label": label, "level": "make",
                                                   "photos": files}, content_type="multipart/form-data",
                           headers=headers)

    for count, path in enumerate(photos[:2], start=1):
        response = send([(io.BytesIO(path.read_bytes()), path.name)])
        assert response.status_code == 201 and response.json == {"taught": 1, "label": "Tata", "count": count}
    refused = send([(io.BytesIO(b"not a photo"), "notes.jpg")])
    assert refused.status_code == 415 and refused.json["error"]["code"] == "unsupported_media_type"
    both = send([(io.BytesIO(photos[0].read_bytes()), "a.jpg"), (io.BytesIO(photos[1].read_bytes()), "b.jpg")])
    assert both.status_code == 400 and "one photo per request" in both.json["error"]["message"]
    assert send([(io.BytesIO(photos[0].read_bytes()), "a.jpg")], label=" ").status_code == 400


def test_examples_of_another_model_are_embedded_again_from_their_photo(car_app):
    photos = taught_photos()[:2]
    runner = car_app.test_cli_runner()
    assert runner.invoke(args=["gallery", "add", "--label", "Tata", "--level", "make",
                               *map(str, photos)]).exit_code == 0
    from app import gallery as store
    from app.extensions import db
    from app.models import GalleryExample

    with car_app.app_context():
        good = {e.id: e.embedding for e in db.session.scalars(db.select(GalleryExample))}
        # As if taught under the artifact before this one: another version, a vector of another width.
        db.session.execute(db.update(GalleryExample).values(model_version="0.9", embedding=bytes(16)))
        store.bump_version()
        db.session.commit()
        gallery = store.refresh_now()
        assert len(gallery) == 2 and gallery.embeddings.shape[1] * 4 == len(next(iter(good.values())))
        classifier = car_app.extensions["classifier"]
        for example in db.session.scalars(db.select(GalleryExample)):
            assert example.model_version == classifier.version
            assert np.allclose(np.frombuffer(example.embedding, "<f4"), np.frombuffer(good[example.id], "<f4"),
                               atol=0.02)


def test_the_heatmap_of_a_taught_answer_shows_the_model_s_own_top_class(car_app):
    photos = taught_photos()
    client, runner = car_app.test_client(), car_app.test_cli_runner()
    asked = weakest_variant(client, photos)
    assert runner.invoke(args=["gallery", "add", "--label", "Tata", "--level", "make",
                               *map(str, photos)]).exit_code == 0
    body = post_photo(client, asked).json
    assert body["answer"]["source"] == "gallery"
    heatmap = client.get(f"/api/v1/predictions/{body['id']}/explanation.png")
    assert heatmap.status_code == 200 and heatmap.data[:8] == b"\x89PNG\r\n\x1a\n"
