"""``python -m training tta``: the skip level for the mirror view, measured as served and recorded."""

from __future__ import annotations

import json

import numpy as np

from support import with_metadata


def flip_copy(artifact, out):
    return with_metadata(artifact, out, tta="flip")


def test_tta_command_records_the_lowest_level_within_the_allowed_changes(trained, image_folder, tmp_path, capsys):
    from training.cli import main

    artifact = flip_copy(trained["artifact"], tmp_path / "artifact")
    assert main(["tta", str(artifact), "--data", str(image_folder), "--max-changed", "100"]) == 0
    printed = capsys.readouterr().out
    assert "Chosen `tta_skip_above`: **0.5**" in printed and "| no mirror (`tta: none`) | stanford |" in printed
    metadata = json.loads((artifact / "metadata.json").read_text())
    assert metadata["tta_skip_above"] == 0.5
    assert (artifact / "report" / "tta.png").stat().st_size > 0
    table = metadata["tta_choice"]
    assert table["served"]["runtime"] == "litert" and table["per_set"]["stanford"]["images"] > 0


def test_skipped_share_falls_with_the_level_and_only_skipped_photos_change(trained, image_folder, tmp_path):
    from training.flip_skip import CANDIDATES, choose, choose_skip_above

    artifact = flip_copy(trained["artifact"], tmp_path / "artifact")
    report = choose_skip_above(artifact, max_changed=0.0, data=image_folder)
    rows = [row["sets"]["stanford"] for row in report["table"]]
    assert [row["skip_above"] for row in report["table"]] == list(CANDIDATES)
    skipped = [row["skipped"] for row in rows]
    assert skipped == sorted(skipped, reverse=True)
    assert all(row["changed"] <= row["skipped"] for row in rows)
    assert report["skip_above"] == choose(report["table"], 0.0)
    assert all(row["class_top1_always"] == rows[0]["class_top1_always"] for row in rows)
    single = report["single_view"]["stanford"]
    assert single["skipped"] == 1.0 and single["changed"] >= rows[-1]["changed"]


def test_choose_takes_the_lowest_level_that_holds_on_every_set():
    from training.flip_skip import choose

    table = [{"skip_above": 0.5, "sets": {"a": {"changed": 0.0}, "b": {"changed": 0.02}}},
             {"skip_above": 0.6, "sets": {"a": {"changed": 0.0}, "b": {"changed": 0.004}}},
             {"skip_above": 0.7, "sets": {"a": {"changed": 0.0}, "b": {"changed": 0.0}}}]
    assert choose(table, 0.005) == 0.6
    assert choose(table, 0.0) == 0.7
    assert choose(table[:1], 0.01) is None


def test_evaluation_combines_views_as_the_app_serves(trained, image_folder):
    from inference.tta import combine_views
    from training.data import artifact_split
    from training.evaluate import predict
    from training.model import load_model

    artifact = trained["artifact"]
    metadata = json.loads((artifact / "metadata.json").read_text())
    labels = json.loads((artifact / "labels.json").read_text())
    val = artifact_split(metadata, labels, image_folder, "val")
    model = load_model(artifact / "model.keras")
    options = dict(num_classes=len(labels), image_size=tuple(metadata["image_size"]),
                   resize_mode=metadata["resize_mode"])
    single = predict(model, val.paths, val.labels, **options)
    averaged = predict(model, val.paths, val.labels, tta="flip", **options)
    level = float(np.median(single.max(axis=1)))
    adaptive = predict(model, val.paths, val.labels, tta="flip", skip_above=level, **options)
    mirrored = 2 * averaged - single
    np.testing.assert_allclose(adaptive, combine_views(single, mirrored, len(labels), level), atol=1e-6)
    sure = single.max(axis=1) >= level
    np.testing.assert_allclose(adaptive[sure], single[sure], atol=1e-6)
