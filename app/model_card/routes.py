"""Routes of the model card: the page and the report files it shows."""

from __future__ import annotations

from flask import abort, render_template, send_from_directory

from ..serving import get_classifier, get_vehicle_gate
from . import bp
from .card import SERVABLE_SUFFIXES, build_card, report_dir


@bp.get("/")
def index():
    """The model card of the served model."""
    return render_template("model_card/index.html", card=build_card(get_classifier(), get_vehicle_gate()))


@bp.get("/report/<path:filename>")
def report_file(filename: str):
    """A file of the served artifact's ``report/`` folder; nothing outside it (``send_from_directory``
    refuses paths that climb out) and only figures and tables."""
    if not filename.lower().endswith(SERVABLE_SUFFIXES):
        abort(404)
    response = send_from_directory(report_dir(get_classifier().model_dir), filename, max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
