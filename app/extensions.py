"""Flask extensions, created unbound here and bound to the app in ``create_app``.

Flask-Migrate is the exception: it imports Alembic, a tenth of a serving process's start-up, so its
object is made by :func:`migrate_extension` only in processes that may run ``flask db`` (``DB_COMMANDS``).
"""

from flask_bootstrap import Bootstrap5
from flask_limiter import Limiter
from flask_login import LoginManager
from flask_limiter.util import get_remote_address
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

db = SQLAlchemy()
csrf = CSRFProtect()
bootstrap = Bootstrap5()
# Storage and limits come from the app's settings (RATELIMIT_*), read when the app is bound. The error
# handler writes Retry-After itself: the limiter's own headers would also stretch a database 503's.
# A shared store (Redis) that goes down must not take the site with it: the limits then count in
# this process's memory until the store answers again.
limiter = Limiter(key_func=get_remote_address, headers_enabled=False, swallow_errors=True,
                  in_memory_fallback_enabled=True)
# Admin sessions; the user loader and the unauthorized answer live in the admin blueprint.
login_manager = LoginManager()


def migrate_extension():
    """The Flask-Migrate object (made on first use: importing it imports Alembic)."""
    global _migrate
    if _migrate is None:
        from flask_migrate import Migrate

        _migrate = Migrate()
    return _migrate


_migrate = None
