"""``python -m training visualize`` on a tiny trained model (small CNN from scratch, ``--weights none``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from training.cli import main
from training.visualize import _backbone_and_preprocess, _feature_model, candidate_layers, filter_patterns


@pytest.fixture(scope="module")
def photo(image_folder):
    return next((image_folder / "red").glob("*.jpg"))


def test_writes_small_activation_and_filter_grids_with_an_index(trained, photo, tmp_path):
    out = tmp_path / "pictures"
    assert main(["visualize", "--model", str(trained["artifact"]), "--photo", str(photo), "--out", str(out),
                 "--filters", "4", "--steps", "10"]) == 0
    index = json.loads((out / "visualize.json").read_text())
    assert index["layers"] == ["block1_conv", "block2_conv", "block3_conv"]  # early, middle, late
    assert index["photo"] == photo.name
    kinds = [(item["kind"], item["layer"]) for item in index["images"]]
    assert kinds == [("activations", name) for name in index["layers"]] + [("filters", name) for name in index["layers"]]
    for item in index["images"]:
        path = out / item["file"]
        assert path.stat().st_size < 60_000, item["file"]  # small enough for a page
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.width >= 64
        assert item["caption"].endswith(".")
    grid = np.asarray(Image.open(out / index["images"][0]["file"]).convert("RGB"))
    assert grid[:64, :64].std() > 5  # the first tile is the photo itself, not a blank


def test_default_output_is_the_artifact_report_folder(trained, tmp_path):
    import shutil

    artifact = tmp_path / "artifact"
    shutil.copytree(trained["artifact"], artifact)
    assert main(["visualize", "--model", str(artifact), "--layers", "block2_conv", "--filters", "2",
                 "--steps", "3"]) == 0
    index = json.loads((artifact / "report" / "visualize.json").read_text())
    assert [item["kind"] for item in index["images"]] == ["filters"]  # no photo: patterns only
    assert (artifact / "report" / index["images"][0]["file"]).is_file()


def test_gradient_ascent_excites_the_chosen_filter(trained):
    import keras

    model = keras.saving.load_model(str(trained["artifact"] / "model.keras"), compile=False)
    backbone, preprocess = _backbone_and_preprocess(model)
    probe = _feature_model(backbone, preprocess, ["block2_conv"], (32, 32, 3))
    # A filter dead on grey (ReLU at zero everywhere) has no gradient to climb: take three live ones.
    grey = np.full((1, 32, 32, 3), 128.0, dtype="float32")
    filters = np.flatnonzero(np.asarray(probe(grey)).mean(axis=(0, 1, 2)) > 0)[:3].tolist()
    assert len(filters) == 3
    start = filter_patterns(backbone, preprocess, "block2_conv", filters, steps=0, size=(32, 32))
    grown = filter_patterns(backbone, preprocess, "block2_conv", filters, steps=15, size=(32, 32))
    before = np.asarray(probe(start)).mean(axis=(1, 2))[np.arange(3), filters]
    after = np.asarray(probe(grown)).mean(axis=(1, 2))[np.arange(3), filters]
    assert np.all(after > before) and np.all(after > 0)


def test_unknown_layer_names_the_choices(trained):
    with pytest.raises(ValueError, match="unknown layer.*block1_conv"):
        main(["visualize", "--model", str(trained["artifact"]), "--layers", "no_such_layer"])


def test_list_layers(trained, capsys):
    assert main(["visualize", "--model", str(trained["artifact"]), "--list-layers"]) == 0
    assert capsys.readouterr().out.split() == ["block1_conv", "block2_conv", "block3_conv"]
    import keras

    model = keras.saving.load_model(str(trained["artifact"] / "model.keras"), compile=False)
    assert candidate_layers(_backbone_and_preprocess(model)[0]) == ["block1_conv", "block2_conv", "block3_conv"]
