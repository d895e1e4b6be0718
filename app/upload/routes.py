"""Routes of the upload page (photos and example photos), the result pages and visitors' answers."""

from __future__ import annotations

from flask import (Response, abort, current_app, jsonify, make_response, redirect, render_template, request,
                   send_file, url_for)

from ..examples import find_example, list_examples, open_example
from ..errors import REJECTIONS, Rejection, RequestRejected, status_of
from ..feedback import allowed_labels, answer_of, record_answer, session_key
from ..models import prediction_or_404
from ..ratelimits import FEEDBACK_LIMIT
from ..serving import get_classifier
from ..services import create_prediction, display_filename, single_upload
from . import bp
from .forms import ExampleForm, UploadForm
from .headline import prediction_json, served_summary


def render_index(form: UploadForm, error: Rejection | None = None, rejected_name: str | None = None):
    """The upload page, with the example row when examples are configured; a refused upload's message
    under its status, after the name of the file it refused."""
    status = status_of(error) if error is not None else 200
    page = render_template("upload/index.html", form=form, classifier=get_classifier(), error=error,
                           rejected_name=rejected_name,
                           error_status=status, examples=list_examples(), example_form=ExampleForm())
    return page, status


@bp.get("/")
def index():
    """The upload page."""
    return render_index(UploadForm())


@bp.post("/")
def submit():
    """Classify the posted photo, or the example photo named in ``example``, then redirect (303) to its result.

    An example goes through the same path as an upload (same checks, same limit) and is logged with
    ``source="example"``. A rejected upload shows the same page again with the message, under the
    error's status code.
    """
    form = UploadForm()  # the CSRF token was already checked by CSRFProtect before this view
    upload = example = None
    try:
        example = request.form.get("example")
        upload = single_upload(request.files)
        if example is not None and upload is not None and upload.filename:
            raise RequestRejected("photo_and_example", "Send either a photo or an example, not both.")
        if example is not None:
            prediction = create_prediction(open_example(example), source="example",
                                           top_k=current_app.config["TOP_K"])
        else:
            prediction = create_prediction(upload, source="web", top_k=current_app.config["TOP_K"])
    except REJECTIONS as exc:
        name = example if example is not None else display_filename(upload.filename if upload else None)
        return render_index(form, exc, name)
    return redirect(url_for("upload.result", prediction_id=prediction.public_id), code=303)


@bp.get("/examples/<name>")
def example_image(name: str):
    """An example photo as shown in the row (only names listed in ``EXAMPLES_DIR`` are served)."""
    try:
        example = find_example(name)
    except RequestRejected:
        abort(404)
    return send_file(example.path, mimetype=example.content_type, max_age=86400)


@bp.post("/photos")
def create_photo():
    """One photo sent by the page's several-photo uploader; answers as the API does, in JSON.

    The page could post to the API, but then its photos would be logged as ``api`` and escape the
    page's CSRF check; this route keeps both (the token travels in the ``X-CSRFToken`` header).

    Returns:
        201 with the prediction and ``Location`` of its result page.
    """
    prediction = create_prediction(single_upload(request.files), source="web", top_k=current_app.config["TOP_K"])
    response = jsonify(prediction_json(prediction))
    response.status_code = 201
    response.headers["Location"] = url_for("upload.result", prediction_id=prediction.public_id)
    return response


def render_result(prediction, feedback_error: RequestRejected | None = None):
    """The result page, asking "Was this right?" unless this browser session already answered.

    Only whoever has the link sees it, so neither this page nor the thumbnail may be kept by a shared
    cache (``Cache-Control: private``).
    """
    status = status_of(feedback_error) if feedback_error is not None else 200
    page = render_template("upload/result.html", prediction=prediction, lead=served_summary(prediction),
                           answer=answer_of(prediction, session_key(create=False)),
                           feedback_labels=allowed_labels(prediction),
                           feedback_error=feedback_error,
                           feedback_error_status=status)
    response = make_response(page, status)
    response.cache_control.private = True
    response.cache_control.no_cache = True  # the page can change (a later model's heatmap, an answer)
    return response


@bp.get("/predictions/<public_id:prediction_id>")
def result(prediction_id: str):
    """A stored prediction: thumbnail, top-k with confidence bars, model, time taken, "Was this right?"."""
    return render_result(prediction_or_404(prediction_id))


@bp.post("/predictions/<public_id:prediction_id>/feedback")
@FEEDBACK_LIMIT
def feedback(prediction_id: str):
    """Store this browser session's answer to "Was this right?" (CSRF-checked), then show the result again.

    One answer per prediction and session: a second one gets the page back with 409.
    """
    prediction = prediction_or_404(prediction_id)
    verdict = request.form.get("verdict")
    # The label field sits in the same form as "Not a car" and "I don't know"; it counts only with "wrong".
    answer = {"verdict": verdict, "label": request.form.get("label")} if verdict == "wrong" else {"verdict": verdict}
    try:
        record_answer(prediction, answer, session_key(create=True))
    except RequestRejected as exc:
        return render_result(prediction, exc)
    return redirect(url_for("upload.result", prediction_id=prediction_id, _anchor="feedback"), code=303)


@bp.get("/predictions/<public_id:prediction_id>/thumbnail.jpg")
def thumbnail(prediction_id: str):
    """The stored thumbnail (re-encoded JPEG, no EXIF); it never changes, so the browser keeps it long,
    but only the browser."""
    response = Response(prediction_or_404(prediction_id).thumbnail, mimetype="image/jpeg")
    response.cache_control.private = True
    response.cache_control.max_age = 31536000
    response.cache_control.immutable = True
    return response
