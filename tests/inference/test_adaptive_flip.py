"""Adaptive flip averaging: a photo sure enough on its own skips its mirror view, served and measured alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from support import build_random_model, export, with_metadata

SIZE = (24, 48)
LABELS = [f"class-{i}" for i in range(4)]


def test_confident_needs_every_output_sure():
    from inference.tta import confident

    rows = np.array([[0.8, 0.1, 0.1, 0.9, 0.1],     # class and make both sure
                     [0.8, 0.1, 0.1, 0.5, 0.5],     # the make is not
                     [0.4, 0.3, 0.3, 0.95, 0.05]])  # the class is not
    assert confident(rows, 3, 0.7).tolist() == [True, False, False]
    assert confident(rows[:, :3], 3, 0.7).tolist() == [True, True, False]  # no make output
    assert not confident(rows, 3, None).any()


def test_confident_reads_each_part_scaled_to_one():
    from inference.tta import confident

    # An integer model's softmax can sum short of 1: 0.64 of 0.8 is 0.8 of the answer.
    assert confident(np.array([[0.64, 0.08, 0.08]]), 3, 0.75).tolist() == [True]


def test_combine_views_keeps_sure_rows_and_averages_the_rest():
    from inference.tta import combine_views

    first = np.array([[0.9, 0.1], [0.6, 0.4]], dtype=np.float32)
    mirrored = np.array([[0.5, 0.5], [0.2, 0.8]], dtype=np.float32)
    np.testing.assert_allclose(combine_views(first, mirrored, 2, 0.7), [[0.9, 0.1], [0.4, 0.6]])
    np.testing.assert_allclose(combine_views(first, mirrored, 2), [[0.7, 0.3], [0.4, 0.6]])
    assert combine_views(first, None, 2, 0.7) is first


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adaptive") / "artifact"
    return export(build_random_model(SIZE, len(LABELS), seed=5), LABELS, folder, name="adaptive", image_size=SIZE)


def photo(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (60, 120, 3)).astype(np.uint8)
    pixels[:, :40] //= 4  # not mirror-symmetric, so the mirror view gives other scores
    return Image.fromarray(pixels)


@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_served_answer_skips_the_mirror_only_when_the_photo_is_sure(artifact, tmp_path, runtime):
    from inference.classifier import load_classifier
    from inference.imaging import fit_to_input

    always = load_classifier(with_metadata(artifact, tmp_path / "always", tta="flip"), runtime=runtime)
    image = photo(3)
    pixels = fit_to_input(image, SIZE, "center_crop").astype(np.float32)
    alone = always.predict_batch(pixels[np.newaxis])[0]
    averaged = always.predict(image, top_k=len(LABELS)).probabilities
    assert not np.allclose(alone, averaged, atol=1e-4)
    top = float(alone.max() / alone.sum())
    for level, skipped in ((top - 0.01, True), (min(1.0, top + 0.01), False)):
        adaptive = load_classifier(with_metadata(artifact, tmp_path / f"skip-{level:.3f}", tta="flip",
                                                 tta_skip_above=round(level, 6)), runtime=runtime)
        calls = []
        original = adaptive.predict_batch
        adaptive.predict_batch = lambda batch: calls.append(batch.shape[0]) or original(batch)
        served = adaptive.predict(image, top_k=len(LABELS)).probabilities
        assert calls == ([1] if skipped else [1, 1])
        np.testing.assert_allclose(served, alone / alone.sum() if skipped else averaged, atol=1e-4)


@pytest.mark.parametrize("value", [0.0, 1.5, "high", True])
def test_an_unusable_skip_level_is_refused_at_load(artifact, tmp_path, value):
    from inference.artifact import ArtifactError
    from inference.classifier import load_classifier

    with pytest.raises(ArtifactError, match="tta_skip_above"):
        load_classifier(with_metadata(artifact, tmp_path / "bad", tta="flip", tta_skip_above=value), runtime="litert")


def test_the_model_endpoint_publishes_the_skip_level(artifact, tmp_path):
    from inference.artifact import public_metadata

    metadata = json.loads((with_metadata(artifact, tmp_path / "a", tta="flip", tta_skip_above=0.7)
                           / "metadata.json").read_text())
    assert public_metadata(metadata)["tta_skip_above"] == 0.7
