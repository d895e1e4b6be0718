"""Unguessable public ids for predictions, and a session token per admin account.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Predictions were addressed by their sequential id, so anyone could read every upload by counting.
Each row gets a ``public_id`` of 128 random bits (22 URL-safe characters) that every public URL and the
API use; the integer id stays the admin's. ``admin_users.session_token`` is what a session cookie must
match; drawing a new one ends the account's sessions.

Both columns are added NOT NULL with an empty default (plain ADD COLUMN, no table rebuild: rebuilding
``predictions`` on SQLite would delete the corrections that point to it), then every existing row gets
its own random value. The unique index makes a second empty value impossible; the app always sets one.
"""
import secrets

from alembic import op
import sqlalchemy as sa


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BACKFILL_CHUNK = 1000


def backfill(table: str, column: str, draw) -> None:
    """Give every row of ``table`` whose ``column`` is empty its own value from ``draw()``."""
    connection = op.get_bind()
    ids = [row[0] for row in connection.execute(sa.text(f"SELECT id FROM {table} WHERE {column} = ''"))]
    for start in range(0, len(ids), BACKFILL_CHUNK):
        connection.execute(sa.text(f"UPDATE {table} SET {column} = :value WHERE id = :id"),
                           [{"id": row_id, "value": draw()} for row_id in ids[start:start + BACKFILL_CHUNK]])


def upgrade():
    op.add_column("predictions", sa.Column("public_id", sa.String(length=32), nullable=False, server_default=""))
    op.add_column("admin_users", sa.Column("session_token", sa.String(length=64), nullable=False,
                                           server_default=""))
    backfill("predictions", "public_id", lambda: secrets.token_urlsafe(16))
    backfill("admin_users", "session_token", lambda: secrets.token_urlsafe(32))
    op.create_index("ix_predictions_public_id", "predictions", ["public_id"], unique=True)


def downgrade():
    op.drop_index("ix_predictions_public_id", table_name="predictions")
    op.drop_column("admin_users", "session_token")
    op.drop_column("predictions", "public_id")
