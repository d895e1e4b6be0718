"""The gallery of taught examples (``inference.gallery``): nearest label, when it answers instead of the
model, the precision-calibrated threshold, the margin over the model's own photos (references), and the
pipeline reading the embedding from the same invocation as the probabilities, only when something was
taught."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference.classifier import load_classifier, normalised_embedding
from inference.artifact import OTHER_MAKE, REFERENCES_FILE
from inference.gallery import Gallery, Match, calibrate, gallery_answer, leave_one_out, load_references
from inference.imaging import decode_upload
from inference.pipeline import answer_photo


def unit(*values: float) -> np.ndarray:
    return normalised_embedding(np.array(values, dtype=np.float64))


@pytest.fixture(scope="module")
def colors(color_artifact):
    return load_classifier(color_artifact, num_threads=1)


def test_nearest_is_one_matrix_product_over_unit_rows():
    gallery = Gallery.build([[2.0, 0.0], [0.0, 3.0], [0.1, 1.0]], ["Tata", "Citroen", "Citroen"],
                            ["make", "make", "make"], threshold=0.9)
    assert np.allclose(np.linalg.norm(gallery.embeddings, axis=1), 1.0)
    match = gallery.nearest(unit(0.05, 1.0))
    assert match.label == "Citroen" and match.count == 2 and match.level == "make"
    assert match.score == pytest.approx(float(unit(0.05, 1.0) @ unit(0.1, 1.0)), abs=1e-6)
    assert gallery.nearest(unit(1.0, 0.0, 0.0)) is None  # an embedding of another width: another model
    assert Gallery.empty().is_empty and Gallery.empty().nearest(unit(1.0, 0.0)) is None


def test_a_taught_label_answers_only_above_the_threshold_and_over_a_weaker_model():
    match = Match("Fiat Argo 2022", "class", 0.93, 12)
    taught = {"level": "class", "label": "Fiat Argo 2022", "score": 0.93, "source": "gallery", "learned_from": 12}
    assert gallery_answer(None, match, 0.9, "uncertain") == taught
    assert gallery_answer({"level": "make", "label": "Fiat", "score": 0.6}, match, 0.9, "ok") == taught
    sure = {"level": "class", "label": "Audi A4 2012", "score": 0.97}
    assert gallery_answer(sure, match, 0.9, "ok") == sure  # the model is surer: its answer stands
    assert gallery_answer(None, match, 0.95, "ok") is None  # below the threshold
    assert gallery_answer(None, match, 0.9, "not_a_car") is None  # not a car: nobody answers
    assert gallery_answer(sure, None, 0.9, "ok") == sure


def test_an_answer_of_a_make_the_model_does_not_know_gives_way_to_a_taught_label():
    match = Match("Citroen", "make", 0.8, 20)
    unknown = {"level": "make", "label": OTHER_MAKE, "score": 0.95}
    assert gallery_answer(unknown, match, 0.7, "ok")["label"] == "Citroen"
    assert gallery_answer(unknown, match, 0.85, "ok") == unknown  # still not close enough


def test_with_references_a_match_is_judged_by_its_margin_over_the_nearest_known_car():
    references = np.stack([unit(1, 0, 0), unit(0.8, 0.6, 0)])  # cars the model knows
    gallery = Gallery.build([unit(0.6, 0.8, 0), unit(0, 0.6, 0.8)], ["Tata", "Citroen"], ["make", "make"],
                            threshold=0.05, references=references)
    near_known = gallery.nearest(unit(0.75, 0.66, 0))  # between a known car and Tata, nearer the known one
    assert near_known.label == "Tata" and near_known.known == pytest.approx(float(unit(0.75, 0.66, 0) @ references[1]))
    assert near_known.strength == pytest.approx(near_known.score - near_known.known) and near_known.strength < 0
    assert gallery.answer(unit(0.75, 0.66, 0), None, "ok") is None  # looks more like a car it knows
    taught = gallery.answer(unit(0, 0.55, 0.83), None, "ok")
    assert taught["label"] == "Citroen" and taught["source"] == "gallery"
    # Without references (or with references of another width) the similarity decides, as before.
    plain = Gallery.build(gallery.embeddings, gallery.labels, gallery.levels, threshold=0.05,
                          references=np.ones((2, 5), dtype=np.float32))
    assert plain.references is None and plain.nearest(unit(0.75, 0.66, 0)).strength > 0.9


def test_margin_calibration_keeps_the_models_own_photos_out(tmp_path):
    rng = np.random.default_rng(1)
    known_centres = [unit(*row) for row in np.eye(6)[:4]]  # the model's own cars
    references = np.stack([normalised_embedding(known_centres[i % 4] + rng.normal(0, 0.15, 6)) for i in range(400)])
    taught_centre = unit(0, 0, 0, 0.3, 1, 0)  # a new make, a little like known car 4
    rows = np.stack([normalised_embedding(taught_centre + rng.normal(0, 0.1, 6)) for _ in range(10)])
    labels = ["Tata"] * 10
    calibration = calibrate(rows, labels, references=references, max_false_rate=0.01)
    references_margins = ((references @ rows.T).max(axis=1)
                          - np.where(np.eye(400, dtype=bool), -np.inf, references @ references.T).max(axis=1))
    assert calibration.threshold >= 0.0  # never nearer to a known car than to the taught one
    assert (references_margins >= calibration.threshold).mean() <= 0.01
    assert calibration.accuracy["Tata"] > 0.5 and calibration.precision == 1.0
    # The artifact's file: float16 rows, read back as unit float32, refused at another width.
    np.save(tmp_path / REFERENCES_FILE, (references * 3).astype(np.float16))
    loaded = load_references(tmp_path, 6)
    assert loaded.dtype == np.float32 and np.allclose(np.linalg.norm(loaded, axis=1), 1.0, atol=1e-3)
    assert load_references(tmp_path, 7) is None and load_references(tmp_path / "missing") is None


def test_leave_one_out_and_calibration_choose_a_threshold_for_precision():
    rng = np.random.default_rng(0)
    centres = {"a": unit(1, 0, 0, 0), "b": unit(0, 1, 0, 0)}
    rows, labels = [], []
    for label, centre in centres.items():
        for _ in range(6):
            rows.append(normalised_embedding(centre + rng.normal(0, 0.05, 4)))
            labels.append(label)
    scores, right = leave_one_out(np.stack(rows), labels)
    assert right.all() and (scores > 0.9).all()
    # Negatives close to "a" (a car the model knows that looks like it): the threshold rises above them.
    negatives = np.stack([normalised_embedding(centres["a"] + unit(0, 0, 1, 0) * 0.45) for _ in range(3)])
    negative_best = float((negatives @ np.stack(rows).T).max())
    loose = calibrate(np.stack(rows), labels, floor=0.0, target_precision=0.99)
    strict = calibrate(np.stack(rows), labels, negatives, floor=0.0, target_precision=0.99)
    assert loose.threshold <= strict.threshold and strict.threshold > negative_best
    assert strict.precision >= 0.99 and set(strict.accuracy) == {"a", "b"}
    assert calibrate(np.stack(rows), labels, floor=0.999).threshold == 0.999  # never below the floor
    single = calibrate(np.stack(rows[:1]), labels[:1], floor=0.8)
    assert single.threshold == 0.8 and single.accuracy == {"a": 0.0}  # one photo: nothing to measure


def test_the_embedding_comes_from_the_same_invocation_as_the_probabilities(colors, make_image, monkeypatch):
    engine = colors.engine
    calls = {"plain": 0, "features": 0}
    plain, features = engine.__call__, engine.features
    monkeypatch.setattr(type(engine), "__call__", lambda self, batch: (calls.__setitem__("plain", calls["plain"] + 1),
                                                                       plain(batch))[1])
    monkeypatch.setattr(engine, "features", lambda batch: (calls.__setitem__("features", calls["features"] + 1),
                                                           features(batch))[1])
    image = Image.open(io.BytesIO(make_image("red"))).convert("RGB")
    outcome = colors.predict(image, top_k=1, embed=True)
    assert calls == {"plain": 0, "features": 1}
    assert outcome.embedding is not None and np.linalg.norm(outcome.embedding) == pytest.approx(1.0, abs=1e-5)
    assert outcome.top_k == colors.predict(image, top_k=1).top_k
    assert colors.predict(image, top_k=1).embedding is None


def test_the_pipeline_answers_with_a_taught_label_and_not_without_one(colors, make_image):
    taught_image = make_image((200, 40, 200))  # magenta: none of the colour model's labels
    photo = decode_upload(taught_image, max_pixels=10_000_000)
    gallery = Gallery.build([colors.embed(photo.image)], ["magenta"], ["class"], threshold=0.9)
    plain = answer_photo(taught_image, colors, None, max_pixels=10_000_000, top_k=1, thumbnail=False)
    taught = answer_photo(taught_image, colors, None, max_pixels=10_000_000, top_k=1, thumbnail=False,
                          gallery=gallery)
    if plain.answer is not None and plain.answer["score"] >= taught.answer["score"]:
        pytest.skip("the colour model is surer of its own answer than any similarity")
    assert taught.answer["source"] == "gallery" and taught.answer["label"] == "magenta"
    assert taught.answer["learned_from"] == 1 and taught.answer["score"] == pytest.approx(1.0, abs=1e-4)
    empty = answer_photo(taught_image, colors, None, max_pixels=10_000_000, top_k=1, thumbnail=False,
                         gallery=Gallery.empty())
    assert empty.answer == plain.answer
