"""Admin access: every admin URL needs a session, sign-in/out, safe ``next``, CSRF, cookies, rate limit."""

from __future__ import annotations

import logging
import re

import pytest

from admin_support import PASSWORD, add_prediction, create_admin, csrf_token, jpeg, login


def admin_urls(app, prediction_id: int) -> list[tuple[str, str]]:
    """(method, URL) for every admin rule except the sign-in page, parameters filled with real ids."""
    urls = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin.") or rule.endpoint == "admin.login":
            continue
        values = {name: prediction_id for name in rule.arguments}
        path = rule.build(values)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            urls.append((method, path))
    return urls


@pytest.fixture
def prediction_id(app):
    with app.app_context():
        prediction = add_prediction(1)
        # A taught example with the same id, so that every admin URL that takes an id has a row to show.
        from app.extensions import db
        from app.models import GalleryExample

        db.session.add(GalleryExample(id=prediction.id, label="Fiat Argo 2022", level="class", embedding=bytes(12),
                                      model_name="colors", model_version="1.0", image=jpeg((200, 30, 30)),
                                      sha256="0" * 64, source="upload", added_by="alice"))
        db.session.commit()
        return prediction.id


def test_every_admin_url_redirects_browsers_and_answers_401_to_json_clients(app, client, prediction_id):
    urls = admin_urls(app, prediction_id)
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules() if rule.endpoint.startswith("admin.")}
    # The walk must cover the real surface, not an empty map.
    assert {"admin.index", "admin.detail", "admin.thumbnail", "admin.correct", "admin.predictions_csv",
            "admin.delete_correction", "admin.logout"} <= endpoints
    assert len(urls) >= 7
    for method, path in urls:
        browser = client.open(path, method=method, headers={"Accept": "text/html,*/*;q=0.8"})
        assert browser.status_code == 302, (method, path)
        expected = f"/admin/login?next={path}" if method == "GET" else "/admin/login"
        assert browser.headers["Location"] == expected, (method, path)
        api = client.open(path, method=method, headers={"Accept": "application/json"})
        assert api.status_code == 401, (method, path)
        error = api.get_json()["error"]  # the shape of every other JSON error
        assert set(error) == {"status", "code", "message"}, (method, path)
        assert (error["status"], error["code"]) == (401, "authentication_required"), (method, path)


def test_login_then_every_admin_get_page_opens(app, client, prediction_id):
    create_admin(app)
    assert login(client).status_code == 302
    for method, path in admin_urls(app, prediction_id):
        if method == "GET":
            assert client.get(path).status_code == 200, path


def test_login_follows_a_safe_next_and_logout_ends_the_session(app, client, prediction_id):
    create_admin(app)
    response = login(client, next_path=f"/admin/predictions/{prediction_id}")
    assert response.status_code == 302
    assert response.headers["Location"] == f"/admin/predictions/{prediction_id}"
    assert client.get("/admin/").status_code == 200

    token = csrf_token(client, "/admin/")
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example",
                                    "\\\\evil.example", "javascript:alert(1)", "admin/", "http:/evil"])
def test_login_refuses_offsite_next(app, client, target):
    create_admin(app)
    response = login(client, next_path=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"


def test_wrong_password_fails_and_is_logged_without_the_password(app, client, caplog):
    create_admin(app)
    with caplog.at_level(logging.INFO):
        response = login(client, password="not the password")
    assert response.status_code == 401
    assert "Wrong username or password" in response.get_data(as_text=True)
    assert client.get("/admin/").status_code == 302
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "failed admin login for username 'alice'" in messages
    assert "not the password" not in messages


def test_unknown_user_and_inactive_user_cannot_sign_in(app, client):
    from app.extensions import db
    from app.models import AdminUser

    assert login(client, username="nobody").status_code == 401
    admin_id = create_admin(app, "bob")
    with app.app_context():
        db.session.get(AdminUser, admin_id).is_active = False
        db.session.commit()
    assert login(client, username="bob").status_code == 401


def test_login_form_without_csrf_token_is_refused(app, client):
    create_admin(app)
    response = client.post("/admin/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/admin/").status_code == 302


def test_failed_logins_are_rate_limited_but_successes_are_not_counted(color_artifact, tmp_path):
    from flask_migrate import upgrade

    from app import create_app

    app = create_app({"TESTING": True, "MODEL_DIR": str(color_artifact), "RATELIMIT_ENABLED": True,
                      "ADMIN_LOGIN_RATE_LIMIT": "3 per minute", "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"})
    with app.app_context():
        upgrade()
    create_admin(app)
    client = app.test_client()
    for _ in range(4):  # good sign-ins (each from a new browser) do not use up the allowance
        assert login(app.test_client()).status_code == 302
    statuses = [login(client, password="wrong password").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert login(client).status_code == 429  # the address is blocked until the window passes


def test_session_cookie_flags(color_artifact, tmp_path):
    from app import create_app

    for scheme, secure in (("http", False), ("https", True)):
        application = create_app({"MODEL_DIR": str(color_artifact), "PREFERRED_URL_SCHEME": scheme,
                                  "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"})
        assert application.config["SESSION_COOKIE_HTTPONLY"] is True
        assert application.config["SESSION_COOKIE_SAMESITE"] == "Lax"
        assert application.config["SESSION_COOKIE_SECURE"] is secure


def test_the_set_cookie_header_is_httponly_and_lax(app, client):
    create_admin(app)
    response = login(client)
    cookie = next(value for value in response.headers.getlist("Set-Cookie") if value.startswith("session="))
    assert re.search(r"; HttpOnly", cookie) and re.search(r"; SameSite=Lax", cookie)


def test_strong_session_protection_drops_a_session_from_another_client(app, client):
    create_admin(app)
    login(client)
    assert client.get("/admin/").status_code == 200
    # Same cookie, different browser: Flask-Login's "strong" mode logs the session out.
    moved = client.get("/admin/", headers={"User-Agent": "SomethingElse/1.0"})
    assert moved.status_code == 302


def test_signing_in_voids_csrf_tokens_handed_out_before_it(app, client):
    create_admin(app)
    before = csrf_token(client, "/admin/login")
    assert client.post("/admin/login", data={"username": "alice", "password": PASSWORD,
                                             "csrf_token": before}).status_code == 302
    # The token from before signing in no longer signs anything out (or in); the page's new one does.
    assert client.post("/admin/logout", data={"csrf_token": before}).status_code == 400
    assert client.get("/admin/").status_code == 200
    assert client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")}).status_code == 302


def test_a_second_sign_in_ends_the_first_sign_ins_session(app):
    create_admin(app)
    first, second = app.test_client(), app.test_client()
    assert login(first).status_code == 302 and first.get("/admin/").status_code == 200
    assert login(second).status_code == 302
    assert first.get("/admin/").status_code == 302  # back to the login page
    assert second.get("/admin/").status_code == 200
