"""Admin pages: sign-in/out, the review table with its dashboard, a prediction's details and correction,
thumbnails by URL, and the CSV of the filtered set."""

from __future__ import annotations

import datetime as dt

from flask import (Response, abort, current_app, flash, g, redirect, render_template, request,
                   session, stream_with_context, url_for)
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.orm import defer, joinedload

from ..serving import get_classifier
from ..extensions import db, limiter
from ..models import SOURCES, AdminUser, Correction, Prediction, utcnow
from . import bp
from .auth import safe_next
from .charts import per_day_svg
from .export import prediction_rows
from .forms import CorrectionForm, DeleteCorrectionForm, LoginForm, LogoutForm
from ..upload.headline import listed_summary, served_group_of, served_makes, summary
from .queries import (PAGE_SIZES, SORT_COLUMNS, STATUSES, VISITOR_FILTERS, ReviewFilters, dashboard, filter_choices,
                      review_page, visitor_summary)

SAME_PHOTO_LIMIT = 50


@bp.after_request
def never_store(response):
    """Admin pages and the CSV hold every upload's details: no cache may keep them, the browser's included.

    Thumbnails set their own (private) caching: they never change and the review table shows many.
    """
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.context_processor
def admin_template_globals() -> dict:
    """Every admin page shows the sign-out button."""
    return {"logout_form": LogoutForm()}


def low_confidence_below() -> float:
    """The configured low-confidence threshold."""
    return current_app.config["ADMIN_LOW_CONFIDENCE"]


def login_failed() -> bool:
    """Flask-Limiter counts a login attempt only when it failed (set by the view)."""
    return bool(g.get("admin_login_failed"))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["ADMIN_LOGIN_RATE_LIMIT"], methods=["POST"],
               deduct_when=lambda response: login_failed())
def login():
    """The sign-in form; on success go to ``next`` when it is a path on this site."""
    form = LoginForm(next=request.args.get("next", ""))
    destination = safe_next(form.next.data, url_for("admin.index"))
    if current_user.is_authenticated and request.method == "GET":
        return redirect(destination)
    if form.validate_on_submit():
        admin = AdminUser.authenticate(form.username.data, form.password.data)
        if admin is not None:
            # A fresh session: its new CSRF secret voids every token handed out before signing in (one an
            # attacker planted or read then), and a new session token ends the account's earlier sign-ins.
            session.clear()
            admin.end_sessions()
            login_user(admin)
            admin.last_login_at = utcnow()
            db.session.commit()
            current_app.logger.info("admin %s signed in from %s", admin.username, request.remote_addr)
            return redirect(destination)
        g.admin_login_failed = True
        # The username is logged to spot guessing; the password never is.
        current_app.logger.warning("failed admin login for username %r from %s", form.username.data,
                                   request.remote_addr)
        flash("Wrong username or password.", "danger")
        return render_template("admin/login.html", form=form), 401
    return render_template("admin/login.html", form=form), 400 if form.errors else 200


@bp.route("/logout", methods=["POST"])
def logout():
    """End the account's sessions (POST with the CSRF token, so another site cannot sign an admin out).

    A new session token is drawn, so a copy of the cookie stops working too, not only this browser's.
    """
    if not LogoutForm().validate_on_submit():
        abort(400, description="The form expired; reload the page and try again.")
    current_user.end_sessions()
    db.session.commit()
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("admin.login"))


@bp.route("/")
def index():
    """The review table, newest first, with the filters and the dashboard strip."""
    filters = ReviewFilters.from_args(request.args)
    threshold = low_confidence_below()
    board = dashboard(filters, threshold, served_group_of())
    page = review_page(filters, threshold, total=board.total)  # the dashboard already counted the set
    makes = served_makes()
    leads = {p.id: listed_summary(p, makes) for p in page.items}
    return render_template("admin/index.html", filters=filters, page=page, board=board, leads=leads,
                           chart=per_day_svg(board.per_day), choices=filter_choices(), page_sizes=PAGE_SIZES,
                           statuses=STATUSES, visitor_filters=VISITOR_FILTERS, sources=SOURCES,
                           sortable=SORT_COLUMNS, threshold=threshold)


@bp.route("/predictions/<row_id:prediction_id>")
def detail(prediction_id: int):
    """One prediction: larger thumbnail, full top-k, metadata, its correction beside what visitors said
    (a suggested label is adopted as the correction in one click), the same photo's other answers."""
    prediction = db.session.scalar(
        select(Prediction).options(defer(Prediction.thumbnail),
                                   joinedload(Prediction.correction).joinedload(Correction.corrected_by))
        .where(Prediction.id == prediction_id))
    if prediction is None:
        abort(404, description=f"No prediction {prediction_id}.")
    same_photo = db.session.scalars(
        select(Prediction).options(defer(Prediction.thumbnail), defer(Prediction.top_k),
                                   joinedload(Prediction.correction).joinedload(Correction.corrected_by))
        .where(Prediction.sha256 == prediction.sha256, Prediction.id != prediction.id)
        .order_by(Prediction.created_at.desc()).limit(SAME_PHOTO_LIMIT)).all()
    makes = served_makes()
    # Two true labels for one photo would put it in two training folders: say so where it can be fixed.
    labels = {p.correction.new_label for p in [prediction, *same_photo] if p.correction is not None}
    return render_template("admin/detail.html", prediction=prediction, same_photo=same_photo,
                           conflicting_labels=sorted(labels) if len(labels) > 1 else [],
                           lead=summary(prediction, *makes),
                           same_photo_leads={p.id: listed_summary(p, makes) for p in same_photo},
                           label_choices=label_choices(prediction), form=CorrectionForm(),
                           visitors=visitor_summary(prediction.id),
                           delete_form=DeleteCorrectionForm(),
                           back=safe_next(request.args.get("back"), url_for("admin.index")))


def label_choices(prediction: Prediction) -> list[str]:
    """Labels offered for a correction: this answer's top-k, the served model's labels, earlier corrections."""
    known = [answer["label"] for answer in prediction.top_k]
    known += get_classifier().labels
    known += db.session.scalars(select(Correction.new_label).distinct()).all()
    return list(dict.fromkeys(known))


def stored_jpeg(column, row_id: int, what: str) -> Response:
    """The JPEG stored in ``column`` of row ``row_id`` (only that column is read); 404 naming ``what``."""
    blob = db.session.scalar(select(column).where(column.class_.id == row_id))
    if blob is None:
        abort(404, description=f"No {what} {row_id}.")
    response = Response(blob, mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, max-age=86400"  # a stored photo never changes
    return response


@bp.route("/predictions/<row_id:prediction_id>/thumbnail.jpg")
def thumbnail(prediction_id: int):
    """The stored JPEG thumbnail."""
    return stored_jpeg(Prediction.thumbnail, prediction_id, "prediction")


@bp.route("/predictions/<row_id:prediction_id>/correction", methods=["POST"])
def correct(prediction_id: int):
    """Store or edit the true label of a prediction (who and when are recorded)."""
    prediction = db.get_or_404(Prediction, prediction_id, description=f"No prediction {prediction_id}.")
    form = CorrectionForm()
    back = detail_url(prediction_id)
    if not form.validate_on_submit():
        abort(400, description="; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items()) or "Bad form.")
    label = form.chosen_label(prediction.top_label)
    if label is None:
        flash("Pick or type the true label, or mark the answer correct.", "warning")
        return redirect(back)
    correction = prediction.correction
    if correction is None:
        correction = Correction(prediction=prediction, old_label=prediction.top_label)
        db.session.add(correction)
    correction.new_label = label
    correction.corrected_by_id = current_user.id
    correction.updated_at = utcnow()
    db.session.commit()
    verdict = "confirmed" if correction.model_was_right else f"corrected to {label}"
    current_app.logger.info("admin %s %s prediction %d", current_user.username, verdict, prediction_id)
    flash(f"Prediction {prediction_id} {verdict}.", "success")
    return redirect(back)


@bp.route("/predictions/<row_id:prediction_id>/correction/delete", methods=["POST"])
def delete_correction(prediction_id: int):
    """Withdraw the correction of a prediction."""
    form = DeleteCorrectionForm()
    if not form.validate_on_submit():
        abort(400, description="The form expired; reload the page and try again.")
    correction = db.session.scalar(select(Correction).where(Correction.prediction_id == prediction_id))
    if correction is None:
        abort(404, description=f"Prediction {prediction_id} has no correction.")
    db.session.delete(correction)
    db.session.commit()
    flash(f"Correction of prediction {prediction_id} removed.", "info")
    return redirect(detail_url(prediction_id))


def detail_url(prediction_id: int) -> str:
    """The detail page, keeping the filtered list the admin came from as its "back" link."""
    back = request.args.get("back")
    if back and safe_next(back, "") == back:
        return url_for("admin.detail", prediction_id=prediction_id, back=back)
    return url_for("admin.detail", prediction_id=prediction_id)


@bp.route("/predictions.csv")
def predictions_csv():
    """The filtered set as CSV, streamed row chunk by row chunk."""
    filters = ReviewFilters.from_args(request.args)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    response = Response(stream_with_context(prediction_rows(filters, low_confidence_below())),
                        mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="predictions-{stamp}.csv"'
    return response
