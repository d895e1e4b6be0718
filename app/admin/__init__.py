"""Admin blueprint: sign-in, the prediction review table, details, corrections, CSV export."""

from flask import Blueprint

from ..extensions import csrf

bp = Blueprint("admin", __name__)
# The sign-in guard must answer before any CSRF check (so an anonymous POST gets 302/401, not 400);
# every admin form is a FlaskForm, which checks its own CSRF token in validate_on_submit().
csrf.exempt(bp)

from . import auth, gallery, routes  # noqa: E402,F401  (each attaches its handlers to bp)
