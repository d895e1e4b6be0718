"""A locked or unreachable database: 503 with Retry-After and a clear message, never 500, and recovery.

Real SQLite faults, no mocks: another connection holding the write lock, and the database folder
moved away (what a lost network mount looks like) and back.
"""

from __future__ import annotations

import io
import sqlite3

import pytest

DATABASE_MESSAGE = "The database is busy or unavailable"


@pytest.fixture
def fault_app(color_artifact, tmp_path):
    """The app on ``tmp_path/db/faults.db`` with a short lock wait, so a locked write fails fast."""
    from flask_migrate import upgrade

    from app import create_app

    (tmp_path / "db").mkdir()
    application = create_app({"TESTING": True, "MODEL_DIR": str(color_artifact), "SECRET_KEY": "test-secret",
                              "DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'faults.db'}",
                              "INFERENCE_THREADS": 1, "RATELIMIT_ENABLED": False,
                              "SQLITE_BUSY_TIMEOUT_MS": 200})
    with application.app_context():
        upgrade()
    yield application
    from app.extensions import db

    with application.app_context():
        db.engine.dispose()


def upload(client, photo: bytes):
    return client.post("/api/v1/predictions", data={"image": (io.BytesIO(photo), "car.jpg")})


def row_count(database) -> int:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]


def assert_unavailable(response, *, json: bool) -> None:
    assert response.status_code == 503, response.data
    assert response.headers["Retry-After"] == "5"
    body = response.get_data(as_text=True)
    assert DATABASE_MESSAGE in body and "Traceback" not in body and "sqlite" not in body.lower()
    if json:
        assert response.json["error"]["code"] == "service_unavailable"
        assert response.json["error"]["retry_after"] == 5
    else:
        assert "text/html" in response.content_type


def test_locked_database_gives_503_then_recovers(fault_app, tmp_path, make_image, caplog):
    client = fault_app.test_client()
    photo = make_image("red")
    first = upload(client, photo)
    assert first.status_code == 201
    database = tmp_path / "db" / "faults.db"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    try:
        assert_unavailable(upload(client, photo), json=True)
        page = client.get("/")
        token = page.get_data(as_text=True).split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
        form = client.post("/", data={"csrf_token": token, "image": (io.BytesIO(photo), "car.jpg")},
                           content_type="multipart/form-data")
        assert_unavailable(form, json=False)
        # Reading a stored prediction does not need the write lock (WAL).
        assert client.get(f"/api/v1/predictions/{first.json['id']}").status_code == 200
    finally:
        holder.rollback()
        holder.close()
    assert "database unavailable on POST /api/v1/predictions: database is locked" in caplog.text
    assert row_count(database) == 1
    again = upload(client, photo)  # same worker, no restart: the session was rolled back
    assert again.status_code == 201
    assert row_count(database) == 2


def test_unreachable_database_gives_503_everywhere_then_recovers(fault_app, tmp_path, make_image):
    from app.extensions import db

    client = fault_app.test_client()
    photo = make_image("blue")
    stored = upload(client, photo).json["id"]
    folder, away = tmp_path / "db", tmp_path / "db-gone"
    folder.rename(away)
    with fault_app.app_context():
        db.engine.dispose()  # open connections would still reach the moved file; a lost mount would not
    try:
        assert_unavailable(upload(client, photo), json=True)
        assert_unavailable(client.get(f"/api/v1/predictions/{stored}"), json=True)
        assert_unavailable(client.get(f"/predictions/{stored}"), json=False)
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200  # the process itself is fine
    finally:
        away.rename(folder)
    assert client.get("/readyz").status_code == 200
    assert upload(client, photo).status_code == 201
    assert client.get(f"/predictions/{stored}").status_code == 200
    assert row_count(folder / "faults.db") == 2
