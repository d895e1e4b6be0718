"""Per-client request limits on the routes that cost the most: uploads (page, examples and API), the API,
and visitors' answers to "Was this right?" (page and API).

The limits are read from the settings on every request (``RATELIMIT_UPLOAD``, ``RATELIMIT_API``,
``RATELIMIT_FEEDBACK``), so
each app built by ``create_app`` can have its own. They are declared once per process because the
limiter keeps one registry for every app it is bound to.
"""

from __future__ import annotations

from flask import Flask, current_app, request

from .extensions import limiter

UPLOAD_FIELDS = ("image", "images")
# POST routes of the upload and API blueprints that classify nothing: they count as answers, not uploads.
FEEDBACK_ENDPOINTS = frozenset({"upload.feedback", "api.feedback"})


def photos_in_request() -> int:
    """How many photos this request uploads (at least 1), so a batch of 32 costs 32 uploads."""
    return max(1, sum(len(request.files.getlist(field)) for field in UPLOAD_FIELDS))


def is_feedback() -> bool:
    """Whether this request sends an answer rather than a photo."""
    return request.endpoint in FEEDBACK_ENDPOINTS


# One bucket per client for every upload, whichever page or API route it arrives through.
UPLOAD_LIMIT = limiter.shared_limit(lambda: current_app.config["RATELIMIT_UPLOAD"], scope="upload",
                                    methods=["POST"], cost=photos_in_request, exempt_when=is_feedback)
# One bucket per client for answers, page and API together; decorates the two feedback views. It adds to
# the blueprints' limits rather than replacing them, so API answers still count against RATELIMIT_API.
FEEDBACK_LIMIT = limiter.shared_limit(lambda: current_app.config["RATELIMIT_FEEDBACK"], scope="feedback",
                                      methods=["POST"], override_defaults=False)
API_LIMIT = limiter.limit(lambda: current_app.config["RATELIMIT_API"])


def register(app: Flask) -> None:
    """Attach the limits to the upload and API blueprints of ``app``.

    Args:
        app: An app whose blueprints are registered.
    """
    for name in ("upload", "api"):
        UPLOAD_LIMIT(app.blueprints[name])
    API_LIMIT(app.blueprints["api"])
