"""Uploads are private to whoever has their link: unguessable public ids in every public URL and in the
API, no shared caching of results, nothing of the admin pages kept by any cache, and the migration that
gave existing rows their ids.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import re

from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from admin_support import create_admin, login

PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def post(client, make_image, color="red"):
    response = client.post("/api/v1/predictions", data={"image": (io.BytesIO(make_image(color)), "car.jpg")})
    assert response.status_code == 201
    return response


def row_id(app, public_id: str) -> int:
    from app.extensions import db
    from app.models import Prediction

    with app.app_context():
        return db.session.scalar(db.select(Prediction.id).filter_by(public_id=public_id))


def test_every_public_url_and_api_body_uses_an_unguessable_id(app, client, make_image):
    created = [post(client, make_image, color) for color in ("red", "green", "blue")]
    ids = [response.get_json()["id"] for response in created]
    assert all(PUBLIC_ID.fullmatch(public_id) for public_id in ids), ids
    assert len(set(ids)) == 3
    assert all(len(base64.urlsafe_b64decode(public_id + "==")) == 16 for public_id in ids)  # 128 bits
    assert created[0].headers["Location"] == f"/api/v1/predictions/{ids[0]}"
    for public_id in ids:
        number = row_id(app, public_id)
        for template in ("/predictions/{}", "/predictions/{}/thumbnail.jpg", "/api/v1/predictions/{}"):
            assert client.get(template.format(public_id)).status_code == 200, template
            assert client.get(template.format(number)).status_code == 404, template  # counting finds nothing
        assert client.get(f"/api/v1/predictions/{public_id}").get_json()["id"] == public_id
        page = client.get(f"/predictions/{public_id}").get_data(as_text=True)
        assert f"/predictions/{public_id}/thumbnail.jpg" in page
        assert f"/api/v1/predictions/{public_id}/explanation.png" in page
        assert not re.search(rf"/predictions/{number}\b", page)
    assert client.get("/api/v1/predictions/" + "A" * 22).status_code == 404  # well-formed, unknown
    batch = client.post("/api/v1/predictions:batch", data={"images": [(io.BytesIO(make_image()), "a.jpg")]})
    assert PUBLIC_ID.fullmatch(batch.get_json()["results"][0]["prediction"]["id"])


def test_results_are_cached_privately_and_admin_pages_not_at_all(app, client, make_image):
    public_id = post(client, make_image).get_json()["id"]
    for path in (f"/predictions/{public_id}", f"/predictions/{public_id}/thumbnail.jpg",
                 f"/api/v1/predictions/{public_id}"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.cache_control.private and not response.cache_control.public, path
    create_admin(app)
    admin = app.test_client()
    assert login(admin).status_code == 302
    number = row_id(app, public_id)
    for path in ("/admin/", f"/admin/predictions/{number}", "/admin/predictions.csv"):
        response = admin.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store", path
    assert client.get("/admin/login").headers["Cache-Control"] == "no-store"
    thumbnail = admin.get(f"/admin/predictions/{number}/thumbnail.jpg")
    assert thumbnail.cache_control.private and not thumbnail.cache_control.public
    detail = admin.get(f"/admin/predictions/{number}").get_data(as_text=True)
    assert f'href="/predictions/{public_id}" id="public-link"' in detail


def test_migration_0006_gives_existing_rows_ids_and_tokens_and_downgrades(color_artifact, database_url):
    from app import create_app
    from app.extensions import db

    application = create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": database_url})
    stamp = dt.datetime(2026, 11, 1, 12, 0, 0)
    with application.app_context():
        upgrade(revision="0003")
        with db.engine.begin() as connection:
            for index in range(1, 1201):  # more than one backfill chunk
                connection.execute(text(
                    "INSERT INTO predictions (id, created_at, sha256, width, height, content_type, thumbnail, "
                    "model_name, model_version, top_label, top_score, top_k, latency_ms, source) VALUES "
                    "(:id, :t, :sha, 64, 48, 'image/jpeg', :thumb, 'colors', '1.0', 'red', 0.9, '[]', 1.0, 'api')"),
                    {"id": index, "t": stamp, "sha": f"{index:064x}", "thumb": b"\xff\xd8"})
            connection.execute(text("INSERT INTO admin_users (id, username, password_hash, is_active, created_at) "
                                    "VALUES (1, 'alice', 'x', :yes, :t)"), {"yes": True, "t": stamp})
            connection.execute(text("INSERT INTO corrections (prediction_id, old_label, new_label, corrected_by_id, "
                                    "created_at, updated_at) VALUES (7, 'red', 'green', 1, :t, :t)"), {"t": stamp})
        upgrade(revision="0006")
        with db.engine.connect() as connection:
            public_ids = [row[0] for row in connection.execute(text("SELECT public_id FROM predictions"))]
            token = connection.execute(text("SELECT session_token FROM admin_users")).scalar_one()
            corrections = connection.execute(text("SELECT prediction_id, new_label FROM corrections")).all()
        assert len(public_ids) == 1200 and len(set(public_ids)) == 1200
        assert all(PUBLIC_ID.fullmatch(public_id) for public_id in public_ids)
        assert len(token) >= 43 and corrections == [(7, "green")]  # no row was copied or lost
        indexes = {i["name"]: bool(i["unique"]) for i in inspect(db.engine).get_indexes("predictions")}
        assert indexes["ix_predictions_public_id"] is True

        downgrade(revision="0004")  # 0006's own step down (plain DROP COLUMN: no table rebuild)
        inspector = inspect(db.engine)
        assert "public_id" not in {c["name"] for c in inspector.get_columns("predictions")}
        assert "session_token" not in {c["name"] for c in inspector.get_columns("admin_users")}
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM predictions")).scalar_one() == 1200
            assert connection.execute(text("SELECT COUNT(*) FROM corrections")).scalar_one() == 1
        upgrade()
        db.engine.dispose()
