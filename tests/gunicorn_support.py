"""Real gunicorn for tests that need what only a real server does (its body reader, several workers)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from support import REPO_ROOT


def loadtest_script():
    """``scripts/loadtest.py`` as a module, loaded once for every test folder that needs it."""
    if "loadtest" not in sys.modules:
        spec = importlib.util.spec_from_file_location("loadtest", REPO_ROOT / "scripts" / "loadtest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["loadtest"] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["loadtest"]


@contextlib.contextmanager
def running_gunicorn(model_dir: Path, workdir: Path, **env_overrides: str) -> Iterator[tuple[object, Path]]:
    """gunicorn with the project's config on a free loopback port and a migrated SQLite file.

    Yields:
        ``(server, database path)``; ``server.port`` is the port.
    """
    loadtest = loadtest_script()
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
