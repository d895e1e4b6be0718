"""Operations blueprint: liveness (``/healthz``), readiness (``/readyz``), App Engine warmup, ``/metrics``."""

from flask import Blueprint

bp = Blueprint("health", __name__)

from . import routes  # noqa: E402,F401  (routes attach themselves to bp)
