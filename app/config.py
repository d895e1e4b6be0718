"""Application settings read from environment variables, with safe defaults.

Every setting is one row of :class:`Config`: the config key equals the environment variable name, and
each row carries its parser, default and a one-line description (the manual's configuration table is
written from the same rows). ``create_app`` resolves the rows against ``os.environ`` once per app.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_ENVS = ("development", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")
# Values copied from examples (the manual, app.yaml) rather than generated: refused in production.
PLACEHOLDER_SECRET_KEYS = {"change-me", "changeme", "secret", "dev", "development", "replace-me"}
MIN_SECRET_KEY_LENGTH = 32
SECRET_SETTINGS = {"SECRET_KEY"}


def parse_bool(raw: str) -> bool:
    """Read ``1/true/yes/on`` and ``0/false/no/off`` (any case) as booleans.

    Raises:
        ValueError: For any other text, so that a typo fails loudly at start-up.
    """
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def parse_choice(raw: str, choices: tuple[str, ...]) -> str:
    """Accept one of ``choices`` (after trimming).

    Raises:
        ValueError: For anything else, listing the choices.
    """
    value = raw.strip()
    if value not in choices:
        raise ValueError(f"not one of {', '.join(choices)}")
    return value


def parse_optional_int(raw: str) -> int | None:
    """Parse an integer, treating an empty string as "not set"."""
    return int(raw) if raw.strip() else None


@dataclass(frozen=True)
class Setting:
    """One configuration row: how to parse the environment value and what to use without it."""

    parse: Callable[[str], Any]
    default: Any
    help: str


class Config:
    """The table of settings. Add a row to add a setting; the env var has the same name."""

    SECRET_KEY = Setting(str, None, "Signs sessions and CSRF tokens. Random per start when unset "
                                    "(forms then expire on restart): set it in production.")
    APP_ENV = Setting(lambda raw: parse_choice(raw, APP_ENVS), "development",
                      "`production` refuses to start unless `SECRET_KEY` is set to a strong value "
                      "(32+ characters, not a placeholder); `development` accepts a random one.")
    DATABASE_URL = Setting(str, None, "SQLAlchemy URL; default `sqlite:///<instance>/predictions.db`. "
                                      "PostgreSQL URLs work too.")
    MODEL_DIR = Setting(str, "model_artifacts/default", "Artifact folder to serve; relative paths are "
                                                       "taken from the repository root.")
    MODEL_RUNTIME = Setting(str, "auto", "`auto` (LiteRT when the artifact has model.tflite and "
                                         "ai-edge-litert is installed, else Keras), `litert` or `keras`.")
    TOP_K = Setting(int, 5, "Default number of answers per prediction (API accepts `top_k` 1..20).")
    MAX_CONTENT_LENGTH = Setting(int, 10 * 1024 * 1024, "Largest request body in bytes (413 above).")
    MAX_IMAGE_PIXELS = Setting(int, 40_000_000, "Largest image (width x height) decoded (413 above).")
    MAX_WEBP_PIXELS = Setting(int, 20_000_000, "Largest WebP image (width x height) decoded (413 above): "
                                               "libwebp needs about twice the memory per pixel of the other "
                                               "formats (benchmarks/memory_formats.py).")
    INFERENCE_THREADS = Setting(parse_optional_int, None, "Threads per model invocation; default "
                                                           "CPU cores / WEB_CONCURRENCY.")
    MODEL_VARIANT = Setting(str, "auto", "LiteRT file served: `auto` (the artifact's `serving_variant`, else "
                                         "float32), `float32` (model.tflite), or `float16` / `int8` / `int8-full` "
                                         "written by `python -m training quantize`.")
    BATCH_MAX_SIZE = Setting(int, 1, "Above 1, each worker merges concurrent predictions into one model "
                                     "invocation of up to this many images (off: no gain measured on CPU).")
    BATCH_TIMEOUT_MS = Setting(float, 2.0, "With BATCH_MAX_SIZE > 1: how long a batch waits for more requests.")
    DB_COMMANDS = Setting(parse_bool, True, "Bind Flask-Migrate, which the `flask db` commands need. "
                                            "`gunicorn.conf.py` turns it off in the serving processes (they "
                                            "never migrate), which spares them importing Alembic at start-up.")
    SQLITE_WAL = Setting(parse_bool, True, "Use SQLite WAL journaling; turn off on network file systems "
                                           "(e.g. PythonAnywhere).")
    SQLITE_BUSY_TIMEOUT_MS = Setting(int, 5000, "How long SQLite waits for a lock before failing.")
    LOG_LEVEL = Setting(lambda raw: parse_choice(raw.upper(), LOG_LEVELS), "INFO",
                        "Lowest level logged to stdout: DEBUG, INFO, WARNING or ERROR.")
    LOG_FORMAT = Setting(lambda raw: parse_choice(raw, LOG_FORMATS), "json",
                         "`json` (one object per line, with the request id) or `text` for reading by eye.")
    BOOTSTRAP_SERVE_LOCAL = Setting(parse_bool, True, "Serve Bootstrap from the app instead of a CDN.")
    VEHICLE_GATE_DIR = Setting(str, None, "Vehicle gate artifact (\"not a car\" check); default the shipped "
                                          "`model_artifacts/vehicle-gate` when present; `none` turns it off.")
    EXAMPLES_DIR = Setting(str, "examples", "Folder of example photos offered on the upload page (JPEG, PNG or "
                                            "WebP); relative paths are taken from the repository root; "
                                            "`none` hides the row.")
    EXPLANATION_CACHE_DIR = Setting(str, None, "Where the answer heatmaps are cached; default "
                                               "`<instance>/explanations`.")
    EXPLANATION_CACHE_MAX_BYTES = Setting(int, 100 * 1024 * 1024, "Largest total size of the heatmap cache; "
                                                                  "the least recently used heatmaps go first.")
    GALLERY_CHECK_SECONDS = Setting(float, 2.0, "How often a worker asks the database whether examples were "
                                                "taught or removed elsewhere (one tiny query at most this often).")
    GALLERY_MIN_SIMILARITY = Setting(float, 0.85, "Lowest similarity at which a taught label may answer; the "
                                                  "calibrated threshold is never below it. For a model without "
                                                  "references (`references.npy`).")
    GALLERY_MAX_FALSE_RATE = Setting(float, 0.001, "For a model with references: the share of its own photos "
                                                   "a taught label may answer in the calibration.")
    GALLERY_TARGET_PRECISION = Setting(float, 0.98, "Share of taught-label answers that must be right in the "
                                                    "leave-one-out calibration of the gallery threshold.")
    RATELIMIT_ENABLED = Setting(parse_bool, True, "Apply the per-client request limits below.")
    RATELIMIT_UPLOAD = Setting(str, "60 per minute", "Uploads per client address (page and API together), "
                                                     "e.g. `10 per minute;500 per day`.")
    RATELIMIT_API = Setting(str, "300 per minute", "Requests per client address to `/api/v1`, any method.")
    RATELIMIT_FEEDBACK = Setting(str, "20 per minute;200 per day", "Answers to \"Was this right?\" per client "
                                                                 "address (page and API together).")
    RATELIMIT_STORAGE_URI = Setting(str, None, "Where rate-limit counters live; default a SQLite file shared by "
                                               "the machine's workers (next to a SQLite database, else "
                                               "`<instance>/ratelimits.db`). `redis://host:6379` shares them "
                                               "between machines; `memory://` counts per worker.")
    RATELIMIT_PIXELS_PER_UPLOAD = Setting(int, 12_000_000, "An upload counts once against `RATELIMIT_UPLOAD` per "
                                                           "this many pixels (a 40-megapixel photo counts 4 times).")
    BATCH_MAX_PIXELS = Setting(int, 100_000_000, "Pixels one batch request may decode in all; its later photos "
                                                 "beyond this get 413 (each one still within `MAX_IMAGE_PIXELS`).")
    PREFERRED_URL_SCHEME = Setting(str, "http", "`https` when served over TLS: external URLs use it and the "
                                                "session cookie gets the Secure flag.")
    ADMIN_LOGIN_RATE_LIMIT = Setting(str, "5 per minute", "Failed admin sign-ins allowed per client address "
                                                          "(Flask-Limiter syntax, e.g. `10 per hour`).")
    ADMIN_LOW_CONFIDENCE = Setting(float, 0.5, "Admin review: a top score below this counts as low confidence.")
    TRUSTED_PROXIES = Setting(int, 0, "Reverse proxies in front of the app whose `X-Forwarded-For`/`-Proto` "
                                      "headers are believed (rate limits then see real client addresses).")

    @classmethod
    def settings(cls) -> dict[str, Setting]:
        """Return the rows of the table by name, in declaration order."""
        return {name: value for name, value in vars(cls).items() if isinstance(value, Setting)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Resolve every row against ``environ`` (default ``os.environ``).

        Args:
            environ: Mapping of environment variables.

        Returns:
            Config key -> parsed value (defaults where the variable is unset or empty).

        Raises:
            ValueError: A variable is set to text its parser refuses; the message names it.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, setting in cls.settings().items():
            raw = environ.get(name, "")
            if raw.strip() == "":
                values[name] = setting.default
                continue
            try:
                values[name] = setting.parse(raw)
            except ValueError as exc:
                raise ValueError(f"environment variable {name}={raw!r} is invalid: {exc}") from None
        return values


def default_inference_threads(environ: Mapping[str, str] | None = None) -> int:
    """Split the CPU cores between gunicorn workers so that workers x threads <= cores."""
    environ = os.environ if environ is None else environ
    workers = int(environ.get("WEB_CONCURRENCY", "") or 1)
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def check_secret_key(config: Mapping[str, Any]) -> None:
    """In production, refuse a missing, placeholder or short ``SECRET_KEY``.

    Anyone who knows the key can forge session cookies and CSRF tokens, and a random key per start
    logs every user out on each restart, so production must bring its own.

    Raises:
        ValueError: ``APP_ENV=production`` with an unsuitable key; the message says how to make one.
    """
    if config.get("APP_ENV") != "production":
        return
    key = config.get("SECRET_KEY") or ""
    if key.strip().lower() in PLACEHOLDER_SECRET_KEYS or len(key) < MIN_SECRET_KEY_LENGTH:
        problem = "is not set" if not key else "is a placeholder or shorter than 32 characters"
        raise ValueError(f"APP_ENV=production but SECRET_KEY {problem}: set it to the output of "
                         f"`python -c 'import secrets; print(secrets.token_hex(32))'`")


def hide_password(url: str) -> str:
    """``scheme://user:***@host/...`` for a URL with a password; anything else unchanged."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting of the table with its effective value, safe to log: no secrets, no passwords.

    Args:
        config: The app's finalized config.

    Returns:
        Setting name -> value; secrets read ``"(hidden)"``, URLs lose their password.
    """
    shown: dict[str, Any] = {}
    for name in Config.settings():
        value = config.get(name)
        if name in SECRET_SETTINGS:
            value = "(hidden)"
        elif isinstance(value, str):
            value = hide_password(value)
        shown[name] = value
    return shown


def default_ratelimit_storage(database_url: str, instance_path: str) -> str:
    """A SQLite file every worker of this machine shares: beside a SQLite database, else in the instance
    folder. An in-memory database (one process) counts in memory too."""
    if database_url.startswith("sqlite:///") and ":memory:" not in database_url:
        database = Path(database_url[len("sqlite:///"):])
        return f"sqlite:///{database.with_name(database.stem + '-ratelimits.db')}"
    if database_url.startswith("sqlite"):
        return "memory://"
    return f"sqlite:///{Path(instance_path) / 'ratelimits.db'}"


def finalize(config: dict[str, Any], instance_path: str) -> dict[str, Any]:
    """Fill the defaults that depend on where the app lives.

    Args:
        config: Values from :meth:`Config.from_env` merged with overrides.
        instance_path: The Flask instance folder (holds the default SQLite file).

    Returns:
        ``config`` completed with the keys Flask and its extensions read.
    """
    check_secret_key(config)
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = secrets.token_hex(32)
    if not config.get("DATABASE_URL"):
        config["DATABASE_URL"] = f"sqlite:///{Path(instance_path) / 'predictions.db'}"
    # Heroku-style URLs still say postgres://, which SQLAlchemy 2 no longer accepts.
    if config["DATABASE_URL"].startswith("postgres://"):
        config["DATABASE_URL"] = "postgresql://" + config["DATABASE_URL"][len("postgres://"):]
    config["SQLALCHEMY_DATABASE_URI"] = config["DATABASE_URL"]
    if not config.get("RATELIMIT_STORAGE_URI"):
        config["RATELIMIT_STORAGE_URI"] = default_ratelimit_storage(config["DATABASE_URL"], instance_path)
    # Without a driver SQLAlchemy picks psycopg2; the one installed (requirements.txt) is psycopg 3.
    if config["DATABASE_URL"].startswith("postgresql://"):
        config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://" + config["DATABASE_URL"][len("postgresql://"):]
    if not config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # A pooled connection dies with a server restart; test it on checkout rather than answer 503 once.
        config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_pre_ping": True})
    examples = (config.get("EXAMPLES_DIR") or "none").strip()
    if examples.lower() != "none" and not Path(examples).is_absolute():
        examples = str(REPO_ROOT / examples)
    config["EXAMPLES_DIR"] = examples
    model_dir = Path(config["MODEL_DIR"])
    config["MODEL_DIR"] = str(model_dir if model_dir.is_absolute() else REPO_ROOT / model_dir)
    if config.get("INFERENCE_THREADS") is None:
        config["INFERENCE_THREADS"] = default_inference_threads()
    config.setdefault("BOOTSTRAP_BOOTSWATCH_THEME", None)
    config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # a form left open over lunch still submits
    # Session cookies: never readable by scripts, not sent on cross-site subrequests, HTTPS-only under TLS.
    secure = config.get("PREFERRED_URL_SCHEME") == "https"
    for prefix in ("SESSION_COOKIE", "REMEMBER_COOKIE"):
        config.setdefault(f"{prefix}_HTTPONLY", True)
        config.setdefault(f"{prefix}_SAMESITE", "Lax")
        config.setdefault(f"{prefix}_SECURE", secure)
    return config
