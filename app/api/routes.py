"""JSON API: create and read predictions, describe the model."""

from __future__ import annotations

from flask import Response, current_app, jsonify, request, url_for

from ..serving import get_classifier
from ..extensions import db
from ..models import Prediction
from ..services import create_prediction, parse_top_k, single_upload
from . import bp


@bp.post("/predictions")
def create():
    """Classify the multipart field ``image``; ``top_k`` (1..20) from the form or the query string.

    Returns:
        201 with the prediction and ``Location`` of its resource.
    """
    raw_top_k = request.form.get("top_k", request.args.get("top_k"))
    top_k = parse_top_k(raw_top_k, current_app.config["TOP_K"])
    prediction = create_prediction(single_upload(request.files), source="api", top_k=top_k)
    response = jsonify(prediction.to_dict())
    response.status_code = 201
    response.headers["Location"] = url_for("api.read", prediction_id=prediction.id)
    return response


@bp.get("/predictions/<int:prediction_id>")
def read(prediction_id: int):
    """A stored prediction, same body as on creation."""
    return jsonify(db.get_or_404(Prediction, prediction_id).to_dict())


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

    raw_top_k = request.form.get("top_k", request.args.get("top_k"))
    top_k = parse_top_k(raw_top_k, current_app.config["TOP_K"])
    files = request.files.getlist("images") + request.files.getlist("image")
    return jsonify(classify_batch(files, top_k=top_k))


@bp.get("/predictions/<int:prediction_id>/explanation.png")
def explanation(prediction_id: int):
    """Grad-CAM heatmap of the prediction's top label over its stored thumbnail (PNG).

    Computed on first request with the Keras model, then served from the cache. 501 without
    TensorFlow, 503 without ``model.keras``, 409 when the served model does not know the label.
    """
    from ..errors import error_response
    from ..explanations import explanation_png
    from ..inference.explain import ExplanationUnavailable

    prediction = db.get_or_404(Prediction, prediction_id)
    try:
        data = explanation_png(prediction)
    except ExplanationUnavailable as exc:
        return error_response(exc.status, exc.code, exc.message)
    response = Response(data, mimetype="image/png")
    response.cache_control.public = True
    response.cache_control.max_age = 86400  # a new model version changes the heatmap, so not immutable
    return response
