"""Migration 0002 adds admin accounts, corrections and the review indexes, and the models agree with it."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from app import create_app
from app.extensions import db


def test_0002_upgrade_matches_the_models_and_downgrades_to_0001(color_artifact, database_url):
    application = create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": database_url})
    with application.app_context():
        upgrade(revision="0002")
        inspector = inspect(db.engine)
        assert {"admin_users", "corrections"} <= set(inspector.get_table_names())
        indexes = {i["name"]: (i["column_names"], bool(i["unique"])) for i in inspector.get_indexes("corrections")}
        assert indexes["ix_corrections_prediction_id"] == (["prediction_id"], True)
        prediction_indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("predictions")}
        for leading in ("top_score", "model_version", "top_label"):
            name = f"ix_predictions_review_by_{leading.split('_')[-1]}"
            # Each leads with its filter column and covers every column the review queries read.
            assert prediction_indexes[name][0] == leading
            assert set(prediction_indexes[name]) == {"top_score", "created_at", "model_version", "top_label",
                                                     "source", "original_filename"}
        with db.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
        # Later revisions may add their own columns; none of the differences may touch this revision's objects.
        differences = [d for d in differences if "session_token" not in repr(d)]  # added to admin_users by 0006
        assert not [d for d in differences if "admin_users" in repr(d) or "corrections" in repr(d)
                    or "ix_predictions_review_by" in repr(d)]

        downgrade(revision="0001")
        inspector = inspect(db.engine)
        assert set(inspector.get_table_names()) == {"predictions", "alembic_version"}
        assert {i["name"] for i in inspector.get_indexes("predictions")} == {
            "ix_predictions_created_at", "ix_predictions_sha256", "ix_predictions_top_label"}
        db.engine.dispose()
