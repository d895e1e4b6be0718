"""``python -m training quantize`` and ``MODEL_VARIANT``: smaller LiteRT copies, kept only when as accurate.

A real Keras model that answers blue/green/red from the mean colour is exported with ``training.export``,
quantised to float16, dynamic-range int8 and full-integer int8, compared on a real (generated) validation
folder, and served.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.classifier import ArtifactError, load_classifier
from support import COLOR_RGB, encode, export
from training.quantize import LITERT_VARIANTS, quantize_artifact

pytestmark = pytest.mark.slow
SORTED_COLORS = ["blue", "green", "red"]  # class order as the data loader sorts the folders


def build_sorted_color_model(image_size=(32, 32)):
    """Mean colour -> softmax over blue, green, red (the channel order reversed)."""
    import keras

    inputs = keras.Input((*image_size, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(3, activation="softmax")
    outputs = dense(x)
    dense.set_weights([np.eye(3, dtype="float32")[:, ::-1] * 10.0, np.zeros(3, dtype="float32")])
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def color_data(tmp_path_factory) -> Path:
    """train/ and val/ folders of noisy single-colour JPEGs, four per class and split."""
    root = tmp_path_factory.mktemp("colors-data")
    rng = np.random.default_rng(5)
    for split in ("train", "val"):
        for color in SORTED_COLORS:
            folder = root / split / color
            folder.mkdir(parents=True)
            for index in range(4):
                noise = rng.integers(-25, 25, (40, 48, 3))
                pixels = np.clip(np.array(COLOR_RGB[color]) + noise, 0, 255).astype(np.uint8)
                (folder / f"{index}.jpg").write_bytes(encode(Image.fromarray(pixels), "JPEG", quality=90))
    return root


@pytest.fixture
def sorted_color_artifact(tmp_path) -> Path:
    return export(build_sorted_color_model(), SORTED_COLORS, tmp_path / "colors", name="colors",
                  image_size=(32, 32))


def test_variants_within_the_tolerance_are_written_and_recorded(sorted_color_artifact, color_data):
    results = quantize_artifact(sorted_color_artifact, color_data, variants=["float16", "int8"])
    metadata = json.loads((sorted_color_artifact / "metadata.json").read_text())
    for variant in ("float16", "int8"):
        row = results[variant]
        assert row["kept"] and (sorted_color_artifact / LITERT_VARIANTS[variant]).is_file()
        assert row["images"] == 12 and row["split"] == "val"
        assert row["top1_float32"] == 100.0 and row["drop_points"] <= 0.5
        assert row["size_bytes"] > 0 and row["top1_agreement"] == 1.0
        assert metadata["litert_variants"][variant] == row


def test_a_variant_beyond_the_tolerance_is_not_kept_and_a_stale_copy_goes(sorted_color_artifact, color_data):
    stale = sorted_color_artifact / LITERT_VARIANTS["float16"]
    stale.write_bytes((sorted_color_artifact / "model.tflite").read_bytes())
    # A negative allowance cannot be met even by a perfect copy: the check must refuse it.
    results = quantize_artifact(sorted_color_artifact, color_data, variants=["float16"], max_drop_points=-1.0)
    assert results["float16"]["kept"] is False
    assert not stale.exists()
    metadata = json.loads((sorted_color_artifact / "metadata.json").read_text())
    assert metadata["litert_variants"]["float16"]["kept"] is False


def test_the_app_serves_a_kept_variant_with_the_same_answers(sorted_color_artifact, color_data):
    quantize_artifact(sorted_color_artifact, color_data, variants=["float16"])
    exact = load_classifier(sorted_color_artifact, runtime="litert", num_threads=1)
    half = load_classifier(sorted_color_artifact, runtime="auto", num_threads=1, variant="float16")
    assert half.variant == "float16" and half.runtime == "litert"
    assert half.describe()["variant"] == "float16"
    for color in SORTED_COLORS:
        image = Image.new("RGB", (50, 40), COLOR_RGB[color])
        answers, expected = half.classify(image, top_k=3), exact.classify(image, top_k=3)
        assert answers[0]["label"] == color
        assert [a["label"] for a in answers] == [a["label"] for a in expected]
        np.testing.assert_allclose([a["score"] for a in answers], [a["score"] for a in expected], atol=1e-2)


def test_a_missing_or_unknown_variant_fails_with_the_fix(sorted_color_artifact):
    with pytest.raises(ArtifactError, match="python -m training quantize"):
        load_classifier(sorted_color_artifact, variant="int8")
    with pytest.raises(ArtifactError, match="MODEL_VARIANT='int4' is not one of auto, float32, float16, int8, int8-full"):
        load_classifier(sorted_color_artifact, variant="int4")
    with pytest.raises(ArtifactError, match="needs MODEL_RUNTIME=auto or litert"):
        load_classifier(sorted_color_artifact, runtime="keras", variant="float16")


def test_the_command_line_reports_each_variant(sorted_color_artifact, color_data, capsys):
    from training.cli import main

    assert main(["quantize", str(sorted_color_artifact), "--data", str(color_data), "--quantize", "int8"]) == 0
    output = capsys.readouterr().out
    assert output.startswith("int8: top-1 100.00% vs float32 100.00% on 12 val images")
    assert "kept as model.int8.tflite" in output


def integer_tensor_types(path: Path) -> set[str]:
    """The dtypes of a LiteRT file's tensors, as its interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return {np.dtype(detail["dtype"]).name for detail in interpreter.get_tensor_details()}


def test_full_integer_copy_is_calibrated_on_training_photos_and_becomes_the_default(sorted_color_artifact,
                                                                                  color_data):
    metadata_path = sorted_color_artifact / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["confidence"] = {"threshold": 0.5, "target_precision": 0.95}
    metadata_path.write_text(json.dumps(metadata))
    results = quantize_artifact(sorted_color_artifact, color_data, variants=["int8-full"], calibration_images=6,
                                serve="int8-full")
    row = results["int8-full"]
    path = sorted_color_artifact / LITERT_VARIANTS["int8-full"]
    assert row["kept"] and path.is_file() and row["calibration_images"] == 6 and row["drop_points"] <= 0.5
    # The "not sure" threshold was chosen on float32's scores: how it holds for this copy is recorded.
    assert row["at_threshold"] == {"threshold": 0.5, "coverage": 1.0, "accuracy": 1.0,
                                   "float32": {"coverage": 1.0, "accuracy": 1.0}}
    # Integer activations, not only integer weights: that is what makes it faster than dynamic range.
    assert "int8" in integer_tensor_types(path)
    metadata = json.loads((sorted_color_artifact / "metadata.json").read_text())
    assert metadata["serving_variant"] == "int8-full"

    served = load_classifier(sorted_color_artifact, num_threads=1)  # MODEL_VARIANT=auto
    assert served.variant == "int8-full" and served.describe()["variant"] == "int8-full"
    for color in SORTED_COLORS:
        assert served.classify(Image.new("RGB", (50, 40), COLOR_RGB[color]), top_k=1)[0]["label"] == color
    assert load_classifier(sorted_color_artifact, num_threads=1, variant="float32").variant == "float32"
    assert load_classifier(sorted_color_artifact, runtime="keras", num_threads=1).variant == "float32"

    path.unlink()  # a recommendation whose file is gone falls back to the float32 copy
    assert load_classifier(sorted_color_artifact, num_threads=1).variant == "float32"


def test_serving_a_variant_that_was_not_kept_is_refused(sorted_color_artifact, color_data):
    with pytest.raises(ValueError, match="--serve float16: that variant was not written"):
        quantize_artifact(sorted_color_artifact, color_data, variants=["float16"], max_drop_points=-1.0,
                          serve="float16")
    quantize_artifact(sorted_color_artifact, color_data, variants=["float16"], serve="float16")
    quantize_artifact(sorted_color_artifact, color_data, variants=["float16"], serve="float32")
    assert "serving_variant" not in json.loads((sorted_color_artifact / "metadata.json").read_text())
