"""Migration 0004 stores group scores and the answer; older rows read back with no groups and no answer."""

from __future__ import annotations

import datetime as dt

from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from app import create_app
from app.extensions import db
from app.models import Prediction

ANSWER_COLUMNS = {"groups", "answer_level", "answer_label", "answer_score"}


def insert_old_row() -> None:
    """A prediction as revision 0003 stored it."""
    db.session.execute(text(
        "INSERT INTO predictions (created_at, sha256, width, height, content_type, thumbnail, model_name, "
        "model_version, top_label, top_score, top_k, latency_ms, source, verdict, vehicle_score) VALUES "
        "(:created, :sha, 64, 48, 'image/png', :thumbnail, 'colors', '1.0.0', 'red', 0.9, :top_k, 3.5, 'api', "
        "'ok', NULL)"), {"created": dt.datetime(2026, 11, 1, 12, 0), "sha": "ab" * 32, "thumbnail": b"\x00",
                         "top_k": '[{"label": "red", "score": 0.9}]'})
    db.session.commit()


def test_0004_up_keeps_old_rows_readable_and_down_removes_only_its_columns(color_artifact, database_url):
    application = create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": database_url})
    with application.app_context():
        upgrade(revision="0003")
        insert_old_row()
        upgrade(revision="0004")
        inspector = inspect(db.engine)
        assert ANSWER_COLUMNS <= {c["name"] for c in inspector.get_columns("predictions")}
        assert {i["name"]: i["column_names"] for i in inspector.get_indexes("predictions")}[
            "ix_predictions_answer_level"] == ["answer_level"]
        upgrade()  # the models map the later revisions' columns too
        old = db.session.get(Prediction, 1)
        body = old.to_dict()
        assert body["groups"] == {} and body["answer"] is None and body["predictions"][0]["label"] == "red"

        old.groups = {"shade": [{"label": "warm", "score": 0.95}]}
        old.answer_level, old.answer_label, old.answer_score = "shade", "warm", 0.95
        db.session.commit()
        db.session.expire_all()
        assert db.session.get(Prediction, 1).to_dict()["answer"] == {"level": "shade", "label": "warm", "score": 0.95,
                                                                      "source": "model"}
        db.session.remove()

        downgrade(revision="0003")
        inspector = inspect(db.engine)
        columns = {c["name"] for c in inspector.get_columns("predictions")}
        assert not ANSWER_COLUMNS & columns and {"verdict", "vehicle_score"} <= columns
        assert "ix_predictions_answer_level" not in {i["name"] for i in inspector.get_indexes("predictions")}
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT top_label FROM predictions")).scalars().all() == ["red"]
        db.engine.dispose()
