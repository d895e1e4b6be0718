"""Database models: one row per prediction served (web page or API), admin accounts, corrections."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask_login import UserMixin
from sqlalchemy import CheckConstraint, Index
from werkzeug.security import check_password_hash, generate_password_hash

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
        Index("ix_predictions_verdict", "verdict"),
        Index("ix_predictions_answer_level", "answer_level"),
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
    # ok | uncertain | not_a_car (app.inference.gate); NULL for predictions made before verdicts existed.
    verdict = db.Column(db.String(16), nullable=True)
    vehicle_score = db.Column(db.Float, nullable=True)
    # Group scores ({grouping: [{"label", "score"}, ...]}) and the answer at the most specific sure level
    # (app.inference.answers); NULL for predictions made before answers existed, and no answer at all.
    groups = db.Column(db.JSON, nullable=True)
    answer_level = db.Column(db.String(64), nullable=True)
    answer_label = db.Column(db.String(255), nullable=True)
    answer_score = db.Column(db.Float, nullable=True)

    @property
    def created_at_utc(self) -> dt.datetime:
        """``created_at`` as an aware UTC datetime (SQLite hands back naive values)."""
        stamp = self.created_at
        return stamp.replace(tzinfo=dt.timezone.utc) if stamp.tzinfo is None else stamp

    @property
    def answer(self) -> dict[str, Any] | None:
        """``{"level", "label", "score"}``, or ``None`` when the model was not sure at any level."""
        if self.answer_level is None:
            return None
        return {"level": self.answer_level, "label": self.answer_label,
                "score": None if self.answer_score is None else round(self.answer_score, 6)}

    def to_dict(self) -> dict[str, Any]:
        """The API representation of this prediction."""
        return {
            "id": self.id,
            "created_at": self.created_at_utc.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "model": {"name": self.model_name, "version": self.model_version},
            "predictions": self.top_k,
            "image": {"width": self.width, "height": self.height, "sha256": self.sha256},
            "latency_ms": self.latency_ms,
            "verdict": self.verdict,
            "vehicle_score": None if self.vehicle_score is None else round(self.vehicle_score, 4),
            "groups": self.groups or {},
            "answer": self.answer,
        }

    def __repr__(self) -> str:
        return f"<Prediction {self.id} {self.top_label!r} {self.top_score:.3f}>"


# The admin review page's covering indexes (migration 0002 explains them), declared here too so that
# the schema and the migrations stay comparable.
Index("ix_predictions_review_by_score", Prediction.top_score, Prediction.created_at, Prediction.model_version,
      Prediction.top_label, Prediction.source, Prediction.original_filename)
Index("ix_predictions_review_by_version", Prediction.model_version, Prediction.created_at, Prediction.top_label,
      Prediction.top_score, Prediction.source, Prediction.original_filename)
Index("ix_predictions_review_by_label", Prediction.top_label, Prediction.created_at, Prediction.top_score,
      Prediction.model_version, Prediction.source, Prediction.original_filename)


class AdminUser(UserMixin, db.Model):
    """An operator who may review and correct predictions; the password is stored only as a hash."""

    __tablename__ = "admin_users"
    __table_args__ = (Index("ix_admin_users_username", "username", unique=True),)

    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(64), nullable=False)
    password_hash = db.Column(db.String(255), nullable=False)
    is_active = db.Column(db.Boolean, nullable=False, default=True)
    created_at = db.Column(db.DateTime(timezone=True), nullable=False, default=utcnow)
    last_login_at = db.Column(db.DateTime(timezone=True), nullable=True)

    def set_password(self, password: str) -> None:
        """Hash ``password`` with scrypt and keep only the hash."""
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        """Whether ``password`` matches the stored hash (constant-time comparison)."""
        return check_password_hash(self.password_hash, password)

    def __repr__(self) -> str:
        return f"<AdminUser {self.username!r}>"


class Correction(db.Model):
    """An admin's verdict on one prediction: the true label, and who set it when.

    ``new_label == old_label`` means the model was right. One row per prediction; editing updates it.
    """

    __tablename__ = "corrections"
    __table_args__ = (
        Index("ix_corrections_prediction_id", "prediction_id", unique=True),
        Index("ix_corrections_new_label", "new_label"),
    )

    id = db.Column(db.Integer, primary_key=True)
    prediction_id = db.Column(db.Integer, db.ForeignKey("predictions.id", name="fk_corrections_prediction_id",
                                                        ondelete="CASCADE"), nullable=False)
    old_label = db.Column(db.String(255), nullable=False)
    new_label = db.Column(db.String(255), nullable=False)
    corrected_by_id = db.Column(db.Integer, db.ForeignKey("admin_users.id", name="fk_corrections_corrected_by_id"),
                                nullable=False)
    created_at = db.Column(db.DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at = db.Column(db.DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow)

    prediction = db.relationship(Prediction, backref=db.backref("correction", uselist=False, lazy="select",
                                                                passive_deletes=True))
    corrected_by = db.relationship(AdminUser)

    @property
    def model_was_right(self) -> bool:
        """True when the admin confirmed the model's top label."""
        return self.new_label == self.old_label

    def __repr__(self) -> str:
        return f"<Correction {self.prediction_id} {self.old_label!r} -> {self.new_label!r}>"
