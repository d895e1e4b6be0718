"""Helpers for the admin tests: real JPEG thumbnails, seeded predictions, accounts and signing in."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re

from PIL import Image

PASSWORD = "correct horse battery"
CSRF_PATTERN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    """A real JPEG of one colour, made with Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def prediction_values(index: int, *, label: str = "red", score: float = 0.9, version: str = "1.0",
                      source: str = "web", filename: str | None = "auto", created_at: dt.datetime | None = None,
                      thumbnail: bytes | None = None, sha256: str | None = None) -> dict:
    """Column values of one prediction row; the top-k is consistent with the top label and score.

    ``filename="auto"`` names the file after ``index``; None stores no file name (as the API may).
    """
    others = [other for other in ("red", "green", "blue") if other != label][:2]
    rest = (1.0 - score) / 2
    return {
        "created_at": created_at or dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=index),
        "original_filename": f"photo-{index}.jpg" if filename == "auto" else filename,
        "sha256": sha256 or hashlib.sha256(f"photo-{index}".encode()).hexdigest(),
        "width": 640, "height": 480, "content_type": "image/jpeg",
        "thumbnail": thumbnail if thumbnail is not None else jpeg((200, 30, 30)),
        "model_name": "colors", "model_version": version, "top_label": label, "top_score": score,
        "top_k": [{"label": label, "score": score}] + [{"label": o, "score": rest} for o in others],
        "latency_ms": 12.5, "source": source,
    }


def add_prediction(index: int, **kwargs):
    """Insert one prediction (inside an app context) and return it."""
    from app.extensions import db
    from app.models import Prediction

    prediction = Prediction(**prediction_values(index, **kwargs))
    db.session.add(prediction)
    db.session.commit()
    return prediction


def create_admin(app, username: str = "alice", password: str = PASSWORD):
    """An admin account with ``password``; returns its id."""
    from app.extensions import db
    from app.models import AdminUser

    with app.app_context():
        admin = AdminUser(username=username)
        admin.set_password(password)
        db.session.add(admin)
        db.session.commit()
        return admin.id


def csrf_token(client, path: str) -> str:
    """The CSRF token of the form on ``path``."""
    page = client.get(path)
    match = CSRF_PATTERN.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path} ({page.status_code})"
    return match.group(1)


def login(client, username: str = "alice", password: str = PASSWORD, next_path: str = ""):
    """Post the sign-in form with a valid CSRF token; returns the response (not followed)."""
    token = csrf_token(client, "/admin/login")
    return client.post("/admin/login", data={"username": username, "password": password, "next": next_path,
                                             "csrf_token": token})
