"""The prediction path shared by the web page, the example photos and the API: read the request, answer
the photo with :func:`inference.pipeline.answer_photo`, store the prediction."""

from __future__ import annotations

import unicodedata

from flask import current_app
from werkzeug.datastructures import FileStorage

from inference.pipeline import answer_photo

from .errors import RequestRejected
from .extensions import db
from .gallery import current_gallery
from .models import Prediction
from .serving import get_classifier, get_vehicle_gate

TOP_K_RANGE = (1, 20)
FILENAME_MAX_LENGTH = 255


def parse_top_k(raw: str | None, default: int) -> int:
    """Read the ``top_k`` request parameter.

    Args:
        raw: The parameter as sent, or ``None`` when absent.
        default: Value used when the parameter is absent or blank.

    Returns:
        An integer within :data:`TOP_K_RANGE`.

    Raises:
        RequestRejected: ``invalid_top_k`` when it is not an integer in range.
    """
    low, high = TOP_K_RANGE
    if raw is None or not raw.strip():
        return min(max(default, low), high)
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise RequestRejected("invalid_top_k", f"top_k must be a whole number from {low} to {high}.")
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
        RequestRejected: ``invalid_top_k`` when a value is not an integer in range, ``conflicting_top_k``
            when the two disagree.
    """
    sent = [raw for raw in (form.get("top_k"), args.get("top_k")) if raw is not None and raw.strip()]
    values = {parse_top_k(raw, default) for raw in sent}
    if len(values) > 1:
        raise RequestRejected("conflicting_top_k",
                              "top_k was sent in the form and the query string with different values; send it once.")
    return values.pop() if values else parse_top_k(None, default)


def single_upload(files, field: str = "image") -> FileStorage | None:
    """The one file sent in ``field``; several files there are refused rather than silently dropped.

    Args:
        files: The request's multipart files (``request.files``).
        field: The form field that carries the photo.

    Returns:
        The file, or ``None`` when the field is absent (``create_prediction`` refuses that).

    Raises:
        RequestRejected: ``several_files`` when the field carries more than one file.
    """
    uploads = files.getlist(field)
    if len(uploads) > 1:
        raise RequestRejected("several_files",
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
        RequestRejected: ``no_file`` when the upload is missing.
        ImageRejected: The upload is not a usable image.
    """
    if upload is None or (not upload.filename and not upload.content_length):
        raise RequestRejected("no_file", "No image was uploaded: send a file in the 'image' field.")
    classifier = get_classifier()
    result = answer_photo(upload.read(), classifier, get_vehicle_gate(),
                          max_pixels=current_app.config["MAX_IMAGE_PIXELS"],
                          format_max_pixels={"WEBP": current_app.config["MAX_WEBP_PIXELS"]}, top_k=top_k,
                          gallery=current_gallery())
    answer = result.answer
    prediction = Prediction(
        original_filename=display_filename(upload.filename),
        sha256=result.photo.sha256,
        width=result.photo.width,
        height=result.photo.height,
        content_type=result.photo.content_type,
        thumbnail=result.thumbnail,
        model_name=classifier.name,
        model_version=classifier.version,
        top_label=result.top_k[0]["label"],
        top_score=result.top_k[0]["score"],
        top_k=result.top_k,
        latency_ms=round(result.latency_ms, 2),
        source=source,
        verdict=result.verdict.verdict,
        vehicle_score=result.verdict.vehicle_score,
        groups=result.groups,
        answer_level=answer["level"] if answer else None,
        answer_label=answer["label"] if answer else None,
        answer_score=answer["score"] if answer else None,
        answer_source=answer.get("source", "model") if answer else None,
        answer_learned_from=answer.get("learned_from") if answer else None,
    )
    db.session.add(prediction)
    commit_keeping_values()
    return prediction


def commit_keeping_values() -> None:
    """Commit the session without expiring what it holds.

    A new prediction's attributes are the values just written (its id and public id were set when it
    was inserted), so the response is built from them as they are; expired, reading them back would cost
    one more query per upload.
    """
    session = db.session()
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True
