"""Artifacts whose input is wider than high (the car photos' own shape): every serving path fits photos
to ``[H, W]`` as the metadata says, for each resize mode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from support import build_random_model, encode, export, with_metadata
from trust_support import dispose, make_app, post_image

WIDE = (24, 48)  # (height, width), as in metadata.json
LABELS = [f"class-{i}" for i in range(6)]


@pytest.fixture(scope="module", params=["stretch", "pad", "center_crop"])
def wide_artifact(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"wide-{request.param}") / "artifact"
    return export(build_random_model(WIDE, len(LABELS), seed=11), LABELS, folder, name="wide", image_size=WIDE,
                  resize_mode=request.param), request.param


def wide_photo(seed: int, size=(300, 140)) -> Image.Image:
    """A photo with structure that every resize mode treats differently (borders, halves, bands)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
    pixels[:, : size[0] // 3] //= 4
    return Image.fromarray(pixels)


def test_fitting_gives_the_input_shape_for_every_mode(wide_artifact):
    from inference.imaging import fit_to_input

    _, mode = wide_artifact
    for size in ((300, 140), (140, 300), (48, 24), (1000, 90)):
        assert fit_to_input(wide_photo(1, size), WIDE, mode).shape == (*WIDE, 3)


def test_api_answers_are_the_model_on_the_fitted_photo(wide_artifact, database_url):
    import keras

    from inference.imaging import fit_to_input

    artifact, mode = wide_artifact
    application = make_app(artifact, database_url, TOP_K=6)
    try:
        client = application.test_client()
        model = keras.saving.load_model(artifact / "model.keras", compile=False)
        for seed in range(3):
            photo = wide_photo(seed)
            response = post_image(client, encode(photo, "PNG"), "wide.png")
            assert response.status_code == 201, response.get_json()
            body = response.get_json()
            expected = model.predict(fit_to_input(photo, WIDE, mode)[None].astype("float32"), verbose=0)[0]
            served = {p["label"]: p["score"] for p in body["predictions"]}
            assert max(served, key=served.get) == LABELS[int(expected.argmax())]
            for index, label in enumerate(LABELS):
                assert served[label] == pytest.approx(float(expected[index]), abs=1e-4)
            assert body["image"]["width"] == 300 and body["image"]["height"] == 140
    finally:
        dispose(application)


def test_batch_route_and_explanation_with_a_wide_input(wide_artifact, database_url):
    artifact, _ = wide_artifact
    application = make_app(artifact, database_url)
    try:
        client = application.test_client()
        photos = [encode(wide_photo(seed), "JPEG") for seed in range(3)]
        response = client.post("/api/v1/predictions:batch",
                               data={"images": [(io.BytesIO(p), f"{i}.jpg") for i, p in enumerate(photos)]},
                               content_type="multipart/form-data")
        assert response.status_code in (200, 201, 207), response.get_json()
        results = response.get_json()["results"]
        assert [r["status"] for r in results] == [201, 201, 201]
        assert all(r["prediction"]["predictions"][0]["label"] in LABELS for r in results)

        created = post_image(client, photos[0]).get_json()
        heatmap = client.get(f"/api/v1/predictions/{created['id']}/explanation.png")
        assert heatmap.status_code == 200 and heatmap.mimetype == "image/png"
        with Image.open(io.BytesIO(heatmap.data)) as image:
            # Drawn over the stored thumbnail, which keeps the photo's shape.
            assert image.width > image.height
    finally:
        dispose(application)


def test_heatmap_placement_covers_the_photo_for_a_wide_input(wide_artifact):
    from inference.explain import place_on_photo

    _, mode = wide_artifact
    cam = np.linspace(0, 1, 3 * 6).reshape(3, 6)
    for size in ((300, 140), (140, 300)):
        placed = place_on_photo(cam, size, WIDE, mode)
        assert placed.shape == (size[1], size[0])
        assert np.isfinite(placed).all()


@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_flip_tta_averages_the_photo_and_its_mirror_in_one_invocation(wide_artifact, tmp_path, runtime):
    import keras

    from inference.classifier import load_classifier
    from inference.imaging import fit_to_input

    artifact, mode = wide_artifact
    flipped = load_classifier(with_metadata(artifact, tmp_path / "flip", tta="flip"), runtime=runtime,
                              num_threads=1)
    plain = load_classifier(artifact, runtime=runtime, num_threads=1)
    assert (flipped.tta, plain.tta) == ("flip", "none")
    calls = []
    original = flipped.predict_batch
    flipped.predict_batch = lambda pixels: calls.append(pixels.shape) or original(pixels)
    model = keras.saving.load_model(artifact / "model.keras", compile=False)
    photo = wide_photo(7)
    pixels = fit_to_input(photo, WIDE, mode).astype("float32")
    expected = model.predict(np.stack([pixels, pixels[:, ::-1]]), verbose=0).mean(axis=0)
    outcome = flipped.predict(photo, top_k=len(LABELS))
    assert calls == [(2, *WIDE, 3)]  # one invocation, the photo and its mirror together
    np.testing.assert_allclose(outcome.probabilities, expected, atol=1e-4)
    assert not np.allclose(plain.predict(photo).probabilities, expected, atol=1e-3)


def test_unknown_tta_is_refused_at_load(wide_artifact, tmp_path):
    from inference.artifact import ArtifactError
    from inference.classifier import load_classifier

    artifact, _ = wide_artifact
    with pytest.raises(ArtifactError, match="tta"):
        load_classifier(with_metadata(artifact, tmp_path / "bad", tta="rotate"), runtime="litert")
