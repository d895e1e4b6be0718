"""The gallery's store: taught examples in the database, one in-memory :class:`inference.gallery.Gallery`
per worker.

Every change (teach, remove) bumps the one-row counter ``gallery_state.version`` in the same transaction.
A worker asks for that counter at most once per ``GALLERY_CHECK_SECONDS`` (one primary-key read), and
reloads the examples only when it moved, so a label taught through one worker or instance answers in
every other one without a restart, and a quiet gallery costs one tiny query per few seconds per worker.
Nothing is read at start-up: an empty gallery leaves start-up and answers as they were.

The threshold is calibrated when the gallery is loaded: leave-one-out over the examples, plus the
served model's negatives (embeddings of its own validation photos, stored once with
``flask gallery negatives``) when there are some, and its references (``references.npy`` in the
artifact: embeddings of its own training photos) when it ships them; matches are then judged by their
margin over the nearest reference (:mod:`inference.gallery`).

Embeddings belong to the model that made them. Examples stored under another model (name or version)
are embedded again from their stored photo when loaded, and written back, so a new artifact keeps
what was taught.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from flask import Flask, current_app
from PIL import Image
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import OperationalError, ProgrammingError

from inference.classifier import Classifier
from inference.gallery import LEVELS, Gallery, calibrate, load_references
from inference.imaging import decode_upload

from .errors import RequestRejected
from .extensions import db
from .models import GalleryExample, GalleryNegative, GalleryState
from .serving import get_classifier

IMAGE_MAX_SIDE = 640  # the stored photo: enough to embed again under a model with a larger input
IMAGE_QUALITY = 90
LABEL_MAX_LENGTH = 255


@dataclass
class _Held:
    """A worker's gallery and when it last asked the database about it."""

    gallery: Gallery
    checked_at: float
    accuracy: dict[str, float]
    lock: threading.Lock


def init_app(app: Flask) -> None:
    """An empty gallery that asks the database on the first request (nothing is read now)."""
    app.extensions["gallery"] = _Held(Gallery.empty(version=-1), float("-inf"), {}, threading.Lock())


def current_gallery() -> Gallery:
    """This worker's gallery, reloaded when another worker (or this one) changed the store.

    A database that has no gallery tables yet (not migrated) or is down leaves the gallery as it was.
    """
    held: _Held = current_app.extensions["gallery"]
    now = time.monotonic()
    if now - held.checked_at < current_app.config["GALLERY_CHECK_SECONDS"]:
        return held.gallery
    with held.lock:
        if now - held.checked_at < current_app.config["GALLERY_CHECK_SECONDS"]:
            return held.gallery
        held.checked_at = now
        try:
            version = stored_version()
            if version != held.gallery.version:
                held.gallery, held.accuracy = load_gallery(get_classifier(), version)
        except (OperationalError, ProgrammingError) as exc:
            db.session.rollback()
            current_app.logger.warning("gallery not checked: %s", str(exc).splitlines()[0])
    return held.gallery


def refresh_now() -> Gallery:
    """Check the store at once (after a change made by this worker), whatever the interval."""
    current_app.extensions["gallery"].checked_at = float("-inf")
    return current_gallery()


def stored_version() -> int:
    """The store's change counter (0 when the row is missing)."""
    return int(db.session.scalar(select(GalleryState.version).where(GalleryState.id == 1)) or 0)


def bump_version() -> None:
    """Count one change, in the caller's transaction (committed with the change itself)."""
    if db.session.execute(update(GalleryState).where(GalleryState.id == 1)
                          .values(version=GalleryState.version + 1)).rowcount == 0:
        db.session.add(GalleryState(id=1, version=1))


def load_gallery(classifier: Classifier, version: int) -> tuple[Gallery, dict[str, float]]:
    """Every example as one gallery for ``classifier``, with its calibrated threshold and per-label
    leave-one-out accuracy; examples embedded by another model are embedded again first."""
    rows = db.session.execute(select(GalleryExample.id, GalleryExample.label, GalleryExample.level,
                                     GalleryExample.embedding, GalleryExample.model_name,
                                     GalleryExample.model_version).order_by(GalleryExample.id)).all()
    if not rows:
        return Gallery.empty(version=version), {}
    embeddings = []
    stale = False
    for row in rows:
        if (row.model_name, row.model_version) == (classifier.name, classifier.version):
            embeddings.append(np.frombuffer(row.embedding, dtype="<f4"))
            continue
        stale = True
        image = db.session.scalar(select(GalleryExample.image).where(GalleryExample.id == row.id))
        vector = classifier.embed(Image.open(io.BytesIO(image)).convert("RGB"))
        db.session.execute(update(GalleryExample).where(GalleryExample.id == row.id).values(
            embedding=vector.astype("<f4").tobytes(), model_name=classifier.name,
            model_version=classifier.version))
        embeddings.append(vector)
    if stale:
        db.session.commit()  # without a version bump: the labels are the same, only their vectors moved
    widths = {len(vector) for vector in embeddings}
    if len(widths) > 1:
        raise ValueError(f"gallery embeddings of different widths {sorted(widths)}")
    labels = [row.label for row in rows]
    matrix = np.stack(embeddings)
    references = load_references(classifier.model_dir, matrix.shape[1])
    calibration = calibrate(matrix, labels, negatives_of(classifier, matrix.shape[1]),
                            target_precision=current_app.config["GALLERY_TARGET_PRECISION"],
                            floor=current_app.config["GALLERY_MIN_SIMILARITY"], references=references,
                            max_false_rate=current_app.config["GALLERY_MAX_FALSE_RATE"])
    gallery = Gallery.build(matrix, labels, [row.level for row in rows], threshold=calibration.threshold,
                            version=version, references=references)
    return gallery, calibration.accuracy


def negatives_of(classifier: Classifier, width: int) -> np.ndarray | None:
    """The stored negatives of the served model (``None`` when it has none)."""
    blobs = db.session.scalars(select(GalleryNegative.embedding).where(
        GalleryNegative.model_name == classifier.name, GalleryNegative.model_version == classifier.version)).all()
    vectors = [np.frombuffer(blob, dtype="<f4") for blob in blobs]
    vectors = [vector for vector in vectors if len(vector) == width]
    return np.stack(vectors) if vectors else None


def set_negatives(vectors: Iterable[np.ndarray]) -> int:
    """Replace the served model's negatives with ``vectors``; returns how many are stored."""
    classifier = get_classifier()
    db.session.execute(delete(GalleryNegative).where(GalleryNegative.model_name == classifier.name,
                                                     GalleryNegative.model_version == classifier.version))
    rows = [GalleryNegative(model_name=classifier.name, model_version=classifier.version,
                            embedding=np.asarray(vector, dtype="<f4").tobytes()) for vector in vectors]
    db.session.add_all(rows)
    bump_version()  # the threshold changes: every worker recalibrates
    db.session.commit()
    refresh_now()
    return len(rows)


def label_accuracy() -> dict[str, float]:
    """Per taught label, the share of its examples that the others answer with it (leave-one-out)."""
    current_gallery()
    return dict(current_app.extensions["gallery"].accuracy)


def clean_label(raw: str | None) -> str:
    """A taught label as stored: trimmed, one line, 1 to 255 characters.

    Raises:
        RequestRejected: ``invalid_label`` otherwise.
    """
    label = " ".join((raw or "").split())
    if not label or len(label) > LABEL_MAX_LENGTH:
        raise RequestRejected("invalid_label", f"A label is 1 to {LABEL_MAX_LENGTH} characters.")
    return label


def check_level(raw: str | None) -> str:
    """``class`` or ``make``.

    Raises:
        RequestRejected: ``invalid_level`` otherwise.
    """
    level = (raw or "").strip()
    if level not in LEVELS:
        raise RequestRejected("invalid_level", f"The level is one of {', '.join(LEVELS)}.")
    return level


def example_from_photo(data: bytes, label: str, level: str, *, source: str, added_by: str,
                       prediction_id: int | None = None) -> GalleryExample:
    """One example from a photo's bytes, with the same upload checks as a classified photo.

    Raises:
        ImageRejected: The bytes are not a usable photo.
        RequestRejected: ``cannot_embed`` when the served model file has no feature-map output.
    """
    classifier = get_classifier()
    photo, vector = embed_photo(data)
    return GalleryExample(label=label, level=level, embedding=vector.astype("<f4").tobytes(),
                          model_name=classifier.name, model_version=classifier.version,
                          image=stored_jpeg(photo.image), sha256=photo.sha256, source=source,
                          prediction_id=prediction_id, added_by=added_by)


def embed_photo(data: bytes):
    """``(decoded photo, embedding)`` of a photo's bytes, with the same checks as a classified upload.

    Raises:
        ImageRejected: The bytes are not a usable photo.
        RequestRejected: ``cannot_embed`` when the served model file has no feature-map output.
    """
    classifier = get_classifier()
    if not classifier.can_embed:
        raise RequestRejected("cannot_embed", "The served model file gives no embeddings; examples cannot "
                                              "be taught to it (serve model.tflite, MODEL_VARIANT=float32).")
    photo = decode_upload(data, max_pixels=current_app.config["MAX_IMAGE_PIXELS"],
                          format_max_pixels={"WEBP": current_app.config["MAX_WEBP_PIXELS"]},
                          target=classifier.image_size, resize_mode=classifier.resize_mode)
    return photo, classifier.embed(photo.image)


def stored_jpeg(image: Image.Image) -> bytes:
    """The photo as kept with its example: at most :data:`IMAGE_MAX_SIDE` pixels a side, no metadata."""
    copy = image.copy()
    copy.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    copy.save(out, format="JPEG", quality=IMAGE_QUALITY)
    return out.getvalue()


def teach(examples: Iterable[GalleryExample]) -> int:
    """Store examples and count the change (one transaction); returns how many were stored."""
    examples = list(examples)
    if examples:
        db.session.add_all(examples)
        bump_version()
        db.session.commit()
        refresh_now()
    return len(examples)


def remove_label(label: str) -> int:
    """Forget every example of ``label``; returns how many went."""
    removed = db.session.execute(delete(GalleryExample).where(GalleryExample.label == label)).rowcount
    if removed:
        bump_version()
    db.session.commit()
    if removed:
        refresh_now()
    return int(removed or 0)


def remove_example(example_id: int) -> str | None:
    """Forget one example; returns its label, ``None`` when there was none."""
    example = db.session.get(GalleryExample, example_id)
    if example is None:
        return None
    db.session.delete(example)
    bump_version()
    db.session.commit()
    refresh_now()
    return example.label


@dataclass(frozen=True)
class TaughtLabel:
    """A taught label as the admin page and ``flask gallery list`` show it."""

    label: str
    level: str
    count: int
    accuracy: float | None
    example_ids: list[int]


def taught_labels() -> list[TaughtLabel]:
    """Every taught label with its examples' ids and its leave-one-out accuracy, by label."""
    accuracy = label_accuracy()
    rows = db.session.execute(select(GalleryExample.label, GalleryExample.level, GalleryExample.id)
                              .order_by(GalleryExample.label, GalleryExample.id)).all()
    grouped: dict[str, TaughtLabel] = {}
    for label, level, example_id in rows:
        entry = grouped.setdefault(label, TaughtLabel(label, level, 0, accuracy.get(label), []))
        entry.example_ids.append(example_id)
    return [TaughtLabel(t.label, t.level, len(t.example_ids), t.accuracy, t.example_ids) for t in grouped.values()]


def count_of(label: str) -> int:
    """How many examples teach ``label`` now."""
    return int(db.session.scalar(select(func.count()).select_from(GalleryExample)
                                 .where(GalleryExample.label == label)) or 0)
