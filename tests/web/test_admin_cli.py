"""``flask create-admin`` and ``flask set-password``: hashed passwords from a prompt or ADMIN_PASSWORD."""

from __future__ import annotations

from admin_support import PASSWORD, login


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
