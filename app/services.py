"""The one prediction path shared by the web page and the API: check, decode, classify, log."""

from __future__ import annotations

import os
import threading
import time
import unicodedata
from concurrent.futures import Future, ThreadPoolExecutor

from flask import current_app
from werkzeug.datastructures import FileStorage

from .extensions import db
from .inference.imaging import ImageRejected, decode_upload, make_thumbnail
from .models import Prediction
from .inference.answers import choose_answer
from .inference.gate import judge
from .serving import get_classifier, get_vehicle_gate

TOP_K_RANGE = (1, 20)
FILENAME_MAX_LENGTH = 255


class SideWork:
    """A small per-process thread pool for request work that can run while the model is invoked.

    The model invocation, Pillow's resize and its JPEG encoder all release the GIL, so the thumbnail made
    here costs no wall-clock time on a machine with a spare core. The pool is made on first use and
    forgotten in a forked child: a pool made in a preloading gunicorn master has no threads in its workers.
    """

    def __init__(self, max_workers: int = 2):
        self.max_workers = max_workers
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn, /, *args) -> Future:
        """Run ``fn(*args)`` on the pool; returns its future."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="side-work")
        return self._pool.submit(fn, *args)


side_work = SideWork(max_workers=4)  # thumbnail + gate for each of a worker's request threads


def parse_top_k(raw: str | None, default: int) -> int:
    """Read the ``top_k`` request parameter.

    Args:
        raw: The parameter as sent, or ``None`` when absent.
        default: Value used when the parameter is absent or blank.

    Returns:
        An integer within :data:`TOP_K_RANGE`.

    Raises:
        ImageRejected: 400 when it is not an integer in range.
    """
    low, high = TOP_K_RANGE
    if raw is None or not raw.strip():
        return min(max(default, low), high)
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ImageRejected(400, "invalid_top_k", f"top_k must be a whole number from {low} to {high}.")
    return value


def requested_top_k(form, args, default: int) -> int:
    """``top_k`` from the form or the query string; both may carry it, but not with different values.

    Args:
        form: The request's form fields.
        args: The request's query string.
        default: Value used when neither carries it.

    Returns:
        An integer within :data:`TOP_K_RANGE`.

    Raises:
        ImageRejected: 400 when a value is not an integer in range, or the two disagree.
    """
    sent = [raw for raw in (form.get("top_k"), args.get("top_k")) if raw is not None and raw.strip()]
    values = {parse_top_k(raw, default) for raw in sent}
    if len(values) > 1:
        raise ImageRejected(400, "conflicting_top_k",
                            "top_k was sent in the form and the query string with different values; send it once.")
    return values.pop() if values else parse_top_k(None, default)


def single_upload(files, field: str = "image") -> FileStorage | None:
    """The one file sent in ``field``; several files there are refused rather than silently dropped.

    Args:
        files: The request's multipart files (``request.files``).
        field: The form field that carries the photo.

    Returns:
        The file, or ``None`` when the field is absent (``create_prediction`` answers that with 400).

    Raises:
        ImageRejected: 400 when the field carries more than one file.
    """
    uploads = files.getlist(field)
    if len(uploads) > 1:
        raise ImageRejected(400, "several_files",
                            f"Send one image per request in the '{field}' field; "
                            "POST /api/v1/predictions:batch classifies up to 32 at once.")
    return uploads[0] if uploads else None


def display_filename(raw: str | None) -> str | None:
    """Reduce a client-supplied file name to something safe to show (never used as a path)."""
    if not raw:
        return None
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:FILENAME_MAX_LENGTH] or None


def create_prediction(upload: FileStorage | None, *, source: str, top_k: int) -> Prediction:
    """Classify an uploaded image and store the prediction.

    Args:
        upload: The multipart file (``None`` when the field was missing).
        source: ``"web"``, ``"example"`` or ``"api"``.
        top_k: Number of answers to keep.

    Returns:
        The committed :class:`Prediction`.

    Raises:
        ImageRejected: The upload is missing or not a usable image (status and message for the user).
    """
    if upload is None or (not upload.filename and not upload.content_length):
        raise ImageRejected(400, "no_file", "No image was uploaded: send a file in the 'image' field.")
    data = upload.read()
    if not data:
        raise ImageRejected(400, "empty_file", "The uploaded file is empty.")
    classifier = get_classifier()
    started = time.perf_counter()
    decoded = decode_upload(data, max_pixels=current_app.config["MAX_IMAGE_PIXELS"],
                            format_max_pixels={"WEBP": current_app.config["MAX_WEBP_PIXELS"]},
                            target=classifier.image_size, resize_mode=classifier.resize_mode)
    # The thumbnail and the vehicle gate overlap the classifier's invocation (all release the GIL).
    thumbnail = side_work.submit(make_thumbnail, decoded.image)
    gate = get_vehicle_gate()
    vehicle_score = side_work.submit(gate.score, decoded.image) if gate is not None else None
    outcome = classifier.predict(decoded.image, top_k=top_k)
    answers = outcome.top_k
    verdict = judge(answers, classifier.metadata, gate, vehicle_score.result() if vehicle_score else None)
    answer = choose_answer(answers[0], verdict.threshold, outcome.groups, classifier.groupings, verdict.verdict)
    latency_ms = (time.perf_counter() - started) * 1000.0
    prediction = Prediction(
        original_filename=display_filename(upload.filename),
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
        content_type=decoded.content_type,
        thumbnail=thumbnail.result(),
        model_name=classifier.name,
        model_version=classifier.version,
        top_label=answers[0]["label"],
        top_score=answers[0]["score"],
        top_k=answers,
        latency_ms=round(latency_ms, 2),
        source=source,
        verdict=verdict.verdict,
        vehicle_score=verdict.vehicle_score,
        groups=outcome.groups,
        answer_level=answer["level"] if answer else None,
        answer_label=answer["label"] if answer else None,
        answer_score=answer["score"] if answer else None,
    )
    db.session.add(prediction)
    db.session.commit()
    return prediction
