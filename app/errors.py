"""Error responses: JSON for the API and for clients that ask for JSON, an HTML page otherwise.

Both carry the same status and message, so a person using the page and a program using the API are
told the same thing. Anything unexpected becomes a logged 500 with a generic message.
"""

from __future__ import annotations

from flask import Flask, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .imaging import ImageRejected

CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    500: "internal_error",
    503: "service_unavailable",
}
MESSAGES = {
    404: "There is nothing at this address.",
    405: "This address does not accept that method.",
    413: "The upload is too large.",
    500: "Something went wrong on our side; the error has been logged.",
}


def wants_json() -> bool:
    """Whether the error should be JSON: API paths, or a client that prefers JSON to HTML."""
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def error_response(status: int, code: str, message: str):
    """Render one error as JSON or HTML, depending on the request."""
    if wants_json():
        return jsonify(error={"status": status, "code": code, "message": message}), status
    return render_template("errors/error.html", status=status, code=code, message=message), status


def handle_http_exception(exc: HTTPException):
    """Routing and protocol errors (404, 405, 413 ...) with a plain-language message."""
    status = exc.code or 500
    if status == 413:
        limit = request.max_content_length
        message = (f"The upload is too large; the limit is {limit / (1024 * 1024):g} MB."
                   if limit else MESSAGES[413])
    else:
        message = MESSAGES.get(status) or exc.description or exc.name
    return error_response(status, CODES.get(status, exc.name.lower().replace(" ", "_")), message)


def handle_csrf_error(exc: CSRFError):
    """A form post without a valid token: usually a page left open across a restart."""
    return error_response(400, "csrf_failed",
                          f"The form has expired or was not sent from this site ({exc.description}) "
                          f"Reload the page and try again.")


def handle_image_rejected(exc: ImageRejected):
    """An upload the app cannot classify; the exception carries status, code and message."""
    return error_response(exc.status, exc.code, exc.message)


def handle_unexpected(exc: Exception):
    """Anything else: log the details, tell the client only that it failed on our side."""
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, CODES[500], MESSAGES[500])


def register_errorhandlers(app: Flask) -> None:
    """Install the handlers on ``app``."""
    app.register_error_handler(CSRFError, handle_csrf_error)
    app.register_error_handler(ImageRejected, handle_image_rejected)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
