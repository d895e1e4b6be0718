"""API documentation blueprint: the OpenAPI document at ``/api/v1/openapi.json`` and a page at ``/api/docs``."""

from flask import Blueprint

bp = Blueprint("apidocs", __name__)

from . import routes  # noqa: E402,F401  (routes attach themselves to bp)
