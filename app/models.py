"""Database models: one row per prediction served, from the web page or the API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, Index

from .extensions import db

SOURCES = ("web", "api")


def utcnow() -> dt.datetime:
    """Current time in UTC, timezone-aware."""
    return dt.datetime.now(dt.timezone.utc)


class Prediction(db.Model):
    """A classified upload: image facts, a small thumbnail, the model used and its answers."""

    __tablename__ = "predictions"
    __table_args__ = (
        CheckConstraint("source IN ('web', 'api')", name="ck_predictions_source"),
        Index("ix_predictions_created_at", "created_at"),
        Index("ix_predictions_sha256", "sha256"),
        Index("ix_predictions_top_label", "top_label"),
    )

    id = db.Column(db.Integer, primary_key=True)
    created_at = db.Column(db.DateTime(timezone=True), nullable=False, default=utcnow)
    original_filename = db.Column(db.String(255), nullable=True)
    sha256 = db.Column(db.String(64), nullable=False)
    width = db.Column(db.Integer, nullable=False)
    height = db.Column(db.Integer, nullable=False)
    content_type = db.Column(db.String(32), nullable=False)
    thumbnail = db.Column(db.LargeBinary, nullable=False)
    model_name = db.Column(db.String(128), nullable=False)
    model_version = db.Column(db.String(64), nullable=False)
    top_label = db.Column(db.String(255), nullable=False)
    top_score = db.Column(db.Float, nullable=False)
    top_k = db.Column(db.JSON, nullable=False)
    latency_ms = db.Column(db.Float, nullable=False)
    source = db.Column(db.String(8), nullable=False)

    @property
    def created_at_utc(self) -> dt.datetime:
        """``created_at`` as an aware UTC datetime (SQLite hands back naive values)."""
        stamp = self.created_at
        return stamp.replace(tzinfo=dt.timezone.utc) if stamp.tzinfo is None else stamp

    def to_dict(self) -> dict[str, Any]:
        """The API representation of this prediction."""
        return {
            "id": self.id,
            "created_at": self.created_at_utc.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "model": {"name": self.model_name, "version": self.model_version},
            "predictions": self.top_k,
            "image": {"width": self.width, "height": self.height, "sha256": self.sha256},
            "latency_ms": self.latency_ms,
        }

    def __repr__(self) -> str:
        return f"<Prediction {self.id} {self.top_label!r} {self.top_score:.3f}>"
