"""Record the verdict of each prediction and the vehicle-gate score it was decided from.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Both columns are nullable: predictions made before this revision were never judged, and a server that
runs without the vehicle gate has no score to keep. Plain ADD COLUMN (no table rebuild), so the rows
that corrections point to are never copied or re-created. The downgrade must rebuild the table on SQLite
to drop the columns, with foreign keys off so that no correction goes with it.
"""
import contextlib

from alembic import op
import sqlalchemy as sa


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("predictions", sa.Column("verdict", sa.String(length=16), nullable=True))
    op.add_column("predictions", sa.Column("vehicle_score", sa.Float(), nullable=True))
    # The admin list filters on the verdict.
    op.create_index("ix_predictions_verdict", "predictions", ["verdict"], unique=False)


@contextlib.contextmanager
def _without_foreign_keys():
    """Switch off SQLite's foreign key enforcement around a table rebuild, then check the references.

    Dropping columns on SQLite rebuilds ``predictions`` (copy, drop, rename); dropping the old table
    while enforcement is on deletes every correction and answer that points to it (ON DELETE CASCADE).
    Enforcement can only be switched outside a transaction; the references are checked before it is
    switched back on, as SQLite's procedure for schema changes prescribes. Other databases drop columns
    in place.
    """
    bind = op.get_bind()
    enforced = bind.dialect.name == "sqlite" and bool(bind.exec_driver_sql("PRAGMA foreign_keys").scalar())
    if enforced:
        with op.get_context().autocommit_block():
            bind.exec_driver_sql("PRAGMA foreign_keys = OFF")
        if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
            raise RuntimeError("could not switch off SQLite foreign keys; rebuilding predictions would "
                               "delete the rows that point to them")
    try:
        yield
        if bind.dialect.name == "sqlite":
            broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"foreign keys broken by the predictions rebuild: {broken[:5]}")
    finally:
        if enforced:
            with op.get_context().autocommit_block():
                bind.exec_driver_sql("PRAGMA foreign_keys = ON")


def downgrade():
    op.drop_index("ix_predictions_verdict", table_name="predictions")
    with _without_foreign_keys(), op.batch_alter_table("predictions") as batch:
        batch.drop_column("vehicle_score")
        batch.drop_column("verdict")
