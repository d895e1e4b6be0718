"""Start-up with a missing or broken model: one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO_ROOT

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def run(command: list[str], model_dir: Path, tmp_path: Path, timeout=60) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODEL_DIR": str(model_dir), "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
           "PORT": "0"}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_clear_line(result: subprocess.CompletedProcess, path: Path, problem: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and str(path) in lines[0] and problem in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


COMMANDS = {
    "python -c 'import wsgi'": [sys.executable, "-c", "import wsgi"],
    "flask db upgrade": [str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"],
    "gunicorn": [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_missing_artifact_stops_with_one_line(command, tmp_path):
    missing = tmp_path / "model_artifacts" / "default"
    result = run(COMMANDS[command], missing, tmp_path)
    assert_one_clear_line(result, missing, "model artifact not found")
    assert "python -m training train" in result.stderr and "MODEL_DIR" in result.stderr


def test_broken_artifact_stops_gunicorn_with_one_line(color_artifact, tmp_path):
    broken = shutil.copytree(color_artifact, tmp_path / "broken")
    (broken / "labels.json").write_text('["only-one"]')
    result = run(COMMANDS["gunicorn"], broken, tmp_path)
    assert_one_clear_line(result, broken, "labels.json has 1")


def test_serving_processes_skip_alembic_and_the_db_commands_still_bind_it(color_artifact, tmp_path):
    probe = ("import sys, wsgi; print('alembic' in sys.modules, 'migrate' in wsgi.app.extensions)")
    serving = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=60, env={**os.environ, "MODEL_DIR": str(color_artifact), "DB_COMMANDS": "0",
                                              "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}"})
    assert serving.stdout.splitlines()[-1].split() == ["False", "False"], serving.stdout + serving.stderr
    # `flask db upgrade` (DB_COMMANDS defaults on) still finds Flask-Migrate and builds the schema.
    result = run(COMMANDS["flask db upgrade"], color_artifact, tmp_path)
    assert result.returncode == 0, result.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "s.db") as connection:
        assert connection.execute("select count(*) from alembic_version").fetchone()[0] == 1
