"""Gunicorn settings, read from the environment with defaults for a 2-core machine.

Sizing rule: workers x inference threads <= CPU cores. Each worker runs one model invocation at a time
(the LiteRT interpreter is not thread-safe), and its extra threads overlap upload parsing, JPEG
decoding and database writes with that invocation. The app is preloaded, so the model is loaded and
warmed up once in the master before any worker accepts a request.

Environment:
    PORT              Port to listen on (default 8000).
    BIND              Full bind address; overrides the automatic choice below.
    WEB_CONCURRENCY   Worker processes (default: CPU cores, at most 4).
    GUNICORN_THREADS  Threads per worker (default 2).
    INFERENCE_THREADS Threads per model invocation (default: cores / workers).
    GUNICORN_TIMEOUT  Seconds before a silent worker is restarted (default 60).
"""

import os
import secrets
from pathlib import Path


def in_container() -> bool:
    """Docker, Podman, Cloud Run or App Engine: the port must be reachable from outside."""
    return (Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
            or "K_SERVICE" in os.environ or "GAE_ENV" in os.environ)


_cores = os.cpu_count() or 1
_port = os.environ.get("PORT", "8000")

bind = os.environ.get("BIND") or (f"0.0.0.0:{_port}" if in_container() else f"127.0.0.1:{_port}")
workers = int(os.environ.get("WEB_CONCURRENCY") or min(_cores, 4))
threads = int(os.environ.get("GUNICORN_THREADS") or 2)
worker_class = "gthread" if threads > 1 else "sync"
# The app reads this when it builds the interpreter: keep workers x inference threads <= cores.
os.environ.setdefault("INFERENCE_THREADS", str(max(1, _cores // workers)))
os.environ.setdefault("WEB_CONCURRENCY", str(workers))
# Workers that load the app themselves (Keras runtime) must still sign CSRF tokens with the same key.
os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))



def serves_with_keras() -> bool:
    """Whether the app will pick the Keras runtime for the configured artifact."""
    try:
        from app.classifier import resolve_runtime
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
accesslog = "-"
errorlog = "-"
# Workers are recycled now and then to bound memory growth; jitter avoids restarting all at once.
max_requests = 2000
max_requests_jitter = 200
