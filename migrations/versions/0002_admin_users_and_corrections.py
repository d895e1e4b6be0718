"""Admin accounts, corrections of predictions, and the indexes the review page filters and sorts on.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

One correction per prediction (a unique prediction_id): editing a correction updates that row. The
corrections go when their prediction goes (ON DELETE CASCADE); admin accounts are never deleted, only
deactivated, so the "who" of a correction always resolves.
"""
from alembic import op
import sqlalchemy as sa


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Leading column = the filter or sort it serves; the rest make it covering for the review queries.
REVIEW_INDEXES = {
    "ix_predictions_review_by_score": ["top_score", "created_at", "model_version", "top_label", "source",
                                       "original_filename"],
    "ix_predictions_review_by_version": ["model_version", "created_at", "top_label", "top_score", "source",
                                         "original_filename"],
    "ix_predictions_review_by_label": ["top_label", "created_at", "top_score", "model_version", "source",
                                       "original_filename"],
}


def upgrade():
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_admin_users_username", "admin_users", ["username"], unique=True)

    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=False),
        sa.Column("old_label", sa.String(length=255), nullable=False),
        sa.Column("new_label", sa.String(length=255), nullable=False),
        sa.Column("corrected_by_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["prediction_id"], ["predictions.id"], name="fk_corrections_prediction_id",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["corrected_by_id"], ["admin_users.id"], name="fk_corrections_corrected_by_id"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_corrections_prediction_id", "corrections", ["prediction_id"], unique=True)
    op.create_index("ix_corrections_new_label", "corrections", ["new_label"], unique=False)

    # The review page's filters and dashboard read these columns only. The thumbnail blob sits in the
    # middle of each row, so reaching top_label or top_score in the table means reading the blob's
    # overflow pages; covering indexes let the counts and group-bys on 100k rows skip the table.
    for name, columns in REVIEW_INDEXES.items():
        op.create_index(name, "predictions", columns, unique=False)


def downgrade():
    for name in reversed(list(REVIEW_INDEXES)):
        op.drop_index(name, table_name="predictions")
    op.drop_index("ix_corrections_new_label", table_name="corrections")
    op.drop_index("ix_corrections_prediction_id", table_name="corrections")
    op.drop_table("corrections")
    op.drop_index("ix_admin_users_username", table_name="admin_users")
    op.drop_table("admin_users")
