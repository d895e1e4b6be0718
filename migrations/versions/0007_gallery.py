"""A gallery of taught examples beside the model, and who answered each prediction.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

``gallery_examples`` holds photos taught with a label (a class or a make): the embedding under the model
named beside it, a JPEG of the photo and where it came from. ``gallery_negatives`` holds embeddings of
photos of cars the model knows, which calibrate the gallery's threshold. ``gallery_state`` is a one-row change
counter: every worker compares it with the version of its in-memory gallery, so a label taught through
one worker answers in all of them without a restart. ``predictions.answer_source`` records whether the
model or a taught label gave the answer (NULL for older rows: the model's), ``answer_learned_from`` how
many photos taught that label then.
"""

from alembic import op
import sqlalchemy as sa


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "gallery_examples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("prediction_id", sa.Integer(),
                  sa.ForeignKey("predictions.id", name="fk_gallery_examples_prediction_id", ondelete="SET NULL"),
                  nullable=True),
        sa.Column("added_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("level IN ('class', 'make')", name="ck_gallery_examples_level"),
        sa.CheckConstraint("source IN ('upload', 'correction')", name="ck_gallery_examples_source"),
    )
    op.create_index("ix_gallery_examples_label", "gallery_examples", ["label"])
    op.create_table(
        "gallery_negatives",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_gallery_negatives_model", "gallery_negatives", ["model_name", "model_version"])
    op.create_table(
        "gallery_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.execute("INSERT INTO gallery_state (id, version) VALUES (1, 0)")
    op.add_column("predictions", sa.Column("answer_source", sa.String(length=16), nullable=True))
    op.add_column("predictions", sa.Column("answer_learned_from", sa.Integer(), nullable=True))


def downgrade():
    op.drop_column("predictions", "answer_learned_from")
    op.drop_column("predictions", "answer_source")
    op.drop_table("gallery_state")
    op.drop_index("ix_gallery_negatives_model", table_name="gallery_negatives")
    op.drop_table("gallery_negatives")
    op.drop_index("ix_gallery_examples_label", table_name="gallery_examples")
    op.drop_table("gallery_examples")
