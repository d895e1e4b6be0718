"""Logs to stdout, one JSON object per line, each request tagged with its request id.

A request id comes from the client's ``X-Request-ID`` header (so a proxy's id follows the request into
our logs) or is made here; it is sent back in the response's ``X-Request-ID`` and added to every log
line written while the request runs. Each request also writes one access line with its method, path,
status and duration.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
import time
import uuid
from typing import Any

from flask import Flask, g, has_request_context, request
from flask.logging import default_handler

from .config import public_config

REQUEST_ID_HEADER = "X-Request-ID"
# Incoming ids are echoed into logs and headers: accept only short, plain tokens.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Probes and scrapes arrive every few seconds; their access lines are DEBUG so they do not drown the rest.
QUIET_PATHS = ("/healthz", "/readyz", "/metrics")
# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged as a field.
STANDARD_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
HANDLER_MARK = "_car_classifier_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request id, ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "severity": record.levelname,  # the field Google Cloud Logging reads the level from
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in STANDARD_RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records written inside a request (``None`` outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = g.get("request_id") if has_request_context() else None
        return True


def configure_logging(level: str, fmt: str) -> None:
    """Send the root logger to stdout in ``fmt`` at ``level``, replacing an earlier call's handler.

    Args:
        level: ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``.
        fmt: ``json`` or ``text``.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, HANDLER_MARK, False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    setattr(handler, HANDLER_MARK, True)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


def incoming_request_id() -> str:
    """The client's ``X-Request-ID`` when it is a plain token, else a new random id."""
    candidate = request.headers.get(REQUEST_ID_HEADER, "")
    return candidate if REQUEST_ID_PATTERN.match(candidate) else uuid.uuid4().hex


def register_logging(app: Flask) -> None:
    """Configure stdout logging, log the effective settings once, tag requests with an id.

    Must run before anything touches ``app.logger``: Flask adds its own stderr handler to a logger
    that has none when it is first used.
    """
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    app.logger.removeHandler(default_handler)  # in case something used app.logger first
    app.logger.info("effective configuration", extra={"config": public_config(app.config)})

    @app.before_request
    def _start_request():
        g.request_id = incoming_request_id()
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish_request(response):
        response.headers[REQUEST_ID_HEADER] = g.get("request_id") or incoming_request_id()
        started = g.get("request_started")
        duration_ms = round((time.perf_counter() - started) * 1000.0, 2) if started else None
        level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
        logging.getLogger("app.access").log(
            level, "%s %s %s", request.method, request.path, response.status_code,
            extra={"method": request.method, "path": request.path, "status": response.status_code,
                   "duration_ms": duration_ms, "remote_addr": request.remote_addr,
                   "pid": os.getpid()})  # which worker served it, where several share a port
        return response
