"""The make output: photos labelled by make only, trained beside class-labelled photos in one network.

Real photos from ``../shared/datasets`` (a few per class and per make): the make labels, the partial-label
loss (a make-only photo's gradient reaches the make output and the backbone, never the class output),
batches drawn from both sources, and a whole run - stopped, resumed, exported and measured as served.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.training.conftest import SHARED, STANFORD

WEB_MAKES = SHARED / "datasets" / "web-makes"
CLASSES = ("Audi TT Hatchback 2011", "BMW M3 Coupe 2012", "Tesla Model S Sedan 2012")
WEB = ("Audi", "BMW", "Volvo")  # Volvo: a make none of the chosen classes has
MAKE_CSV = Path(__file__).resolve().parents[2] / "training" / "label_maps" / "stanford_make.csv"

pytestmark = pytest.mark.skipif(not (STANFORD.is_dir() and WEB_MAKES.is_dir()),
                                reason=f"needs the real photos under {SHARED / 'datasets'} (../shared is absent)")


def _link(source: Path, target: Path, count: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for photo in sorted(source.iterdir())[:count]:
        os.symlink(photo, target / photo.name)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Stanford classes (4 train, 2 val), web makes (4 / 2) and other makes (2 / 1), as links to real photos."""
    root = tmp_path_factory.mktemp("makes")
    for name in CLASSES:
        _link(STANFORD / "train" / name, root / "stanford" / "train" / name, 4)
        _link(STANFORD / "val" / name, root / "stanford" / "val" / name, 2)
    for make in WEB:
        _link(WEB_MAKES / "train" / make, root / "web" / "train" / make, 4)
        _link(WEB_MAKES / "val" / make, root / "web" / "val" / make, 2)
    for brand in sorted(p.name for p in (WEB_MAKES / "other-makes" / "train").iterdir()):
        _link(WEB_MAKES / "other-makes" / "train" / brand, root / "other" / "train" / brand, 2)
        _link(WEB_MAKES / "other-makes" / "val" / brand, root / "other" / "val" / brand, 1)
    return {"stanford": root / "stanford", "web": root / "web", "other": root / "other"}


@pytest.fixture(scope="module")
def makes(folders):
    from training.makes import load_make_data

    return load_make_data(sorted(CLASSES), MAKE_CSV, folders["web"], folders["other"])


def test_make_labels_are_the_classes_makes_the_web_makes_and_other_make_last(makes):
    from training.makes import OTHER_MAKE

    assert makes.labels == ["Audi", "BMW", "Tesla", "Volvo", OTHER_MAKE]
    assert [makes.labels[m] for m in makes.class_make] == ["Audi", "BMW", "Tesla"]
    assert len(makes.web["train"]) == 12 and len(makes.other["train"]) == 6
    assert {makes.labels[m] for m in makes.other["val"].labels} == {OTHER_MAKE}
    assert makes.make_only("train").paths == makes.web["train"].paths + makes.other["train"].paths


def test_a_class_without_a_make_is_refused(folders, tmp_path):
    from training.makes import load_make_data

    partial = tmp_path / "makes.csv"
    partial.write_text("folder,label\nAudi TT Hatchback 2011,Audi\n", encoding="utf-8")
    with pytest.raises(ValueError, match="gives no make for 2 classes"):
        load_make_data(sorted(CLASSES), partial, folders["web"])


def _batches(folders, makes, *, training: bool, size=(32, 64), **options):
    from training.data import load_dataset
    from training.pipeline import make_multitask_dataset

    dataset = load_dataset(folders["stanford"])
    split = dataset.splits["train" if training else "val"]
    return make_multitask_dataset(split, makes.class_make, makes.make_only("train" if training else "val"),
                                  num_classes=len(CLASSES), num_makes=len(makes.labels), image_size=size,
                                  resize_mode="center_crop", batch_size=8, training=training, **options)


def _gradients(model, images, targets, weights) -> dict[str, float]:
    with tf.GradientTape() as tape:
        predictions = model(images, training=True)
        loss = model.compute_loss(images, list(targets), predictions, sample_weight=list(weights))
    owners = [(layer.name, variable) for layer in model.layers for variable in layer.trainable_weights]
    grads = tape.gradient(loss, [variable for _, variable in owners])
    found: dict[str, float] = {}
    for (layer, _), grad in zip(owners, grads):
        found[layer] = found.get(layer, 0.0) + (0.0 if grad is None else float(tf.reduce_sum(tf.abs(grad))))
    return found


def test_a_make_only_photo_teaches_the_make_output_and_the_backbone_never_the_class_output(folders, makes):
    from training.model import build_model, unfreeze_model
    from training.train import _compile

    model = build_model("small_cnn", len(CLASSES), weights="none", image_size=(32, 64), make_classes=len(makes.labels))
    unfreeze_model(model, "small_cnn", 99, freeze_batchnorm=False)
    _compile(model, {"optimizer": "adam", "clipnorm": None, "weight_decay": 0.0, "label_smoothing": 0.1, "ema": 0.0},
             1e-3, len(CLASSES))
    rows = [tuple(np.asarray(part) for part in _flatten(batch)) for batch in _batches(folders, makes, training=False)]
    images, class_y, make_y, class_w, make_w = (np.concatenate(column) for column in zip(*rows))
    web = class_w == 0
    assert web.sum() == 6 + 3 and (~web).sum() == 6  # web val + other val photos; Stanford val photos

    only_web = _gradients(model, images[web], (class_y[web], make_y[web]), (class_w[web], make_w[web]))
    assert only_web["logits"] == 0.0
    assert only_web["make_logits"] > 0.0
    assert only_web["backbone"] > 0.0

    with_class = _gradients(model, images[~web], (class_y[~web], make_y[~web]), (class_w[~web], make_w[~web]))
    assert with_class["logits"] > 0.0 and with_class["make_logits"] > 0.0


def _flatten(batch):
    images, (class_y, make_y), (class_w, make_w) = batch
    return images, class_y, make_y, class_w, make_w


def test_training_batches_draw_both_sources_in_the_asked_share(folders, makes):
    dataset = _batches(folders, makes, training=True, make_share=0.5, seed=7)
    shares, shapes = [], set()
    for batch in dataset.take(24):
        images, _, _, class_w, _ = _flatten(batch)
        shares.append(float(np.mean(np.asarray(class_w) == 0)))
        shapes.add(tuple(images.shape))
        assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    assert shapes == {(8, 32, 64, 3)}
    assert 0.35 < np.mean(shares) < 0.65
    assert min(shares) < np.mean(shares) < max(shares)  # drawn at random, not alternated


def test_scene_crops_keep_the_input_shape_and_stay_inside_the_photo():
    from training.pipeline import scene_crop

    photo = tf.constant(np.tile(np.arange(200, dtype=np.uint8)[None, :, None], (150, 1, 3)))
    crops = [scene_crop(photo, (32, 64), (0.3, 1.0)) for _ in range(12)]
    assert all(tuple(c.shape) == (32, 64, 3) for c in crops)
    lefts = {float(c[0, 0, 0]) for c in crops}
    assert len(lefts) > 3  # the crops move about the scene


class _Stop(Exception):
    """Stands for the machine going away in the middle of a run."""


def _config(folders, tmp_path, **extra):
    from training.config import resolve

    return resolve(None, {
        "name": "tiny-makes", "data.path": str(folders["stanford"]), "data.class_makes": str(MAKE_CSV),
        "data.make_data": str(folders["web"]), "data.other_makes": str(folders["other"]),
        "model.backbone": "small_cnn", "model.weights": "none", "model.image_size": [32, 64],
        "model.resize_mode": "center_crop", "model.tta": "flip",
        "train.head_on_features": True, "train.head_epochs": 2, "train.fine_tune_epochs": 3,
        "train.unfreeze_blocks": 99, "train.batch_size": 8, "train.monitor": "val_score",
        "train.early_stopping_patience": 10, "train.verbose": 0,
        "train.runs_dir": str(tmp_path / "runs"), "export.out": str(tmp_path / "artifact"), **extra})


def test_a_run_with_a_make_output_resumes_and_exports_what_the_app_serves(folders, tmp_path, monkeypatch):
    from inference.artifact import OTHER_MAKE
    from inference.classifier import load_classifier
    from training import train as train_lib

    class StopAfterFirstFineTuneEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            assert "val_score" in logs  # both outputs' accuracy, what the checkpoint keeps
            raise _Stop()

    original = train_lib._callbacks
    monkeypatch.setattr(train_lib, "_callbacks",
                        lambda *a, **k: (lambda made: (made[0] + [StopAfterFirstFineTuneEpoch()], made[1]))(original(*a, **k)))
    with pytest.raises(_Stop):
        train_lib.run_training(_config(folders, tmp_path))
    monkeypatch.setattr(train_lib, "_callbacks", original)
    run_dir = next((tmp_path / "runs").glob("tiny-makes-*"))
    with open(run_dir / "history.csv", encoding="utf-8") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [0]
    assert (run_dir / "head_features_history.csv").is_file()

    result = train_lib.resume_training(run_dir)

    with open(run_dir / "history.csv", encoding="utf-8") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [0, 1, 2]
    artifact = result["artifact"]
    metadata = json.loads((artifact / "metadata.json").read_text())
    assert metadata["make_output"]["labels"] == ["Audi", "BMW", "Tesla", "Volvo", OTHER_MAKE]
    assert metadata["make_output"]["of"]["Tesla Model S Sedan 2012"] == "Tesla"
    assert metadata["groups"]["make"]["from"] == "make_output"
    assert metadata["groups"]["segment"]["of"][OTHER_MAKE] == "basic"
    levels = metadata["answer_levels"]
    assert levels["num_images"] == {"stanford": 6, "web": 6, "other": 3}
    assert levels["served"] == {"runtime": "litert", "variant": "float32", "tta": "flip", "tta_skip_above": None,
                                 "resize_mode": "center_crop"}
    for rows in levels["sets"].values():
        assert abs(sum(row["share"] for row in rows) - 1.0) < 1e-9
    assert "web-makes val" in (artifact / "report" / "answers.md").read_text()
    assert (artifact / "head.npz").is_file()  # the class head is still explainable beside the make head

    classifier = load_classifier(artifact, runtime="litert")
    photo = sorted((folders["web"] / "val" / "BMW").iterdir())[0]
    from PIL import Image

    outcome = classifier.predict(Image.open(photo).convert("RGB"), top_k=3)
    assert outcome.make.shape == (5,) and abs(float(outcome.make.sum()) - 1.0) < 1e-5
    assert abs(float(outcome.probabilities.sum()) - 1.0) < 1e-5
    best_make = metadata["make_output"]["labels"][int(outcome.make.argmax())]
    assert outcome.groups["make"][0]["label"] == best_make
    keras_classifier = load_classifier(artifact, runtime="keras")
    np.testing.assert_allclose(keras_classifier.predict(Image.open(photo).convert("RGB")).make, outcome.make, atol=1e-4)


def test_premium_basic_is_derived_from_the_make_output(folders, tmp_path):
    """``training group`` with a map over make labels sums the make output, Other make included."""
    from inference.classifier import load_classifier
    from training.grouped_artifact import group_artifact
    from training.train import run_training

    result = run_training(_config(folders, tmp_path, **{"train.fine_tune_epochs": 1, "export.litert": False}))
    segment_map = Path(__file__).resolve().parents[2] / "training" / "label_maps" / "make_premium_basic.csv"
    grouped = group_artifact(result["artifact"], segment_map, folders["stanford"], tmp_path / "premium-basic",
                             name="premium-basic")
    metadata = json.loads((grouped["artifact"] / "metadata.json").read_text())
    assert metadata["training_config"]["method"].startswith("make-output probabilities")
    assert json.loads((grouped["artifact"] / "labels.json").read_text()) == ["basic", "premium"]
    assert metadata["metrics"]["num_images"] == 6 and metadata["label_map"] == "make_premium_basic.csv"
    classifier = load_classifier(grouped["artifact"], runtime="litert")
    from PIL import Image

    photo = sorted((folders["other"] / "val").rglob("*.jpg"))[0]
    probabilities = classifier.predict(Image.open(photo).convert("RGB")).probabilities
    assert probabilities.shape == (2,) and abs(float(probabilities.sum()) - 1.0) < 1e-5


def test_a_draw_between_blends_goes_to_the_heavier_make_output():
    from training.make_levels import pick_blend

    assert pick_blend({0.4: 0.84, 0.5: 0.8552, 0.6: 0.8548, 0.7: 0.852}) == 0.6  # 0.04 points: a draw
    assert pick_blend({0.4: 0.84, 0.5: 0.8552, 0.6: 0.8530, 0.7: 0.852}) == 0.5  # 0.2 points: 0.5 wins
    assert pick_blend({0.0: 0.5, 1.0: 0.5}) == 1.0
