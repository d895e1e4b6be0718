"""Heatmaps of stored predictions: computed from the stored thumbnail, cached as PNG files.

The original upload is never stored, so the heatmap is computed from what is kept: the stored thumbnail
(up to 320 pixels, larger than any model input here), fitted to the model input exactly as the upload
was. It explains the prediction's answer (its top class when it has none) and is cached as a PNG
(``EXPLANATION_CACHE_DIR``, by default under the instance folder), one file per prediction and model
version. The folder is bounded by ``EXPLANATION_CACHE_MAX_BYTES``: after each write the least recently
used files (a hit refreshes a file's time) are removed until it fits, so asking for every prediction's
heatmap cannot fill the disk. A box outlines the hottest region, where the model looked.
"""

from __future__ import annotations

import io
import os
import re
import threading
from pathlib import Path
from typing import Any

from flask import current_app
from PIL import Image, ImageDraw

from inference.artifact import CLASS_LEVEL
from inference.classifier import Classifier
from inference.explain import attention_box, explain_image
from .serving import get_classifier

CACHE_FOLDER = "explanations"


def cache_path(prediction: Any, classifier: Classifier) -> Path:
    """Where the heatmap PNG of ``prediction`` under the served model version is cached."""
    version = re.sub(r"[^A-Za-z0-9._-]", "_", f"{classifier.name}-{classifier.version}")
    folder = current_app.config.get("EXPLANATION_CACHE_DIR") or Path(current_app.instance_path) / CACHE_FOLDER
    # "boxed": heatmaps cached before the attention box was drawn are not served again.
    return Path(folder) / f"{prediction.id}-{prediction.sha256[:16]}-{version}-boxed.png"


def draw_box(image: Image.Image, heat) -> Image.Image:
    """Outline where the model looked (:func:`inference.explain.attention_box`), white over dark so it
    shows on any photo."""
    box = attention_box(heat)
    if box is None:
        return image
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = box
    draw.rectangle((left, top, right, bottom), outline=(20, 20, 20), width=3)
    draw.rectangle((left + 1, top + 1, right - 1, bottom - 1), outline=(255, 255, 255), width=1)
    return image


def explained_answer(prediction: Any) -> tuple[str, str]:
    """``(level, label)`` a prediction's heatmap explains: its answer, else its top class (also when a
    taught label answered: the model has no weights for it, only for its own classes)."""
    answer = getattr(prediction, "answer", None)
    if answer and answer.get("source", "model") == "model":
        return answer["level"], answer["label"]
    return CLASS_LEVEL, prediction.top_label


def explanation_png(prediction: Any) -> bytes:
    """The heatmap PNG for a stored prediction, from the cache or computed now and cached.

    Args:
        prediction: A :class:`app.models.Prediction`.

    Returns:
        PNG bytes, the size of the stored thumbnail.

    Raises:
        ExplanationUnavailable: As :func:`inference.explain.explain_image`.
    """
    classifier = get_classifier()
    path = cache_path(prediction, classifier)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        pass
    else:
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:
            pass
        return data
    level, label = explained_answer(prediction)
    with Image.open(io.BytesIO(prediction.thumbnail)) as thumbnail:
        image, heat = explain_image(classifier, thumbnail.convert("RGB"), level, label)
    image = draw_box(image, heat)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{threading.get_ident()}.tmp")
    partial.write_bytes(data)
    partial.replace(path)  # atomic: a concurrent reader never sees half a file
    evict(path.parent, current_app.config["EXPLANATION_CACHE_MAX_BYTES"], keep=path)
    return data


def evict(folder: Path, max_bytes: int, keep: Path | None = None) -> int:
    """Remove the least recently used heatmaps of ``folder`` until the PNGs there total ``max_bytes`` or less.

    Several workers may evict at once; a file another one removed first is simply skipped.

    Args:
        folder: The cache folder.
        max_bytes: The size to get down to.
        keep: A file never removed (the one just written, which the caller returns).

    Returns:
        How many files were removed.
    """
    entries = []
    for entry in os.scandir(folder):
        if not entry.name.endswith(".png"):
            continue
        try:
            stat = entry.stat()
        except FileNotFoundError:
            continue
        entries.append((stat.st_mtime, stat.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, name in sorted(entries):
        if total <= max_bytes:
            break
        if keep is not None and Path(name) == keep:
            continue
        try:
            os.unlink(name)
            removed += 1
        except FileNotFoundError:
            pass
        total -= size
    return removed
