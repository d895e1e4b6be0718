"""Routes of the upload page and the result pages."""

from __future__ import annotations

from flask import Response, current_app, jsonify, redirect, render_template, request, url_for

from ..serving import get_classifier
from ..extensions import db
from ..inference.imaging import ImageRejected
from ..models import Prediction
from ..services import create_prediction, single_upload
from . import bp
from .forms import UploadForm
from .headline import headline


@bp.get("/")
def index():
    """The upload page."""
    return render_template("upload/index.html", form=UploadForm(), classifier=get_classifier())


@bp.post("/")
def submit():
    """Classify the posted photo, then redirect (303) to its result page.

    A rejected upload shows the same page again with the message, under the error's status code.
    """
    form = UploadForm()  # the CSRF token was already checked by CSRFProtect before this view
    try:
        prediction = create_prediction(single_upload(request.files), source="web",
                                       top_k=current_app.config["TOP_K"])
    except ImageRejected as exc:
        page = render_template("upload/index.html", form=form, classifier=get_classifier(), error=exc)
        return page, exc.status
    return redirect(url_for("upload.result", prediction_id=prediction.id), code=303)


@bp.post("/photos")
def create_photo():
    """One photo sent by the page's several-photo uploader; answers as the API does, in JSON.

    The page could post to the API, but then its photos would be logged as ``api`` and escape the
    page's CSRF check; this route keeps both (the token travels in the ``X-CSRFToken`` header).

    Returns:
        201 with the prediction and ``Location`` of its result page.
    """
    prediction = create_prediction(single_upload(request.files), source="web", top_k=current_app.config["TOP_K"])
    response = jsonify(prediction.to_dict())
    response.status_code = 201
    response.headers["Location"] = url_for("upload.result", prediction_id=prediction.id)
    return response


@bp.get("/predictions/<int:prediction_id>")
def result(prediction_id: int):
    """A stored prediction: thumbnail, top-k with confidence bars, model, time taken."""
    prediction = db.get_or_404(Prediction, prediction_id)
    return render_template("upload/result.html", prediction=prediction, headline=headline(prediction))


@bp.get("/predictions/<int:prediction_id>/thumbnail.jpg")
def thumbnail(prediction_id: int):
    """The stored thumbnail (re-encoded JPEG, no EXIF); immutable, so cache it for long."""
    prediction = db.get_or_404(Prediction, prediction_id)
    response = Response(prediction.thumbnail, mimetype="image/jpeg")
    response.cache_control.public = True
    response.cache_control.max_age = 31536000
    response.cache_control.immutable = True
    return response
