"""The serving benchmark's baseline (the copied Flask template) answers for the artifacts the app serves,
a model with a make output beside its classes included."""

from __future__ import annotations

import importlib
import io
import sys

import numpy as np
from PIL import Image

from support import encode

CLASSES = [f"class-{i}" for i in range(6)]


def two_output_model(size):
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((*size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1.0 / 255)(inputs))
    classes = keras.layers.Dense(len(CLASSES), activation="softmax", name="probabilities")(pooled)
    makes = keras.layers.Dense(3, activation="softmax", name="make_probabilities")(pooled)
    return keras.Model(inputs, [classes, makes])


def test_baseline_reads_the_class_output_of_a_two_output_model(tmp_path, monkeypatch):
    from training.export import build_metadata, export_artifact

    size = (16, 32)
    metadata = build_metadata(name="two", version="0.0.1-test", backbone="tiny-test", image_size=size,
                              labels=CLASSES, metrics={"accuracy": 1.0})
    artifact = export_artifact(two_output_model(size), CLASSES, metadata, tmp_path / "artifact", litert=False)
    monkeypatch.setenv("MODEL_DIR", str(artifact))
    monkeypatch.delitem(sys.modules, "benchmarks.baseline_app", raising=False)
    baseline = importlib.import_module("benchmarks.baseline_app")
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 80, 3), dtype=np.uint8))
    response = baseline.app.test_client().post("/api/v1/predictions",
                                               data={"image": (io.BytesIO(encode(photo)), "car.jpg")})
    assert response.status_code == 201
    predictions = response.get_json()["predictions"]
    scores = [p["score"] for p in predictions]
    assert len(predictions) == 5 and {p["label"] for p in predictions} <= set(CLASSES)
    assert scores == sorted(scores, reverse=True)
    monkeypatch.delitem(sys.modules, "benchmarks.baseline_app")
