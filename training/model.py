"""Classifier construction and the two transfer-learning phases.

``build_model`` wraps a registry backbone as ``input (float32 RGB 0..255) -> preprocessing -> backbone
(run in inference mode) -> global average pooling -> dropout -> dense softmax``. Phase 1 trains the head
on the frozen backbone; :func:`unfreeze_model` then opens the top N blocks (or all of them) for phase 2,
keeping every BatchNormalization layer frozen unless asked otherwise, because small batches would wreck
its ImageNet statistics.
"""

from __future__ import annotations

from pathlib import Path

import keras

from training.backbones import Backbone, block_names, get_backbone, preprocessing_layer

BACKBONE_LAYER = "backbone"
CLASS_OUTPUT = "probabilities"
MAKE_OUTPUT = "make_probabilities"
# Dense layers copied from a saved classifier by ``--weights model.keras`` when their shapes match.
HEAD_LAYERS = ("hidden", "logits", "make_logits")


def _backbone_weights(weights: str | None) -> str | None:
    """Turn the ``--weights`` value into what ``keras.applications`` accepts (model files come later)."""
    if not is_pretrained(weights):
        return None
    if weights == "imagenet":
        return "imagenet"
    if str(weights).endswith(".keras"):
        return None  # copied from the saved classifier after building, see _copy_saved_weights
    return str(weights)


def is_pretrained(weights: str | None) -> bool:
    """Whether ``--weights`` starts the backbone from learned weights."""
    return weights not in (None, "none", "None")


def _copy_backbone_weights(backbone: keras.Model, model_path: str) -> None:
    """Start a bare backbone from the backbone of an earlier classifier saved as ``model.keras``."""
    source = keras.saving.load_model(model_path, compile=False)
    backbone.set_weights(source.get_layer(BACKBONE_LAYER).get_weights())


def _copy_saved_weights(model: keras.Model, model_path: str) -> list[str]:
    """Start from an earlier classifier saved as ``model.keras``: its backbone, and its heads where they fit.

    A head layer (``logits``, ``make_logits``, ``hidden``) is copied only when the saved one has the same
    shapes, so a 196-class model can seed a new model's class head while its new make head starts afresh.

    Returns:
        The names of the head layers copied.
    """
    source = keras.saving.load_model(model_path, compile=False)
    model.get_layer(BACKBONE_LAYER).set_weights(source.get_layer(BACKBONE_LAYER).get_weights())
    copied = []
    saved = {layer.name: layer for layer in source.layers}
    for name in HEAD_LAYERS:
        ours = next((layer for layer in model.layers if layer.name == name), None)
        theirs = saved.get(name)
        if ours is None or theirs is None:
            continue
        weights = theirs.get_weights()
        if [w.shape for w in weights] == [tuple(w.shape) for w in ours.weights]:
            ours.set_weights(weights)
            copied.append(name)
    return copied


def build_model(backbone_name: str, num_classes: int, *, weights: str | None = "imagenet",
                image_size: tuple[int, int] | None = None, dropout: float = 0.2, l2: float = 0.0,
                hidden_units: int = 0, make_classes: int = 0, train_batchnorm: bool = False,
                name: str = "classifier") -> keras.Model:
    """Build the classifier with a frozen backbone.

    Args:
        backbone_name: Registry name (see :mod:`training.backbones`).
        num_classes: Output width.
        weights: ``imagenet``, ``none``, a weights file for the backbone, or a ``model.keras`` saved by
            this package whose backbone weights are copied.
        image_size: ``(height, width)``; the backbone default when ``None``.
        dropout: Dropout rate before the classifier layer (and before the hidden layer, if any).
        l2: L2 penalty on the classifier kernel.
        hidden_units: Width of a ReLU layer between pooling and the classifier (0: none). It lets a
            coarse label be a union of scattered feature clusters (premium = many unrelated models).
        make_classes: Width of a second softmax output, ``make_probabilities``, on the same pooled
            features (0: none). It is trained on every photo whose make is known, including photos that
            have no class, so the make answer can know cars the classes do not.
        train_batchnorm: Let BatchNormalization use batch statistics once its layers are unfrozen;
            otherwise a pretrained backbone keeps its ImageNet statistics throughout.
        name: Keras model name.

    Returns:
        The uncompiled model; its backbone is the layer named ``backbone``, frozen. Its output is the
        class probabilities, or ``[class probabilities, make probabilities]`` with ``make_classes``.
    """
    entry: Backbone = get_backbone(backbone_name)
    height, width = image_size or entry.image_size
    backbone = entry.build(_backbone_weights(weights), (height, width, 3))
    backbone.name = BACKBONE_LAYER
    backbone.trainable = False

    inputs = keras.Input(shape=(height, width, 3), dtype="float32", name="image")
    x = inputs
    preprocess = preprocessing_layer(entry.preprocessing)
    if preprocess is not None:
        x = preprocess(x)
    # Pretrained: training=False keeps BatchNormalization in inference mode in both phases, so its
    # ImageNet statistics survive small fine-tuning batches. From scratch there are no statistics to
    # keep, and the layers must learn them.
    # A frozen layer runs in inference mode anyway, so the phase-1 head never moves the statistics.
    x = backbone(x, training=False) if is_pretrained(weights) and not train_batchnorm else backbone(x)
    pooled = x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    regularizer = keras.regularizers.L2(l2) if l2 else None
    if hidden_units:
        if dropout:
            x = keras.layers.Dropout(dropout, name="hidden_dropout")(x)
        x = keras.layers.Dense(hidden_units, activation="relu", kernel_regularizer=regularizer, name="hidden")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    # Softmax in float32 even under mixed precision: probabilities must sum to 1 precisely.
    outputs = keras.layers.Activation("softmax", dtype="float32", name=CLASS_OUTPUT)(x)
    if make_classes:
        outputs = [outputs, _make_head(pooled, make_classes, dropout, regularizer)]
    model = keras.Model(inputs, outputs, name=name)
    if weights and str(weights).endswith(".keras"):
        _copy_saved_weights(model, str(weights))
    return model


def _make_head(pooled, make_classes: int, dropout: float, regularizer):
    """The make output: its own dropout and dense softmax on the pooled features."""
    x = keras.layers.Dropout(dropout, name="make_dropout")(pooled) if dropout else pooled
    x = keras.layers.Dense(make_classes, kernel_regularizer=regularizer, name="make_logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name=MAKE_OUTPUT)(x)


def has_make_head(model: keras.Model) -> bool:
    """Whether ``model`` has the make output of :func:`build_model`."""
    return len(model.outputs) > 1 and any(layer.name == MAKE_OUTPUT for layer in model.layers)


def unfreeze_model(model: keras.Model, backbone_name: str, blocks: int, *, freeze_batchnorm: bool = True
                   ) -> list[str]:
    """Make the top ``blocks`` blocks of the backbone trainable, BatchNormalization excepted.

    Args:
        model: From :func:`build_model`.
        backbone_name: Registry name, for the block layout.
        blocks: How many blocks, counted from the top; a number above the block count opens them all,
            the stem included (a full fine-tune).
        freeze_batchnorm: Keep BatchNormalization layers frozen (pretrained backbones); a backbone
            trained from scratch needs them trainable.

    Returns:
        The names of the unfrozen blocks, top first (``stem`` last when it opened).
    """
    backbone = model.get_layer(BACKBONE_LAYER)
    names = block_names(backbone, get_backbone(backbone_name).block_pattern)
    ordered = list(dict.fromkeys(n for n in names if n is not None))
    chosen: set[str | None] = set(ordered[-blocks:]) if blocks > 0 else set()
    if blocks > len(ordered):
        chosen.add(None)  # more blocks than there are: the stem before the first block opens too
    backbone.trainable = bool(chosen)
    for layer, block in zip(backbone.layers, names):
        is_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = block in chosen and not (is_norm and freeze_batchnorm)
    return [b for b in reversed(ordered) if b in chosen] + (["stem"] if None in chosen else [])


def count_params(model: keras.Model) -> dict[str, int]:
    """Trainable and total parameter counts."""
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    total = sum(int(w.numpy().size) for w in model.weights)
    return {"trainable": trainable, "total": total}


def inference_copy(model: keras.Model, backbone_name: str, num_classes: int, *,
                   image_size: tuple[int, int], name: str, **head) -> keras.Model:
    """A float32, uncompiled twin of ``model`` with the same weights, for export.

    Saving the training model would store its optimizer state (doubling the file) and, under mixed
    precision, a bfloat16 compute policy; the twin has neither.

    Args:
        model: The trained model.
        backbone_name: Registry name.
        num_classes: Output width.
        image_size: ``(height, width)``.
        head: ``dropout``, ``l2``, ``hidden_units`` as in training, so the weights line up.
        name: Keras model name.

    Returns:
        The clean model.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        twin = build_model(backbone_name, num_classes, weights=None, image_size=image_size, name=name, **head)
    finally:
        keras.config.set_dtype_policy(previous)
    twin.set_weights(model.get_weights())
    twin.trainable = False
    return twin


def load_weights_into(model: keras.Model, checkpoint: str | Path) -> None:
    """Load a ``.weights.h5`` checkpoint; the optimizer state it may hold is not needed and skipped."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(str(checkpoint))


def load_model(path: str | Path) -> keras.Model:
    """Load a saved classifier without its training state."""
    return keras.saving.load_model(str(path), compile=False)
