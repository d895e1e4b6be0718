"""Grouping a trained model's classes through a label map into a coarser artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.grouped_artifact import grouping_matrix


def test_grouping_matrix_sums_each_label_into_its_group():
    matrix, groups = grouping_matrix(["blue", "green", "red"], {"red": "warm", "green": "cold", "blue": "cold"})
    assert groups == ["cold", "warm"]
    assert matrix.tolist() == [[1, 0], [1, 0], [0, 1]]
    with pytest.raises(KeyError, match="missing from the label map"):
        grouping_matrix(["blue", "pink"], {"blue": "cold"})


def test_group_command_writes_an_artifact_the_app_serves(trained, image_folder, tmp_path):
    from inference.classifier import load_classifier
    from training.cli import main

    label_map = tmp_path / "warmth.csv"
    label_map.write_text("folder,label\nred,warm\ngreen,cold\nblue,cold\n", encoding="utf-8")
    out = tmp_path / "warmth"
    assert main(["group", "--model", str(trained["artifact"]), "--label-map", str(label_map),
                 "--data", str(image_folder), "--out", str(out)]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["name"] == "warmth" and metadata["label_map"] == "warmth.csv"
    assert metadata["training_config"]["derived_from"]["name"] == "tiny-colors"
    assert metadata["dataset"]["num_classes"] == 2 and metadata["metrics"]["num_images"] == 6
    assert (out / "report" / "confusion_matrix.png").is_file()

    fine = load_classifier(trained["artifact"], runtime="keras")
    pixels = np.random.default_rng(5).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    expected = fine.predict_batch(pixels)
    expected = np.stack([expected[:, 0] + expected[:, 1], expected[:, 2]], axis=1)
    for runtime in ("keras", "litert"):
        grouped = load_classifier(out, runtime=runtime)
        assert grouped.labels == ["cold", "warm"]
        np.testing.assert_allclose(grouped.predict_batch(pixels), expected, atol=1e-5)
