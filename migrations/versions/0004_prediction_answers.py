"""Record each prediction's group scores (make, segment) and its answer at the most specific sure level.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

All columns are nullable: predictions made before this revision have no group scores (they read back
as ``{}``) and no answer (``null``), and a prediction that no level is sure of has no answer either.
Plain ADD COLUMN (no table rebuild), so the rows that corrections point to are never copied.
"""
from alembic import op
import sqlalchemy as sa


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("predictions", sa.Column("groups", sa.JSON(), nullable=True))
    op.add_column("predictions", sa.Column("answer_level", sa.String(length=64), nullable=True))
    op.add_column("predictions", sa.Column("answer_label", sa.String(length=255), nullable=True))
    op.add_column("predictions", sa.Column("answer_score", sa.Float(), nullable=True))
    # The admin list filters on the answer level.
    op.create_index("ix_predictions_answer_level", "predictions", ["answer_level"], unique=False)


def downgrade():
    op.drop_index("ix_predictions_answer_level", table_name="predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("answer_score")
        batch.drop_column("answer_label")
        batch.drop_column("answer_level")
        batch.drop_column("groups")
