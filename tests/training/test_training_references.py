"""``python -m training references``: the model's own training photos embedded as the app embeds an upload,
written beside the model for the gallery's margin rule."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from support import REPO_ROOT, SHARED


def test_spread_takes_every_folder_before_any_folder_twice(tmp_path):
    from training.references import spread

    for name, count in (("a", 3), ("b", 1), ("c", 2)):
        (tmp_path / name).mkdir()
        for index in range(count):
            (tmp_path / name / f"{index}.jpg").write_bytes(b"x")
    folders = [tmp_path / name for name in "abc"]
    assert [path.parent.name for path in spread(folders, 3)] == ["a", "b", "c"]
    assert [path.parent.name for path in spread(folders, 5)] == ["a", "b", "c", "a", "c"]
    assert len(spread(folders, 100)) == 6 and spread(folders, 4, seed=1) == spread(folders, 4, seed=1)


def test_command_embeds_as_served_and_records_how(trained, image_folder, tmp_path, capsys):
    from inference.classifier import load_classifier
    from inference.gallery import load_references
    from training.cli import main

    artifact = shutil.copytree(trained["artifact"], tmp_path / "artifact")
    classifier = load_classifier(artifact, runtime="litert")
    assert classifier.can_embed
    assert main(["references", str(artifact), "--data", str(image_folder), "--per-source", "5"]) == 0
    assert "wrote 5 references" in capsys.readouterr().out
    stored = np.load(artifact / "references.npy")
    assert stored.dtype == np.float16 and stored.shape[0] == 5
    entry = json.loads((artifact / "metadata.json").read_text())["gallery_references"]
    assert entry["count"] == 5 and entry["sources"] == {str(image_folder): 5} and entry["variant"] == "float32"
    # Each row is the embedding the app computes for that photo (unit length, same invocation and fit).
    references = load_references(artifact, stored.shape[1])
    assert np.allclose(np.linalg.norm(references, axis=1), 1.0, atol=1e-3)


def test_real_photos_of_each_make_become_references_of_the_shipped_model(tmp_path):
    web = SHARED / "datasets" / "web-makes" / "train"
    if not web.is_dir():
        pytest.skip(f"real photos not available: {web} is missing (shared datasets not mounted)")
    from inference.classifier import load_classifier
    from inference.gallery import load_references
    from inference.imaging import decode_upload
    from training.data import class_folders
    from training.references import spread, write_references

    artifact = shutil.copytree(REPO_ROOT / "model_artifacts" / "car-models-196", tmp_path / "model",
                               ignore=shutil.ignore_patterns("references.npy", "model.keras", "report"))
    makes = class_folders(web)
    entry = write_references(artifact, sources=[web], per_source=len(makes))
    assert entry["count"] == len(makes) and entry["variant"] == "int8-full"
    references = load_references(artifact)
    classifier = load_classifier(artifact)
    # Row i is the app's embedding of the i-th photo chosen (one per make): the same photo uploaded
    # matches its own row, and only that one, among the 21 makes.
    for index, path in list(enumerate(spread(makes, len(makes))))[:3]:
        photo = decode_upload(path.read_bytes(), max_pixels=40_000_000, target=classifier.image_size,
                              resize_mode=classifier.resize_mode)
        similarities = references @ classifier.embed(photo.image)
        assert int(np.argmax(similarities)) == index and similarities[index] > 0.999


def test_a_model_without_a_feature_map_output_is_refused_plainly(tmp_path, capsys):
    from training.cli import main

    grouped = REPO_ROOT / "model_artifacts" / "premium-basic"
    if not (grouped / "model.tflite").is_file():
        pytest.skip("the shipped premium-basic model is missing")
    artifact = shutil.copytree(grouped, tmp_path / "model", ignore=shutil.ignore_patterns("model.keras", "report"))
    assert main(["references", str(artifact), "--data", str(tmp_path)]) == 2
    assert "has no feature-map output" in capsys.readouterr().out
    assert not (artifact / "references.npy").exists()
