"""JSON API: create and read predictions, describe the model."""

from __future__ import annotations

from flask import current_app, jsonify, request, url_for

from ..classifier import get_classifier
from ..extensions import db
from ..models import Prediction
from ..services import create_prediction, parse_top_k
from . import bp


@bp.post("/predictions")
def create():
    """Classify the multipart field ``image``; ``top_k`` (1..20) from the form or the query string.

    Returns:
        201 with the prediction and ``Location`` of its resource.
    """
    raw_top_k = request.form.get("top_k", request.args.get("top_k"))
    top_k = parse_top_k(raw_top_k, current_app.config["TOP_K"])
    prediction = create_prediction(request.files.get("image"), source="api", top_k=top_k)
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
