"""Shared fixtures: real tiny model artifacts, the app on a temporary SQLite file, image factories.

With ``TEST_DATABASE_URL`` set (a PostgreSQL URL), the ``app`` fixture uses that server instead, one
fresh schema per test; every test that uses the app's database is marked ``db``, so
``pytest -m db`` runs exactly that part of the suite against PostgreSQL.

The artifacts are real Keras models exported with ``training.export`` (``model.keras`` +
``model.tflite``), built once per test session. The "colors" model answers ``red``, ``green`` or
``blue`` from the mean colour of the photo, so tests can check that the right label comes back.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
STANFORD_VAL = SHARED / "datasets" / "stanford-cars" / "val"
COLOR_LABELS = ["red", "green", "blue"]
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
# TensorFlow's C++ start-up chatter would bury test output; set before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
COLOR_RGB = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230)}


def build_color_model(image_size: tuple[int, int]):
    """Rescaling -> global average pooling -> Dense with hand-set weights -> softmax.

    The logit of each class is 10 x the mean of its channel (0..1), so a mostly red photo says "red".
    """
    import keras

    inputs = keras.Input((*image_size, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(3, activation="softmax")
    outputs = dense(x)
    dense.set_weights([np.eye(3, dtype="float32") * 10.0, np.zeros(3, dtype="float32")])
    return keras.Model(inputs, outputs)


def build_random_model(image_size: tuple[int, int], num_classes: int, seed: int = 7):
    """A small conv net with seeded random weights: spatially sensitive, like a real classifier."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*image_size, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def export(model, labels, out_dir: Path, *, name: str, image_size, resize_mode="center_crop",
           litert=True) -> Path:
    """Write ``model`` as an artifact folder with ``training.export``."""
    from training.export import build_metadata, export_artifact

    metadata = build_metadata(name=name, version="0.0.1-test", backbone="tiny-test",
                              image_size=image_size, labels=labels, resize_mode=resize_mode,
                              metrics={"val_accuracy": 1.0})
    return export_artifact(model, labels, metadata, out_dir, litert=litert)


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
def app(color_artifact, database_url):
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


def encode(img: Image.Image, fmt: str = "JPEG", **save_kwargs) -> bytes:
    """Encode a Pillow image in memory."""
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


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


def stanford_photos(count: int) -> list[Path]:
    """The first photo of each of the first ``count`` classes of the Stanford Cars val split."""
    if not STANFORD_VAL.is_dir():
        pytest.skip(f"real photos not available: {STANFORD_VAL} is missing (shared datasets not mounted)")
    photos = []
    for folder in sorted(p for p in STANFORD_VAL.iterdir() if p.is_dir()):
        first = next(iter(sorted(folder.glob("*.jpg"))), None)
        if first:
            photos.append(first)
        if len(photos) == count:
            break
    return photos
