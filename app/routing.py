"""URL converters for the ids in addresses, and the check that a request body arrived whole.

Predictions are addressed in public by their random ``public_id``; database ids appear only in admin
URLs, where a number beyond the id column's range cannot name a row, so it is not matched at all (404)
instead of reaching the database, which refuses it (PostgreSQL's ``integer`` holds 32 bits; SQLite's
wider rowids never get there, ids only count up).
"""

from __future__ import annotations

from werkzeug.routing import BaseConverter, IntegerConverter

ROW_ID_MAX = 2**31 - 1  # db.Integer: PostgreSQL's 4-byte integer


class RowIdConverter(IntegerConverter):
    """``<row_id:name>``: a positive integer that fits the database's id column."""

    def __init__(self, map, *args, **kwargs):
        super().__init__(map, min=1, max=ROW_ID_MAX)


class PublicIdConverter(BaseConverter):
    """``<public_id:name>``: a prediction's public id (URL-safe base64 text); anything else is no match."""

    regex = r"[A-Za-z0-9_-]{16,64}"


class CompleteBodies:
    """WSGI middleware: a body that ends before its ``Content-Length`` is a failed upload, not a short one.

    gunicorn marks its input as terminated, and Werkzeug then reads a body until the connection gives
    no more bytes, so a client that stops sending (and gives up) after a complete multipart form would
    still get its photo classified and stored. Without that mark Werkzeug holds the body to its
    ``Content-Length`` and a body that stops short raises ``ClientDisconnected`` (400) while the form is
    read, before any work is done. Chunked bodies have no length to hold to and keep the mark.
    """

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if environ.get("CONTENT_LENGTH", "").strip() and not chunked:
            environ.pop("wsgi.input_terminated", None)
        return self.app(environ, start_response)
