"""Probe routes for load balancers and orchestrators, App Engine's warmup request, Prometheus metrics."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics
from ..serving import get_classifier
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


@bp.get("/_ah/warmup")
def warmup():
    """App Engine calls this before routing traffic to a new instance: report the warm-up, open a connection.

    The model ran its warm-up inference when it was loaded, before this process served anything; this
    answers from that rather than run the model again, because a public URL that costs an inference
    per call is an easy way to load the server. One query opens the database pool, so the first user
    waits for neither.
    """
    classifier = get_classifier()
    db.session.execute(text("SELECT 1"))
    return jsonify(status="warm", model=classifier.name, version=classifier.version,
                   warmup_ms=classifier.warmup_ms)


@bp.get("/metrics")
def prometheus_metrics():
    """Prometheus text format: requests, latency, predictions per label, model load and inference time."""
    body, headers = metrics.render()
    return Response(body, headers=headers)
