"""Probe routes for load balancers and orchestrators, App Engine's warmup request, Prometheus metrics."""

from __future__ import annotations

import numpy as np
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
    """App Engine calls this before routing traffic to a new instance: run the model, open a connection.

    The model is already loaded when the app is built; one inference in this worker makes sure its
    interpreter is allocated, and one query opens the database pool, so the first user waits for
    neither.
    """
    classifier = get_classifier()
    classifier.predict_batch(np.zeros((1, *classifier.image_size, 3), dtype=np.float32))
    db.session.execute(text("SELECT 1"))
    return jsonify(status="warm", model=classifier.name, version=classifier.version)


@bp.get("/metrics")
def prometheus_metrics():
    """Prometheus text format: requests, latency, predictions per label, model load and inference time."""
    body, headers = metrics.render()
    return Response(body, headers=headers)
