"""Visitors' answers to "Was this right?", and predictions of the page's example photos.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

A new ``feedback`` table, one answer per prediction and visitor (a unique index on the prediction and
the visitor's keyed hash), kept apart from the admins' corrections. The predictions' source check gains
``example``.

Changing a CHECK constraint on SQLite means rebuilding the table (copy, drop, rename). Dropping a table
that other tables point to with ON DELETE CASCADE deletes their rows when foreign keys are enforced, so
enforcement is switched off around the rebuild (it can only be switched outside a transaction) and the
references are checked before it is switched back on, as SQLite's own procedure for schema changes
prescribes. Downgrading turns ``example`` predictions into ``web`` ones (they came from the page) before
the old check returns.
"""
from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_SOURCES = "source IN ('web', 'api')"
NEW_SOURCES = "source IN ('web', 'example', 'api')"


def _set_foreign_keys(enabled: bool) -> None:
    """Switch SQLite's foreign key enforcement (a no-op inside a transaction, hence the autocommit block)."""
    with op.get_context().autocommit_block():
        op.get_bind().exec_driver_sql(f"PRAGMA foreign_keys = {'ON' if enabled else 'OFF'}")


def _replace_source_check(condition: str) -> None:
    """Swap the predictions' source CHECK for ``condition`` without touching the rows that point to them."""
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    enforced = sqlite and bool(bind.exec_driver_sql("PRAGMA foreign_keys").scalar())
    if enforced:
        _set_foreign_keys(False)
        if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
            raise RuntimeError("could not switch off SQLite foreign keys; rebuilding predictions would delete "
                               "their corrections")
    try:
        with op.batch_alter_table("predictions", recreate="always" if sqlite else "auto") as batch:
            batch.drop_constraint("ck_predictions_source", type_="check")
            batch.create_check_constraint("ck_predictions_source", sa.text(condition))
        if sqlite:
            broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"foreign keys broken by the predictions rebuild: {broken[:5]}")
    finally:
        if enforced:
            _set_foreign_keys(True)


def upgrade():
    _replace_source_check(NEW_SOURCES)
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_hash", sa.String(length=64), nullable=False),
        sa.Column("client_key", sa.String(length=64), nullable=False),
        sa.CheckConstraint("verdict IN ('right', 'wrong', 'not_a_car', 'unknown')", name="ck_feedback_verdict"),
        sa.CheckConstraint("(verdict = 'wrong') = (label IS NOT NULL)", name="ck_feedback_label"),
        sa.ForeignKeyConstraint(["prediction_id"], ["predictions.id"], name="fk_feedback_prediction_id",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_feedback_prediction_client", "feedback", ["prediction_id", "client_key"], unique=True)
    # The admin filter "visitors said wrong" and the dashboard's share group on the verdict.
    op.create_index("ix_feedback_verdict", "feedback", ["verdict"], unique=False)


def downgrade():
    op.drop_index("ix_feedback_verdict", table_name="feedback")
    op.drop_index("ix_feedback_prediction_client", table_name="feedback")
    op.drop_table("feedback")
    op.execute("UPDATE predictions SET source = 'web' WHERE source = 'example'")
    _replace_source_check(OLD_SOURCES)
