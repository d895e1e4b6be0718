"""Class activation maps: which part of the photo made the model give its answer, with NumPy alone.

Every classifier trained here ends in global average pooling -> dropout -> dense softmax after its last
convolutional feature map ``F`` (``h x w x channels``). For such a head the class activation map (Zhou et
al., 2016) is exact and needs no gradients: the dense weights of class ``k`` applied to ``F`` at every
position, ``F @ kernel[:, k]``. (It equals Grad-CAM of the class logit up to a constant factor.) The LiteRT
copy of the model returns ``F`` as a second output and the artifact ships the dense layer as ``head.npz``,
so the map costs one model invocation and a matrix product, on a server without TensorFlow.

A group answer (a make, a segment) is explained by the probability-weighted sum of its members' maps,
which is again one product: ``F @ (kernel @ v)`` with ``v`` the members' probabilities. A model whose
head is not of that shape ships no ``head.npz`` and cannot be explained (``explanation_unsupported``).

The map is ReLU'd, scaled to 0..1, placed back onto the photo as it was fitted to the input, and drawn
over it.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path

import numpy as np
from PIL import Image

from .artifact import CLASS_LEVEL, HEAD_FILE, LITERT_FILE
from .classifier import Classifier
from .errors import ExplanationUnavailable
from .imaging import fit_to_input, scale_factors
from .runtimes import LiteRTRuntime, litert_available

HEATMAP_OPACITY = 0.5


def _unsupported(message: str) -> ExplanationUnavailable:
    return ExplanationUnavailable("explanation_unsupported", message)


class ClassActivationMap:
    """Class activation maps for one loaded classifier.

    Args:
        classifier: The served classifier; its runtime must return the feature map (or, for a quantised
            LiteRT copy without it, the artifact's float32 ``model.tflite`` must).

    Raises:
        ExplanationUnavailable: ``explanation_unsupported`` when the artifact has no ``head.npz`` or no
            runtime gives the map; ``explanation_unavailable`` when ``head.npz`` is unreadable.
    """

    def __init__(self, classifier: Classifier):
        folder = Path(classifier.model_dir)
        try:
            with np.load(folder / HEAD_FILE) as head:
                self.kernel = np.asarray(head["kernel"], dtype=np.float32)
                self.bias = np.asarray(head["bias"], dtype=np.float32)
                self.group_matrix = (np.asarray(head["group_matrix"], dtype=np.float32)
                                     if "group_matrix" in head.files else None)
        except FileNotFoundError:
            raise _unsupported("The served model's head is not global average pooling followed by one dense "
                               "layer, so its answer cannot be drawn as a class activation map.") from None
        except (OSError, ValueError, KeyError) as exc:
            raise ExplanationUnavailable("explanation_unavailable",
                                         f"{HEAD_FILE} of the served model is unreadable "
                                         f"({exc.__class__.__name__}).") from None
        outputs = self.kernel.shape[1] if self.group_matrix is None else self.group_matrix.shape[1]
        if outputs != len(classifier.labels):
            raise ExplanationUnavailable("explanation_unavailable",
                                         f"{HEAD_FILE} does not match the served model's {len(classifier.labels)} "
                                         f"labels.")
        self.labels = classifier.labels
        self.groupings = {g.name: g for g in classifier.groupings}
        self._engine = classifier.engine
        if not getattr(self._engine, "has_features", False):
            # A quantised copy exported without the map: the float32 copy of the same weights has it.
            fallback = folder / LITERT_FILE
            engine = LiteRTRuntime(fallback, num_threads=1) if (
                litert_available() and fallback.is_file()) else None
            if engine is None or not engine.has_features:
                raise _unsupported("The served model file has no feature-map output: re-export it with "
                                   "`python -m training refresh ARTIFACT` to enable heatmaps.")
            self._engine = engine
        self._lock = threading.Lock()

    def fine_probabilities(self, features: np.ndarray) -> np.ndarray:
        """The dense head's softmax over its own classes, from one ``(h, w, c)`` feature map."""
        logits = features.mean(axis=(0, 1), dtype=np.float64) @ self.kernel + self.bias
        exp = np.exp(logits - logits.max())
        return exp / exp.sum()

    def weights(self, features: np.ndarray, level: str, label: str) -> np.ndarray:
        """Per fine class, how much its map counts in the map of ``label`` at ``level``.

        Raises:
            ExplanationUnavailable: ``label_not_in_model`` when the served model has no such label or grouping.
        """
        probabilities = None
        if level == CLASS_LEVEL and self.group_matrix is None:
            members = [self.labels.index(label)] if label in self.labels else []
            if members:
                return np.eye(self.kernel.shape[1], dtype=np.float64)[members[0]]
        elif level == CLASS_LEVEL:
            members = (np.flatnonzero(self.group_matrix[:, self.labels.index(label)]).tolist()
                       if label in self.labels else [])
        else:
            grouping = self.groupings.get(level)
            members = (grouping.members(label).tolist() if grouping is not None and label in grouping.labels
                       else [])
        if not members:
            raise ExplanationUnavailable("label_not_in_model",
                                         f"The served model has no {'class' if level == CLASS_LEVEL else level} "
                                         f"{label!r}: this prediction was made by another model.")
        probabilities = self.fine_probabilities(features)
        weights = np.zeros_like(probabilities)
        weights[members] = probabilities[members]
        return weights

    def heatmap(self, pixels: np.ndarray, level: str, label: str) -> np.ndarray:
        """The activation map of one answer for one model-sized image.

        Args:
            pixels: ``(H, W, 3)`` RGB 0..255.
            level: ``class`` or a grouping name.
            label: A class or group label at that level.

        Returns:
            ``(h, w)`` float32 in 0..1 at the feature map's resolution (all zeros when nothing in the
            image raises the answer's score).
        """
        batch = np.ascontiguousarray(pixels[np.newaxis], dtype=np.float32)
        with self._lock:
            _, features = self._engine.features(batch)
        features = features[0].astype(np.float64)
        cam = np.maximum(features @ (self.kernel.astype(np.float64) @ self.weights(features, level, label)), 0.0)
        peak = float(cam.max())
        return (cam / peak if peak > 0 else cam).astype(np.float32)


# Weak keys: a replaced classifier (tests, reloads) takes its explainer with it.
_explainers: "weakref.WeakKeyDictionary[Classifier, ClassActivationMap]" = weakref.WeakKeyDictionary()
_explainers_lock = threading.Lock()


def get_explainer(classifier: Classifier) -> ClassActivationMap:
    """The explainer of ``classifier``, made on first use and kept for the life of the classifier.

    Raises:
        ExplanationUnavailable: As :class:`ClassActivationMap`.
    """
    with _explainers_lock:
        if classifier not in _explainers:
            _explainers[classifier] = ClassActivationMap(classifier)
        return _explainers[classifier]


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


def explain_image(classifier: Classifier, photo: Image.Image, level: str, label: str
                  ) -> tuple[Image.Image, np.ndarray]:
    """The activation map of an answer for ``photo``, drawn over it.

    Args:
        classifier: The served classifier.
        photo: RGB image (the stored thumbnail).
        level: The answer's level: ``class`` or a grouping name.
        label: The answer's label at that level.

    Returns:
        ``(overlay image, heatmap over the photo)``.

    Raises:
        ExplanationUnavailable: The model cannot be explained, or has no such label.
    """
    explainer = get_explainer(classifier)
    pixels = fit_to_input(photo, classifier.image_size, classifier.resize_mode)
    cam = explainer.heatmap(pixels, level, label)
    heat = place_on_photo(cam, photo.size, classifier.image_size, classifier.resize_mode)
    return overlay(photo, heat), heat


def attention_box(heat: np.ndarray, share: float = 0.5) -> tuple[int, int, int, int] | None:
    """The smallest box around the pixels whose heat is at least ``share`` of the hottest one.

    Args:
        heat: The heatmap over the photo, ``(height, width)``, 0..1.
        share: Which part of the map counts as "where the model looked".

    Returns:
        ``(left, top, right, bottom)`` in pixels, right and bottom inclusive; ``None`` for a map with no heat.
    """
    peak = float(np.max(heat)) if heat.size else 0.0
    if peak <= 0:
        return None
    rows, columns = np.nonzero(heat >= share * peak)
    return int(columns.min()), int(rows.min()), int(columns.max()), int(rows.max())
