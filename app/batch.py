"""Several photos in one request: one result or one error per file, never one failure for all."""

from __future__ import annotations

from typing import Any

from flask import current_app
from werkzeug.datastructures import FileStorage

from inference.imaging import declared_pixels

from .errors import REJECTIONS, RequestRejected, rejection_body, status_of
from .extensions import db
from .services import create_prediction, display_filename
from .upload.headline import prediction_json

BATCH_MAX_IMAGES = 32


def classify_batch(files: list[FileStorage], *, top_k: int) -> dict[str, Any]:
    """Classify each file on its own, as the single-photo API would.

    Args:
        files: The uploaded files, in the order sent.
        top_k: Answers per prediction.

    The batch has a pixel budget (``BATCH_MAX_PIXELS``, summed over its photos as their headers declare
    them): a photo that would go over it is refused (``batch_pixel_budget``) without being decoded, so a
    request's work is bounded however many huge images it holds.

    Returns:
        ``{"results": [...], "succeeded": n, "failed": m}``, one result per file in order.

    Raises:
        RequestRejected: ``no_file`` when no file, ``too_many_images`` when more than
            :data:`BATCH_MAX_IMAGES` were sent.
    """
    if not files:
        raise RequestRejected("no_file", "No images were uploaded: send the files in repeated 'images' fields.")
    if len(files) > BATCH_MAX_IMAGES:
        raise RequestRejected("too_many_images",
                              f"{len(files)} images were sent; a batch holds at most {BATCH_MAX_IMAGES}.")
    budget = current_app.config["BATCH_MAX_PIXELS"]
    spent = 0
    results = []
    for index, upload in enumerate(files):
        entry: dict[str, Any] = {"index": index, "filename": display_filename(upload.filename)}
        try:
            pixels = declared_pixels(upload.stream)
            if pixels > current_app.config["MAX_IMAGE_PIXELS"]:
                pixels = 0  # refused from its header alone (413 image_too_large), nothing decoded
            if spent + pixels > budget:
                raise RequestRejected("batch_pixel_budget",
                                      f"This image ({pixels:,} pixels) would take the batch over its budget of "
                                      f"{budget:,} pixels in all; send it in another request.")
            spent += pixels
            prediction = create_prediction(upload, source="api", top_k=top_k)
        except REJECTIONS as exc:
            entry.update(status=status_of(exc), error=rejection_body(exc))
        except Exception:  # one file breaking something unexpected must not lose the others' results
            db.session.rollback()
            current_app.logger.exception("batch item %d failed", index)
            entry.update(status=500, error={"status": 500, "code": "internal_error",
                                            "message": "Something went wrong on our side with this image; "
                                                       "the error has been logged."})
        else:
            entry.update(status=201, prediction=prediction_json(prediction))
        results.append(entry)
    failed = sum(1 for entry in results if entry["status"] != 201)
    return {"results": results, "succeeded": len(results) - failed, "failed": failed}
