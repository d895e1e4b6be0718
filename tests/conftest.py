"""Shared fixtures: real tiny model artifacts, the app on a temporary SQLite file, image factories.

With ``TEST_DATABASE_URL`` set (a PostgreSQL URL), the ``app`` fixture uses that server instead, one
fresh schema per test; every test that uses the app's database is marked ``db``, so
``pytest -m db`` runs exactly that part of the suite against PostgreSQL.

The artifacts are real Keras models exported with ``training.export`` (``model.keras`` +
``model.tflite``), built once per test session. The "colors" model answers ``red``, ``green`` or
``blue`` from the mean colour of the photo, so tests can check that the right label comes back.

Plain helpers (paths, model builders, image encoding) live in ``support.py``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from PIL import Image

from support import COLOR_LABELS, COLOR_RGB, build_color_model, build_random_model, encode, export

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
# TensorFlow's C++ start-up chatter would bury test output; set before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
    config.addinivalue_line("markers", "db: uses the app's database (runs against PostgreSQL too when "
                                       "TEST_DATABASE_URL is set)")


def pytest_collection_modifyitems(items):
    """Mark every test that gets a database from the ``database_url`` fixture (directly or via ``app``)."""
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with every connection's ``search_path`` set to ``schema`` (a libpq option)."""
    from sqlalchemy.engine import make_url

    return make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)


@pytest.fixture
def database_url(tmp_path):
    """An empty database for one test: a SQLite file, or a new schema on ``TEST_DATABASE_URL``."""
    if not TEST_DATABASE_URL:
        yield f"sqlite:///{tmp_path / 'predictions.db'}"
        return
    from sqlalchemy import create_engine, text

    from app.config import finalize

    server = create_engine(finalize({"DATABASE_URL": TEST_DATABASE_URL, "MODEL_DIR": "."},
                                    str(tmp_path))["SQLALCHEMY_DATABASE_URI"])
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with server.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield with_search_path(TEST_DATABASE_URL, schema)
    finally:
        with server.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))  # fail, never hang, on a leaked session
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        server.dispose()


@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def color_artifact(artifacts_root) -> Path:
    """The red/green/blue artifact, 32x32 input, centre crop."""
    return export(build_color_model((32, 32)), COLOR_LABELS, artifacts_root / "colors",
                  name="colors", image_size=(32, 32))


@pytest.fixture(scope="session")
def random_artifact(artifacts_root) -> Path:
    """A seeded random conv net with 10 classes, 64x48 input (non-square on purpose)."""
    labels = [f"class-{i}" for i in range(10)]
    return export(build_random_model((64, 48), len(labels)), labels, artifacts_root / "random",
                  name="random", image_size=(64, 48))


@pytest.fixture
def app(color_artifact, database_url, tmp_path):
    """The app on a fresh database, schema made by the migration, CSRF on as in production."""
    from flask_migrate import upgrade

    from app import create_app

    application = create_app({
        "TESTING": True,
        "MODEL_DIR": str(color_artifact),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret",
        "INFERENCE_THREADS": 1,
        "RATELIMIT_ENABLED": False,  # tests fire hundreds of requests from one address
        # Per test, also when the database is a PostgreSQL schema (the default would be the instance folder).
        "RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimits.db'}",
        # Per test too: the default, under the repository's instance folder, is shared by every test (and
        # every parallel worker) whose first prediction is the same photo.
        "EXPLANATION_CACHE_DIR": str(tmp_path / "explanations"),
    })
    with application.app_context():
        upgrade()
    yield application
    from app.extensions import db

    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def make_image():
    """Factory: ``make_image(color="red", size=(w, h), fmt="JPEG", mode="RGB", **save_kwargs) -> bytes``."""

    def factory(color: str | tuple = "red", size=(120, 80), fmt="JPEG", mode="RGB", **save_kwargs) -> bytes:
        rgb = COLOR_RGB.get(color, color) if isinstance(color, str) else color
        img = Image.new("RGB", size, rgb)
        if mode != "RGB":
            img = img.convert(mode)
        return encode(img, fmt, **save_kwargs)

    return factory

