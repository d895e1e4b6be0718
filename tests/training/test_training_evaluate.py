"""Evaluation: the report files, the metrics maths and the confidence threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.evaluate import classification_report, confidence_curve, confusion_matrix, top_confusions


def test_evaluate_command_writes_the_report(trained, image_folder, capsys):
    from training.cli import main

    artifact = trained["artifact"]
    report = artifact / "report"
    for name in ("metrics.json", "confusion_matrix.png", "training_curves.png", "confidence.png"):
        (report / name).unlink()
    assert main(["evaluate", "--model", str(artifact), "--data", str(image_folder), "--split", "test"]) == 0
    assert "accuracy" in capsys.readouterr().out
    for name in ("metrics.json", "classification_report.txt", "top_confusions.csv", "confusion_matrix.png",
                 "training_curves.png", "confidence.png"):
        assert (report / name).stat().st_size > 0, name
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_images"] == 6
    assert set(metrics["classification_report"]["per_class"]) == {"blue", "green", "red"}


def test_metrics_maths_on_a_known_confusion():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    matrix = confusion_matrix(y_true, y_pred, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    report = classification_report(matrix, ["a", "b", "c"])
    assert report["per_class"]["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3,
                                                      "support": 3})
    assert report["per_class"]["c"]["f1"] == 0.0
    assert report["macro"]["recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    confusions = top_confusions(matrix, ["a", "b", "c"])
    assert [(c["true"], c["predicted"], c["count"]) for c in confusions] == [("c", "a", 1), ("a", "b", 1)] or \
        [(c["true"], c["predicted"], c["count"]) for c in confusions] == [("a", "b", 1), ("c", "a", 1)]


def test_confidence_threshold_reaches_the_target_precision():
    scores = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.65, 0.55, 0.52])
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 0], dtype=bool)
    probabilities = np.stack([scores, 1 - scores], axis=1)
    y_true = np.where(correct, 0, 1)
    result = confidence_curve(probabilities, y_true, 0.8)
    # Top 4 are all right (100 %), top 6 are 5/6 = 83 %, top 7 are 5/7 = 71 %: the cut is at 0.65.
    assert result["threshold"] == pytest.approx(0.65)
    assert result["coverage"] == pytest.approx(6 / 8)
    assert result["accuracy"] == pytest.approx(5 / 6)
    strict = confidence_curve(probabilities, y_true, 1.0)
    assert strict["threshold"] == pytest.approx(0.8) and strict["coverage"] == pytest.approx(0.5)
    point = next(p for p in result["curve"] if p["threshold"] == 0.75)
    assert point == {"threshold": 0.75, "coverage": 0.5, "accuracy": 1.0}


def test_confidence_threshold_is_none_when_unreachable():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert confidence_curve(probabilities, np.array([1, 1]), 0.95)["threshold"] is None
