"""Record the verdict of each prediction and the vehicle-gate score it was decided from.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Both columns are nullable: predictions made before this revision were never judged, and a server that
runs without the vehicle gate has no score to keep. Plain ADD COLUMN (no table rebuild), so the rows
that corrections point to are never copied or re-created.
"""
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


def downgrade():
    op.drop_index("ix_predictions_verdict", table_name="predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("vehicle_score")
        batch.drop_column("verdict")
