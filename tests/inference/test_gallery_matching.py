"""The gallery of taught examples (``inference.gallery``): nearest label, when it answers instead of the
model, the precision-calibrated threshold, and the pipeline reading the embedding from the same invocation
as the probabilities, only when something was taught."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference.classifier import load_classifier, normalised_embedding
from inference.gallery import Gallery, Match, calibrate, gallery_answer, leave_one_out
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
