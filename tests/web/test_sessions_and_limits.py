"""Sessions that end when they should, sign-in failures that take the same time whoever is named,
rate-limit counts shared by every worker, and batch work bounded by pixels rather than photos.
"""

from __future__ import annotations

import http.client
import io
import statistics
import time
import urllib.parse

import pytest
from PIL import Image

from admin_support import CSRF_PATTERN, PASSWORD, create_admin, csrf_token, login
from support import encode


def copy_session(source, target) -> None:
    """Put ``source``'s session cookie into ``target``, as someone who copied it would."""
    cookie = source.get_cookie("session")
    assert cookie is not None
    target.set_cookie("session", cookie.value)


def signed_in_pages_open(client) -> bool:
    return client.get("/admin/").status_code == 200 and client.get("/admin/predictions.csv").status_code == 200


def test_logout_ends_copies_of_the_session_cookie(app):
    create_admin(app)
    browser, thief = app.test_client(), app.test_client()
    assert login(browser).status_code == 302
    copy_session(browser, thief)
    assert signed_in_pages_open(thief)
    token = csrf_token(browser, "/admin/")
    assert browser.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    assert thief.get("/admin/").status_code == 302  # back to the login page
    assert thief.get("/admin/predictions.csv", headers={"Accept": "application/json"}).status_code == 401
    assert login(browser).status_code == 302 and signed_in_pages_open(browser)  # signing in again works


def test_set_password_ends_every_session_of_the_account(app, runner, monkeypatch):
    create_admin(app)
    create_admin(app, username="bob")
    alice, bob = app.test_client(), app.test_client()
    login(alice)
    login(bob, username="bob")
    copy = app.test_client()
    copy_session(alice, copy)
    monkeypatch.setenv("ADMIN_PASSWORD", "a brand new passphrase")
    result = runner.invoke(args=["set-password", "alice"])
    assert result.exit_code == 0 and "sessions were ended" in result.output
    assert alice.get("/admin/").status_code == 302 and copy.get("/admin/").status_code == 302
    assert bob.get("/admin/").status_code == 200  # another account's session is untouched
    assert login(app.test_client(), password=PASSWORD).status_code == 401
    assert login(app.test_client(), password="a brand new passphrase").status_code == 302


def test_a_session_cookie_from_before_session_tokens_is_refused(app):
    """A cookie naming only the account id (as issued before tokens existed) signs no one in."""
    admin_id = create_admin(app)
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = str(admin_id)
        session["_fresh"] = True
    assert client.get("/admin/").status_code == 302


def test_unknown_usernames_cost_a_password_check_too(app, monkeypatch):
    import app.models as models

    create_admin(app)
    checks = []
    real_check = models.check_password_hash
    monkeypatch.setattr(models, "check_password_hash", lambda *args: checks.append(args) or real_check(*args))
    client = app.test_client()
    assert login(client, username="nobody-by-this-name").status_code == 401
    assert len(checks) == 1 and checks[0][0].startswith("scrypt:")

    def failed_login_seconds(username: str) -> float:
        token = csrf_token(client, "/admin/login")
        started = time.perf_counter()
        response = client.post("/admin/login", data={"username": username, "password": "wrong password",
                                                     "csrf_token": token})
        assert response.status_code == 401
        return time.perf_counter() - started

    # Taken in turns, so that other work on the machine (a parallel test worker) slows both alike.
    pairs = [(failed_login_seconds("alice"), failed_login_seconds("mallory")) for _ in range(7)]
    known = statistics.median(k for k, _ in pairs)
    unknown = statistics.median(u for _, u in pairs)
    # Both hash once; the gap that told names apart was 20-fold (5.5 vs 107 ms).
    assert 0.5 < unknown / known < 2.0, (known, unknown)


def limited_app(color_artifact, database, **settings):
    from flask_migrate import upgrade

    from app import create_app

    application = create_app({"TESTING": True, "MODEL_DIR": str(color_artifact), "SECRET_KEY": "test-secret",
                              "DATABASE_URL": f"sqlite:///{database}", "INFERENCE_THREADS": 1,
                              "RATELIMIT_ENABLED": True, **settings})
    with application.app_context():
        upgrade()
    return application


def upload(client, photo: bytes, route="/api/v1/predictions", field="image", count=1):
    return client.post(route, data={field: [(io.BytesIO(photo), f"car{i}.jpg") for i in range(count)]})


def test_upload_counts_are_shared_by_workers_and_survive_a_restart(color_artifact, tmp_path, make_image):
    """Two apps on one database (two workers of a machine) count against one bucket, also after a restart."""
    database = tmp_path / "shared.db"
    settings = {"RATELIMIT_UPLOAD": "3 per minute"}
    first = limited_app(color_artifact, database, **settings)
    assert first.config["RATELIMIT_STORAGE_URI"] == f"sqlite:///{tmp_path / 'shared-ratelimits.db'}"
    second = limited_app(color_artifact, database, **settings)
    photo = make_image("red")
    assert [upload(first.test_client(), photo).status_code for _ in range(2)] == [201, 201]
    assert upload(second.test_client(), photo).status_code == 201
    assert upload(second.test_client(), photo).status_code == 429
    assert upload(first.test_client(), photo).status_code == 429
    restarted = limited_app(color_artifact, database, **settings)  # a worker replaced by max_requests
    assert upload(restarted.test_client(), photo).status_code == 429


def test_sqlite_counters_count_expire_and_clear(tmp_path):
    from app.ratelimits import SQLiteCounters
    from limits.storage import storage_from_string

    store = storage_from_string(f"sqlite:///{tmp_path / 'counters.db'}")
    assert isinstance(store, SQLiteCounters) and store.check()
    assert [store.incr("k", 1), store.incr("k", 1, amount=3), store.get("k")] == [1, 4, 4]
    assert time.time() < store.get_expiry("k") <= time.time() + 1
    time.sleep(1.1)
    assert store.get("k") == 0 and store.incr("k", 60) == 1  # a new window
    store.clear("k")
    assert store.get("k") == 0
    store.incr("a", 60), store.incr("b", 60)
    assert store.reset() == 2


def test_uploads_are_charged_by_their_pixels(color_artifact, tmp_path):
    application = limited_app(color_artifact, tmp_path / "p.db", RATELIMIT_UPLOAD="10 per minute",
                              RATELIMIT_PIXELS_PER_UPLOAD=10_000)
    client = application.test_client()
    small = encode(Image.new("RGB", (100, 100), (200, 30, 30)), "PNG")   # 10,000 px: 1 unit
    large = encode(Image.new("RGB", (200, 200), (200, 30, 30)), "PNG")   # 40,000 px: 4 units
    assert upload(client, large).status_code == 201                       # 4
    assert upload(client, large, route="/api/v1/predictions:batch", field="images").status_code == 200  # 8
    assert upload(client, small).status_code == 201                       # 9
    assert upload(client, large).status_code == 429                       # 13 > 10
    assert upload(client, small).status_code == 429


def test_batch_has_a_pixel_budget_over_all_its_images(app, client):
    app.config["BATCH_MAX_PIXELS"] = 25_000
    photo = encode(Image.new("RGB", (100, 100), (30, 200, 40)), "PNG")  # 10,000 px each
    response = upload(client, photo, route="/api/v1/predictions:batch", field="images", count=4)
    assert response.status_code == 200
    body = response.get_json()
    assert [r["status"] for r in body["results"]] == [201, 201, 413, 413]
    assert body["results"][2]["error"]["code"] == "batch_pixel_budget"
    assert (body["succeeded"], body["failed"]) == (2, 2)
    # A file that is not an image costs nothing and is refused as before; one over MAX_IMAGE_PIXELS keeps its 413.
    mixed = client.post("/api/v1/predictions:batch", data={"images": [
        (io.BytesIO(b"not an image"), "x.jpg"), (io.BytesIO(photo), "a.png"), (io.BytesIO(photo), "b.png")]})
    assert [r["status"] for r in mixed.get_json()["results"]] == [415, 201, 201]


def test_batch_of_huge_blank_pngs_is_bounded(app, client):
    """The reported case at a smaller scale: blank PNGs that compress to nothing but decode to millions of
    pixels. Only what fits the default budget (100 megapixels) is decoded."""
    blank = encode(Image.new("L", (5000, 5000), 255), "PNG", optimize=True)  # 25 MP in a few kB
    assert len(blank) < 100_000
    started = time.perf_counter()
    response = upload(client, blank, route="/api/v1/predictions:batch", field="images", count=8)
    seconds = time.perf_counter() - started
    statuses = [r["status"] for r in response.get_json()["results"]]
    assert statuses == [201] * 4 + [413] * 4, statuses
    assert seconds < 30, seconds


@pytest.mark.slow
def test_the_admin_login_limit_holds_across_gunicorn_workers(color_artifact, tmp_path):
    """Five failed sign-ins a minute means five, whichever of the two workers each one reaches."""
    from gunicorn_support import running_gunicorn

    with running_gunicorn(color_artifact, tmp_path, WEB_CONCURRENCY="2", RATELIMIT_ENABLED="true",
                          ADMIN_LOGIN_RATE_LIMIT="5 per minute") as (server, _):
        statuses = []
        for _ in range(12):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            connection.request("GET", "/admin/login")
            page = connection.getresponse()
            cookie = next(value.split(";")[0] for value in page.headers.get_all("Set-Cookie")
                          if value.startswith("session="))
            token = CSRF_PATTERN.search(page.read().decode()).group(1)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            form = urllib.parse.urlencode({"username": "nobody", "password": "wrong", "csrf_token": token})
            connection.request("POST", "/admin/login", body=form, headers={
                "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
            answer = connection.getresponse()
            answer.read()
            statuses.append(answer.status)
            connection.close()
        workers = server.workers()
    assert len(workers) == 2
    assert statuses == [401] * 5 + [429] * 7, statuses
