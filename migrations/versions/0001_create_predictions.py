"""Create the predictions table and its indexes.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Portable SQL only (SQLite and PostgreSQL): the JSON column maps to JSON/JSONB-compatible types and the
source check is a plain IN list.
"""
from alembic import op
import sqlalchemy as sa


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("original_filename", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("thumbnail", sa.LargeBinary(), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("top_label", sa.String(length=255), nullable=False),
        sa.Column("top_score", sa.Float(), nullable=False),
        sa.Column("top_k", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.CheckConstraint("source IN ('web', 'api')", name="ck_predictions_source"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"], unique=False)
    op.create_index("ix_predictions_sha256", "predictions", ["sha256"], unique=False)
    op.create_index("ix_predictions_top_label", "predictions", ["top_label"], unique=False)


def downgrade():
    op.drop_index("ix_predictions_top_label", table_name="predictions")
    op.drop_index("ix_predictions_sha256", table_name="predictions")
    op.drop_index("ix_predictions_created_at", table_name="predictions")
    op.drop_table("predictions")
