"""Grad-CAM: which part of the photo made the model give its top answer.

The heatmap is computed on demand with the Keras copy of the served model (``model.keras``), because
LiteRT has no gradients; TensorFlow is imported only here, on the first request for a heatmap, so a
LiteRT-only server starts and serves without it and answers this route with 501.

The original upload is never stored, so the heatmap is computed from what is kept: the stored thumbnail
(up to 320 pixels, larger than any model input here), fitted to the model input exactly as the upload
was. The heatmap is drawn over that thumbnail and cached as a PNG (``EXPLANATION_CACHE_DIR``, by default
under the instance folder), one file per prediction and model version.

Grad-CAM (Selvaraju et al., 2017): the gradients of the top class score with respect to the last
convolutional feature map, averaged per channel, weight the channels of that map; the weighted sum,
after a ReLU, is the class activation map, upsampled to the photo.
"""

from __future__ import annotations

import importlib.util
import io
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from flask import current_app
from PIL import Image

from .classifier import Classifier, get_classifier
from .imaging import fit_to_input, scale_factors

HEATMAP_OPACITY = 0.5
CACHE_FOLDER = "explanations"


class ExplanationUnavailable(Exception):
    """No heatmap can be made; carries the HTTP status, an error code and a message for the client."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class GradCam:
    """Grad-CAM over a Keras classifier's last spatial feature map.

    The model is split at that map: a feature model (input -> map) and the chain of layers after it
    (pooling, dropout, dense ...), re-applied to the map under the gradient tape. Splitting, rather than
    asking one two-output model for both, keeps the map a plain tensor the tape watches, whatever the
    layer that makes it does to its outputs.

    Args:
        model: Keras model, float32 RGB 0..255 in, probabilities out; after the feature map it must be a
            single chain of layers (true of every classifier trained here).

    Raises:
        ExplanationUnavailable: The model has no spatial map, or the layers after it are not a chain.
    """

    def __init__(self, model):
        import keras
        import tensorflow as tf

        self._tf = tf
        layer = feature_layer(model)
        self.layer_name = layer.name
        self._features = keras.Model(model.inputs[0], outer_output(layer))
        self._head = model.layers[model.layers.index(layer) + 1:]
        self._lock = threading.Lock()
        probe = np.linspace(0, 255, num=int(np.prod(model.inputs[0].shape[1:])), dtype=np.float32)
        probe = probe.reshape((1, *model.inputs[0].shape[1:]))
        with warnings.catch_warnings():  # a model saved with a list of inputs warns about a bare tensor
            warnings.simplefilter("ignore", UserWarning)
            expected = model(probe, training=False).numpy()
        if not np.allclose(self._run_head(self._features(probe)).numpy(), expected, atol=1e-4):
            raise ExplanationUnavailable(501, "explanation_unsupported",
                                         "The served model is not a single chain of layers after its feature "
                                         "map, so Grad-CAM cannot be computed.")

    def _run_head(self, features):
        x = features
        for layer in self._head:
            x = layer(x, training=False)
        return x

    def heatmap(self, pixels: np.ndarray, class_index: int) -> np.ndarray:
        """The class activation map for one model-sized image.

        Args:
            pixels: ``(H, W, 3)`` RGB 0..255.
            class_index: Output index to explain.

        Returns:
            ``(h, w)`` float32 in 0..1 at the feature map's resolution (all zeros when nothing in the
            image raises the class score).
        """
        tf = self._tf
        batch = tf.convert_to_tensor(pixels[np.newaxis].astype(np.float32))
        with self._lock:
            features = tf.convert_to_tensor(self._features(batch, training=False))
            with tf.GradientTape() as tape:
                tape.watch(features)
                score = self._run_head(features)[:, class_index]
            gradients = tape.gradient(score, features)[0].numpy()
        features = features[0].numpy()
        weights = gradients.mean(axis=(0, 1))
        cam = np.maximum((features * weights).sum(axis=-1), 0.0)
        peak = float(cam.max())
        return (cam / peak if peak > 0 else cam).astype(np.float32)


def feature_layer(model):
    """The last top-level layer whose output is a spatial map (batch, h, w, channels) with h, w > 1.

    For the classifiers trained here that is the backbone (its last convolution block); for small
    networks, the last convolution.

    Raises:
        ExplanationUnavailable: The model has no such layer (nothing spatial to explain).
    """
    for layer in reversed(model.layers):
        try:
            shape = outer_output(layer).shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4 and (shape[1] or 0) > 1 and (shape[2] or 0) > 1:
            return layer
    raise ExplanationUnavailable(501, "explanation_unsupported",
                                 "The served model has no convolutional feature map to explain.")


def outer_output(layer):
    """The tensor ``layer`` produced in the enclosing model's graph.

    For a nested model (the backbone) ``layer.output`` is the output of its own inner graph, which the
    enclosing model's inputs do not reach; the node of its call in the enclosing graph has the right one.
    """
    nodes = getattr(layer, "_inbound_nodes", None)
    return nodes[-1].outputs[0] if nodes else layer.output


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ValueError:  # a module set to None in sys.modules (how tests hide TensorFlow)
        return False


_explainers: dict[str, GradCam] = {}
_explainers_lock = threading.Lock()


def get_explainer(classifier: Classifier) -> GradCam:
    """The Grad-CAM explainer for ``classifier``'s artifact, loaded on first use and kept per process.

    Raises:
        ExplanationUnavailable: 501 without TensorFlow, 503 when ``model.keras`` is missing or broken.
    """
    from training.export import KERAS_FILE

    if not tensorflow_available():
        raise ExplanationUnavailable(501, "explanation_unavailable",
                                     "Heatmaps need TensorFlow, which this server does not have: install "
                                     "requirements-train.txt to enable them.")
    path = Path(classifier.model_dir) / KERAS_FILE
    key = f"{path}:{classifier.version}"
    with _explainers_lock:
        if key not in _explainers:
            if not path.is_file():
                raise ExplanationUnavailable(503, "explanation_unavailable",
                                             f"Heatmaps need the Keras model ({KERAS_FILE}), which the served "
                                             f"artifact does not have.")
            import keras

            try:
                model = keras.saving.load_model(path, compile=False)
            except Exception as exc:
                raise ExplanationUnavailable(503, "explanation_unavailable",
                                             f"The Keras model could not be loaded ({exc.__class__.__name__}).")
            _explainers[key] = GradCam(model)
        return _explainers[key]


def place_on_photo(cam: np.ndarray, size: tuple[int, int], target: tuple[int, int], resize_mode: str) -> np.ndarray:
    """Map a heatmap over the model input back onto the photo it was fitted from.

    Args:
        cam: ``(h, w)`` heatmap over the model input.
        size: Photo ``(width, height)``.
        target: Model input ``(height, width)``.
        resize_mode: How the photo was fitted (``center_crop``, ``stretch``, ``pad``).

    Returns:
        ``(height, width)`` float32 heatmap over the photo; zero where the model saw nothing (outside the
        centre crop).
    """
    width, height = size
    target_h, target_w = target
    over_input = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize(
        (target_w, target_h), Image.Resampling.BILINEAR))
    if resize_mode == "stretch":
        return _resize(over_input, (width, height))
    sx, sy = scale_factors(width, height, target, resize_mode)
    if resize_mode == "pad":
        inner_w, inner_h = max(1, round(width * sx)), max(1, round(height * sy))
        left, top = (target_w - inner_w) // 2, (target_h - inner_h) // 2
        return _resize(over_input[top:top + inner_h, left:left + inner_w], (width, height))
    crop_w, crop_h = min(width, target_w / sx), min(height, target_h / sy)
    left, top = round((width - crop_w) / 2), round((height - crop_h) / 2)
    placed = np.zeros((height, width), dtype=np.float32)
    box_w, box_h = max(1, round(crop_w)), max(1, round(crop_h))
    placed[top:top + box_h, left:left + box_w] = _resize(over_input, (box_w, box_h))[:height - top, :width - left]
    return placed


def _resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(values.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))


def colorize(heat: np.ndarray) -> np.ndarray:
    """Blue (0) -> cyan -> yellow -> red (1), the usual heatmap palette, as uint8 RGB."""
    heat = np.clip(heat, 0.0, 1.0)[..., np.newaxis]
    stops = np.array([[0, 0, 160], [0, 200, 255], [255, 230, 0], [220, 0, 0]], dtype=np.float32)
    position = heat * (len(stops) - 1)
    lower = np.clip(np.floor(position).astype(int), 0, len(stops) - 2)
    fraction = position - lower
    rgb = stops[lower[..., 0]] * (1 - fraction) + stops[lower[..., 0] + 1] * fraction
    return rgb.astype(np.uint8)


def overlay(photo: Image.Image, heat: np.ndarray, opacity: float = HEATMAP_OPACITY) -> Image.Image:
    """``photo`` with the coloured heatmap blended in, stronger where the heat is higher."""
    base = np.asarray(photo.convert("RGB"), dtype=np.float32)
    alpha = (opacity * (0.35 + 0.65 * np.clip(heat, 0, 1)))[..., np.newaxis]
    mixed = base * (1 - alpha) + colorize(heat).astype(np.float32) * alpha
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))


def explain_image(classifier: Classifier, photo: Image.Image, label: str) -> tuple[Image.Image, np.ndarray]:
    """Grad-CAM of ``label`` for ``photo``, drawn over it.

    Args:
        classifier: The served classifier (its Keras copy computes the gradients).
        photo: RGB image (the stored thumbnail).
        label: The class to explain, normally the prediction's top label.

    Returns:
        ``(overlay image, heatmap over the photo)``.

    Raises:
        ExplanationUnavailable: No TensorFlow / Keras model, or ``label`` is not one of the model's classes.
    """
    try:
        class_index = classifier.labels.index(label)
    except ValueError:
        raise ExplanationUnavailable(409, "label_not_in_model",
                                     f"The served model has no class {label!r}: this prediction was made by "
                                     f"another model.") from None
    explainer = get_explainer(classifier)
    pixels = fit_to_input(photo, classifier.image_size, classifier.resize_mode)
    cam = explainer.heatmap(pixels, class_index)
    heat = place_on_photo(cam, photo.size, classifier.image_size, classifier.resize_mode)
    return overlay(photo, heat), heat


def cache_path(prediction: Any, classifier: Classifier) -> Path:
    """Where the heatmap PNG of ``prediction`` under the served model version is cached."""
    version = re.sub(r"[^A-Za-z0-9._-]", "_", f"{classifier.name}-{classifier.version}")
    folder = current_app.config.get("EXPLANATION_CACHE_DIR") or Path(current_app.instance_path) / CACHE_FOLDER
    return Path(folder) / f"{prediction.id}-{prediction.sha256[:16]}-{version}.png"


def explanation_png(prediction: Any) -> bytes:
    """The heatmap PNG for a stored prediction, from the cache or computed now and cached.

    Args:
        prediction: A :class:`app.models.Prediction`.

    Returns:
        PNG bytes, the size of the stored thumbnail.

    Raises:
        ExplanationUnavailable: As :func:`explain_image`.
    """
    classifier = get_classifier()
    path = cache_path(prediction, classifier)
    if path.is_file():
        return path.read_bytes()
    with Image.open(io.BytesIO(prediction.thumbnail)) as thumbnail:
        image, _ = explain_image(classifier, thumbnail.convert("RGB"), prediction.top_label)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{threading.get_ident()}.tmp")
    partial.write_bytes(data)
    partial.replace(path)  # atomic: a concurrent reader never sees half a file
    return data
