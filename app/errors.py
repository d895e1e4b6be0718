"""Error responses: JSON for the API and for clients that ask for JSON, an HTML page otherwise.

Both carry the same status and message, so a person using the page and a program using the API are
told the same thing. A photo the model side refuses (:class:`inference.errors.InferenceError`) and a
request the web layer refuses (:class:`RequestRejected`) both carry only a code and a message;
:data:`STATUSES` is the one table that gives each code its HTTP status. A busy or unreachable database is a 503 with ``Retry-After`` (the request can
simply be repeated), too many requests a 429 with ``Retry-After``; anything unexpected becomes a logged
500 with a generic message. No response ever carries a stack trace.
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app, jsonify, render_template, request
from flask_limiter import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from inference.errors import InferenceError

from .extensions import db, limiter

CODES = {
    400: "bad_request",
    401: "authentication_required",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}
MESSAGES = {
    404: "There is nothing at this address.",
    405: "This address does not accept that method.",
    413: "The upload is too large.",
    500: "Something went wrong on our side; the error has been logged.",
}
# The HTTP status of every code a refused request can carry, from the model side or the web layer.
STATUSES = {
    # inference: the photo itself
    "empty_file": 400,
    "image_too_large": 413,
    "too_many_frames": 413,
    "unsupported_media_type": 415,
    "corrupt_image": 422,
    # inference: heatmaps
    "label_not_in_model": 409,
    "explanation_unsupported": 501,
    "explanation_unavailable": 503,
    # web: the request around the photo
    "no_file": 400,
    "several_files": 400,
    "photo_and_example": 400,
    "unknown_example": 400,
    "invalid_top_k": 400,
    "conflicting_top_k": 400,
    "too_many_images": 400,
    "batch_pixel_budget": 413,
    # web: answers to "Was this right?"
    "invalid_feedback": 400,
    "invalid_verdict": 400,
    "unexpected_label": 400,
    "missing_label": 400,
    "unknown_label": 400,
    "already_answered": 409,
    # web: teaching the gallery
    "invalid_label": 400,
    "invalid_level": 400,
    "cannot_embed": 409,
}
DATABASE_UNAVAILABLE = ("The database is busy or unavailable, so nothing was saved. "
                        "Please try again in a few seconds.")


class RequestRejected(Exception):
    """A request the web layer refuses before or around the model: a missing file, a bad ``top_k``, a batch
    over its limits, an unknown example, a malformed answer to "Was this right?".

    Args:
        code: Stable machine-readable code, a key of :data:`STATUSES`.
        message: Plain-language explanation for a person.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# Everything refused with a code and a message; both kinds are answered alike.
Rejection = InferenceError | RequestRejected
REJECTIONS = (InferenceError, RequestRejected)


def status_of(rejection: Rejection) -> int:
    """The HTTP status of a refused request; a code missing from :data:`STATUSES` is our own bug (500)."""
    return STATUSES.get(rejection.code, 500)


def rejection_body(rejection: Rejection) -> dict:
    """The JSON error object of a refused request, ``{"status", "code", "message"}``."""
    return {"status": status_of(rejection), "code": rejection.code, "message": rejection.message}


def wants_json() -> bool:
    """Whether the error should be JSON: API paths, or a client that prefers JSON to HTML."""
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


# Long enough for a lock holder to finish or a database to restart, short enough to keep users.
DATABASE_RETRY_AFTER_S = 5


def json_error(status: int, code: str, message: str, retry_after_s: int | None = None):
    """The one JSON error body, ``{"error": {"status", "code", "message"[, "retry_after"]}}``, and its status."""
    body = {"status": status, "code": code, "message": message}
    if retry_after_s is not None:
        body["retry_after"] = retry_after_s
    return jsonify(error=body), status


def error_response(status: int, code: str, message: str, retry_after_s: int | None = None,
                   headers: dict[str, str] | None = None):
    """Render one error as JSON or HTML, depending on the request.

    Args:
        status: HTTP status.
        code: Stable machine-readable code.
        message: Plain-language explanation for a person.
        retry_after_s: Seconds after which repeating the request should work (``Retry-After``).
        headers: Further response headers (``Allow`` of a 405).

    Returns:
        A ``(body, status, headers)`` tuple Flask turns into the response.
    """
    headers = dict(headers or {})
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    if wants_json():
        return (*json_error(status, code, message, retry_after_s), headers)
    return render_template("errors/error.html", status=status, code=code, message=message), status, headers


def handle_http_exception(exc: HTTPException):
    """Routing and protocol errors (404, 405, 413 ...) with a plain-language message.

    A 405 keeps the ``Allow`` header that lists the methods the address does accept.
    """
    status = exc.code or 500
    code = CODES.get(status, exc.name.lower().replace(" ", "_"))
    if status == 413:
        code, message = too_large(request.content_length, request.max_content_length)
    else:
        message = MESSAGES.get(status) or exc.description or exc.name
    headers = {key: value for key, value in exc.get_headers() if key == "Allow"}
    return error_response(status, code, message, headers=headers)


def too_large(content_length: int | None, limit: int | None) -> tuple[str, str]:
    """Code and message of a 413: the body over ``MAX_CONTENT_LENGTH``, or a form too elaborate to parse.

    Werkzeug answers both with the same exception; a body within the size limit can only have hit the
    form limits (``MAX_FORM_PARTS`` parts, ``MAX_FORM_MEMORY_SIZE`` bytes in one text field).
    """
    if limit and (content_length is None or content_length > limit):
        return CODES[413], f"The upload is too large; the limit is {limit / (1024 * 1024):g} MB."
    if not limit:
        return CODES[413], MESSAGES[413]
    parts = current_app.config.get("MAX_FORM_PARTS") or 1000
    memory = current_app.config.get("MAX_FORM_MEMORY_SIZE") or 500_000
    return ("form_too_large", f"The form has more than {parts:,} parts or a text field over {memory // 1000:,} kB; "
                              "an upload needs the photo and at most a few short fields.")


def handle_csrf_error(exc: CSRFError):
    """A form post without a valid token: usually a page left open across a restart."""
    return error_response(400, "csrf_failed",
                          f"The form has expired or was not sent from this site ({exc.description}) "
                          f"Reload the page and try again.")


def handle_rate_limited(exc: RateLimitExceeded):
    """Over a per-client limit: say which one and when to come back."""
    current = limiter.current_limit
    reset_at = current.window[0] if current else time.time() + 60  # when the client's window frees up
    retry_after = max(1, math.ceil(reset_at - time.time()))
    return error_response(429, CODES[429], f"Too many requests from your address (limit: {exc.description}). "
                                           f"Please wait {retry_after} s and try again.", retry_after)


def handle_database_unavailable(exc: Exception):
    """Locked, unreachable or exhausted database: nothing was stored, the same request can be retried.

    The session is rolled back here so that the next request on this worker starts clean, which is
    all the recovery needed once the database answers again.
    """
    try:
        db.session.rollback()
    except Exception:  # the connection may be gone entirely; the pool replaces it on next use
        pass
    reason = (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0]
    current_app.logger.warning("database unavailable on %s %s: %s", request.method, request.path, reason)
    return error_response(503, CODES[503], DATABASE_UNAVAILABLE, DATABASE_RETRY_AFTER_S)


def handle_rejected(exc: Rejection):
    """A photo or a request the app cannot take: the code decides the status, the message is shown."""
    return error_response(status_of(exc), exc.code, exc.message)


def handle_unexpected(exc: Exception):
    """Anything else: log the details, tell the client only that it failed on our side."""
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, CODES[500], MESSAGES[500])


def register_errorhandlers(app: Flask) -> None:
    """Install the handlers on ``app``."""
    app.register_error_handler(CSRFError, handle_csrf_error)
    app.register_error_handler(InferenceError, handle_rejected)
    app.register_error_handler(RequestRejected, handle_rejected)
    app.register_error_handler(RateLimitExceeded, handle_rate_limited)
    app.register_error_handler(OperationalError, handle_database_unavailable)
    app.register_error_handler(PoolTimeoutError, handle_database_unavailable)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
