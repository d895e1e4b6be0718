"""A model with a make output, through the web layer: the API's answer and group scores, the result page's
headline when the exact model is beyond what it knows, and the model card's "What it knows".

The model is built by hand so every answer is known: three classes scored by the photo's red, green and
blue share, and a make output whose Audi / BMW / Tesla logits follow the same channels. A blue photo is
class "BMW 3 Series Blue" but make "Tesla": the class disagrees with the make output, so the answer is the
make, as for a recent car the classes do not know.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from support import encode
from trust_support import dispose, make_app, post_image

CLASSES = ["Audi TT Red", "BMW 3 Series Blue", "BMW M3 Green"]
MAKES = ["Audi", "BMW", "Tesla", "Other make"]
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _two_output_model(image_size):
    """Channel means -> class softmax (red, blue, green) and make softmax (Audi=red, BMW=green, Tesla=blue)."""
    import keras

    inputs = keras.Input((*image_size, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    classes = keras.layers.Dense(3, activation="softmax", name="probabilities")
    makes = keras.layers.Dense(4, activation="softmax", name="make_probabilities")
    model = keras.Model(inputs, [classes(pooled), makes(pooled)])
    # Columns are outputs, rows the R, G, B means.
    classes.set_weights([np.array([[10, 0, 0], [0, 0, 10], [0, 10, 0]], dtype="float32"), np.zeros(3, "float32")])
    makes.set_weights([np.array([[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0]], dtype="float32"),
                       np.zeros(4, "float32")])
    return model


def _confidence(threshold: float) -> dict:
    return {"threshold": threshold, "target_precision": 0.95, "coverage": 0.8, "accuracy": 0.96, "curve": []}


@pytest.fixture(scope="module")
def make_artifact(tmp_path_factory):
    from training.export import build_metadata, export_artifact

    size = (32, 32)
    metadata = build_metadata(name="makes-test", version="0.0.1-test", backbone="tiny-test", image_size=size,
                              labels=CLASSES, metrics={"accuracy": 1.0})
    segment = {"Audi": "premium", "BMW": "premium", "Tesla": "premium", "Other make": "basic"}
    metadata.update({
        "confidence": _confidence(0.5),
        "make_output": {"labels": MAKES, "of": {"Audi TT Red": "Audi", "BMW 3 Series Blue": "BMW",
                                                "BMW M3 Green": "BMW"}},
        "make_data": {"web_makes": ["Audi", "BMW", "Tesla"], "other_makes": ["Citroen"]},
        "groups": {
            "make": {"labels": sorted(MAKES), "of": {m: m for m in MAKES}, "from": "make_output",
                     "confidence": _confidence(0.5)},
            "segment": {"labels": ["basic", "premium"], "of": segment, "from": "make_output",
                        "confidence": _confidence(0.6)},
        },
        "answer_levels": {"target_precision": 0.95, "num_images": {"stanford": 10, "web": 20},
                          "sets": {"stanford": [{"level": "class", "share": 0.6, "accuracy": 0.95},
                                                {"level": "none", "share": 0.4, "accuracy": None}],
                                   "web": [{"level": "make", "share": 0.7, "accuracy": 0.96},
                                           {"level": "none", "share": 0.3, "accuracy": None}]}},
    })
    return export_artifact(_two_output_model(size), CLASSES, metadata, tmp_path_factory.mktemp("makes") / "artifact")


@pytest.fixture
def make_app_(make_artifact, database_url):
    application = make_app(make_artifact, database_url, VEHICLE_GATE_DIR="none")
    yield application
    dispose(application)


def _photo(colour) -> bytes:
    return encode(Image.new("RGB", (48, 40), colour), "PNG")


def test_a_class_that_agrees_with_the_make_output_is_the_answer(make_app_):
    response = post_image(make_app_.test_client(), _photo(GREEN), "green.png")
    body = response.get_json()
    assert response.status_code == 201
    assert body["answer"]["level"] == "class" and body["answer"]["label"] == "BMW M3 Green"
    assert body["groups"]["make"][0]["label"] == "BMW"


def test_group_scores_from_the_make_output_add_up_to_one(make_app_):
    body = post_image(make_app_.test_client(), _photo((120, 90, 60)), "brown.png").get_json()
    # Both segments are listed, so their scores are the whole distribution; the make list is the top 3 of 4.
    assert [row["label"] for row in body["groups"]["segment"]] in (["premium", "basic"], ["basic", "premium"])
    assert sum(row["score"] for row in body["groups"]["segment"]) == pytest.approx(1.0, abs=1e-6)
    assert len(body["groups"]["make"]) == 3 and sum(row["score"] for row in body["groups"]["make"]) < 1.0


def test_a_make_the_classes_do_not_cover_is_answered_at_the_make_level_and_says_why(make_app_):
    client = make_app_.test_client()
    response = post_image(client, _photo(BLUE), "blue.png")
    body = response.get_json()
    assert body["predictions"][0]["label"] == "BMW 3 Series Blue"  # the class head's best guess is of another make
    assert body["answer"] == {"level": "make", "label": "Tesla", "score": pytest.approx(body["answer"]["score"]),
                              "source": "model"}
    page = client.get(f"/predictions/{body['id']}").get_data(as_text=True)
    assert "A Tesla" in page and "a model newer than the 3 it knows" in page


def test_the_model_card_lists_what_it_knows_and_the_levels_per_kind_of_photo(make_app_):
    page = make_app_.test_client().get("/model/").get_data(as_text=True)
    assert 'id="knows-filter"' in page and "js/model_card.js" in page
    for label in CLASSES + ["Tesla"]:
        assert f"<li>{label}" in page
    assert "learnt these makes from everyday web photos" in page and "Citroen" in page
    assert 'id="levels-stanford"' in page and 'id="levels-web"' in page


def test_the_api_describes_the_make_labels(make_app_):
    body = make_app_.test_client().get("/api/v1/model").get_json()
    assert body["make_labels"] == MAKES
    assert body["metadata"]["make_output"]["labels"] == MAKES
    assert body["metadata"]["answer_levels"]["sets"]["web"][0] == {"level": "make", "share": 0.7, "accuracy": 0.96}
