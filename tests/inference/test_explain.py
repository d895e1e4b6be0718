"""Class activation maps: high where the evidence for the answer is, equal to Grad-CAM, served without TensorFlow."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from app.errors import status_of
from inference.explain import ClassActivationMap, ExplanationUnavailable, explain_image, place_on_photo
from support import REPO_ROOT, build_color_model, encode, export
from trust_support import dispose, make_app, post_image

SIZE = 48
GREY = (128, 128, 128)


def build_region_model():
    """Answers "red" or "green" from how much red or green area the photo has.

    A 1x1 convolution with hand-set weights detects red and green pixels (grey gives zero), global
    average pooling counts them and a dense layer turns the counts into the answer, so the answer
    depends only on where the coloured region is: the map has to find it.
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


@pytest.fixture(scope="module")
def mobilenet_artifact(tmp_path_factory):
    """The architecture every shipped model has (MobileNet backbone -> pool -> dropout -> dense -> softmax)."""
    import keras

    from training.model import build_model

    keras.utils.set_random_seed(3)
    model = build_model("mobilenet_v1_0.25", 4, weights="none", image_size=(96, 96), dropout=0.3)
    return export(model, ["a", "b", "c", "d"], tmp_path_factory.mktemp("mobilenet") / "mobilenet", name="mobilenet",
                  image_size=(96, 96))


def normalised(cam: np.ndarray) -> np.ndarray:
    cam = np.maximum(cam, 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def photo_with_square(left: int, top: int, side: int = 16, colour=(230, 20, 20), size=SIZE) -> Image.Image:
    image = Image.new("RGB", (size, size), GREY)
    image.paste(colour, (left, top, left + side, top + side))
    return image


def grad_cam(model, pixels: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) with TensorFlow: gradients of the class logit w.r.t. the feature map.

    The model is cut at its last spatial map; the layers after it are re-applied under the tape up to the
    dense layer, whose pre-softmax output is the class score Grad-CAM differentiates.
    """
    import keras
    import tensorflow as tf

    from inference.runtimes import feature_layer, outer_output

    layer = feature_layer(model)
    features_model = keras.Model(model.inputs[0], outer_output(layer))
    features = tf.convert_to_tensor(features_model(pixels[np.newaxis].astype(np.float32), training=False))
    with tf.GradientTape() as tape:
        tape.watch(features)
        x = features
        for head_layer in model.layers[model.layers.index(layer) + 1:]:
            if isinstance(head_layer, keras.layers.Dense):
                score = tf.matmul(x, head_layer.kernel) + head_layer.bias  # the logits, before softmax
                break
            x = head_layer(x, training=False)
        score = score[:, class_index]
    gradients = tape.gradient(score, features)[0].numpy()
    cam = np.maximum((features[0].numpy() * gradients.mean(axis=(0, 1))).sum(axis=-1), 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


@pytest.fixture(scope="module", params=["litert", "keras"])
def region_classifier(region_artifact, request):
    from inference.classifier import load_classifier

    return load_classifier(region_artifact, runtime=request.param)


@pytest.mark.parametrize("left, top", [(2, 3), (28, 4), (5, 30), (30, 29), (16, 16)])
def test_heatmap_is_high_on_the_region_that_decides(region_classifier, left, top):
    classifier = region_classifier
    photo = photo_with_square(left, top)
    photo.paste((20, 200, 20), (40 - left // 2, 40 - top // 2, 44 - left // 2, 44 - top // 2))  # a small green decoy
    assert classifier.classify(photo)[0]["label"] == "red"
    _, heat = explain_image(classifier, photo, "class", "red")
    assert heat.shape == (SIZE, SIZE)
    inside = np.zeros_like(heat, dtype=bool)
    inside[top:top + 16, left:left + 16] = True
    assert heat[inside].mean() > 0.8
    assert heat[~inside].mean() < 0.1
    peak_row, peak_col = np.unravel_index(np.argmax(heat), heat.shape)
    assert inside[peak_row, peak_col]


@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_the_map_equals_grad_cam_computed_with_tensorflow(mobilenet_artifact, runtime):
    import keras

    from inference.classifier import load_classifier

    classifier = load_classifier(mobilenet_artifact, runtime=runtime)
    model = keras.saving.load_model(mobilenet_artifact / "model.keras", compile=False)
    explainer = ClassActivationMap(classifier)
    rng = np.random.default_rng(11)
    compared = shown = 0
    for _ in range(3):
        pixels = rng.uniform(0, 255, (96, 96, 3)).astype(np.float32)
        for index, label in enumerate(classifier.labels):
            reference = grad_cam(model, pixels, index)
            cam = explainer.heatmap(pixels, "class", label)
            assert cam.shape == reference.shape == (3, 3)
            np.testing.assert_allclose(cam, reference, atol=1e-4)
            compared += 1
            shown += int(reference.max() > 0)
    # Most maps have something to show (a class with only negative evidence is all zero in both).
    assert compared == 12 and shown >= 6


def test_a_group_map_is_the_probability_weighted_sum_of_its_members(mobilenet_artifact, tmp_path):
    from inference.classifier import load_classifier

    artifact = tmp_path / "grouped"
    import shutil

    shutil.copytree(mobilenet_artifact, artifact)
    metadata = json.loads((artifact / "metadata.json").read_text())
    metadata["groups"] = {"pair": {"labels": ["ab", "cd"], "of": {"a": "ab", "b": "ab", "c": "cd", "d": "cd"},
                                   "confidence": {"threshold": 0.5}}}
    (artifact / "metadata.json").write_text(json.dumps(metadata))
    classifier = load_classifier(artifact)
    explainer = ClassActivationMap(classifier)
    pixels = np.random.default_rng(5).uniform(0, 255, (96, 96, 3)).astype(np.float32)
    probabilities, features = classifier.engine.features(pixels[np.newaxis])
    maps = features[0].astype(np.float64) @ explainer.kernel.astype(np.float64)  # (h, w, classes): one map each
    shown = 0
    for group, (first, second) in {"ab": (0, 1), "cd": (2, 3)}.items():
        expected = normalised(maps[..., first] * probabilities[0, first] + maps[..., second] * probabilities[0, second])
        np.testing.assert_allclose(explainer.heatmap(pixels, "pair", group), expected, atol=1e-4)
        shown += int(expected.max() > 0)
    assert shown >= 1
    with pytest.raises(ExplanationUnavailable) as unknown:
        explainer.heatmap(pixels, "pair", "ef")
    assert status_of(unknown.value) == 409


def test_a_grouped_artifact_explains_its_groups_from_the_fine_head(mobilenet_artifact, tmp_path):
    """The premium/basic kind of artifact: a frozen 0/1 layer sums the fine probabilities into groups."""
    from inference.classifier import load_classifier
    from training.grouped_artifact import grouped_model
    from training.model import load_model

    matrix = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype="float32")
    model = grouped_model(load_model(mobilenet_artifact / "model.keras"), matrix, "pairs")
    artifact = export(model, ["ab", "cd"], tmp_path / "pairs", name="pairs", image_size=(96, 96))
    with np.load(artifact / "head.npz") as head:
        assert head["kernel"].shape[1] == 4 and head["group_matrix"].tolist() == matrix.tolist()
    classifier = load_classifier(artifact)
    fine = ClassActivationMap(load_classifier(mobilenet_artifact))
    pixels = np.random.default_rng(8).uniform(0, 255, (96, 96, 3)).astype(np.float32)
    probabilities, features = fine._engine.features(pixels[np.newaxis])
    maps = features[0].astype(np.float64) @ fine.kernel.astype(np.float64)
    explainer, shown = ClassActivationMap(classifier), 0
    for group, (first, second) in {"ab": (0, 1), "cd": (2, 3)}.items():
        expected = normalised(maps[..., first] * probabilities[0, first] + maps[..., second] * probabilities[0, second])
        np.testing.assert_allclose(explainer.heatmap(pixels, "class", group), expected, atol=1e-4)
        shown += int(expected.max() > 0)
    assert shown >= 1


def test_a_head_the_map_cannot_explain_answers_501(tmp_path):
    """A hidden ReLU layer between pooling and the classifier: no exact map, so no head.npz and a clear 501."""
    import keras

    from inference.classifier import load_classifier

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Dense(6, activation="relu")(keras.layers.GlobalAveragePooling2D()(x))
    artifact = export(keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)), ["x", "y"],
                      tmp_path / "hidden", name="hidden", image_size=(32, 32))
    assert not (artifact / "head.npz").exists()
    assert json.loads((artifact / "metadata.json").read_text())["explanation"]["method"] is None
    with pytest.raises(ExplanationUnavailable) as refused:
        ClassActivationMap(load_classifier(artifact))
    assert status_of(refused.value) == 501 and refused.value.code == "explanation_unsupported"


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
        with application.app_context():
            from app.extensions import db
            from app.models import Prediction

            row_id = db.session.scalar(db.select(Prediction.id).filter_by(public_id=created.json["id"]))
        assert [path.name.split("-")[0] for path in cache.glob("*.png")] == [str(row_id)]
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


def test_the_route_works_on_a_litert_only_server(region_artifact):
    """TensorFlow and Keras made unimportable, as on a requirements.txt install: the heatmap still comes back."""
    script = f"""
import io, sys
sys.modules["tensorflow"] = sys.modules["keras"] = None
from PIL import Image
from app import create_app
from app.extensions import db
app = create_app({{"MODEL_DIR": {str(region_artifact)!r}, "DATABASE_URL": "sqlite://", "WTF_CSRF_ENABLED": False,
                  "RATELIMIT_ENABLED": False, "VEHICLE_GATE_DIR": "none"}})
with app.app_context():
    db.create_all()
buffer = io.BytesIO()
image = Image.new("RGB", ({SIZE}, {SIZE}), (128, 128, 128))
image.paste((230, 20, 20), (28, 4, 44, 20))
image.save(buffer, "PNG")
client = app.test_client()
created = client.post("/api/v1/predictions", data={{"image": (io.BytesIO(buffer.getvalue()), "r.png")}})
response = client.get(f"/api/v1/predictions/{{created.json['id']}}/explanation.png")
heat = Image.open(io.BytesIO(response.data)).convert("RGB")
red = [heat.getpixel((x, y))[0] - heat.getpixel((x, y))[2] for x, y in ((36, 12), (8, 40))]
print(app.extensions["classifier"].runtime, response.status_code, response.mimetype, red[0] > red[1] + 40,
      "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "litert 200 image/png True False"


def test_heatmap_on_a_model_whose_feature_map_is_its_rescaled_input(tmp_path):
    """The colours model has no convolution: its last spatial map is the Rescaling layer's output.

    Its logit for red is 10 x the mean red channel, so the map of red is the red channel itself, scaled so
    that the reddest pixel is 1: the square (230) is 1 and the grey (128) 128 / 230.
    """
    from inference.classifier import load_classifier

    artifact = export(build_color_model((32, 32)), ["red", "green", "blue"], tmp_path / "colours", name="colours",
                      image_size=(32, 32))
    assert json.loads((artifact / "metadata.json").read_text())["explanation"]["feature_layer"].startswith("rescaling")
    pixels = np.full((32, 32, 3), GREY, dtype=np.float32)
    pixels[2:12, 20:30] = (230, 20, 20)
    heat = ClassActivationMap(load_classifier(artifact)).heatmap(pixels, "class", "red")
    np.testing.assert_allclose(heat[2:12, 20:30], 1.0, atol=1e-4)
    np.testing.assert_allclose(heat[16:, :16], 128 / 230, atol=1e-4)


def test_the_heatmap_cache_keeps_to_its_size_and_evicts_the_least_recently_used(region_artifact, tmp_path,
                                                                                 database_url):
    import os
    import time

    cache = tmp_path / "heatmaps"
    application = make_app(region_artifact, database_url, VEHICLE_GATE_DIR="none", EXPLANATION_CACHE_DIR=str(cache))
    try:
        client = application.test_client()
        ids = [post_image(client, encode(photo_with_square(4 + 8 * index, 4), "PNG"), f"{index}.png").json["id"]
               for index in range(4)]
        sizes = []
        for public_id in ids[:2]:
            assert client.get(f"/api/v1/predictions/{public_id}/explanation.png").status_code == 200
            sizes.append(sum(path.stat().st_size for path in cache.glob("*.png")))
        # Room for about two heatmaps; the first was read again since, so the second is the oldest use.
        application.config["EXPLANATION_CACHE_MAX_BYTES"] = int(sizes[-1] * 1.2)
        for path in cache.glob("*.png"):
            os.utime(path, (time.time() - 60, time.time() - 60))
        assert client.get(f"/api/v1/predictions/{ids[0]}/explanation.png").status_code == 200
        for public_id in ids[2:]:
            assert client.get(f"/api/v1/predictions/{public_id}/explanation.png").status_code == 200
            assert sum(path.stat().st_size for path in cache.glob("*.png")) <= int(sizes[-1] * 1.2)
        with application.app_context():
            from app.extensions import db
            from app.models import Prediction

            row_ids = {public_id: db.session.scalar(db.select(Prediction.id).filter_by(public_id=public_id))
                       for public_id in ids}
        cached = {int(path.name.split("-")[0]) for path in cache.glob("*.png")}
        assert cached == {row_ids[ids[3]], row_ids[ids[2]]} or cached == {row_ids[ids[3]], row_ids[ids[0]]}
        assert row_ids[ids[1]] not in cached  # the least recently used went first
        assert not list(cache.glob("*.tmp"))
    finally:
        dispose(application)


def test_the_attention_box_surrounds_the_hottest_region():
    from inference.explain import attention_box

    heat = np.zeros((40, 60), dtype=np.float32)
    heat[10:20, 30:45] = 1.0
    heat[30, 5] = 0.4  # warm, but under half of the peak: outside the box
    assert attention_box(heat) == (30, 10, 44, 19)
    assert attention_box(np.zeros((4, 4))) is None
