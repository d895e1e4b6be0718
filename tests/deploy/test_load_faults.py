"""The load-and-fault run at CI size, and the hostile corpus against real gunicorn workers.

``scripts/loadtest.py`` at a few hundred requests: a worker killed with SIGKILL mid-load and replaced,
no lost or invented rows, a write-locked database answered with 503s and then recovered, and a
missing or corrupt model stopping the server with one line. The full-size run (10,000 requests) is
made by hand; its figures are in the README.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest
from werkzeug.test import EnvironBuilder

import hostile_files
from gunicorn_support import loadtest_script
from support import REPO_ROOT

pytestmark = pytest.mark.slow
REQUESTS, CONCURRENCY = 300, 8


loadtest = loadtest_script()


def test_small_load_with_a_killed_worker_a_locked_database_and_broken_models(color_artifact, tmp_path):
    report = loadtest.main(["--requests", str(REQUESTS), "--concurrency", str(CONCURRENCY), "--workers", "2",
                            "--model-dir", str(color_artifact), "--busy-timeout-ms", "300",
                            "--workdir", str(tmp_path)])
    load = report["load_and_kill"]
    assert load["statuses"] == {"201": REQUESTS} and load["errors"] == 0
    assert load["ids_201_missing_from_db"] == 0 and load["integrity_check"] == "ok"
    assert load["rows_added"] == REQUESTS + load["rows_without_201"]
    assert load["rows_without_201"] <= load["connections_cut"]
    kill = load["kill"]
    assert kill["replaced"] and kill["master_alive"] and kill["victim_pid"] not in kill["workers_after"]
    assert len(kill["workers_after"]) == 2
    locked = report["database_locked"]
    assert locked["while_locked"] == {"503": locked["burst"]} and locked["rows_written_while_locked"] == 0
    assert locked["after_release"] == {"201": locked["burst"]}
    for case in ("missing", "corrupt"):
        startup = report["startup_faults"][case]
        assert startup["exit_status"] not in (0, None) and len(startup["lines"]) == 1, startup
    assert report["ok"]


@pytest.fixture
def gunicorn(color_artifact, tmp_path):
    """Two gunicorn workers on loopback with a migrated SQLite file."""
    database = tmp_path / "hostile.db"
    env = {**os.environ, "MODEL_DIR": str(color_artifact), "DATABASE_URL": f"sqlite:///{database}",
           "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "2", "RATELIMIT_ENABLED": "false",
           "SECRET_KEY": "hostile-test"}
    migrate = subprocess.run([str(loadtest.BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=REPO_ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    server = loadtest.Gunicorn(env, tmp_path / "gunicorn.log")
    server.start()
    try:
        yield server, database
    finally:
        server.stop()


def encoded(case: hostile_files.Case) -> tuple[bytes, str]:
    """The case as the raw multipart body a browser or script would send."""
    environ = EnvironBuilder(method="POST", data=case.multipart(), content_type="multipart/form-data").get_environ()
    return environ["wsgi.input"].read(), environ["CONTENT_TYPE"]


def test_hostile_corpus_never_kills_a_worker(gunicorn):
    server, database = gunicorn
    workers = server.workers()
    accepted = 0
    # Every file is built first: some take seconds, longer than the server keeps an idle connection open.
    requests = [(case, *encoded(case)) for case in hostile_files.corpus()]
    client = loadtest.Client(server.port, timeout_s=60)
    for case, body, content_type in requests:
        try:
            status, answer, _ = client.post(body, content_type)
        except loadtest.CONNECTION_ERRORS as exc:
            raise AssertionError(f"{case.name}: the connection died ({exc!r})") from None
        assert status == case.status, (case.name, answer[:300])
        assert b"Traceback" not in answer and b'File "/' not in answer, case.name
        accepted += status == 201
    client.close()
    assert server.workers() == workers, "a worker died or was replaced"
    assert "Traceback" not in server.log_path.read_text()
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == accepted
