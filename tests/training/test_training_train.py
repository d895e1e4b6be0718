"""A tiny end-to-end run: run folder contents, artifact contents, and the round trip through the app."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.training.conftest import TINY_OVERRIDES, make_photo


def test_run_folder_holds_config_split_logs_and_checkpoints(trained):
    run_dir = trained["run_dir"]
    for name in ("config.yaml", "splits.csv", "history.csv", "checkpoints/head.best.weights.h5",
                 "checkpoints/fine_tune.best.weights.h5"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and len(history) == 3  # header + one epoch per phase


def test_artifact_files_and_metadata(trained):
    artifact = trained["artifact"]
    for name in ("model.keras", "model.tflite", "labels.json", "metadata.json", "report/metrics.json"):
        assert (artifact / name).is_file(), name
    metadata = json.loads((artifact / "metadata.json").read_text())
    assert json.loads((artifact / "labels.json").read_text()) == ["blue", "green", "red"]
    assert metadata["name"] == "tiny-colors"
    assert metadata["image_size"] == [32, 32] and metadata["resize_mode"] == "stretch"
    assert metadata["backbone"] == "small_cnn"
    assert metadata["dataset"]["counts"] == {"train": 18, "val": 6, "test": 6}
    assert len(metadata["dataset"]["file_list_sha256"]) == 64
    assert metadata["training_config"]["config"]["train"]["head_epochs"] == 1
    assert set(metadata["metrics"]) >= {"accuracy", "macro_f1", "split"}
    confidence = metadata["confidence"]
    assert set(confidence) >= {"threshold", "target_precision", "coverage", "curve"}
    assert confidence["target_precision"] == 0.95 and len(confidence["curve"]) == 101


def test_saved_model_carries_no_optimizer_state(trained):
    with zipfile.ZipFile(trained["artifact"] / "model.keras") as archive:
        config = json.loads(archive.read("config.json"))
        assert not config.get("compile_config")
        import h5py

        with archive.open("model.weights.h5") as handle, h5py.File(handle, "r") as weights:
            assert "optimizer" not in weights


@pytest.mark.parametrize("runtime", ["keras", "litert"])
def test_artifact_round_trips_through_the_app_classifier(trained, runtime):
    from inference.classifier import load_classifier
    from training.model import load_model

    artifact = trained["artifact"]
    classifier = load_classifier(artifact, runtime=runtime)
    assert classifier.labels == ["blue", "green", "red"]
    assert classifier.image_size == (32, 32)
    photos = [make_photo(color, 900 + i, (60, 40)) for i, color in
              enumerate([(30, 40, 210), (40, 190, 60), (210, 40, 30), (120, 120, 120)])]
    from inference.imaging import fit_to_input

    pixels = np.stack([fit_to_input(photo, (32, 32), "stretch") for photo in photos])
    expected = load_model(artifact / "model.keras").predict(pixels.astype("float32"), verbose=0)
    served = classifier.predict_batch(pixels)
    np.testing.assert_allclose(served, expected, atol=1e-4)
    for photo, row in zip(photos, expected):
        answers = classifier.classify(photo, top_k=3)
        assert [a["label"] for a in answers] == [classifier.labels[i] for i in np.argsort(-row, kind="stable")]
        assert answers[0]["score"] == pytest.approx(float(row.max()), abs=1e-4)


def test_cli_train_writes_an_artifact_from_a_config_file(presplit_folder, tmp_path):
    from training.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model:\n  backbone: small_cnn\n  weights: none\n  image_size: [24, 24]\n"
        "train:\n  head_epochs: 1\n  fine_tune_epochs: 0\n  batch_size: 8\n  verbose: 0\n")
    out = tmp_path / "artifact"
    assert main(["train", "--config", str(config), "--data", str(presplit_folder), "--out", str(out),
                 "--runs-dir", str(tmp_path / "runs"), "--name", "cli-tiny", "--no-litert"]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["name"] == "cli-tiny" and metadata["dataset"]["presplit"]
    assert not (out / "model.tflite").exists()
    saved = next((tmp_path / "runs").glob("cli-tiny-*/config.yaml")).read_text()
    assert "fine_tune_epochs: 0" in saved and str(presplit_folder) in saved


def test_train_help_lists_option_groups(capsys):
    from training.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for heading in ("data:", "model:", "training:", "output:", "--unfreeze-blocks", "[train.unfreeze_blocks]"):
        assert heading in text


def test_tiny_overrides_are_valid_config_keys():
    from training.config import resolve

    assert resolve(None, TINY_OVERRIDES)["model"]["image_size"] == [32, 32]


def test_export_command_rebuilds_the_artifact_from_the_run_folder(trained, tmp_path):
    from inference.classifier import load_classifier
    from training.cli import main

    out = tmp_path / "exported"
    assert main(["export", "--run", str(trained["run_dir"]), "--out", str(out)]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    phase = metadata["training_config"]["phases"][0]
    assert phase["exported_from_checkpoint"] and phase["epochs_logged"] == 2
    assert phase["phase"] == "fine_tune"
    original = load_classifier(trained["artifact"], runtime="keras")
    exported = load_classifier(out, runtime="keras")
    pixels = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    # The tiny run keeps whichever phase scored better on val; the export takes the fine-tuning one.
    assert exported.predict_batch(pixels).shape == original.predict_batch(pixels).shape == (2, 3)
    assert (out / "report" / "metrics.json").is_file()
