"""Per-client request limits on the routes that cost the most: uploads (page, examples and API), the API,
and visitors' answers to "Was this right?" (page and API).

The limits are read from the settings on every request (``RATELIMIT_UPLOAD``, ``RATELIMIT_API``,
``RATELIMIT_FEEDBACK``), so
each app built by ``create_app`` can have its own. They are declared once per process because the
limiter keeps one registry for every app it is bound to.

An upload is charged by its work: one unit per photo, and one more per ``RATELIMIT_PIXELS_PER_UPLOAD``
pixels beyond the first (read from the image headers, nothing is decoded), so a batch of 40-megapixel
blanks costs what its decoding costs. The counters live where ``RATELIMIT_STORAGE_URI`` says: by default
a SQLite file shared by every worker of the machine (:class:`SQLiteCounters`).
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time

from flask import Flask, current_app, g, request
from limits.storage import Storage

from .extensions import limiter
from inference.imaging import declared_pixels

UPLOAD_FIELDS = ("image", "images")
# POST routes of the upload and API blueprints that classify nothing: they count as answers, not uploads.
FEEDBACK_ENDPOINTS = frozenset({"upload.feedback", "api.feedback"})


def upload_cost(pixels: int, per_upload: int) -> int:
    """Units one photo costs: 1, plus 1 per ``per_upload`` pixels beyond the first ``per_upload``."""
    return max(1, math.ceil(pixels / per_upload)) if per_upload > 0 else 1


def work_in_request() -> int:
    """What this request's uploads cost (at least 1): see :func:`upload_cost`, summed over its photos."""
    if "upload_work" not in g:
        per_upload = current_app.config["RATELIMIT_PIXELS_PER_UPLOAD"]
        uploads = [upload for field in UPLOAD_FIELDS for upload in request.files.getlist(field)]
        g.upload_work = max(1, sum(upload_cost(declared_pixels(upload.stream), per_upload) for upload in uploads))
    return g.upload_work


def is_feedback() -> bool:
    """Whether this request sends an answer rather than a photo."""
    return request.endpoint in FEEDBACK_ENDPOINTS


# One bucket per client for every upload, whichever page or API route it arrives through.
UPLOAD_LIMIT = limiter.shared_limit(lambda: current_app.config["RATELIMIT_UPLOAD"], scope="upload",
                                    methods=["POST"], cost=work_in_request, exempt_when=is_feedback)
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


class SQLiteCounters(Storage):
    """Fixed-window counters in a SQLite file that every worker on the machine opens.

    ``RATELIMIT_STORAGE_URI=sqlite:////path/ratelimits.db``. One ``UPSERT ... RETURNING`` per hit is a
    single atomic statement, so workers never lose each other's counts, and a worker that restarts (a
    flood of 429s reaching gunicorn's ``max_requests``) finds its clients' counts where it left them.
    Several machines need a store they all reach: Redis.
    """

    STORAGE_SCHEME = ["sqlite"]
    PURGE_EVERY = 1000  # hits between sweeps of expired counters

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not self.path:
            raise ValueError(f"a SQLite rate-limit store needs a file: sqlite:////absolute/path.db, not {uri!r}")
        self._local = threading.local()
        self._hits = 0

    @property
    def base_exceptions(self):
        return sqlite3.Error

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection; a forked worker opens its own rather than share its parent's."""
        if getattr(self._local, "pid", None) != os.getpid():
            # No folder is made here: the file lives beside the database or in the instance folder.
            connection = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("CREATE TABLE IF NOT EXISTS counters "
                               "(key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires_at REAL NOT NULL)")
            self._local.connection, self._local.pid = connection, os.getpid()
        return self._local.connection

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        connection = self._connection()
        (value,) = connection.execute(
            "INSERT INTO counters (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
            "value = CASE WHEN expires_at <= ? THEN excluded.value ELSE value + excluded.value END, "
            "expires_at = CASE WHEN expires_at <= ? THEN excluded.expires_at ELSE expires_at END "
            "RETURNING value", (key, amount, now + expiry, now, now)).fetchone()
        self._hits += 1
        if self._hits % self.PURGE_EVERY == 0:
            connection.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
        return value

    def get(self, key: str) -> int:
        row = self._connection().execute("SELECT value FROM counters WHERE key = ? AND expires_at > ?",
                                         (key, time.time())).fetchone()
        return row[0] if row else 0

    def get_expiry(self, key: str) -> float:
        row = self._connection().execute("SELECT expires_at FROM counters WHERE key = ? AND expires_at > ?",
                                         (key, time.time())).fetchone()
        return row[0] if row else time.time()

    def check(self) -> bool:
        try:
            self._connection().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def reset(self) -> int | None:
        return self._connection().execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        self._connection().execute("DELETE FROM counters WHERE key = ?", (key,))
