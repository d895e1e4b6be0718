"""Migration 0005: the feedback table and the ``example`` source, up and down, on a database that holds rows.

The source check can only change on SQLite by rebuilding the predictions table; these tests hold the
rebuild to keeping every prediction, every correction that points at one, and foreign key enforcement.
"""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from app import create_app
from app.extensions import db

PREDICTION = ("INSERT INTO predictions (id, created_at, original_filename, sha256, width, height, content_type, "
              "thumbnail, model_name, model_version, top_label, top_score, top_k, latency_ms, source) VALUES "
              "(:id, '2026-11-01 12:00:00', 'p.jpg', :sha, 64, 48, 'image/jpeg', :thumb, 'colors', '1.0', 'red', "
              "0.9, '[{\"label\": \"red\", \"score\": 0.9}]', 5.0, :source)")


def insert_prediction(prediction_id: int, source: str) -> None:
    db.session.execute(text(PREDICTION), {"id": prediction_id, "sha": f"{prediction_id:064d}", "thumb": b"\xff\xd8",
                                          "source": source})


def counts() -> tuple[int, int]:
    return (db.session.execute(text("SELECT count(*) FROM predictions")).scalar(),
            db.session.execute(text("SELECT count(*) FROM corrections")).scalar())


def foreign_keys_enforced() -> bool:
    if db.engine.dialect.name != "sqlite":
        return True
    return bool(db.session.execute(text("PRAGMA foreign_keys")).scalar())


@pytest.fixture
def reviewed_database(color_artifact, database_url):
    """An app whose database is at 0003 with two predictions, an admin and a correction (0004 and 0005 then
    run in one upgrade, as on a server that skipped a release)."""
    application = create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": database_url})
    with application.app_context():
        upgrade(revision="0003")
        insert_prediction(1, "web")
        insert_prediction(2, "api")
        db.session.execute(text("INSERT INTO admin_users (id, username, password_hash, is_active, created_at) "
                                "VALUES (1, 'alice', 'x', true, '2026-11-01 12:00:00')"))
        db.session.execute(text("INSERT INTO corrections (prediction_id, old_label, new_label, corrected_by_id, "
                                "created_at, updated_at) VALUES (1, 'red', 'blue', 1, '2026-11-01 12:00:00', "
                                "'2026-11-01 12:00:00')"))
        db.session.commit()
        db.session.remove()
        yield application
        db.session.remove()
        db.engine.dispose()


def test_0005_upgrade_keeps_every_row_and_matches_the_models(reviewed_database):
    upgrade()
    assert counts() == (2, 1)  # the rebuild did not cascade into the corrections
    assert foreign_keys_enforced()
    inspector = inspect(db.engine)
    assert "feedback" in inspector.get_table_names()
    indexes = {i["name"]: (i["column_names"], bool(i["unique"])) for i in inspector.get_indexes("feedback")}
    assert indexes["ix_feedback_prediction_client"] == (["prediction_id", "client_key"], True)
    assert {i["name"] for i in inspector.get_indexes("predictions")} >= {
        "ix_predictions_created_at", "ix_predictions_review_by_score", "ix_predictions_verdict"}
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
    assert not [d for d in differences if "feedback" in repr(d) or "predictions" in repr(d)], differences

    insert_prediction(3, "example")
    db.session.execute(text("INSERT INTO feedback (prediction_id, verdict, label, created_at, client_hash, client_key) "
                            "VALUES (3, 'wrong', 'blue', '2026-11-01 12:00:00', :h, :k)"), {"h": "a" * 64, "k": "b" * 64})
    db.session.commit()
    with pytest.raises(IntegrityError):  # the source check still refuses what no route sends
        insert_prediction(4, "email")
        db.session.flush()
    db.session.rollback()
    with pytest.raises(IntegrityError):  # "wrong" needs a label
        db.session.execute(text("INSERT INTO feedback (prediction_id, verdict, created_at, client_hash, client_key) "
                                "VALUES (3, 'wrong', '2026-11-01 12:00:00', :h, :k)"), {"h": "a" * 64, "k": "c" * 64})
    db.session.rollback()
    with pytest.raises(IntegrityError):  # one answer per prediction and visitor
        db.session.execute(text("INSERT INTO feedback (prediction_id, verdict, created_at, client_hash, client_key) "
                                "VALUES (3, 'right', '2026-11-01 12:00:00', :h, :k)"), {"h": "a" * 64, "k": "b" * 64})
    db.session.rollback()


def test_0005_downgrade_keeps_every_row_and_turns_examples_into_web(reviewed_database):
    upgrade()
    insert_prediction(3, "example")
    db.session.execute(text("INSERT INTO feedback (prediction_id, verdict, created_at, client_hash, client_key) "
                            "VALUES (1, 'right', '2026-11-01 12:00:00', :h, :k)"), {"h": "a" * 64, "k": "b" * 64})
    db.session.commit()
    db.session.remove()

    downgrade(revision="0004")  # this revision's own step down
    assert "feedback" not in inspect(db.engine).get_table_names()
    assert counts() == (3, 1)
    assert foreign_keys_enforced()
    sources = db.session.execute(text("SELECT id, source FROM predictions ORDER BY id")).all()
    assert [tuple(row) for row in sources] == [(1, "web"), (2, "api"), (3, "web")]
    with pytest.raises(IntegrityError):  # the old check is back
        insert_prediction(4, "example")
        db.session.flush()
    db.session.rollback()

    upgrade()  # and up again
    assert counts() == (3, 1) and "feedback" in inspect(db.engine).get_table_names()


def test_deleting_a_prediction_deletes_its_answers(reviewed_database):
    upgrade()
    db.session.execute(text("INSERT INTO feedback (prediction_id, verdict, created_at, client_hash, client_key) "
                            "VALUES (2, 'not_a_car', '2026-11-01 12:00:00', :h, :k)"), {"h": "a" * 64, "k": "b" * 64})
    db.session.commit()
    db.session.execute(text("DELETE FROM predictions WHERE id = 2"))
    db.session.commit()
    assert db.session.execute(text("SELECT count(*) FROM feedback")).scalar() == 0
