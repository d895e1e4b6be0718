"""The tf.data pipeline: resizing like the app, augmentation shapes, labels and sample weights."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from training.pipeline import RandomAffine, build_augmenter, fit_to_size, make_dataset

DEFAULT_AUGMENT = {"enabled": True, "rotation": 40.0, "width_shift": 0.2, "height_shift": 0.2, "shear": 0.2,
                   "zoom": 0.2, "horizontal_flip": True, "brightness": 0.2, "contrast": 0.2}


@pytest.mark.parametrize("mode", ["center_crop", "stretch", "pad"])
def test_training_resize_matches_the_app(mode, tmp_path):
    from inference.imaging import fit_to_input

    rng = np.random.default_rng(0)
    # A smooth wide image: resampling filters agree on smooth content, so the difference measures layout.
    base = rng.integers(0, 256, (6, 12, 3)).astype(np.uint8)
    photo = Image.fromarray(base).resize((240, 120), Image.Resampling.BICUBIC)
    ours = fit_to_size(np.asarray(photo), (64, 64), mode).numpy().astype(float)
    app = np.asarray(fit_to_input(photo, (64, 64), mode), dtype=float)
    assert ours.shape == app.shape == (64, 64, 3)
    assert np.abs(ours - app).mean() < 6.0


def test_augmenter_keeps_shape_and_range_and_changes_pixels():
    augmenter = build_augmenter(DEFAULT_AUGMENT, seed=1)
    assert [layer.__class__.__name__ for layer in augmenter.layers] == [
        "RandomAffine", "RandomBrightness", "RandomContrast"]
    batch = np.random.default_rng(1).uniform(0, 255, (4, 40, 56, 3)).astype("float32")
    out = np.asarray(augmenter(batch, training=True))
    assert out.shape == batch.shape
    assert out.dtype == np.float32
    assert not np.allclose(out, batch)
    np.testing.assert_allclose(np.asarray(augmenter(batch, training=False)), batch)


def test_augmenter_can_be_disabled():
    assert build_augmenter({**DEFAULT_AUGMENT, "enabled": False}) is None
    assert build_augmenter({key: 0 for key in DEFAULT_AUGMENT}) is None


def test_dataset_yields_float_images_one_hot_labels_and_weights(image_folder):
    from training.data import class_weights, load_dataset

    dataset = load_dataset(image_folder)
    train = dataset.splits["train"]
    weights = class_weights(train.labels, 3)
    ds = make_dataset(train.paths, train.labels, num_classes=3, image_size=(24, 40), resize_mode="center_crop",
                      batch_size=5, training=True, augmenter=build_augmenter(DEFAULT_AUGMENT, seed=0),
                      sample_weights=weights)
    seen = 0
    for images, one_hot, sample_weights in ds:
        assert images.shape[1:] == (24, 40, 3) and images.dtype.name == "float32"
        assert float(np.min(images)) >= 0.0 and float(np.max(images)) <= 255.0
        np.testing.assert_allclose(np.asarray(one_hot).sum(axis=1), 1.0)
        expected = [weights[int(i)] for i in np.argmax(one_hot, axis=1)]
        np.testing.assert_allclose(np.asarray(sample_weights), expected, rtol=1e-6)
        seen += images.shape[0]
    assert seen == len(train)


def test_evaluation_dataset_is_deterministic(image_folder):
    from training.data import load_dataset

    val = load_dataset(image_folder).splits["val"]
    kwargs = dict(num_classes=3, image_size=(16, 16), resize_mode="stretch", batch_size=4)
    first = np.concatenate([x for x, _ in make_dataset(val.paths, val.labels, **kwargs)])
    second = np.concatenate([x for x, _ in make_dataset(val.paths, val.labels, **kwargs)])
    np.testing.assert_array_equal(first, second)


def test_affine_with_no_ranges_is_the_identity():
    batch = np.random.default_rng(2).uniform(0, 255, (3, 24, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(RandomAffine(seed=0)(batch, training=True)), batch, atol=1e-3)


def test_affine_flip_mirrors_some_images_and_keeps_the_others():
    batch = np.random.default_rng(3).uniform(0, 255, (16, 20, 30, 3)).astype("float32")
    out = np.asarray(RandomAffine(horizontal_flip=True, seed=0)(batch, training=True))
    mirrored = [np.allclose(o, b[:, ::-1], atol=1e-3) for o, b in zip(out, batch)]
    kept = [np.allclose(o, b, atol=1e-3) for o, b in zip(out, batch)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert any(mirrored) and any(kept)


def test_affine_shift_moves_the_content():
    """A bright square moves by at most the shift range, and not always by zero."""
    batch = np.zeros((8, 40, 40, 3), dtype="float32")
    batch[:, 16:24, 16:24] = 255.0
    out = np.asarray(RandomAffine(width_shift=0.25, height_shift=0.25, fill_mode="constant", seed=0)(batch, training=True))
    centres = [np.argwhere(image[..., 0] > 127).mean(axis=0) for image in out]
    offsets = np.abs(np.array(centres) - 19.5)
    assert offsets.max() <= 0.25 * 40 + 1
    assert offsets.max() > 1
