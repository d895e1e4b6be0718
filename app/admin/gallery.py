"""Admin "Teach a car": teach a label (a class or a make) with photos, see what was taught with its
leave-one-out accuracy, remove it; and teach a corrected photo under its corrected label in one click."""

from __future__ import annotations

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from inference.errors import ImageRejected

from .. import gallery as store
from ..errors import RequestRejected, status_of
from ..extensions import db
from ..models import GalleryExample, Prediction
from ..serving import get_classifier
from . import bp
from .forms import RemoveTaughtForm, TeachForm, TeachFromCorrectionForm
from .routes import stored_jpeg


@bp.route("/gallery", methods=["GET", "POST"])
def gallery():
    """The teaching form and the list of taught labels."""
    form = TeachForm()
    status = 200
    if request.method == "POST" and wants_json():
        return teach_one_by_one(form)
    if request.method == "POST":
        if form.validate_on_submit():
            status = teach_from_form(form)
            if status == 200:
                return redirect(url_for("admin.gallery"))
        else:
            status = 400
            flash("; ".join(f"{key}: {', '.join(value)}" for key, value in form.errors.items()), "danger")
    return render_template("admin/gallery.html", form=form, remove_form=RemoveTaughtForm(),
                           taught=store.taught_labels(), threshold=store.current_gallery().threshold,
                           can_embed=get_classifier().can_embed), status


def wants_json() -> bool:
    """The page's script sends the photos one request each (so a set of photos is not held to one
    request's size limit) and asks for JSON; without the script the form posts them all at once."""
    return request.accept_mimetypes.best == "application/json"


def teach_one_by_one(form: TeachForm):
    """One photo from the page's script: ``{"taught", "count", "label"}``, or an error with its message."""
    if not form.validate_on_submit():
        message = "; ".join(f"{key}: {', '.join(value)}" for key, value in form.errors.items())
        return jsonify({"error": {"message": message or "Bad form."}}), 400
    try:
        label, level = store.clean_label(form.label.data), store.check_level(form.level.data)
        uploads = [f for f in request.files.getlist(form.photos.name) if f and (f.filename or f.content_length)]
        if len(uploads) != 1:
            return jsonify({"error": {"message": "Send one photo per request."}}), 400
        example = store.example_from_photo(uploads[0].read(), label, level, source="upload",
                                           added_by=current_user.username)
    except (ImageRejected, RequestRejected) as exc:
        return jsonify({"error": {"code": exc.code, "message": exc.message}}), status_of(exc)
    store.teach([example])
    current_app.logger.info("admin %s taught %s (%s) with a photo", current_user.username, label, level)
    return jsonify({"taught": 1, "label": label, "count": store.count_of(label)}), 201


def teach_from_form(form: TeachForm) -> int:
    """Store the form's photos; the status to answer with (200 when something was taught)."""
    try:
        label, level = store.clean_label(form.label.data), store.check_level(form.level.data)
    except RequestRejected as exc:
        flash(exc.message, "danger")
        return 400
    files = [f for f in (request.files.getlist(form.photos.name) or []) if f and (f.filename or f.content_length)]
    if not files:
        flash("Add at least one photo.", "warning")
        return 400
    examples, refused = [], []
    for upload in files:
        try:
            examples.append(store.example_from_photo(upload.read(), label, level, source="upload",
                                                     added_by=current_user.username))
        except ImageRejected as exc:
            refused.append(f"{upload.filename or 'a photo'}: {exc.message}")
        except RequestRejected as exc:
            flash(exc.message, "danger")
            return 409
    stored = store.teach(examples)
    for reason in refused:
        flash(reason, "warning")
    if not stored:
        return 422
    current_app.logger.info("admin %s taught %s (%s) with %d photos", current_user.username, label, level, stored)
    flash(f"Taught {label} with {stored} photo{'s' if stored != 1 else ''}.", "success")
    return 200


@bp.route("/gallery/remove", methods=["POST"])
def gallery_remove():
    """Forget a taught label."""
    form = RemoveTaughtForm()
    if not form.validate_on_submit():
        abort(400, description="The form expired; reload the page and try again.")
    removed = store.remove_label(form.label.data)
    if not removed:
        abort(404, description=f"No taught label {form.label.data!r}.")
    current_app.logger.info("admin %s removed taught label %s", current_user.username, form.label.data)
    flash(f"Removed {form.label.data} ({removed} photos).", "info")
    return redirect(url_for("admin.gallery"))


@bp.route("/gallery/examples/<row_id:example_id>.jpg")
def gallery_image(example_id: int):
    """A taught example's stored photo."""
    return stored_jpeg(GalleryExample.image, example_id, "taught example")


@bp.route("/predictions/<row_id:prediction_id>/teach", methods=["POST"])
def teach_correction(prediction_id: int):
    """Teach a corrected prediction's photo under its corrected label."""
    prediction = db.get_or_404(Prediction, prediction_id, description=f"No prediction {prediction_id}.")
    form = TeachFromCorrectionForm()
    if not form.validate_on_submit():
        abort(400, description="The form expired; reload the page and try again.")
    if prediction.correction is None:
        abort(409, description=f"Prediction {prediction_id} has no correction to teach.")
    label = prediction.correction.new_label
    try:
        example = store.example_from_photo(prediction.thumbnail, store.clean_label(label),
                                           store.check_level(form.level.data), source="correction",
                                           added_by=current_user.username, prediction_id=prediction.id)
    except (ImageRejected, RequestRejected) as exc:
        flash(exc.message, "danger")
        return redirect(url_for("admin.detail", prediction_id=prediction_id))
    store.teach([example])
    flash(f"Taught {label} with this photo ({store.count_of(label)} in all).", "success")
    return redirect(url_for("admin.detail", prediction_id=prediction_id))


@bp.app_template_global()
def teachable_correction(prediction: Prediction) -> bool:
    """Whether a prediction's correction names a label the served model does not know (worth teaching)."""
    correction = prediction.correction
    return correction is not None and correction.new_label not in set(get_classifier().labels)


@bp.app_template_global()
def teach_correction_form() -> TeachFromCorrectionForm:
    """A fresh one-click teaching form for the detail page."""
    return TeachFromCorrectionForm()
