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
GEOMETRIC_SETTINGS = ("rotation", "width_shift", "height_shift", "shear", "zoom", "horizontal_flip")


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


class RandomAffine(keras.layers.Layer):
    """Random flip, rotation, shift, shear and zoom applied as ONE affine warp per image.

    Keras' separate ``RandomFlip/Rotation/Translation/Shear/Zoom`` layers each resample the whole batch
    (about 1.2 ms per 224 px image each on one core); composing the five into one matrix first gives the
    same family of transforms for the price of one resampling, with one interpolation blur instead of four.

    Args:
        rotation: Largest rotation, degrees (either direction).
        width_shift: Largest horizontal shift, fraction of the width.
        height_shift: Largest vertical shift, fraction of the height.
        shear: Largest shear factor, along each axis.
        zoom: Largest change of scale, e.g. 0.2 samples scales in [0.8, 1.2].
        horizontal_flip: Mirror half of the images left-right.
        fill_mode: How pixels outside the image are filled (``reflect``, ``nearest``, ``constant``, ...).
        seed: Seed of the layer's random generator.
    """

    def __init__(self, rotation: float = 0.0, width_shift: float = 0.0, height_shift: float = 0.0,
                 shear: float = 0.0, zoom: float = 0.0, horizontal_flip: bool = False,
                 fill_mode: str = "reflect", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.width_shift, self.height_shift = float(rotation), float(width_shift), float(height_shift)
        self.shear, self.zoom, self.horizontal_flip = float(shear), float(zoom), bool(horizontal_flip)
        self.fill_mode, self.seed = fill_mode, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, batch, limit: float):
        return keras.random.uniform((batch,), -limit, limit, seed=self.seed_generator)

    def transforms(self, batch, height, width):
        """``(batch, 8)`` output-to-input projective transforms about the image centre."""
        angle = self._uniform(batch, self.rotation * 3.141592653589793 / 180.0)
        cos, sin = keras.ops.cos(angle), keras.ops.sin(angle)
        shear_x, shear_y = self._uniform(batch, self.shear), self._uniform(batch, self.shear)
        scale_x = 1.0 + self._uniform(batch, self.zoom)
        scale_y = 1.0 + self._uniform(batch, self.zoom)
        if self.horizontal_flip:
            flip = keras.random.uniform((batch,), 0.0, 1.0, seed=self.seed_generator) < 0.5
            scale_x = keras.ops.where(flip, -scale_x, scale_x)
        # Linear part: rotation @ shear @ diag(scale_x, scale_y).
        a0 = (cos + -sin * shear_y) * scale_x
        a1 = (cos * shear_x - sin) * scale_y
        b0 = (sin + cos * shear_y) * scale_x
        b1 = (sin * shear_x + cos) * scale_y
        center_x, center_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        shift_x = self._uniform(batch, self.width_shift) * width
        shift_y = self._uniform(batch, self.height_shift) * height
        a2 = center_x - a0 * center_x - a1 * center_y + shift_x
        b2 = center_y - b0 * center_x - b1 * center_y + shift_y
        zeros = keras.ops.zeros_like(a0)
        return keras.ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)

    def call(self, images, training=True):
        if not training:
            return images
        shape = keras.ops.shape(images)
        height, width = keras.ops.cast(shape[1], "float32"), keras.ops.cast(shape[2], "float32")
        return keras.ops.image.affine_transform(images, self.transforms(shape[0], height, width),
                                                interpolation="bilinear", fill_mode=self.fill_mode)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "width_shift": self.width_shift,
                "height_shift": self.height_shift, "shear": self.shear, "zoom": self.zoom,
                "horizontal_flip": self.horizontal_flip, "fill_mode": self.fill_mode, "seed": self.seed}


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
    geometry = {key: settings.get(key, 0) for key in GEOMETRIC_SETTINGS}
    layers: list[keras.layers.Layer] = []
    if any(geometry.values()):
        layers.append(RandomAffine(rotation=geometry["rotation"], width_shift=geometry["width_shift"],
                                   height_shift=geometry["height_shift"], shear=geometry["shear"],
                                   zoom=geometry["zoom"], horizontal_flip=bool(geometry["horizontal_flip"]),
                                   fill_mode=settings.get("fill_mode", "reflect"), seed=seed))
    if settings.get("brightness"):
        layers.append(keras.layers.RandomBrightness(settings["brightness"], value_range=(0, 255), seed=seed))
    if settings.get("contrast"):
        layers.append(keras.layers.RandomContrast(settings["contrast"], value_range=(0, 255), seed=seed))
    if not layers:
        return None
    return keras.Sequential(layers, name="augmentation")


def _beta(shape, alpha: float) -> tf.Tensor:
    """Samples of Beta(alpha, alpha), from two Gamma draws (tf.random has no Beta)."""
    first = tf.random.gamma(shape, alpha)
    second = tf.random.gamma(shape, alpha)
    return first / (first + second)


def mix_batch(images: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor | None, *, mixup: float,
              cutmix: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """Mix each image of a batch with its partner in reversed batch order (mixup or cutmix).

    The batch was shuffled, so the reversed order is a random pairing. With both methods on, each batch
    uses one of them at random.

    Args:
        images: ``(N, H, W, 3)`` float32.
        labels: ``(N, C)`` one-hot (or smoothed) targets.
        weights: ``(N,)`` sample weights, or ``None``.
        mixup: Beta parameter of the mixup weight; 0 = off.
        cutmix: Beta parameter of the cutmix area; 0 = off.

    Returns:
        The mixed ``(images, labels, weights)``; labels and weights are mixed in the proportions of the pixels.
    """
    count = tf.shape(images)[0]
    partner_images, partner_labels = tf.reverse(images, [0]), tf.reverse(labels, [0])

    def apply_mixup():
        keep = _beta([count], mixup)
        return images * keep[:, None, None, None] + partner_images * (1.0 - keep[:, None, None, None]), keep

    def apply_cutmix():
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        side = tf.sqrt(1.0 - _beta([count], cutmix))
        box_h = tf.cast(tf.round(side * tf.cast(height, tf.float32)), tf.int32)
        box_w = tf.cast(tf.round(side * tf.cast(width, tf.float32)), tf.int32)
        top = tf.cast(tf.random.uniform([count]) * tf.cast(height - box_h + 1, tf.float32), tf.int32)
        left = tf.cast(tf.random.uniform([count]) * tf.cast(width - box_w + 1, tf.float32), tf.int32)
        rows, cols = tf.range(height)[None, :], tf.range(width)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
        pasted = tf.cast(in_rows[:, :, None] & in_cols[:, None, :], tf.float32)[..., None]
        keep = 1.0 - tf.reduce_mean(pasted, axis=[1, 2, 3])
        return images * (1.0 - pasted) + partner_images * pasted, keep

    if mixup and cutmix:
        mixed, keep = tf.cond(tf.random.uniform([]) < 0.5, apply_mixup, apply_cutmix)
    elif mixup:
        mixed, keep = apply_mixup()
    else:
        mixed, keep = apply_cutmix()
    mixed_labels = labels * keep[:, None] + partner_labels * (1.0 - keep[:, None])
    if weights is None:
        return mixed, mixed_labels, None
    return mixed, mixed_labels, weights * keep + tf.reverse(weights, [0]) * (1.0 - keep)


def make_dataset(paths: list[str], labels: list[int], *, num_classes: int, image_size: tuple[int, int],
                 resize_mode: str, batch_size: int, training: bool = False,
                 augmenter: keras.Sequential | None = None, sample_weights: dict[int, float] | None = None,
                 cache: bool = True, seed: int = 42, mixup: float = 0.0, cutmix: float = 0.0) -> tf.data.Dataset:
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
        mixup: Beta parameter for mixup of training batches (0: off); see :func:`mix_batch`.
        cutmix: Beta parameter for cutmix of training batches (0: off).

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
        weights = None if weight_table is None else tf.gather(weight_table, label_ids)
        if training and (mixup or cutmix):
            images, one_hot, weights = mix_batch(images, one_hot, weights, mixup=mixup, cutmix=cutmix)
        if weights is None:
            return images, one_hot
        return images, one_hot, weights

    ds = ds.map(to_model_inputs, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def decode_scene(path: tf.Tensor) -> tf.Tensor:
    """Read and decode one photo as it is (uint8 RGB, any size), for :func:`scene_crop`."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.ensure_shape(image, (None, None, 3))


def scene_crop(image: tf.Tensor, size: tuple[int, int], area: tuple[float, float]) -> tf.Tensor:
    """A random resized crop of a whole photo, of about the input's shape, fitted to ``size``.

    The crop covers ``area`` of the photo (as a fraction) and has the input's aspect ratio give or take a
    third, so that training sees the car at many scales and positions in its scene, and sees the
    centred crop that serving uses among them.

    Args:
        image: ``(H, W, 3)`` uint8 photo.
        size: ``(height, width)`` of the model input.
        area: Smallest and largest fraction of the photo a crop covers.

    Returns:
        ``(height, width, 3)`` float32 image, 0..255.
    """
    aspect = size[1] / size[0]
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), min_object_covered=0.0,
        aspect_ratio_range=(aspect * 0.75, aspect * 4 / 3), area_range=area, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    resized = tf.image.resize(crop, size, antialias=True)
    return tf.ensure_shape(tf.clip_by_value(resized, 0.0, 255.0), (*size, 3))


def _labelled(paths: list[str], class_ids: list[int], make_ids: list[int]) -> tf.data.Dataset:
    """``(path, class id or -1, make id)`` rows."""
    return tf.data.Dataset.from_tensor_slices((list(paths), list(class_ids), list(make_ids)))


def _targets(class_id, make_id, *, num_classes: int, num_makes: int, class_weights: tf.Tensor | None):
    """Both outputs' one-hot targets and sample weights; a photo without a class (-1) weighs 0 for classes."""
    has_class = class_id >= 0
    safe = tf.maximum(class_id, 0)
    class_weight = tf.gather(class_weights, safe) if class_weights is not None else tf.constant(1.0)
    class_weight = tf.where(has_class, class_weight, 0.0)
    return ((tf.one_hot(safe, num_classes), tf.one_hot(make_id, num_makes)),
            (class_weight, tf.constant(1.0)))


def make_multitask_dataset(class_split, class_make: list[int], make_only, *, num_classes: int, num_makes: int,
                           image_size: tuple[int, int], resize_mode: str, batch_size: int, training: bool = False,
                           augmenter: keras.Sequential | None = None, class_weights: dict[int, float] | None = None,
                           make_share: float = 0.5, class_area: tuple[float, float] = (0.6, 1.0),
                           scene_area: tuple[float, float] = (0.3, 1.0), seed: int = 42) -> tf.data.Dataset:
    """Batches of ``(images, (class one-hot, make one-hot), (class weight, make weight))`` from two sources.

    Photos with a class (``class_split``) teach both outputs; photos labelled by make only (``make_only``)
    teach the make output alone: their class weight is 0, so no gradient reaches the class output from
    them. In training the two sources are drawn independently, ``make_share`` of each batch from the
    make-only photos, so that neither swamps the other whatever their sizes, and every photo is a
    :func:`scene_crop` of itself (make-only photos are whole scenes, so their crops reach further in).
    Decoded photos are cached in memory at their own size; the crops are fresh every epoch.

    Args:
        class_split: :class:`training.data.Split` of class-labelled photos.
        class_make: Make index of each class.
        make_only: :class:`training.data.Split` of make-labelled photos (labels are make indices).
        num_classes: Class output width.
        num_makes: Make output width.
        image_size: ``(height, width)``.
        resize_mode: The serving fit, used for evaluation batches (see :func:`fit_to_size`).
        batch_size: Batch size.
        training: Infinite, shuffled, cropped and augmented batches (pass ``steps_per_epoch`` to ``fit``);
            otherwise every photo once, fitted as served.
        augmenter: From :func:`build_augmenter`, applied to training batches.
        class_weights: ``{class index: weight}`` for the class output, or ``None``.
        make_share: Fraction of each training batch drawn from the make-only photos.
        class_area: :func:`scene_crop` area range for class-labelled photos (usually cropped to the car).
        scene_area: :func:`scene_crop` area range for make-only photos.
        seed: Shuffle and sampling seed.

    Returns:
        The ``tf.data.Dataset``.
    """
    size = (int(image_size[0]), int(image_size[1]))
    table = None if class_weights is None else tf.constant(
        [class_weights.get(c, 0.0) for c in range(num_classes)], tf.float32)
    targets = dict(num_classes=num_classes, num_makes=num_makes, class_weights=table)
    with_class = _labelled(class_split.paths, class_split.labels, [class_make[c] for c in class_split.labels])
    make_rows = _labelled(make_only.paths, [-1] * len(make_only), make_only.labels)
    if not training:
        rows = with_class.concatenate(make_rows) if len(make_only) else with_class
        ds = rows.map(lambda p, c, m: (tf.cast(load_image(p, size, resize_mode), tf.float32),
                                       *_targets(c, m, **targets)), num_parallel_calls=AUTOTUNE)
        return ds.batch(batch_size).prefetch(AUTOTUNE)

    def stream(rows: tf.data.Dataset, count: int, area: tuple[float, float], offset: int) -> tf.data.Dataset:
        decoded = rows.map(lambda p, c, m: (decode_scene(p), c, m), num_parallel_calls=AUTOTUNE).cache()
        shuffled = decoded.repeat().shuffle(count, seed=seed + offset)
        return shuffled.map(lambda image, c, m: (scene_crop(image, size, area), *_targets(c, m, **targets)),
                            num_parallel_calls=AUTOTUNE)

    sources = [stream(with_class, len(class_split), class_area, 0)]
    weights = [1.0]
    if len(make_only) and make_share > 0:
        sources.append(stream(make_rows, len(make_only), scene_area, 1))
        weights = [1.0 - make_share, make_share]
    ds = tf.data.Dataset.sample_from_datasets(sources, weights=weights, seed=seed) if len(sources) > 1 else sources[0]
    ds = ds.batch(batch_size, drop_remainder=True)

    def augment(images, labels, sample_weights):
        if augmenter is not None:
            images = tf.clip_by_value(augmenter(images, training=True), 0.0, 255.0)
        return images, labels, sample_weights

    return ds.map(augment, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
