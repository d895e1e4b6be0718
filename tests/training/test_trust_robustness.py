"""FGSM robustness: the attack itself, ``evaluate --fgsm``, ``train --adversarial``, and the model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from support import COLOR_RGB, build_color_model
from training.robustness import enable_adversarial_training, evaluate_robustness, gradient_sign, parse_epsilons


def test_parse_epsilons():
    assert parse_epsilons("4, 0.5,1,2,1") == [0.5, 1.0, 2.0, 4.0]
    for bad in ("", "1,-2", "300", "a"):
        with pytest.raises(ValueError):
            parse_epsilons(bad)


@pytest.fixture(scope="module")
def colour_photos(tmp_path_factory):
    """Four noisy photos per colour class, as files (the evaluation reads files like training does)."""
    root = tmp_path_factory.mktemp("colour-photos")
    rng = np.random.default_rng(3)
    paths, labels = [], []
    for label, name in enumerate(("red", "green", "blue")):
        folder = root / name
        folder.mkdir()
        for index in range(4):
            pixels = np.clip(np.asarray(COLOR_RGB[name]) + rng.normal(0, 15, (40, 40, 3)), 0, 255)
            path = folder / f"{index}.png"
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            paths.append(str(path))
            labels.append(label)
    return root, paths, labels


def test_gradient_sign_points_away_from_the_true_class():
    model = build_color_model((8, 8))
    red = np.tile(np.asarray(COLOR_RGB["red"], dtype=np.float32), (1, 8, 8, 1))
    direction = gradient_sign(model, red, np.array([[1.0, 0.0, 0.0]])).numpy()
    assert (direction[..., 0] == -1).all() and (direction[..., 1:] == 1).all()  # less red, more of the others


def test_fgsm_report_on_the_colours_model(colour_photos, tmp_path):
    _, paths, labels = colour_photos
    report = evaluate_robustness(build_color_model((32, 32)), ["red", "green", "blue"], paths, labels,
                                 image_size=(32, 32), resize_mode="stretch", epsilons=[120, 1, 30],
                                 report_dir=tmp_path, batch_size=5)
    assert report["num_images"] == 12 and report["unit"] == "pixels (0..255)"
    rows = report["results"]
    assert [r["epsilon"] for r in rows] == [0.0, 1.0, 30.0, 120.0]
    assert rows[0]["accuracy"] == 1.0 and rows[0]["changed"] == 0.0
    accuracies = [r["accuracy"] for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert rows[-1]["accuracy"] == 0.0 and rows[-1]["changed"] == 1.0  # 120 grey levels flip every colour
    assert rows[1]["fraction"] == round(1 / 255, 5)
    assert json.loads((tmp_path / "robustness.json").read_text()) == report
    for name in ("robustness.png", "fgsm_examples.png"):
        assert Image.open(tmp_path / name).size[0] > 300


def test_adversarial_training_doubles_every_batch_with_perturbed_copies():
    import keras

    class SamplesSeen(keras.metrics.Metric):
        def __init__(self, name="samples_seen", **kwargs):
            super().__init__(name=name, **kwargs)
            self.count = self.add_variable(shape=(), initializer="zeros", name="count")

        def update_state(self, y_true, y_pred, sample_weight=None):
            self.count.assign_add(keras.ops.cast(keras.ops.shape(y_true)[0], "float32"))

        def result(self):
            return self.count

    images = np.stack([np.full((8, 8, 3), COLOR_RGB[c], dtype=np.float32) for c in ("red", "green", "blue", "red")])
    labels = keras.utils.to_categorical([0, 1, 2, 0], 3)
    seen = {}
    for epsilon in (0.0, 8.0):
        model = build_color_model((8, 8))
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy", metrics=[SamplesSeen()])
        enable_adversarial_training(model, epsilon)
        history = model.fit(images, labels, batch_size=2, epochs=1, verbose=0)
        seen[epsilon] = history.history["samples_seen"][-1]
    assert seen == {0.0: 4.0, 8.0: 8.0}


@pytest.mark.slow
def test_train_adversarial_then_evaluate_fgsm_and_show_it_on_the_model_card(colour_photos, tmp_path, database_url):
    """The two commands end to end on a tiny CNN, then the model card of the result."""
    from training.cli import main

    root, _, _ = colour_photos
    artifact = tmp_path / "artifact"
    assert main(["train", "--data", str(root), "--backbone", "small_cnn", "--weights", "none", "--image-size",
                 "32", "32", "--resize-mode", "stretch", "--epochs", "1", "--fine-tune-epochs", "0", "--batch-size",
                 "4", "--split", "0.5", "0.5", "--adversarial", "2", "--quiet", "--runs-dir", str(tmp_path / "runs"),
                 "--out", str(artifact), "--name", "tiny-fgsm"]) == 0
    metadata = json.loads((artifact / "metadata.json").read_text())
    assert metadata["training_config"]["config"]["train"]["adversarial_epsilon"] == 2.0

    assert main(["evaluate", "--model", str(artifact), "--data", str(root), "--fgsm", "1,4", "--update-metadata",
                 "--batch-size", "4"]) == 0
    robustness = json.loads((artifact / "report" / "robustness.json").read_text())
    assert [r["epsilon"] for r in robustness["results"]] == [0.0, 1.0, 4.0]
    assert robustness["num_images"] == 6
    assert json.loads((artifact / "metadata.json").read_text())["robustness"] == robustness
    assert (artifact / "report" / "fgsm_examples.png").is_file()

    from trust_support import dispose, make_app

    application = make_app(artifact, database_url, VEHICLE_GATE_DIR="none")
    try:
        client = application.test_client()
        page = client.get("/model/").get_data(as_text=True)
        assert 'id="robustness-table"' in page and "fgsm_examples.png" in page
        assert "--adversarial 2.0" in page and "--backbone small_cnn" in page
        figure = client.get("/model/report/fgsm_examples.png")
        assert figure.status_code == 200 and figure.mimetype == "image/png"
    finally:
        dispose(application)
