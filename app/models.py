"""Database models: one row per prediction served (web page, example photo or API), admin accounts, corrections,
and visitors' answers to "Was this right?"."""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import secrets
from typing import Any

from flask import abort
from flask_login import UserMixin
from sqlalchemy import CheckConstraint, Index
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db

# Where a prediction came from: a photo sent from the page, one of the page's example photos, or the API.
SOURCES = ("web", "example", "api")
# A visitor's answer: the model was right, wrong (with the true label), the photo is not a car, or the
# visitor could not tell the true label.
FEEDBACK_VERDICTS = ("right", "wrong", "not_a_car", "unknown")
# The answers that say the model's top label was not the photo's.
FEEDBACK_WRONG = ("wrong", "not_a_car", "unknown")
# Bytes of randomness in a prediction's public id (128 bits: no one finds another upload by guessing).
PUBLIC_ID_BYTES = 16


def utcnow() -> dt.datetime:
    """Current time in UTC, timezone-aware."""
    return dt.datetime.now(dt.timezone.utc)


def new_public_id() -> str:
    """A fresh public id: :data:`PUBLIC_ID_BYTES` random bytes as 22 URL-safe characters."""
    return secrets.token_urlsafe(PUBLIC_ID_BYTES)


class Prediction(db.Model):
    """A classified upload: image facts, a small thumbnail, the model used and its answers."""

    __tablename__ = "predictions"
    __table_args__ = (
        CheckConstraint("source IN ('web', 'example', 'api')", name="ck_predictions_source"),
        Index("ix_predictions_created_at", "created_at"),
        Index("ix_predictions_sha256", "sha256"),
        Index("ix_predictions_top_label", "top_label"),
        Index("ix_predictions_verdict", "verdict"),
        Index("ix_predictions_public_id", "public_id", unique=True),
        Index("ix_predictions_answer_level", "answer_level"),
    )

    id = db.Column(db.Integer, primary_key=True)  # internal: the admin pages and exports only
    # What every public URL and the API call the prediction; unguessable, so an upload stays private
    # to whoever has its link.
    public_id = db.Column(db.String(32), nullable=False, default=new_public_id, server_default="")
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
    # ok | uncertain | not_a_car (inference.gate); NULL for predictions made before verdicts existed.
    verdict = db.Column(db.String(16), nullable=True)
    vehicle_score = db.Column(db.Float, nullable=True)
    # Group scores ({grouping: [{"label", "score"}, ...]}) and the answer at the most specific sure level
    # (inference.answers); NULL for predictions made before answers existed, and no answer at all.
    groups = db.Column(db.JSON, nullable=True)
    answer_level = db.Column(db.String(64), nullable=True)
    answer_label = db.Column(db.String(255), nullable=True)
    answer_score = db.Column(db.Float, nullable=True)
    # Who gave the answer: "model", or "gallery" when a label taught by example did (inference.gallery);
    # NULL for predictions made before taught labels existed (the model's, then).
    answer_source = db.Column(db.String(16), nullable=True)
    answer_learned_from = db.Column(db.Integer, nullable=True)  # the taught label's photo count then

    @property
    def created_at_utc(self) -> dt.datetime:
        """``created_at`` as an aware UTC datetime (SQLite hands back naive values)."""
        stamp = self.created_at
        return stamp.replace(tzinfo=dt.timezone.utc) if stamp.tzinfo is None else stamp

    @property
    def answer(self) -> dict[str, Any] | None:
        """``{"level", "label", "score", "source"}`` (``learned_from`` too when a taught label answered), or
        ``None`` when nothing was sure at any level."""
        if self.answer_level is None:
            return None
        answer = {"level": self.answer_level, "label": self.answer_label,
                  "score": None if self.answer_score is None else round(self.answer_score, 6),
                  "source": self.answer_source or "model"}
        if answer["source"] == "gallery":
            answer["learned_from"] = self.answer_learned_from
        return answer

    def to_dict(self) -> dict[str, Any]:
        """The API representation of this prediction."""
        return {
            "id": self.public_id,
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


def prediction_or_404(public_id: str) -> Prediction:
    """The prediction a public URL or the API names by its ``public_id``; 404 when there is none.

    Every public route looks predictions up here, never by the integer id, so no upload can be reached
    by counting.
    """
    prediction = db.session.scalar(db.select(Prediction).where(Prediction.public_id == public_id))
    if prediction is None:
        abort(404)
    return prediction


# The admin review page's covering indexes (migration 0002 explains them), declared here too so that
# the schema and the migrations stay comparable.
Index("ix_predictions_review_by_score", Prediction.top_score, Prediction.created_at, Prediction.model_version,
      Prediction.top_label, Prediction.source, Prediction.original_filename)
Index("ix_predictions_review_by_version", Prediction.model_version, Prediction.created_at, Prediction.top_label,
      Prediction.top_score, Prediction.source, Prediction.original_filename)
Index("ix_predictions_review_by_label", Prediction.top_label, Prediction.created_at, Prediction.top_score,
      Prediction.model_version, Prediction.source, Prediction.original_filename)


def new_session_token() -> str:
    """A fresh random session token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


@functools.cache
def _unknown_user_hash() -> str:
    """A hash of a random password, made once per process like a real account's (same method and cost)."""
    return generate_password_hash(secrets.token_urlsafe(16), method="scrypt")


class AdminUser(UserMixin, db.Model):
    """An operator who may review and correct predictions; the password is stored only as a hash.

    The session cookie names the account and its current ``session_token``. Signing out and changing
    the password draw a new token, which ends every session of the account, copied cookies included.
    """

    __tablename__ = "admin_users"
    __table_args__ = (Index("ix_admin_users_username", "username", unique=True),)

    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(64), nullable=False)
    password_hash = db.Column(db.String(255), nullable=False)
    is_active = db.Column(db.Boolean, nullable=False, default=True)
    created_at = db.Column(db.DateTime(timezone=True), nullable=False, default=utcnow)
    last_login_at = db.Column(db.DateTime(timezone=True), nullable=True)
    session_token = db.Column(db.String(64), nullable=False, default=new_session_token, server_default="")

    @classmethod
    def authenticate(cls, username: str, password: str) -> "AdminUser | None":
        """The active account with this username and password, or None.

        An unknown username costs a password check too, against a throw-away hash, so that the time
        of a failed sign-in does not tell which usernames exist.
        """
        admin = db.session.scalar(db.select(cls).where(cls.username == username))
        if admin is None:
            check_password_hash(_unknown_user_hash(), password)
            return None
        return admin if admin.check_password(password) and admin.is_active else None

    def get_id(self) -> str:
        """What the session cookie stores: the account id and its session token."""
        return f"{self.id}:{self.session_token}"

    def session_matches(self, token: str) -> bool:
        """Whether ``token`` is this account's current session token (constant-time comparison)."""
        return bool(self.session_token) and hmac.compare_digest(self.session_token.encode(), token.encode())

    def end_sessions(self) -> None:
        """Draw a new session token: every cookie issued so far stops working."""
        self.session_token = new_session_token()

    def set_password(self, password: str) -> None:
        """Hash ``password`` with scrypt and keep only the hash; the account's sessions end."""
        self.password_hash = generate_password_hash(password, method="scrypt")
        self.end_sessions()

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


class Feedback(db.Model):
    """A visitor's answer to "Was this right?" for one prediction; never taken as ground truth.

    ``client_key`` tells visitors apart for the one-answer rule (a keyed hash of the browser session, or
    of the address for API clients); ``client_hash`` is a keyed hash of the address. Raw addresses and
    session ids are never stored.
    """

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint("verdict IN ('right', 'wrong', 'not_a_car', 'unknown')", name="ck_feedback_verdict"),
        CheckConstraint("(verdict = 'wrong') = (label IS NOT NULL)", name="ck_feedback_label"),
        Index("ix_feedback_prediction_client", "prediction_id", "client_key", unique=True),
        Index("ix_feedback_verdict", "verdict"),
    )

    id = db.Column(db.Integer, primary_key=True)
    prediction_id = db.Column(db.Integer, db.ForeignKey("predictions.id", name="fk_feedback_prediction_id",
                                                        ondelete="CASCADE"), nullable=False)
    verdict = db.Column(db.String(16), nullable=False)
    label = db.Column(db.String(255), nullable=True)
    created_at = db.Column(db.DateTime(timezone=True), nullable=False, default=utcnow)
    client_hash = db.Column(db.String(64), nullable=False)
    client_key = db.Column(db.String(64), nullable=False)

    prediction = db.relationship(Prediction, backref=db.backref("feedback", lazy="select", passive_deletes=True,
                                                                order_by="Feedback.id"))

    @property
    def says_wrong(self) -> bool:
        """True when the visitor said the top label was not the photo's."""
        return self.verdict in FEEDBACK_WRONG

    def to_dict(self) -> dict[str, Any]:
        """The API representation (no client hashes)."""
        stamp = self.created_at
        stamp = stamp.replace(tzinfo=dt.timezone.utc) if stamp.tzinfo is None else stamp
        return {
            "id": self.id,
            "prediction_id": self.prediction.public_id,  # the id the client knows; the integer stays inside
            "verdict": self.verdict,
            "label": self.label,
            "created_at": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }

    def __repr__(self) -> str:
        return f"<Feedback {self.prediction_id} {self.verdict} {self.label!r}>"


# Where a taught example came from: a photo an admin uploaded (page or CLI), or an adopted correction.
GALLERY_SOURCES = ("upload", "correction")


class GalleryExample(db.Model):
    """One photo taught to the gallery: its label and level, its embedding under the model that made it,
    and a JPEG of the photo (for the admin page, for re-embedding under another model, for training)."""

    __tablename__ = "gallery_examples"
    __table_args__ = (
        CheckConstraint("level IN ('class', 'make')", name="ck_gallery_examples_level"),
        CheckConstraint("source IN ('upload', 'correction')", name="ck_gallery_examples_source"),
        Index("ix_gallery_examples_label", "label"),
    )

    id = db.Column(db.Integer, primary_key=True)
    label = db.Column(db.String(255), nullable=False)
    level = db.Column(db.String(16), nullable=False)
    # float32 bytes, little-endian; only valid for the model (name and version) recorded beside it.
    embedding = db.Column(db.LargeBinary, nullable=False)
    model_name = db.Column(db.String(128), nullable=False)
    model_version = db.Column(db.String(64), nullable=False)
    image = db.Column(db.LargeBinary, nullable=False)
    sha256 = db.Column(db.String(64), nullable=False)
    source = db.Column(db.String(16), nullable=False)
    prediction_id = db.Column(db.Integer, db.ForeignKey("predictions.id", name="fk_gallery_examples_prediction_id",
                                                        ondelete="SET NULL"), nullable=True)
    added_by = db.Column(db.String(64), nullable=False)
    created_at = db.Column(db.DateTime(timezone=True), nullable=False, default=utcnow)

    def __repr__(self) -> str:
        return f"<GalleryExample {self.id} {self.label!r} ({self.level})>"


class GalleryNegative(db.Model):
    """The embedding of one photo of a car the model knows (its validation photos), under one model: a
    match to it is a wrong match, which raises the gallery's threshold (``flask gallery negatives``)."""

    __tablename__ = "gallery_negatives"
    __table_args__ = (Index("ix_gallery_negatives_model", "model_name", "model_version"),)

    id = db.Column(db.Integer, primary_key=True)
    model_name = db.Column(db.String(128), nullable=False)
    model_version = db.Column(db.String(64), nullable=False)
    embedding = db.Column(db.LargeBinary, nullable=False)  # float32 bytes, little-endian


class GalleryState(db.Model):
    """One row: a counter bumped by every change to the gallery, which workers compare to their copy's."""

    __tablename__ = "gallery_state"

    id = db.Column(db.Integer, primary_key=True)
    version = db.Column(db.Integer, nullable=False, default=0)
