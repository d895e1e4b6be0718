"""Real gunicorn for tests that need what only a real server does (its body reader, several workers)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

from support import REPO_ROOT


@contextlib.contextmanager
def running_gunicorn(model_dir: Path, workdir: Path, **env_overrides: str) -> Iterator[tuple[object, Path]]:
    """gunicorn with the project's config on a free loopback port and a migrated SQLite file.

    Yields:
        ``(server, database path)``; ``server.port`` is the port.
    """
    from test_load_faults import loadtest

    database = workdir / "served.db"
    env = {**os.environ, "MODEL_DIR": str(model_dir), "DATABASE_URL": f"sqlite:///{database}",
           "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2", "RATELIMIT_ENABLED": "false",
           "SECRET_KEY": "gunicorn-test-secret", **env_overrides}
    migrate = subprocess.run([str(loadtest.BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=REPO_ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    server = loadtest.Gunicorn(env, workdir / "gunicorn.log")
    server.start()
    try:
        yield server, database
    finally:
        server.stop()
