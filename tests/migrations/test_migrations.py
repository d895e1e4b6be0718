"""The Alembic migration builds the schema the models expect, from an empty database."""

from __future__ import annotations

from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from app import create_app
from app.extensions import db
from app.models import Prediction

EXPECTED_COLUMNS = {"id", "created_at", "original_filename", "sha256", "width", "height", "content_type",
                    "thumbnail", "model_name", "model_version", "top_label", "top_score", "top_k",
                    "latency_ms", "source", "verdict", "vehicle_score", "groups", "answer_level", "answer_label",
                    "answer_score", "public_id", "answer_source", "answer_learned_from"}


def test_upgrade_on_an_empty_database_matches_the_models(color_artifact, database_url):
    application = create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": database_url})
    with application.app_context():
        assert inspect(db.engine).get_table_names() == []
        upgrade()
        inspector = inspect(db.engine)
        assert set(inspector.get_table_names()) == set(db.metadata.tables) | {"alembic_version"}
        assert {c["name"] for c in inspector.get_columns("predictions")} == EXPECTED_COLUMNS
        assert EXPECTED_COLUMNS == set(Prediction.__table__.columns.keys())
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("predictions")}
        assert {"ix_predictions_created_at": ["created_at"], "ix_predictions_sha256": ["sha256"],
                "ix_predictions_top_label": ["top_label"]}.items() <= indexes.items()

        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        with db.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
        assert differences == []

        downgrade(revision="base")
        assert inspect(db.engine).get_table_names() == ["alembic_version"]
        db.engine.dispose()


def test_flask_db_upgrade_command_on_a_new_database(color_artifact, database_url):
    application = create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": database_url})
    result = application.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    with application.app_context():
        assert "predictions" in inspect(db.engine).get_table_names()
        db.engine.dispose()
