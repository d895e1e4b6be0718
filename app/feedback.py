"""Visitors' answers to "Was this right?": checking them, telling visitors apart, storing one per visitor.

The page and the API share this path. A visitor is a browser session on the page and a client address on
the API; both are stored only as keyed hashes (HMAC-SHA256 with the app's ``SECRET_KEY``), so the table
holds no address and no session id, and the hashes cannot be recomputed without the key. An answer never
changes its prediction, and it is not a correction: the admin decides what becomes a true label.

A session costs nothing to drop (a request without the cookie is a new visitor), so one answer per
prediction is also counted per client address: a second answer from the same address within
:data:`ADDRESS_WINDOW` is refused on the page and on the API alike, whatever session it comes with.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any, Mapping

from flask import current_app, request, session
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .errors import RequestRejected
from .extensions import db
from .models import FEEDBACK_VERDICTS, Feedback, Prediction
from .serving import get_classifier

LABEL_MAX_LENGTH = 255
SESSION_VISITOR = "visitor"
# Long enough that dropping the cookie does not buy another vote the same day; short enough that the
# next visitor behind the same shared address may answer a prediction whose link was passed on.
ADDRESS_WINDOW = dt.timedelta(hours=24)


def keyed_hash(kind: str, value: str) -> str:
    """HMAC-SHA256 of ``kind:value`` under the app's secret key, as 64 hex digits."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def address_hash() -> str:
    """The keyed hash of the client's address (the proxy-corrected one under ``TRUSTED_PROXIES``)."""
    return keyed_hash("address", request.remote_addr or "unknown")


def session_key(create: bool) -> str | None:
    """The keyed hash of this browser session's visitor id; a new id is made when ``create`` is set."""
    visitor = session.get(SESSION_VISITOR)
    if visitor is None:
        if not create:
            return None
        visitor = session[SESSION_VISITOR] = secrets.token_urlsafe(16)
    return keyed_hash("session", visitor)


def allowed_labels(prediction: Prediction) -> list[str]:
    """Labels a visitor may suggest: the served model's, then this prediction's own answers."""
    labels = list(get_classifier().labels)
    labels += [answer["label"] for answer in prediction.top_k]
    return list(dict.fromkeys(labels))


def parse_answer(payload: Mapping[str, Any] | None, prediction: Prediction) -> tuple[str, str | None]:
    """Check an answer: ``verdict`` one of :data:`FEEDBACK_VERDICTS`; ``label`` only with ``wrong``,
    where it is required and must be one of the model's labels.

    Args:
        payload: The JSON object or the form, with ``verdict`` and optionally ``label``.
        prediction: The prediction answered.

    Returns:
        ``(verdict, label)``, the label None unless the verdict is ``wrong``.

    Raises:
        RequestRejected: ``invalid_feedback``, ``invalid_verdict``, ``unexpected_label``, ``missing_label`` or
            ``unknown_label``, with a message saying what is wrong.
    """
    if not isinstance(payload, Mapping):
        raise RequestRejected("invalid_feedback", 'Send a JSON object such as {"verdict": "right"}.')
    unknown = sorted(set(payload) - {"verdict", "label", "csrf_token"})
    if unknown:
        raise RequestRejected("invalid_feedback", f"Unknown field(s): {', '.join(unknown)}.")
    verdict = payload.get("verdict")
    if not isinstance(verdict, str) or verdict not in FEEDBACK_VERDICTS:
        raise RequestRejected("invalid_verdict", f"verdict must be one of {', '.join(FEEDBACK_VERDICTS)}.")
    label = payload.get("label")
    if verdict != "wrong":
        # Blank counts as sent: the published schema takes no label (or null) with these verdicts.
        if label is not None:
            raise RequestRejected("unexpected_label", "A label goes only with the verdict 'wrong'.")
        return verdict, None
    if isinstance(label, str):
        label = label.strip() or None
    if not isinstance(label, str):
        raise RequestRejected("missing_label", "Say which car it is: 'wrong' needs a label from the "
                                               "model's labels (or send 'unknown').")
    if len(label) > LABEL_MAX_LENGTH or label not in allowed_labels(prediction):
        raise RequestRejected("unknown_label", "The label is not one of the model's labels "
                                               "(GET /api/v1/model lists them).")
    return verdict, label


def answer_of(prediction: Prediction, client_key: str | None) -> Feedback | None:
    """The answer this visitor already gave for ``prediction``, if any."""
    if client_key is None:
        return None
    return db.session.scalar(select(Feedback).where(Feedback.prediction_id == prediction.id,
                                                    Feedback.client_key == client_key))


def answered_from_this_address(prediction: Prediction, client_hash: str) -> bool:
    """Whether the client's address already answered ``prediction`` within :data:`ADDRESS_WINDOW`."""
    since = dt.datetime.now(dt.timezone.utc) - ADDRESS_WINDOW
    return db.session.scalar(select(Feedback.id).where(
        Feedback.prediction_id == prediction.id, Feedback.client_hash == client_hash,
        Feedback.created_at >= since).limit(1)) is not None


def record_answer(prediction: Prediction, payload: Mapping[str, Any] | None, client_key: str) -> Feedback:
    """Check and store one visitor's answer for ``prediction``.

    Args:
        prediction: The prediction answered (left unchanged).
        payload: ``verdict`` and ``label`` as sent.
        client_key: Who answers (:func:`session_key` or :func:`address_hash`).

    Returns:
        The committed :class:`Feedback`.

    Raises:
        RequestRejected: As :func:`parse_answer` for a malformed answer, ``already_answered`` when this
            visitor already answered (by its key, or from its address within :data:`ADDRESS_WINDOW`).
    """
    verdict, label = parse_answer(payload, prediction)
    already = RequestRejected("already_answered", "You have already answered for this prediction.")
    client_hash = address_hash()
    if answer_of(prediction, client_key) is not None or answered_from_this_address(prediction, client_hash):
        raise already
    answer = Feedback(prediction_id=prediction.id, verdict=verdict, label=label, client_key=client_key,
                      client_hash=client_hash)
    db.session.add(answer)
    try:
        db.session.commit()
    except IntegrityError:  # the same visitor's concurrent answer won the unique index
        db.session.rollback()
        raise already from None
    current_app.logger.info("visitor feedback on prediction %d: %s", prediction.id, verdict,
                            extra={"feedback_verdict": verdict})
    return answer
