"""Plain helpers the tests share: paths, tiny real Keras models exported as artifacts, images.

Test modules import these from here, never from ``conftest`` (two conftest modules exist, and the name
``conftest`` points at whichever pytest loaded last).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
STANFORD_VAL = SHARED / "datasets" / "stanford-cars" / "val"
COLOR_LABELS = ["red", "green", "blue"]
COLOR_RGB = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230)}


def build_color_model(image_size: tuple[int, int]):
    """Rescaling -> global average pooling -> Dense with hand-set weights -> softmax.

    The logit of each class is 10 x the mean of its channel (0..1), so a mostly red photo says "red".
    """
    import keras

    inputs = keras.Input((*image_size, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(3, activation="softmax")
    outputs = dense(x)
    dense.set_weights([np.eye(3, dtype="float32") * 10.0, np.zeros(3, dtype="float32")])
    return keras.Model(inputs, outputs)


def build_random_model(image_size: tuple[int, int], num_classes: int, seed: int = 7):
    """A small conv net with seeded random weights: spatially sensitive, like a real classifier."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*image_size, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def export(model, labels, out_dir: Path, *, name: str, image_size, resize_mode="center_crop",
           litert=True) -> Path:
    """Write ``model`` as an artifact folder with ``training.export``."""
    from training.export import build_metadata, export_artifact

    metadata = build_metadata(name=name, version="0.0.1-test", backbone="tiny-test",
                              image_size=image_size, labels=labels, resize_mode=resize_mode,
                              metrics={"val_accuracy": 1.0})
    return export_artifact(model, labels, metadata, out_dir, litert=litert)


def with_metadata(artifact: Path, out: Path, **changes) -> Path:
    """A copy of ``artifact`` at ``out`` whose ``metadata.json`` has ``changes`` applied."""
    shutil.copytree(artifact, out)
    metadata = json.loads((out / "metadata.json").read_text())
    metadata.update(changes)
    (out / "metadata.json").write_text(json.dumps(metadata))
    return out


def encode(img: Image.Image, fmt: str = "JPEG", **save_kwargs) -> bytes:
    """Encode a Pillow image in memory."""
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def stanford_photos(count: int) -> list[Path]:
    """The first photo of each of the first ``count`` classes of the Stanford Cars val split."""
    if not STANFORD_VAL.is_dir():
        pytest.skip(f"real photos not available: {STANFORD_VAL} is missing (shared datasets not mounted)")
    photos = []
    for folder in sorted(p for p in STANFORD_VAL.iterdir() if p.is_dir()):
        first = next(iter(sorted(folder.glob("*.jpg"))), None)
        if first:
            photos.append(first)
        if len(photos) == count:
            break
    return photos


def manual_text() -> str:
    """README.md and every page of the MkDocs manual in ``docs/``, one after the other.

    Generated blocks and ``<!-- section:NAME -->`` markers may sit on any page, so tests look for them here.
    """
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)
