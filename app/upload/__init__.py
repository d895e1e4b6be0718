"""Upload blueprint: the HTML page to send a photo and see what the model thinks it is."""

from flask import Blueprint

bp = Blueprint("upload", __name__)

from . import routes  # noqa: E402,F401  (routes attach themselves to bp)
