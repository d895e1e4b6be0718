"""Helpers for the trust tests: an app with chosen settings, and artifacts with a confidence threshold."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from support import REPO_ROOT

SHIPPED_GATE = REPO_ROOT / "model_artifacts" / "vehicle-gate"
CARS_VS_PLANES = REPO_ROOT.parent / "shared" / "datasets" / "cars-vs-planes"


def make_app(model_dir: Path, database_url: str, **overrides):
    """The app on a fresh migrated database (the ``database_url`` fixture) with ``overrides`` (CSRF on)."""
    from flask_migrate import upgrade

    from app import create_app

    application = create_app({
        "TESTING": True,
        "MODEL_DIR": str(model_dir),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret",
        "INFERENCE_THREADS": 1,
        "RATELIMIT_ENABLED": False,
        **overrides,
    })
    with application.app_context():
        upgrade()
    return application


def dispose(application) -> None:
    from app.extensions import db

    with application.app_context():
        db.engine.dispose()


def with_confidence(artifact: Path, out: Path, threshold, target_precision: float = 0.95) -> Path:
    """A copy of ``artifact`` whose metadata holds ``confidence.threshold`` (``None`` = no key at all)."""
    shutil.copytree(artifact, out)
    path = out / "metadata.json"
    metadata = json.loads(path.read_text())
    if threshold is None:
        metadata.pop("confidence", None)
    else:
        metadata["confidence"] = {"threshold": threshold, "target_precision": target_precision,
                                  "coverage": 0.8, "accuracy": 0.96, "curve": []}
    path.write_text(json.dumps(metadata))
    return out


def post_image(client, data: bytes, name: str = "photo.jpg"):
    """POST one image to the single-photo API."""
    return client.post("/api/v1/predictions", data={"image": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")
