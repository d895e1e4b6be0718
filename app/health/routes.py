"""Probe routes for load balancers and orchestrators."""

from __future__ import annotations

from flask import current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from . import bp


@bp.get("/healthz")
def healthz():
    """The process answers."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """200 when the model is loaded and the database answers, else 503 with what failed."""
    checks = {"model": current_app.extensions.get("classifier") is not None}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = True
    except SQLAlchemyError:
        db.session.rollback()
        current_app.logger.warning("readiness: database does not answer", exc_info=True)
        checks["database"] = False
    ready = all(checks.values())
    return jsonify(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503
