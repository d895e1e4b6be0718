"""``flask create-admin``, ``flask set-password`` and ``make admin``: hashed passwords from a prompt or ADMIN_PASSWORD."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess

import pytest

from admin_support import PASSWORD, login
from support import REPO_ROOT


def stored_hash(app, username: str) -> str:
    from app.extensions import db
    from app.models import AdminUser

    with app.app_context():
        return db.session.query(AdminUser).filter_by(username=username).one().password_hash


def test_create_admin_from_the_environment_then_sign_in(app, runner, client):
    result = runner.invoke(args=["create-admin", "carol"], env={"ADMIN_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    assert "created admin carol" in result.output
    hashed = stored_hash(app, "carol")
    assert hashed.startswith("scrypt:") and PASSWORD not in hashed
    assert login(client, username="carol").status_code == 302


def test_create_admin_prompts_twice_and_refuses_duplicates_and_short_passwords(app, runner):
    result = runner.invoke(args=["create-admin", "dave"], input=f"{PASSWORD}\n{PASSWORD}\n", env={"ADMIN_PASSWORD": ""})
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output  # the prompt hides what is typed
    again = runner.invoke(args=["create-admin", "dave"], env={"ADMIN_PASSWORD": PASSWORD})
    assert again.exit_code != 0 and "already exists" in again.output
    short = runner.invoke(args=["create-admin", "erin"], env={"ADMIN_PASSWORD": "short"})
    assert short.exit_code != 0 and "at least 8 characters" in short.output


def test_set_password_replaces_the_hash(app, runner, client):
    runner.invoke(args=["create-admin", "frank"], env={"ADMIN_PASSWORD": PASSWORD})
    before = stored_hash(app, "frank")
    result = runner.invoke(args=["set-password", "frank"], env={"ADMIN_PASSWORD": "a brand new secret"})
    assert result.exit_code == 0, result.output
    assert stored_hash(app, "frank") != before
    assert login(app.test_client(), username="frank").status_code == 401
    assert login(client, username="frank", password="a brand new secret").status_code == 302
    missing = runner.invoke(args=["set-password", "nobody"], env={"ADMIN_PASSWORD": PASSWORD})
    assert missing.exit_code != 0 and "no admin 'nobody'" in missing.output


def test_create_admin_or_set_password_covers_a_forgotten_password(app, runner, client):
    first = runner.invoke(args=["create-admin", "--or-set-password", "gina"], env={"ADMIN_PASSWORD": PASSWORD})
    assert first.exit_code == 0 and "created admin gina" in first.output
    again = runner.invoke(args=["create-admin", "--or-set-password", "gina"],
                          env={"ADMIN_PASSWORD": "a brand new secret"})
    assert again.exit_code == 0 and "password of gina changed" in again.output
    assert login(client, username="gina", password="a brand new secret").status_code == 302


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_admin_creates_the_account_on_a_fresh_database_then_resets_it(tmp_path):
    """What the README says to run, as written: the database is created and migrated on the way."""
    database = tmp_path / "fresh.db"
    env = {key: value for key, value in os.environ.items()
           if key not in {"PROMETHEUS_MULTIPROC_DIR", "DATABASE_URL", "MAKEFLAGS", "MFLAGS"}}
    env.update(DATABASE_URL=f"sqlite:///{database}", ADMIN_PASSWORD=PASSWORD)
    for expected in ("created admin zoe", "password of zoe changed"):
        result = subprocess.run(["make", "-s", "admin", "ADMIN_USER=zoe"], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert expected in result.stdout
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT username FROM admin_users").fetchall() == [("zoe",)]


def test_the_sign_in_page_says_how_an_account_is_made(client):
    page = client.get("/admin/login").get_data(as_text=True)
    assert "make admin" in page
