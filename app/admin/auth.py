"""Admin sign-in: loading the account for Flask-Login, the guard on every admin URL, safe redirects.

Every ``/admin`` endpoint except the login page requires a signed-in, active admin. Browsers are sent to
the login page (302, with ``next``); clients that ask for JSON get ``401`` with a JSON body instead.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import redirect, request, url_for
from flask_login import current_user

from ..errors import json_error
from ..extensions import db, login_manager
from ..models import AdminUser
from . import bp

# Endpoints reachable without a session: the sign-in form itself.
PUBLIC_ENDPOINTS = frozenset({"admin.login"})

login_manager.session_protection = "strong"
login_manager.login_view = "admin.login"


@login_manager.user_loader
def load_admin(session_id: str) -> AdminUser | None:
    """The active account behind a session's ``<id>:<token>``, or None (the session is then anonymous).

    A token other than the account's current one belongs to a session that was ended.
    """
    user_id, _, token = session_id.partition(":")
    if not user_id.isdigit() or not token or len(user_id) > 18:
        return None
    admin = db.session.get(AdminUser, int(user_id))
    if admin is None or not admin.is_active or not admin.session_matches(token):
        return None
    return admin


def wants_json() -> bool:
    """Whether the client prefers JSON over HTML (an ``Accept`` header or a JSON request body)."""
    if request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


@login_manager.unauthorized_handler
def unauthorized():
    """302 to the login page for browsers, 401 JSON for API-style clients."""
    if wants_json():
        # The same error shape as every other JSON error of the app.
        return json_error(401, "authentication_required", "Sign in at /admin/login to use the admin pages.")
    # Only a page can be returned to after signing in; a form post would arrive as a GET.
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("admin.login", next=target))


@bp.before_request
def require_admin():
    """Guard every admin endpoint at once, so a new route cannot be left open by mistake."""
    if request.endpoint in PUBLIC_ENDPOINTS or current_user.is_authenticated:
        return None
    return unauthorized()


def safe_next(target: str | None, default: str) -> str:
    """``target`` when it is a same-site relative path, else ``default``.

    Refuses absolute URLs, scheme-relative ``//host`` and backslash tricks browsers read as ``//``.

    Args:
        target: The ``next`` value from the query string or form.
        default: Where to go when ``target`` is missing or unsafe.

    Returns:
        A path on this site.
    """
    if not target:
        return default
    cleaned = target.strip().replace("\\", "/")
    parts = urlsplit(cleaned)
    if parts.scheme or parts.netloc or not cleaned.startswith("/") or cleaned.startswith("//"):
        return default
    if any(ord(ch) < 32 for ch in cleaned):
        return default
    return cleaned
