"""Grad-CAM: the heatmap is high where the evidence for the answer is, served and cached per prediction."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from app.explain import GradCam, explain_image, feature_layer, place_on_photo
from support import REPO_ROOT, build_color_model, encode, export
from trust_support import dispose, make_app, post_image

SIZE = 48
GREY = (128, 128, 128)


def build_region_model():
    """Answers "red" or "green" from how much red or green area the photo has.

    A 1x1 convolution with hand-set weights detects red and green pixels (grey gives zero), global
    average pooling counts them and a dense layer turns the counts into the answer, so the answer
    depends only on where the coloured region is: Grad-CAM has to find it.
    """
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    detect = keras.layers.Conv2D(2, 1, activation="relu", name="colour_detector")
    x = detect(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, activation="softmax")
    outputs = dense(x)
    detect.set_weights([np.array([[[[1.0, -0.5], [-0.5, 1.0], [-0.5, -0.5]]]], dtype="float32"),
                        np.array([-0.2, -0.2], dtype="float32")])
    dense.set_weights([np.eye(2, dtype="float32") * 40.0, np.zeros(2, dtype="float32")])
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def region_artifact(tmp_path_factory):
    return export(build_region_model(), ["red", "green"], tmp_path_factory.mktemp("regions") / "regions",
                  name="regions", image_size=(SIZE, SIZE))


def photo_with_square(left: int, top: int, side: int = 16, colour=(230, 20, 20), size=SIZE) -> Image.Image:
    image = Image.new("RGB", (size, size), GREY)
    image.paste(colour, (left, top, left + side, top + side))
    return image


@pytest.mark.parametrize("left, top", [(2, 3), (28, 4), (5, 30), (30, 29), (16, 16)])
def test_heatmap_is_high_on_the_region_that_decides(region_artifact, left, top):
    from app.inference.classifier import load_classifier

    classifier = load_classifier(region_artifact, runtime="keras")
    photo = photo_with_square(left, top)
    photo.paste((20, 200, 20), (40 - left // 2, 40 - top // 2, 44 - left // 2, 44 - top // 2))  # a small green decoy
    assert classifier.classify(photo)[0]["label"] == "red"
    _, heat = explain_image(classifier, photo, "red")
    assert heat.shape == (SIZE, SIZE)
    inside = np.zeros_like(heat, dtype=bool)
    inside[top:top + 16, left:left + 16] = True
    assert heat[inside].mean() > 0.8
    assert heat[~inside].mean() < 0.1
    peak_row, peak_col = np.unravel_index(np.argmax(heat), heat.shape)
    assert inside[peak_row, peak_col]


def test_feature_layer_of_the_trained_architecture_is_the_backbone():
    """The classifiers trained here nest the backbone as one layer; its 2-D output is the feature map."""
    from training.model import build_model

    model = build_model("mobilenet_v1_0.25", 4, weights="none", image_size=(96, 96))
    assert feature_layer(model).name == "backbone"
    cam = GradCam(model).heatmap(np.random.default_rng(1).uniform(0, 255, (96, 96, 3)), 2)
    assert cam.shape == (3, 3) and 0.0 <= cam.min() and cam.max() <= 1.0


def test_heatmap_is_placed_on_the_centre_crop_of_a_wide_photo():
    cam = np.ones((4, 4), dtype=np.float32)
    placed = place_on_photo(cam, (200, 100), (50, 50), "center_crop")
    assert placed.shape == (100, 200)
    assert placed[:, 60:140].min() > 0.99          # the centre 100 x 100 is what the model saw
    assert placed[:, :45].max() == 0 and placed[:, 155:].max() == 0
    padded = place_on_photo(cam, (200, 100), (50, 50), "pad")
    assert padded.shape == (100, 200) and padded.min() > 0.99


def test_explanation_route_serves_and_caches_a_png(region_artifact, tmp_path, database_url):
    cache = tmp_path / "heatmaps"
    application = make_app(region_artifact, database_url, VEHICLE_GATE_DIR="none", EXPLANATION_CACHE_DIR=str(cache))
    try:
        client = application.test_client()
        created = post_image(client, encode(photo_with_square(28, 4), "PNG"), "square.png")
        assert created.status_code == 201
        url = f"/api/v1/predictions/{created.json['id']}/explanation.png"
        first = client.get(url)
        assert first.status_code == 200 and first.mimetype == "image/png"
        thumbnail = Image.open(io.BytesIO(client.get(f"/predictions/{created.json['id']}/thumbnail.jpg").data))
        heatmap = Image.open(io.BytesIO(first.data))
        assert heatmap.size == thumbnail.size
        assert [path.name.split("-")[0] for path in cache.glob("*.png")] == [str(created.json["id"])]
        # The overlay is reddest over the square: compare the heatmap's red excess there and elsewhere.
        pixels = np.asarray(heatmap, dtype=np.float32)
        excess = pixels[..., 0] - pixels[..., 2]
        assert excess[4:20, 28:44].mean() > excess[30:, :20].mean() + 40
        assert client.get(url).data == first.data
        page = client.get(f"/predictions/{created.json['id']}").get_data(as_text=True)
        assert 'id="explain-toggle"' in page and f'data-src="{url}"' in page
        assert client.get("/api/v1/predictions/999/explanation.png").status_code == 404
    finally:
        dispose(application)


def test_without_tensorflow_the_route_answers_501(color_artifact):
    script = f"""
import io, sys
sys.modules["tensorflow"] = sys.modules["keras"] = None
from PIL import Image
from app import create_app
from app.extensions import db
app = create_app({{"MODEL_DIR": {str(color_artifact)!r}, "DATABASE_URL": "sqlite://", "WTF_CSRF_ENABLED": False,
                  "RATELIMIT_ENABLED": False, "VEHICLE_GATE_DIR": "none"}})
with app.app_context():
    db.create_all()
buffer = io.BytesIO()
Image.new("RGB", (64, 64), (0, 0, 255)).save(buffer, "PNG")
client = app.test_client()
created = client.post("/api/v1/predictions", data={{"image": (io.BytesIO(buffer.getvalue()), "b.png")}})
response = client.get(f"/api/v1/predictions/{{created.json['id']}}/explanation.png")
print(response.status_code, response.json["error"]["code"], response.json["error"]["message"])
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("501 explanation_unavailable") and "TensorFlow" in line


def test_heatmap_on_a_model_whose_feature_map_is_its_rescaled_input():
    """The colours model has no convolution: its last spatial map is the Rescaling layer's output."""
    explainer = GradCam(build_color_model((32, 32)))
    assert explainer.layer_name.startswith("rescaling")
    pixels = np.full((32, 32, 3), GREY, dtype=np.float32)
    pixels[2:12, 20:30] = (230, 20, 20)
    heat = explainer.heatmap(pixels, 0)
    assert heat[2:12, 20:30].min() > 0.9 and heat[16:, :16].max() < 0.5
