"""Fixtures for the training tests: tiny generated image folders and one tiny trained artifact.

The generated classes differ in colour and in the position of a bright square, so even a one-epoch
model learns something, and every image is different enough not to count as a near duplicate.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
STANFORD = SHARED / "datasets" / "stanford-cars"
SHARED_KERAS = SHARED / "keras"
CLASS_COLORS = {"blue": (30, 40, 210), "green": (40, 190, 60), "red": (210, 40, 30)}


def make_photo(color: tuple[int, int, int], index: int, size: tuple[int, int]) -> Image.Image:
    """A noisy image of one colour with a white square whose place depends on ``index``."""
    rng = np.random.default_rng(index * 7919 + sum(color))
    width, height = size
    pixels = np.clip(np.asarray(color, dtype=float) + rng.normal(0, 40, (height, width, 3)), 0, 255)
    x = (index * 13) % max(1, width - 16)
    y = (index * 7) % max(1, height - 16)
    pixels[y:y + 14, x:x + 14] = 255
    return Image.fromarray(pixels.astype(np.uint8))


def write_class_folder(root: Path, per_class: int, *, classes=CLASS_COLORS, start: int = 0) -> Path:
    """Write ``root/<class>/<n>.jpg`` (one PNG and one greyscale JPEG per class to exercise decoding)."""
    for class_index, (name, color) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            image = make_photo(color, i + 100 * class_index, (48 + 9 * (i % 5), 40 + 5 * (i % 3)))
            if i == start + 1:
                image.save(folder / f"{i:03d}.png")
            elif i == start + 2:
                image.convert("L").save(folder / f"{i:03d}.jpg")
            else:
                image.save(folder / f"{i:03d}.jpg", quality=92)
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """Three classes of 10 images each, no train/ val/ sub-folders."""
    return write_class_folder(tmp_path_factory.mktemp("flat"), 10)


@pytest.fixture(scope="session")
def presplit_folder(tmp_path_factory) -> Path:
    """The same classes already split into train/ (8 each) and val/ (3 each)."""
    root = tmp_path_factory.mktemp("presplit")
    write_class_folder(root / "train", 8)
    write_class_folder(root / "val", 3, start=50)
    return root


TINY_OVERRIDES = {
    "model.backbone": "small_cnn",
    "model.weights": "none",
    "model.image_size": [32, 32],
    "model.resize_mode": "stretch",
    "train.head_epochs": 1,
    "train.fine_tune_epochs": 1,
    "train.unfreeze_blocks": 1,
    "train.batch_size": 8,
    "train.verbose": 0,
}


@pytest.fixture(scope="session")
def trained(tmp_path_factory, image_folder) -> dict:
    """One tiny training run (small CNN, 32x32, 1 + 1 epochs) with its artifact; shared by many tests."""
    from training.config import resolve
    from training.train import run_training

    work = tmp_path_factory.mktemp("trained")
    config = resolve(None, {**TINY_OVERRIDES, "name": "tiny-colors", "data.path": str(image_folder),
                            "train.runs_dir": str(work / "runs"), "export.out": str(work / "artifact")})
    result = run_training(config)
    return {**result, "config": config}


@pytest.fixture(scope="session")
def keras_home(tmp_path_factory) -> Path:
    """A writable copy of ``../shared/keras`` (Keras writes into its cache folder)."""
    if not SHARED_KERAS.is_dir():
        pytest.skip(f"needs the ImageNet weights cache at {SHARED_KERAS} (../shared is absent)")
    target = tmp_path_factory.mktemp("keras_home") / "keras"
    shutil.copytree(SHARED_KERAS, target)
    return target
