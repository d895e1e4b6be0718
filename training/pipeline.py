"""The ``tf.data`` input pipeline and the Keras-layer augmentation that runs inside it.

Images are decoded in parallel, fitted to the model input the same way the app fits an uploaded photo
(``resize_mode``), cached in memory as uint8 and batched; augmentation runs on whole batches after the
cache, so it is fresh every epoch, and never becomes part of the exported model.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def fit_to_size(image: tf.Tensor, size: tuple[int, int], resize_mode: str) -> tf.Tensor:
    """Fit a decoded uint8 image to ``size`` as the app does for ``resize_mode``.

    Args:
        image: ``(H, W, 3)`` uint8 tensor.
        size: ``(height, width)``.
        resize_mode: ``center_crop`` (shorter side to the input size, then a centred crop), ``stretch``
            or ``pad`` (letterbox on black).

    Returns:
        ``(height, width, 3)`` uint8 tensor.
    """
    height, width = size
    if resize_mode == "stretch":
        resized = tf.image.resize(image, size, antialias=True)
    elif resize_mode == "pad":
        resized = tf.image.resize_with_pad(tf.cast(image, tf.float32), height, width, antialias=True)
    elif resize_mode == "center_crop":
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = tf.maximum(height / shape[0], width / shape[1])
        new_size = tf.cast(tf.math.ceil(shape * scale), tf.int32)
        new_size = tf.maximum(new_size, [height, width])
        resized = tf.image.resize(image, new_size, antialias=True)
        top = (new_size[0] - height) // 2
        left = (new_size[1] - width) // 2
        resized = resized[top:top + height, left:left + width]
    else:
        raise ValueError(f"unknown resize_mode {resize_mode!r}")
    resized = tf.ensure_shape(resized, (height, width, 3))
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def load_image(path: tf.Tensor, size: tuple[int, int], resize_mode: str) -> tf.Tensor:
    """Read, decode (JPEG/PNG/GIF/BMP, grey or RGBA become RGB) and fit one image."""
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return fit_to_size(image, size, resize_mode)


def build_augmenter(settings: dict[str, Any], seed: int | None = None) -> keras.Sequential | None:
    """Build the augmentation stack from the ``augment`` configuration section.

    Args:
        settings: ``rotation`` (degrees), ``width_shift``/``height_shift``/``shear``/``zoom`` (fractions),
            ``horizontal_flip``, ``brightness``/``contrast`` (factors), ``fill_mode``, ``enabled``.
        seed: Optional seed for the random layers.

    Returns:
        A ``keras.Sequential`` of preprocessing layers taking and returning float32 0..255 batches, or
        ``None`` when augmentation is disabled or every setting is zero.
    """
    if not settings.get("enabled", True):
        return None
    fill = settings.get("fill_mode", "reflect")
    layers: list[keras.layers.Layer] = []
    if settings.get("horizontal_flip"):
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if settings.get("rotation"):
        layers.append(keras.layers.RandomRotation(settings["rotation"] / 360.0, fill_mode=fill, seed=seed))
    if settings.get("width_shift") or settings.get("height_shift"):
        layers.append(keras.layers.RandomTranslation(settings.get("height_shift", 0.0),
                                                     settings.get("width_shift", 0.0), fill_mode=fill, seed=seed))
    if settings.get("shear"):
        layers.append(keras.layers.RandomShear(settings["shear"], settings["shear"], fill_mode=fill, seed=seed))
    if settings.get("zoom"):
        layers.append(keras.layers.RandomZoom(settings["zoom"], fill_mode=fill, seed=seed))
    if settings.get("brightness"):
        layers.append(keras.layers.RandomBrightness(settings["brightness"], value_range=(0, 255), seed=seed))
    if settings.get("contrast"):
        layers.append(keras.layers.RandomContrast(settings["contrast"], value_range=(0, 255), seed=seed))
    if not layers:
        return None
    return keras.Sequential(layers, name="augmentation")


def make_dataset(paths: list[str], labels: list[int], *, num_classes: int, image_size: tuple[int, int],
                 resize_mode: str, batch_size: int, training: bool = False,
                 augmenter: keras.Sequential | None = None, sample_weights: dict[int, float] | None = None,
                 cache: bool = True, seed: int = 42) -> tf.data.Dataset:
    """Build the batched dataset of ``(float32 images 0..255, one-hot labels[, sample weights])``.

    Args:
        paths: Image files.
        labels: Label index per file.
        num_classes: Width of the one-hot labels (label smoothing needs one-hot targets).
        image_size: ``(height, width)``.
        resize_mode: See :func:`fit_to_size`.
        batch_size: Batch size.
        training: Shuffle every epoch and apply ``augmenter``.
        augmenter: From :func:`build_augmenter`; ignored unless ``training``.
        sample_weights: ``{class index: weight}``; adds a third element per batch.
        cache: Keep the decoded, resized uint8 images in memory.
        seed: Shuffle seed.

    Returns:
        The ``tf.data.Dataset``.
    """
    if not paths:
        raise ValueError("no images to build a dataset from")
    size = (int(image_size[0]), int(image_size[1]))
    ds = tf.data.Dataset.from_tensor_slices((list(paths), list(labels)))
    ds = ds.map(lambda p, y: (load_image(p, size, resize_mode), y), num_parallel_calls=AUTOTUNE,
                deterministic=True)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    weight_table = None
    if sample_weights is not None:
        weight_table = tf.constant([sample_weights.get(c, 0.0) for c in range(num_classes)], tf.float32)

    def to_model_inputs(images, label_ids):
        images = tf.cast(images, tf.float32)
        if training and augmenter is not None:
            images = augmenter(images, training=True)
            images = tf.clip_by_value(images, 0.0, 255.0)
        one_hot = tf.one_hot(label_ids, num_classes)
        if weight_table is None:
            return images, one_hot
        return images, one_hot, tf.gather(weight_table, label_ids)

    ds = ds.map(to_model_inputs, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
