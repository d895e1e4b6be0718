"""Model card blueprint, mounted at ``/model``: what the served model is, how well it does, where it fails."""

from flask import Blueprint

bp = Blueprint("model_card", __name__)

from . import routes  # noqa: E402,F401  (routes attach themselves to bp)
