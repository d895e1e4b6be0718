"""Abuse protections: rate limits, security headers on every page, CSRF on every form.

Pages and forms are discovered by crawling the app (links, form actions, redirects and every GET rule
of the URL map), so pages and forms added later are checked without touching this file.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import time
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest


CRAWL_LIMIT = 200


class PageParser(HTMLParser):
    """Collects links, forms (with their field names) and inline scripts of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.forms: list[dict] = []
        self.inline_scripts = 0
        self.inline_handlers: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.inline_handlers += [name for name in attributes if name.startswith("on")]
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"])
        elif tag == "form":
            self.forms.append({"method": (attributes.get("method") or "get").lower(),
                               "action": attributes.get("action") or "", "fields": []})
        elif tag in {"input", "select", "textarea", "button"} and self.forms and attributes.get("name"):
            self.forms[-1]["fields"].append(attributes["name"])
        elif tag == "script" and not attributes.get("src"):
            self.inline_scripts += 1


def same_site_path(base: str, url: str) -> str | None:
    """The path (and query) of ``url`` when it points into the app, else ``None``."""
    parts = urlsplit(urljoin(base, url))
    if parts.scheme not in {"", "http"} or parts.netloc not in {"", "localhost"}:
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def url_map_pages(app, public_id: str) -> list[str]:
    """Every GET rule of the app, its id arguments filled with a stored prediction's: the public id in
    public URLs, the row id in admin URLs."""
    from app.extensions import db
    from app.models import Prediction

    with app.app_context():
        row_id = db.session.scalar(db.select(Prediction.id).filter_by(public_id=public_id))
    fill = {"PublicIdConverter": public_id, "RowIdConverter": row_id}
    paths = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static" or rule.rule.startswith("/api/"):
            continue
        kinds = {name: type(converter).__name__ for name, converter in rule._converters.items()}
        if any(kind not in fill for kind in kinds.values()):
            continue
        paths.append(rule.build({name: fill[kinds[name]] for name in rule.arguments}, append_unknown=False)[1])
    assert any("/admin/predictions/" in path for path in paths) and any(
        path.startswith("/predictions/") for path in paths), paths
    return paths


def crawl(client, start: list[str]) -> dict[str, tuple[object, PageParser | None]]:
    """Visit every reachable page of the app once; HTML pages are parsed.

    Returns:
        path -> (response, parser or ``None`` for non-HTML responses).
    """
    seen: dict[str, tuple[object, PageParser | None]] = {}
    queue = list(start)
    while queue and len(seen) < CRAWL_LIMIT:
        path = queue.pop(0)
        if path in seen or path.startswith("/static/"):
            continue
        response = client.get(path, buffered=True)  # streamed bodies (CSV) read while their context lives
        parser = None
        if response.status_code in {301, 302, 303, 307, 308}:
            target = same_site_path(path, response.headers["Location"])
            queue += [target] if target else []
        elif "text/html" in response.content_type:
            parser = PageParser()
            parser.feed(response.get_data(as_text=True))
            queue += [target for url in parser.links + [form["action"] for form in parser.forms]
                      if (target := same_site_path(path, url or path))]
        seen[path] = (response, parser)
    return seen


ADMIN_PASSWORD = "correct horse battery staple"


def form_values(form: dict, photo: bytes, **extra) -> dict:
    """Plausible values for whatever a form asks, so that only the CSRF token can be the problem."""
    values = {"username": "security-admin", "password": ADMIN_PASSWORD, "label": "red", "verdict": "correct"}
    data = {name: values.get(name, "1") for name in form["fields"] if name != "csrf_token"}
    data["image"] = (io.BytesIO(photo), "car.jpg")
    return {**data, **extra}


def sign_in(app, client, pages) -> bool:
    """Create an admin and submit the sign-in form found by the crawl, when the app has accounts."""
    if "create-admin" not in app.cli.commands:
        return False
    result = app.test_cli_runner().invoke(args=["create-admin", "security-admin"],
                                          env={"ADMIN_PASSWORD": ADMIN_PASSWORD})
    assert result.exit_code == 0, result.output
    for path, (_, parser) in html_pages(pages).items():
        for form in parser.forms:
            if form["method"] == "post" and "password" in form["fields"]:
                page = client.get(path).get_data(as_text=True)
                token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
                fields = {**form_values(form, b""), "csrf_token": token}
                fields.pop("image")
                response = client.post(same_site_path(path, form["action"] or path), data=fields)
                assert response.status_code in {302, 303}, response.status_code
                return True
    raise AssertionError("the app has admin accounts but the crawl found no sign-in form")


@pytest.fixture
def site(app, client, make_image):
    """Every page reachable anonymously and, where the app has accounts, signed in as an admin.

    The client stays signed in, so that forms behind the sign-in are checked as a signed-in user.
    """
    created = client.post("/api/v1/predictions", data={"image": (io.BytesIO(make_image("red")), "car.jpg")})
    assert created.status_code == 201
    start = ["/", "/no-such-page"] + url_map_pages(app, created.json["id"])
    pages = crawl(client, start)
    assert any(parser and parser.forms for _, parser in pages.values()), "the crawl found no form"
    if sign_in(app, client, pages):
        signed_in = crawl(client, start)
        pages.update({f"{path} (signed in)": page for path, page in signed_in.items()})
    return pages


def html_pages(site):
    return {path: (response, parser) for path, (response, parser) in site.items() if parser is not None}


def test_every_html_page_sends_the_security_headers(site):
    pages = html_pages(site)
    assert "/" in pages and "/no-such-page" in pages  # error pages count too
    for path, (response, parser) in pages.items():
        csp = response.headers.get("Content-Security-Policy", "")
        directives = dict((part.strip().split(" ", 1) + [""])[:2] for part in csp.split(";") if part.strip())
        script_sources = directives.get("script-src", directives.get("default-src", ""))
        assert script_sources and "'unsafe-inline'" not in script_sources, (path, csp)
        assert "'unsafe-eval'" not in script_sources, (path, csp)
        assert directives.get("frame-ancestors") == "'none'", (path, csp)
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path
        assert response.headers.get("Referrer-Policy") in {
            "no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}, path
        # The policy would block these in the browser, so a page that relies on them is broken.
        assert parser.inline_scripts == 0, f"{path} has an inline <script>"
        assert not parser.inline_handlers, f"{path} has inline event handlers {parser.inline_handlers}"


def test_json_responses_are_not_sniffed(client):
    response = client.get("/api/v1/model")
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


def post_forms(site) -> list[tuple[str, dict]]:
    """(page, form) for every form that posts, on every page found."""
    return [(path.split(" ")[0], form) for path, (_, parser) in html_pages(site).items()
            for form in parser.forms if form["method"] == "post"]


def test_every_form_carries_a_csrf_token(site):
    forms = post_forms(site)
    assert forms
    for path, form in forms:
        assert "csrf_token" in form["fields"], f"the form on {path} posting to {form['action']!r} has no token"


def table_sizes(app) -> dict[str, int]:
    from sqlalchemy import func, select

    from app.extensions import db

    with app.app_context():
        return {table.name: db.session.scalar(select(func.count()).select_from(table))
                for table in db.metadata.sorted_tables}


def test_every_form_posted_without_a_token_is_refused(app, client, site, make_image):
    """Each form as found (plausible fields, no or a forged token) and every other non-API POST route."""
    photo = make_image("green")
    attempts = {(same_site_path(path, form["action"] or path), tuple(form["fields"]))
                for path, form in post_forms(site)}
    posted_paths = {target for target, _ in attempts}
    from app.routing import PublicIdConverter

    for rule in app.url_map.iter_rules():  # POST routes no crawled page showed a form for
        # A well-formed id of each kind, so the request reaches the CSRF check rather than a 404 router miss.
        values = {name: "A" * 22 if isinstance(rule._converters[name], PublicIdConverter) else 1
                  for name in rule.arguments}
        target = rule.build(values, append_unknown=False)[1]
        if "POST" in rule.methods and not rule.rule.startswith("/api/") and target not in posted_paths:
            attempts.add((target, ("label", "username", "password")))
    assert "/" in posted_paths
    before = table_sizes(app)
    # Sign-out last: if it ever went through, the routes after it would be tested signed out.
    for target, fields in sorted(attempts, key=lambda attempt: "logout" in attempt[0]):
        form = {"fields": list(fields)}
        response = client.post(target, data=form_values(form, photo), content_type="multipart/form-data")
        assert response.status_code == 400, (target, response.status_code)
        forged = client.post(target, data=form_values(form, photo, csrf_token="forged"),
                             content_type="multipart/form-data")
        assert forged.status_code == 400, (target, forged.status_code)
    assert table_sizes(app) == before


def limited_app(color_artifact, tmp_path, **settings):
    """An app with rate limits switched on (the shared fixture turns them off)."""
    from flask_migrate import upgrade

    from app import create_app

    application = create_app({"TESTING": True, "MODEL_DIR": str(color_artifact), "SECRET_KEY": "test-secret",
                              "DATABASE_URL": f"sqlite:///{tmp_path / 'limits.db'}", "INFERENCE_THREADS": 1,
                              "RATELIMIT_ENABLED": True, **settings})
    with application.app_context():
        upgrade()
    return application


def api_upload(client, photo: bytes):
    return client.post("/api/v1/predictions", data={"image": (io.BytesIO(photo), "car.jpg")})


def assert_retry_after(response, at_most: int) -> int:
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= at_most
    return seconds


def test_uploads_over_the_limit_get_429_with_retry_after(color_artifact, tmp_path, make_image):
    application = limited_app(color_artifact, tmp_path, RATELIMIT_UPLOAD="2 per minute",
                              RATELIMIT_API="100 per minute")
    client = application.test_client()
    photo = make_image("red")
    assert [api_upload(client, photo).status_code for _ in range(2)] == [201, 201]
    refused = api_upload(client, photo)
    assert refused.status_code == 429 and refused.is_json
    seconds = assert_retry_after(refused, 60)
    error = refused.json["error"]
    assert error["code"] == "too_many_requests" and error["retry_after"] == seconds
    assert "2 per 1 minute" in error["message"] and f"{seconds} s" in error["message"]
    # The page shares the bucket with the API: the same photo through the form is refused too, as HTML.
    page = client.get("/")
    assert page.status_code == 200  # looking at the page is not an upload
    token = page.get_data(as_text=True).split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    form = client.post("/", data={"csrf_token": token, "image": (io.BytesIO(photo), "car.jpg")},
                       content_type="multipart/form-data")
    assert form.status_code == 429 and "text/html" in form.content_type
    assert_retry_after(form, 60)
    assert "Too many requests" in form.get_data(as_text=True)


def test_a_batch_costs_one_upload_per_photo(color_artifact, tmp_path, make_image):
    application = limited_app(color_artifact, tmp_path, RATELIMIT_UPLOAD="3 per minute",
                              RATELIMIT_API="100 per minute")
    client = application.test_client()
    photo = make_image("green")

    def batch(count):
        files = [(io.BytesIO(photo), f"car{i}.jpg") for i in range(count)]
        return client.post("/api/v1/predictions:batch", data={"images": files}, content_type="multipart/form-data")

    assert batch(3).status_code == 200
    assert api_upload(client, photo).status_code == 429  # the three photos used the whole budget


@pytest.mark.parametrize("trusted_proxies, separate_buckets", [(0, False), (1, True)])
def test_clients_behind_a_trusted_proxy_get_their_own_bucket(color_artifact, tmp_path, make_image,
                                                              trusted_proxies, separate_buckets):
    application = limited_app(color_artifact, tmp_path, RATELIMIT_UPLOAD="1 per minute",
                              TRUSTED_PROXIES=trusted_proxies)
    client = application.test_client()
    photo = make_image("blue")

    def upload_from(address):
        return client.post("/api/v1/predictions", data={"image": (io.BytesIO(photo), "car.jpg")},
                           headers={"X-Forwarded-For": address})

    assert upload_from("203.0.113.7").status_code == 201
    assert upload_from("198.51.100.9").status_code == (201 if separate_buckets else 429)


def test_api_reads_have_their_own_limit(color_artifact, tmp_path):
    application = limited_app(color_artifact, tmp_path, RATELIMIT_API="3 per minute")
    client = application.test_client()
    assert [client.get("/api/v1/model").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert client.get("/healthz").status_code == 200  # probes are never limited
    assert_retry_after(client.get("/api/v1/model"), 60)


def test_limits_can_be_switched_off(color_artifact, tmp_path, make_image):
    application = limited_app(color_artifact, tmp_path, RATELIMIT_ENABLED=False, RATELIMIT_UPLOAD="1 per hour")
    client = application.test_client()
    assert {api_upload(client, make_image()).status_code for _ in range(3)} == {201}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_uri(tmp_path):
    """A throw-away redis-server on loopback (skips when redis-server or the client is missing)."""
    pytest.importorskip("redis", reason="the redis client package is not installed")
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_redis_storage_shares_the_limit_between_workers(color_artifact, tmp_path, redis_uri, make_image):
    """Two apps (as two gunicorn workers would be) count against one Redis bucket."""
    settings = {"RATELIMIT_STORAGE_URI": redis_uri, "RATELIMIT_UPLOAD": "3 per minute"}
    first = limited_app(color_artifact, tmp_path, **settings).test_client()
    photo = make_image("red")
    assert [api_upload(first, photo).status_code for _ in range(3)] == [201, 201, 201]
    (tmp_path / "second").mkdir()
    second = limited_app(color_artifact, tmp_path / "second", **settings).test_client()
    refused = api_upload(second, photo)
    assert refused.status_code == 429
    assert_retry_after(refused, 60)


def test_limits_survive_the_redis_store_going_down(color_artifact, tmp_path, redis_uri, make_image):
    """No 500 when Redis dies: the limits go on in the worker's memory, then back to Redis."""
    import redis

    application = limited_app(color_artifact, tmp_path, RATELIMIT_STORAGE_URI=redis_uri,
                              RATELIMIT_UPLOAD="2 per minute")
    client = application.test_client()
    photo = make_image("blue")
    assert api_upload(client, photo).status_code == 201
    redis.Redis.from_url(redis_uri).shutdown(nosave=True)
    outage = [api_upload(client, photo).status_code for _ in range(4)]
    assert 500 not in outage and outage[0] == 201 and outage[-1] == 429
