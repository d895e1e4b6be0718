"""Flask application factory for the car-photo classifier."""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

from flask import Flask
from sqlalchemy import event

from inference.classifier import load_classifier
from .config import Config, finalize
from .extensions import bootstrap, csrf, db, limiter, login_manager, migrate_extension
from .logs import register_logging
from .metrics import observe_model_load, register_metrics

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")


def create_app(config: type | Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, extensions, the model, routes, error pages, CLI.

    Args:
        config: Overrides for the environment settings: a class (its upper-case attributes) or a dict.

    Returns:
        The configured Flask app with the classifier loaded in ``app.extensions["classifier"]``.

    Raises:
        ArtifactError: The model artifact is missing or broken (one-line message).
    """
    app = Flask(__name__, instance_relative_config=True)
    # A prediction's body leads with its headline and answer; sorted keys would bury them mid-object.
    app.json.sort_keys = False
    load_config(app, config)
    register_logging(app)
    register_metrics(app)
    register_extensions(app)
    register_url_converters(app)
    load_classifier_into(app)
    load_vehicle_gate_into(app)
    register_gallery(app)
    register_blueprints(app)
    register_rate_limits(app)
    register_errorhandlers(app)
    register_commands(app)
    register_security_headers(app)
    register_proxy_fix(app)
    register_complete_bodies(app)
    return app


def load_config(app: Flask, overrides: type | Mapping[str, Any] | None) -> None:
    """Environment settings, then ``overrides``, then the derived defaults."""
    values = Config.from_env()
    if isinstance(overrides, type):
        values.update({key: getattr(overrides, key) for key in dir(overrides) if key.isupper()})
    elif overrides:
        values.update(overrides)
    app.config.update(finalize(values, app.instance_path))


def register_extensions(app: Flask) -> None:
    """Bind the extensions and tune SQLite connections."""
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite:///") or app.config["RATELIMIT_STORAGE_URI"].startswith(f"sqlite:///{app.instance_path}"):
        os.makedirs(app.instance_path, exist_ok=True)
    db.init_app(app)
    if app.config["DB_COMMANDS"]:
        migrate_extension().init_app(app, db, directory=MIGRATIONS_DIR)
    csrf.init_app(app)
    bootstrap.init_app(app)
    from . import ratelimits  # noqa: F401  (registers the sqlite:// counter store before the limiter reads its URI)

    limiter.init_app(app)
    login_manager.init_app(app)
    if uri.startswith("sqlite"):
        with app.app_context():
            install_sqlite_pragmas(db.engine, wal=app.config["SQLITE_WAL"],
                                   busy_timeout_ms=app.config["SQLITE_BUSY_TIMEOUT_MS"])


def install_sqlite_pragmas(engine, *, wal: bool, busy_timeout_ms: int) -> None:
    """Set journaling, lock waiting and foreign keys on every new SQLite connection.

    WAL lets readers proceed while a worker writes; it needs shared memory, which network file
    systems do not offer, hence the switch.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if wal:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, far fewer fsyncs
        cursor.close()


def register_url_converters(app: Flask) -> None:
    """``<public_id:...>`` for predictions in public URLs, ``<row_id:...>`` for database ids in admin URLs."""
    from .routing import PublicIdConverter, RowIdConverter

    app.url_map.converters["public_id"] = PublicIdConverter
    app.url_map.converters["row_id"] = RowIdConverter


def load_classifier_into(app: Flask) -> None:
    """Load the model once per process; every request reuses it."""
    started = time.perf_counter()
    classifier = load_classifier(app.config["MODEL_DIR"], runtime=app.config["MODEL_RUNTIME"],
                                 num_threads=app.config["INFERENCE_THREADS"], variant=app.config["MODEL_VARIANT"],
                                 batch_max_size=app.config["BATCH_MAX_SIZE"],
                                 batch_timeout_ms=app.config["BATCH_TIMEOUT_MS"])
    seconds = time.perf_counter() - started
    app.extensions["classifier"] = classifier
    observe_model_load(classifier, seconds)
    app.logger.info("serving %s", classifier.model_dir, extra={
        "model": classifier.name, "version": classifier.version, "runtime": classifier.runtime,
        "load_seconds": round(seconds, 3)})


def load_vehicle_gate_into(app: Flask) -> None:
    """Load the "not a car" gate once per process (``VEHICLE_GATE_DIR``; off when absent)."""
    from inference.gate import load_vehicle_gate

    app.extensions["vehicle_gate"] = load_vehicle_gate(app.config.get("VEHICLE_GATE_DIR"),
                                                       num_threads=app.config.get("INFERENCE_THREADS"))


def register_gallery(app: Flask) -> None:
    """Examples taught beside the model (``app/gallery.py``): an empty gallery now, the store read on use."""
    from .gallery import init_app

    init_app(app)


def register_blueprints(app: Flask) -> None:
    """Web page at ``/``, JSON API at ``/api/v1``, probes at ``/healthz`` and ``/readyz``, admin at ``/admin``."""
    from .admin import bp as admin_bp
    from .api import bp as api_bp
    from .apidocs import bp as apidocs_bp
    from .health import bp as health_bp
    from .model_card import bp as model_card_bp
    from .upload import bp as upload_bp

    app.register_blueprint(upload_bp)
    app.register_blueprint(api_bp, url_prefix="/api/v1")
    csrf.exempt(api_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(model_card_bp, url_prefix="/model")
    app.register_blueprint(apidocs_bp)
    app.register_blueprint(admin_bp, url_prefix="/admin")


def register_rate_limits(app: Flask) -> None:
    """Per-client limits on uploads and on the API (``RATELIMIT_*`` settings); 429 beyond them."""
    from .ratelimits import register

    register(app)


def register_errorhandlers(app: Flask) -> None:
    """JSON or HTML errors with the same status and message."""
    from .errors import register_errorhandlers as register

    register(app)


def register_commands(app: Flask) -> None:
    """``flask model-info`` and ``flask classify``."""
    from .commands import register

    register(app)


def register_security_headers(app: Flask) -> None:
    """Scripts only from this site (the pages have no inline script), forms post only here, no framing,
    no plugins, no MIME sniffing, and no full URLs leaked to other sites."""

    @app.after_request
    def _headers(response):
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
            "frame-ancestors 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")  # frame-ancestors for older browsers
        response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        return response


def register_proxy_fix(app: Flask) -> None:
    """Believe ``X-Forwarded-*`` from ``TRUSTED_PROXIES`` proxies, so limits and logs see the real client."""
    hops = app.config["TRUSTED_PROXIES"]
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)


def register_complete_bodies(app: Flask) -> None:
    """A body that stops before its ``Content-Length`` is refused, never classified and stored."""
    from .routing import CompleteBodies

    app.wsgi_app = CompleteBodies(app.wsgi_app)
