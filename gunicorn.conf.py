"""Gunicorn settings, read from the environment with defaults for a 2-core machine.

Sizing rule: workers x inference threads <= CPU cores. Each worker runs one model invocation at a time
(the LiteRT interpreter is not thread-safe), and its extra threads overlap upload parsing, JPEG
decoding and database writes with that invocation. The app is preloaded, so the model is loaded and
warmed up once in the master before any worker accepts a request.

The same file serves every deployment (``make run``, the Docker image, App Engine's entrypoint), so
what differs between them is in environment variables, not here.

Environment:
    PORT              Port to listen on (default 8000).
    BIND_HOST         Address to listen on: 127.0.0.1 by default, 0.0.0.0 on App Engine / Cloud Run
                      (detected by GAE_ENV / K_SERVICE); the Docker image sets 0.0.0.0.
    BIND              Full bind address; overrides PORT and BIND_HOST.
    WEB_CONCURRENCY   Worker processes (default: CPU cores, at most 4).
    GUNICORN_THREADS  Threads per worker (default 2).
    INFERENCE_THREADS Threads per model invocation (default: cores / workers).
    GUNICORN_TIMEOUT  Seconds before a silent worker is restarted (default 60).
    CLIENT_HEADER_TIMEOUT  Seconds a client has to send its request headers (default 10).
    CLIENT_BODY_TIMEOUT    Seconds a request body may stall between two reads (default 10).
    MIGRATE_ON_START  1 = run ``flask db upgrade`` once before the workers start (default 0).
    PROMETHEUS_MULTIPROC_DIR  Where workers keep their metrics (default: a fresh temporary folder).
    LOG_FORMAT        json (default): gunicorn's own lines are JSON on stdout too, like the app's.
"""

import atexit
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def on_managed_platform() -> bool:
    """App Engine or Cloud Run: their front end reaches the instance from outside, so listen on all."""
    return "GAE_ENV" in os.environ or "K_SERVICE" in os.environ


_cores = os.cpu_count() or 1
_port = os.environ.get("PORT", "8000")
# A container does not announce itself reliably (dev machines run in one too): the Dockerfile says so.
_host = os.environ.get("BIND_HOST") or ("0.0.0.0" if on_managed_platform() else "127.0.0.1")

bind = os.environ.get("BIND") or f"{_host}:{_port}"
workers = int(os.environ.get("WEB_CONCURRENCY") or min(_cores, 4))
threads = int(os.environ.get("GUNICORN_THREADS") or 2)
# gunicorn's threaded worker, except that a request is read whole (headers and body) in the worker's event
# loop before a thread takes it, as nginx would buffer it: a client trickling its upload a byte a second
# costs a socket, not a thread, so the image holds without a proxy in front (app/http_worker.py).
worker_class = "app.http_worker.BufferingWorker"
# Each connection being read may hold a second descriptor (its spooled body): stay under the open-file limit.
_open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
_open_files = 65536 if _open_files in (resource.RLIM_INFINITY, -1) else _open_files
worker_connections = min(1000, max(64, (_open_files - 64) // 2))
# The app reads this when it builds the interpreter: keep workers x inference threads <= cores.
os.environ.setdefault("INFERENCE_THREADS", str(max(1, _cores // workers)))
os.environ.setdefault("WEB_CONCURRENCY", str(workers))
# Serving processes never migrate (MIGRATE_ON_START runs `flask db upgrade` in a process of its own), so
# they skip binding Flask-Migrate and importing Alembic.
os.environ.setdefault("DB_COMMANDS", "0")
# Workers that load the app themselves (Keras runtime) must still sign CSRF tokens with the same key.
# Not in production: there the app refuses to start without a key of its own.
if os.environ.get("APP_ENV", "").strip() != "production":
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))


def prepare_metrics_dir() -> str:
    """Point prometheus_client at a folder shared by all workers, emptied of an earlier run's values.

    Runs when this file is read, so before the app (and prometheus_client) is imported by preloading.

    Returns:
        The folder. One made here is removed when the master exits, also when the app fails to load.
    """
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not configured:
        folder = tempfile.mkdtemp(prefix="car-classifier-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        master = os.getpid()
        # Workers run atexit handlers too when they exit: only the master may remove the folder.
        atexit.register(lambda: os.getpid() == master and shutil.rmtree(folder, ignore_errors=True))
        return folder
    Path(configured).mkdir(parents=True, exist_ok=True)
    for stale in Path(configured).glob("*.db"):
        stale.unlink()
    return configured


prepare_metrics_dir()


def serves_with_keras() -> bool:
    """Whether the app will pick the Keras runtime for the configured artifact."""
    try:
        from inference.classifier import resolve_runtime
        from app.config import REPO_ROOT

        model_dir = REPO_ROOT / (os.environ.get("MODEL_DIR") or "model_artifacts/default")
        runtime = os.environ.get("MODEL_RUNTIME") or "auto"
        return model_dir.is_dir() and resolve_runtime(model_dir, runtime) == "keras"
    except Exception:  # a bad setting is reported by the app itself with its one-line message
        return False


# TensorFlow's thread pools do not survive fork(), so a Keras model is loaded in each worker; LiteRT
# interpreters are rebuilt after fork by the app, so the model is loaded once in the master.
preload_app = not serves_with_keras()
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 60)
graceful_timeout = 20
keepalive = 5
# The app writes one JSON access line per request (with its request id); gunicorn's would repeat it.
accesslog = None
errorlog = "-"
# Workers are recycled now and then to bound memory growth; jitter avoids restarting all at once.
max_requests = 2000
max_requests_jitter = 200
if (os.environ.get("LOG_FORMAT") or "json").strip() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                                "formatter": "json"}},
        "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False}},
        "root": {"level": "INFO", "handlers": []},  # the app installs its own handler on the root logger
    }


def on_starting(server):
    """Bring the database schema up to date before any worker serves (``MIGRATE_ON_START=1``).

    A separate process, so that the master never imports TensorFlow (Keras runtime) before forking.
    """
    if (os.environ.get("MIGRATE_ON_START") or "0").strip().lower() not in {"1", "true", "yes", "on"}:
        return
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env["DB_COMMANDS"] = "1"
    server.log.info("running database migrations (flask db upgrade)")
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env)
    if result.returncode != 0:
        raise SystemExit(f"error: database migration failed (flask db upgrade exited {result.returncode})")


def child_exit(server, worker):
    """Drop a dead worker's live gauges so that /metrics does not count it forever."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)

