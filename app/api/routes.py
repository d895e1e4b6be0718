"""JSON API: create and read predictions, answer "Was this right?", describe the model."""

from __future__ import annotations

from flask import Response, current_app, jsonify, request, url_for

from ..feedback import address_hash, record_answer
from ..models import prediction_or_404
from ..ratelimits import FEEDBACK_LIMIT
from ..serving import get_classifier
from ..services import create_prediction, requested_top_k, single_upload
from ..upload.headline import prediction_json
from . import bp


@bp.post("/predictions")
def create():
    """Classify the multipart field ``image``; ``top_k`` (1..20) from the form or the query string.

    Returns:
        201 with the prediction and ``Location`` of its resource.
    """
    top_k = requested_top_k(request.form, request.args, current_app.config["TOP_K"])
    prediction = create_prediction(single_upload(request.files), source="api", top_k=top_k)
    response = jsonify(prediction_json(prediction))
    response.status_code = 201
    response.headers["Location"] = url_for("api.read", prediction_id=prediction.public_id)
    return response


@bp.get("/predictions/<public_id:prediction_id>")
def read(prediction_id: str):
    """A stored prediction by its public id, same body as on creation (for the holder of the id only:
    ``Cache-Control: private``)."""
    response = jsonify(prediction_json(prediction_or_404(prediction_id)))
    response.cache_control.private = True
    response.cache_control.no_cache = True
    return response


def json_body():
    """The request's JSON, or ``None`` for a body that is not JSON (answered 400 by the caller).

    ``get_json(silent=True)`` swallows only ``ValueError``; a document nested deeper than Python's
    recursion limit (``"[" * 1000 + "]" * 1000``) raises ``RecursionError`` from the parser instead.
    """
    try:
        return request.get_json(silent=True)
    except RecursionError:
        return None


@bp.post("/predictions/<public_id:prediction_id>/feedback")
@FEEDBACK_LIMIT
def feedback(prediction_id: str):
    """A client's answer to "Was this right?": JSON ``{"verdict": ..., "label": ...}``.

    ``verdict`` is ``right``, ``wrong`` (with ``label``, one of the model's labels), ``not_a_car`` or
    ``unknown``. One answer per prediction and client address; the prediction itself never changes.

    Returns:
        201 with the stored answer; 400 for a malformed body, 409 for a second answer.
    """
    prediction = prediction_or_404(prediction_id)
    answer = record_answer(prediction, json_body(), address_hash())
    response = jsonify(answer.to_dict())
    response.status_code = 201
    return response


@bp.get("/model")
def model():
    """The served model: name, version, runtime, artifact metadata and labels."""
    return jsonify(get_classifier().describe())


@bp.post("/predictions:batch")
def create_batch():
    """Classify up to ``BATCH_MAX_IMAGES`` files sent as repeated multipart fields ``images``.

    Each file gets its own result, in the order sent: ``{"index", "filename", "status": 201,
    "prediction": {...}}`` or ``{"index", "filename", "status": 4xx, "error": {...}}``; one bad file
    never fails the others. ``top_k`` applies to all.

    Returns:
        200 with ``{"results": [...], "succeeded": n, "failed": m}``; 400 when no file or too many files
        were sent.
    """
    from ..batch import classify_batch

    top_k = requested_top_k(request.form, request.args, current_app.config["TOP_K"])
    files = request.files.getlist("images") + request.files.getlist("image")
    return jsonify(classify_batch(files, top_k=top_k))


@bp.get("/predictions/<public_id:prediction_id>/explanation.png")
def explanation(prediction_id: str):
    """Class activation heatmap of the prediction's answer over its stored thumbnail (PNG).

    Computed on first request with the served runtime (no TensorFlow needed), then served from the cache.
    501 for a model whose head cannot be explained, 503 when its ``head.npz`` is unreadable, 409 when the
    served model does not know the answer's label.
    """
    from ..explanations import explanation_png

    data = explanation_png(prediction_or_404(prediction_id))
    response = Response(data, mimetype="image/png")
    response.cache_control.private = True
    response.cache_control.max_age = 86400  # a new model version changes the heatmap, so not immutable
    return response
