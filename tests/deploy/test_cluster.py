"""The production topology: deploy/docker-compose.yml and deploy/nginx.conf, read statically, then nginx run
for real in front of a real gunicorn.

No Docker engine is needed. The compose file is parsed and its wiring checked (nginx the only published
port, two or more app containers, PostgreSQL and Redis shared, one migration run); the nginx file is the
one ``scripts/cluster.py`` runs (paths adapted), checked with ``nginx -t`` and then served: nginx's own
error pages carry the security headers, and with 32 slow connections held open against nginx every health
check is still answered, as it is with slow connections straight at gunicorn (its worker reads requests
whole before a thread takes them). The whole
topology under load with a killed instance is ``make cluster-test`` (scripts/cluster.py), run in CI.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from app.config import Config
from support import REPO_ROOT, manual_text

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import cluster  # noqa: E402

COMPOSE = yaml.safe_load((REPO_ROOT / "deploy" / "docker-compose.yml").read_text())
NGINX_CONF = (REPO_ROOT / "deploy" / "nginx.conf").read_text()
SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy")
# Variables gunicorn.conf.py reads (the app's own settings are the rows of app.config.Config).
GUNICORN_SETTINGS = {"PORT", "BIND_HOST", "BIND", "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_TIMEOUT",
                     "MIGRATE_ON_START", "PROMETHEUS_MULTIPROC_DIR"}

needs_nginx = pytest.mark.skipif(
    not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()),
    reason="nginx is not installed (apt-get install nginx, or scripts/cluster-packages.sh as root)")


def directive(name: str, text: str = NGINX_CONF) -> list[str]:
    """Values of every ``name ...;`` directive in the nginx file (comments skipped)."""
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return re.findall(rf"^\s*{name}\s+([^;]*);", "\n".join(lines), re.MULTILINE)


def nginx_size(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", value.strip().lower()).groups()
    return int(number) * units[unit]


def nginx_seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)?", value.strip()).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[unit]


def test_compose_puts_nginx_alone_in_front_of_two_or_more_app_containers():
    services = COMPOSE["services"]
    assert {"nginx", "app", "migrate", "db", "redis"} <= set(services)
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"nginx"}, "only nginx may be reachable from outside"
    assert services["app"]["deploy"]["replicas"] >= 2
    build = services["app"]["build"]
    assert build["context"] == ".." and (REPO_ROOT / build["dockerfile"]).is_file(), "the repository's image"
    assert services["nginx"]["depends_on"]["app"]["condition"] == "service_healthy"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in services["nginx"]["volumes"]}
    assert mounts["/etc/nginx/nginx.conf"] == "./nginx.conf"
    assert (REPO_ROOT / "deploy" / mounts["/etc/nginx/_errors"]).is_dir()
    assert "root /etc/nginx;" in NGINX_CONF, "nginx.conf serves its error pages from the mounted folder"


def test_compose_app_containers_share_postgres_redis_and_the_secret_and_migrate_once():
    services = COMPOSE["services"]
    env = services["app"]["environment"]
    assert env["APP_ENV"] == "production"
    # From deploy/.env, never written into the file.
    assert re.fullmatch(r"\$\{SECRET_KEY:\?[^}]+\}", env["SECRET_KEY"])
    assert re.fullmatch(r"postgresql://cars:\$\{POSTGRES_PASSWORD:\?[^}]+\}@db:5432/cars", env["DATABASE_URL"])
    assert env["RATELIMIT_STORAGE_URI"].startswith("redis://redis:6379")
    assert env["TRUSTED_PROXIES"] == "1", "exactly one proxy (nginx) adds X-Forwarded-For"
    assert env["MIGRATE_ON_START"] == "0", "several containers must not migrate at the same time"
    unknown = set(env) - set(Config.settings()) - GUNICORN_SETTINGS
    assert not unknown, f"settings nothing reads: {unknown}"
    # The image must carry the Redis client for that storage URI.
    serving = (REPO_ROOT / "requirements.txt").read_text().lower()
    assert re.search(r"^redis==", serving, re.MULTILINE)

    migrate = services["migrate"]
    assert migrate["command"] == ["flask", "--app", "wsgi", "db", "upgrade"]
    assert migrate["environment"] == env, "the migration runs against the same database"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["app"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["app"]["depends_on"]["redis"]["condition"] == "service_healthy"
    db_env = services["db"]["environment"]
    assert db_env["POSTGRES_USER"] == "cars" and db_env["POSTGRES_DB"] == "cars"
    assert db_env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in services["db"]["volumes"])


def test_nginx_buffers_bodies_with_the_apps_size_limit_and_client_timeouts():
    app_limit = Config.MAX_CONTENT_LENGTH.default
    assert [nginx_size(value) for value in directive("client_max_body_size")] == [app_limit]
    assert int(COMPOSE["services"]["app"]["environment"]["MAX_CONTENT_LENGTH"]) == app_limit
    for name in ("client_body_timeout", "client_header_timeout"):
        (value,) = directive(name)
        assert 1 <= nginx_seconds(value) <= 30, f"{name} {value}"
    assert directive("proxy_request_buffering") == ["on"]
    assert "off" not in directive("proxy_buffering")
    assert directive("proxy_pass") == ["http://app"]
    # An upload already handed to an instance must not be sent to a second one.
    assert not any("non_idempotent" in value for value in directive("proxy_next_upstream"))
    for header in SECURITY_HEADERS:
        (value,) = [v for v in directive("add_header") if v.split()[0] == header]
        assert value.endswith(" always"), f"{header} must be on error responses too"


def test_adapting_the_nginx_file_fails_loudly_when_a_line_it_replaces_is_gone(tmp_path):
    changed = NGINX_CONF.replace("server app:8080", "server application:8080")
    with pytest.raises(ValueError, match="server app:8080"):
        cluster.render_nginx_conf(changed, listen_port=1, upstream_ports=[2], prefix=tmp_path)


def test_nginx_error_page_files_speak_like_the_app():
    folder = REPO_ROOT / "deploy" / "nginx-errors"
    pages = {path.name for path in folder.iterdir()}
    for line in directive("error_page"):
        *codes, target = line.split()
        name = target.rsplit("/", 1)[1]
        assert {name.replace("$error_type", "json"), name.replace("$error_type", "html")} <= pages, line
    for path in folder.glob("*.json"):
        error = json.loads(path.read_text())["error"]
        assert error["status"] == int(path.stem) and error["code"] and error["message"]


@needs_nginx
def test_nginx_accepts_the_deployed_file_with_loopback_paths(tmp_path):
    server = cluster.Nginx(tmp_path / "nginx", cluster.free_port(), [cluster.free_port(), cluster.free_port()])
    checked = server.check()
    assert checked.returncode == 0, checked.stderr


@pytest.fixture
def nginx_prefix():
    """A folder nginx's workers can read and write: as root they run as nobody, for whom pytest's
    temporary folders are closed."""
    folder = Path(tempfile.mkdtemp(prefix="nginx-test-"))
    folder.chmod(0o755)
    yield folder / "nginx"
    shutil.rmtree(folder, ignore_errors=True)


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


@pytest.fixture
def nginx_without_app(nginx_prefix):
    """nginx with deploy/nginx.conf whose one upstream port has nothing listening."""
    server = cluster.Nginx(nginx_prefix, cluster.free_port(), [cluster.free_port()])
    server.start()
    yield server
    server.stop()


@needs_nginx
@pytest.mark.slow
def test_nginx_own_error_pages_carry_the_security_headers(nginx_without_app):
    port = nginx_without_app.port
    api = request(port, "GET", "/api/v1/model")
    page = request(port, "GET", "/", headers={"Accept": "text/html"})
    too_large = socket.create_connection(("127.0.0.1", port), timeout=10)
    too_large.sendall(b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                      + f"Content-Length: {Config.MAX_CONTENT_LENGTH.default + 1}\r\n\r\n".encode())
    answer = too_large.recv(65536).decode()
    too_large.close()

    assert api.status == 502 and api.getheader("Content-Type") == "application/json"
    assert json.loads(api.body)["error"]["status"] == 502
    assert page.status == 502 and page.getheader("Content-Type") == "text/html"
    for response in (api, page):
        for header in SECURITY_HEADERS:
            assert response.getheader(header), f"{header} missing on nginx's {response.status}"
        assert "nginx/" not in (response.getheader("Server") or ""), "no version in the Server header"
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    for header in SECURITY_HEADERS:
        assert f"\r\n{header.lower()}: " in head.lower(), f"{header} missing on nginx's 413"


@needs_nginx
@pytest.mark.slow
def test_nginx_drops_clients_that_stall_in_their_headers_or_body(nginx_without_app):
    header_timeout = nginx_seconds(directive("client_header_timeout")[0])
    body_timeout = nginx_seconds(directive("client_body_timeout")[0])
    stalled_header = socket.create_connection(("127.0.0.1", nginx_without_app.port))
    stalled_header.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    stalled_body = socket.create_connection(("127.0.0.1", nginx_without_app.port))
    stalled_body.sendall(b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: 1000\r\n\r\n" + b"x" * 100)
    started = time.monotonic()
    closed_after = {}
    for name, sock in (("header", stalled_header), ("body", stalled_body)):
        sock.settimeout(max(header_timeout, body_timeout) + 10)
        try:
            while sock.recv(4096):  # nginx closes without an answer (or after a 408)
                pass
        except ConnectionResetError:
            pass
        closed_after[name] = time.monotonic() - started
        sock.close()
    assert closed_after["header"] < header_timeout + 3, closed_after
    assert closed_after["body"] < body_timeout + 3, closed_after


@pytest.fixture
def gunicorn_behind_nginx(color_artifact, tmp_path, nginx_prefix):
    """One real gunicorn (1 worker, 2 threads: the case four slow clients starved before requests were read
    whole in the worker's event loop) and nginx."""
    import loadtest

    env = {**cluster.os.environ, "MODEL_DIR": str(color_artifact), "DATABASE_URL": f"sqlite:///{tmp_path}/p.db",
           "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2", "TRUSTED_PROXIES": "1",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    app_server = loadtest.Gunicorn(env, tmp_path / "gunicorn.log")
    app_server.start(ready_timeout_s=120)
    proxy = cluster.Nginx(nginx_prefix, cluster.free_port(), [app_server.port])
    try:
        proxy.start()
        yield app_server, proxy
    finally:
        proxy.stop()
        app_server.stop()


@needs_nginx
@pytest.mark.slow
def test_slow_clients_starve_neither_gunicorn_alone_nor_through_nginx(gunicorn_behind_nginx):
    app_server, proxy = gunicorn_behind_nginx

    # Without nginx: four slow connections of each kind cost gunicorn sockets, not its two threads.
    with cluster.SlowClients(app_server.port, body=4, header=4):
        time.sleep(1.5)
        direct = [cluster.http_get(app_server.port, "/healthz", 1.5) for _ in range(3)]
    assert direct.count(200) == 3, f"the slow clients blocked gunicorn: {direct}"

    # Through nginx: four times as many, held the whole time, and every check is answered.
    with cluster.SlowClients(proxy.port, body=16, header=16) as slow, \
            cluster.HealthChecks(proxy.port, interval_s=0.2, timeout_s=3, slow=slow) as health:
        time.sleep(4)
    assert health.statuses.count(200) == len(health.statuses) >= 8, f"statuses (0 = no answer): {health.statuses}"
    assert min(health.slow_open_during) == 32

    # The app's own security headers pass through once, not doubled by nginx.
    response = request(proxy.port, "GET", "/healthz")
    for header in SECURITY_HEADERS:
        assert len(response.headers.get_all(header)) == 1, header


def test_ci_installs_nginx_before_the_suite_and_runs_the_cluster_test():
    steps = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert steps.index("scripts/cluster-packages.sh") < steps.index("make test") < steps.index("make cluster-test")


def test_readme_shows_the_compose_topology_and_a_passing_cluster_run():
    readme = manual_text()
    deploy = readme.split("<!-- section:deploy -->")[1].split("<!-- /section:deploy -->")[0]
    assert "docker compose -f deploy/docker-compose.yml up -d --build" in deploy
    assert "--scale app=" in deploy and "nginx -s reload" in deploy
    (line,) = re.findall(r"^cluster-test .*$", deploy, re.MULTILINE)
    assert line.startswith("cluster-test PASS: ")
    rows, created = map(int, re.search(r"rows (\d+) = 201s (\d+)", line).groups())
    assert rows == created == int(re.search(r"201 x(\d+)", line).group(1))
    answered, checks = map(int, re.search(r"health (\d+)/(\d+) answered", line).groups())
    assert answered == checks > 0
