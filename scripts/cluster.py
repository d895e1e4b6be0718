"""The Docker deployment's topology on one machine, without Docker: nginx -> two gunicorn instances of the
app -> PostgreSQL and Redis, all from Debian packages and all on 127.0.0.1.

``up`` (``make cluster``) starts it and serves until Ctrl-C. ``test`` (``make cluster-test``) starts it on
free ports, then, with 16 slow-body and 16 slow-header connections held open against nginx the whole time:

- sends ``--requests`` uploads through nginx, and halfway kills one whole app instance (its master and
  workers) with SIGKILL;
- asks nginx for ``/healthz`` every quarter second: every check must be answered;
- checks that every upload answered 201 is a row in PostgreSQL and that there are no other rows (the only
  exception: an upload the killed instance had committed but could not answer, which got a 502);
- runs ``pg_amcheck`` (heap and B-tree checks of every table and index) on the database;
- checks that the rate-limit counters are in Redis, shared by both instances.

Before that, a control run holds the same slow connections directly against one gunicorn instance: its
worker reads requests whole before a thread takes them (app/http_worker.py), so it must answer every
health check by itself too.

It prints one line with the figures, exits 1 when a check fails, and stops everything it started. The
nginx configuration is ``deploy/nginx.conf`` itself, with its listen address, upstream servers and file
paths replaced by loopback ones (:func:`render_nginx_conf`).

Usage:
    python scripts/cluster.py up [--port 8080]
    python scripts/cluster.py test [--requests 300] [--concurrency 8] [--out results.json]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import pwd
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS.parent
DEPLOY = REPO_ROOT / "deploy"
sys.path.insert(0, str(SCRIPTS))

from loadtest import Gunicorn, free_port, worker_pids  # noqa: E402

BIN = Path(sys.executable).parent
CONNECTION_ERRORS = (OSError, http.client.HTTPException)
SLOW_BODY_LENGTH = 100_000


def running_as_root() -> bool:
    return os.geteuid() == 0


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll ``predicate`` until it is true; ``RuntimeError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise RuntimeError(f"{what} not ready within {timeout_s:.0f} s")


def http_get(port: int, path: str, timeout_s: float = 3.0) -> int:
    """Status of one GET on a fresh connection to 127.0.0.1; 0 when there is no answer in time."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except CONNECTION_ERRORS:
        return 0
    finally:
        connection.close()


def nginx_binary() -> str:
    """The nginx executable (``/usr/sbin`` is not on every user's PATH)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise SystemExit("error: nginx is not installed (scripts/cluster-packages.sh installs it, as root)")
    return found


def postgres_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (Debian keeps initdb and pg_ctl there)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                      key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.parent.name)])
    if not versions:
        raise SystemExit("error: PostgreSQL is not installed (scripts/cluster-packages.sh installs it, as root)")
    return versions[-1].parent


# -- nginx configuration ---------------------------------------------------------------------------------

def substitute_once(pattern: str, replacement: str, text: str, flags: int = re.MULTILINE) -> str:
    """Replace the single match of ``pattern``; ``ValueError`` when it matches zero or several times.

    Adapting the configuration must never silently miss a line that changed in deploy/nginx.conf.
    """
    matches = len(re.findall(pattern, text, flags))
    if matches != 1:
        raise ValueError(f"deploy/nginx.conf: expected one match of {pattern!r}, found {matches}")
    return re.sub(pattern, lambda _match: replacement, text, flags=flags)


def render_nginx_conf(text: str, *, listen_port: int, upstream_ports: list[int], prefix: Path) -> str:
    """deploy/nginx.conf adapted to run without Docker: loopback addresses, files under ``prefix``.

    Args:
        text: The content of deploy/nginx.conf.
        listen_port: Port nginx listens on, on 127.0.0.1.
        upstream_ports: One port per app instance, on 127.0.0.1.
        prefix: Folder for the pid file, logs, temporary bodies and the error pages (``prefix/_errors``).

    Returns:
        The configuration text; everything else (timeouts, limits, headers, proxying) is unchanged.
    """
    upstream = re.search(r"^\s*server app:8080( [^;]*)?;$", text, re.MULTILINE)
    parameters = (upstream.group(1) or "") if upstream else ""
    servers = "\n".join(f"        server 127.0.0.1:{port}{parameters};" for port in upstream_ports)
    text = substitute_once(r"^\s*server app:8080( [^;]*)?;$", servers, text)
    text = substitute_once(r"^\s*listen 80 default_server;$",
                           f"        listen 127.0.0.1:{listen_port} default_server;", text)
    text = substitute_once(r"^pid [^;]*;$", f"pid {prefix / 'nginx.pid'};", text)
    text = substitute_once(r"^error_log [^;]*;$", f"error_log {prefix / 'error.log'} warn;", text)
    text = substitute_once(r"^(\s*)access_log (\S+) main;$", f"    access_log {prefix / 'access.log'} main;", text)
    text = substitute_once(r"^(\s*)root /etc/nginx;$", f"            root {prefix};", text)
    # The package's compiled-in temporary folders (/var/lib/nginx) belong to its own service.
    temp_paths = "".join(f"    {kind}_temp_path {prefix / 'tmp' / kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return substitute_once(r"^http \{\n", "http {\n" + temp_paths, text)


class Nginx:
    """nginx in the foreground (``daemon off``) with deploy/nginx.conf adapted by :func:`render_nginx_conf`."""

    def __init__(self, prefix: Path, listen_port: int, upstream_ports: list[int]):
        self.prefix, self.port = prefix, listen_port
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "tmp").mkdir(exist_ok=True)
        shutil.copytree(DEPLOY / "nginx-errors", prefix / "_errors", dirs_exist_ok=True)
        # As root, nginx's workers run as nobody: they must be able to read the error pages and write bodies.
        for folder in (prefix, prefix / "tmp", prefix / "_errors"):
            folder.chmod(0o755)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(render_nginx_conf((DEPLOY / "nginx.conf").read_text(), listen_port=listen_port,
                                               upstream_ports=upstream_ports, prefix=prefix))
        self.argv = [nginx_binary(), "-p", str(prefix), "-c", str(self.conf), "-e", str(prefix / "error.log")]
        self.process: subprocess.Popen | None = None

    def check(self) -> subprocess.CompletedProcess:
        """``nginx -t`` on the adapted file."""
        return subprocess.run(self.argv + ["-t"], capture_output=True, text=True, timeout=30)

    def start(self) -> None:
        checked = self.check()
        if checked.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{checked.stderr}")
        self.process = subprocess.Popen(self.argv + ["-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        # Any answer will do: whether the app behind it is up is not nginx's to say.
        wait_for(lambda: self.process.poll() is not None or http_get(self.port, "/healthz", 2) != 0, 30, "nginx")
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx exited: {(self.prefix / 'error.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


# -- PostgreSQL and Redis --------------------------------------------------------------------------------

class Postgres:
    """A throw-away PostgreSQL cluster in ``folder``: loopback only, a password-protected role for the app.

    As root the server runs as the ``postgres`` system user (it refuses to run as root).
    """

    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.bindir = postgres_bindir()
        self.data, self.sockets, self.log = folder / "data", folder / "sockets", folder / "postgres.log"
        self.password = secrets.token_hex(12)
        self.url = f"postgresql://cars:{self.password}@127.0.0.1:{port}/cars"
        self.started = False

    def run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """A PostgreSQL program as the cluster's owner; ``RuntimeError`` with its output when it fails."""
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if running_as_root():
            command = ["runuser", "-u", "postgres", "--", *command]
        # Generous: on a machine shared with other work, initdb alone has taken minutes.
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stdout[-1000:]}{result.stderr[-2000:]}")
        return result

    def start(self) -> None:
        self.sockets.mkdir(parents=True)
        self.folder.chmod(0o755)
        if running_as_root():
            owner = pwd.getpwnam("postgres")
            for path in (self.folder, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C", "--data-checksums",
                 # A throw-away cluster: no need to wait for its files to reach the disk before it starts.
                 "--no-sync",
                 "--auth-local=trust", "--auth-host=scram-sha-256")
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start", "-o",
                 f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets}")
        self.started = True
        self.psql(f"CREATE ROLE cars LOGIN PASSWORD '{self.password}'; CREATE DATABASE cars OWNER cars;")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket; returns the unaligned output."""
        return self.run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.sockets),
                        "-p", str(self.port), "-U", "postgres", "-d", database, stdin=sql).stdout.strip()

    def amcheck(self) -> tuple[bool, str]:
        """``pg_amcheck`` over every table and index of the app's database: ``(ok, last output line)``."""
        try:
            result = self.run("pg_amcheck", "-h", str(self.sockets), "-p", str(self.port), "-U", "postgres",
                              "--install-missing", "--heapallindexed", "--parent-check", "cars")
        except RuntimeError as exc:
            return False, str(exc).strip().splitlines()[-1]
        return True, (result.stdout.strip().splitlines() or ["no corruption found"])[-1]

    def stop(self) -> None:
        if self.started:
            self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            self.started = False


class Redis:
    """redis-server on loopback, counters only (nothing saved to disk)."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise SystemExit("error: redis-server is not installed (scripts/cluster-packages.sh installs it)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.command("PING") == "+PONG", 30, "redis-server")

    def command(self, *words: str) -> str:
        """One command in Redis's inline protocol; the first reply line, or '' when it does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(" ".join(words).encode() + b"\r\n")
                return sock.makefile("rb").readline().decode().strip()
        except OSError:
            return ""

    def keys(self) -> int:
        reply = self.command("DBSIZE")
        return int(reply[1:]) if reply.startswith(":") else -1

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


# -- the topology ----------------------------------------------------------------------------------------

class Cluster:
    """PostgreSQL, Redis, ``instances`` gunicorn instances of the app and nginx in front, on 127.0.0.1."""

    def __init__(self, workdir: Path, *, port: int, instances: int, workers: int, threads: int,
                 model_dir: Path, extra_env: dict[str, str] | None = None):
        self.workdir = workdir
        self.postgres = Postgres(workdir / "postgres", free_port())
        self.redis = Redis(workdir / "redis", free_port())
        cores = os.cpu_count() or 1
        self.env = {
            **os.environ, "APP_ENV": "production", "SECRET_KEY": secrets.token_hex(32),
            "DATABASE_URL": self.postgres.url, "RATELIMIT_STORAGE_URI": self.redis.url,
            "TRUSTED_PROXIES": "1", "MODEL_DIR": str(model_dir), "MIGRATE_ON_START": "0",
            "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads),
            # Every instance shares this machine's cores: workers x inference threads <= cores overall.
            "INFERENCE_THREADS": str(max(1, cores // (instances * workers))),
            **(extra_env or {}),
        }
        self.instances = [Gunicorn({**self.env, "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"metrics-{index}")},
                                   workdir / f"gunicorn-{index}.log") for index in range(instances)]
        self.nginx: Nginx | None = None
        self.nginx_port = port

    def start(self, stack: ExitStack) -> None:
        """Start every part; ``stack`` stops them again, in reverse order."""
        self.postgres.start()
        stack.callback(self.postgres.stop)
        self.redis.start()
        stack.callback(self.redis.stop)
        migrate = subprocess.run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=REPO_ROOT,
                                 env=self.env, capture_output=True, text=True, timeout=300)
        if migrate.returncode != 0:
            raise RuntimeError(f"migration failed: {migrate.stderr[-2000:]}")
        for instance in self.instances:
            stack.callback(instance.stop)
        errors: list[BaseException] = []

        def start_instance(instance: Gunicorn) -> None:
            try:
                instance.start()
            except BaseException as exc:  # SystemExit from Gunicorn.start carries the log tail
                errors.append(exc)

        threads = [threading.Thread(target=start_instance, args=(instance,)) for instance in self.instances]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise RuntimeError(f"an app instance did not start: {errors[0]}")
        self.nginx = Nginx(self.workdir / "nginx", self.nginx_port, [instance.port for instance in self.instances])
        stack.callback(self.nginx.stop)
        self.nginx.start()

    def kill_instance(self, instance: Gunicorn) -> list[int]:
        """SIGKILL an instance's master and workers at once, as a crashed container; returns the pids."""
        pids = [instance.process.pid, *worker_pids(instance.process.pid)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        instance.process.wait(timeout=30)
        return pids


# -- slow clients, health checks and the load ------------------------------------------------------------

class SlowClients:
    """``body`` connections that trickle an upload body and ``header`` connections that never finish their
    headers, one byte per connection per second. A connection the server closes is opened again, so the
    count stays up the whole time, as an attacker would keep it.
    """

    def __init__(self, port: int, body: int, header: int, interval_s: float = 1.0):
        self.port, self.interval_s = port, interval_s
        self.wanted = {"body": body, "header": header}
        self.sockets: dict[socket.socket, str] = {}
        self.closed_by_server = 0
        self.failed_connects = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open(self, kind: str) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        except OSError:
            self.failed_connects += 1
            return
        if kind == "body":
            head = ("POST /api/v1/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: multipart/form-data; boundary=slowclient\r\n"
                    f"Content-Length: {SLOW_BODY_LENGTH}\r\n\r\n")
        else:
            head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        try:
            sock.sendall(head.encode())
        except OSError:
            sock.close()
            self.failed_connects += 1
            return
        sock.setblocking(False)
        self.sockets[sock] = kind

    def open_count(self) -> int:
        return len(self.sockets)

    def run(self) -> None:
        while not self.stopping.is_set():
            # A readable socket means the server answered (408, 400 ...) or closed it.
            readable, _, _ = select.select(list(self.sockets), [], [], 0) if self.sockets else ([], [], [])
            for sock in readable:
                self.drop(sock, by_server=True)
            for sock in list(self.sockets):
                try:
                    sock.send(b"x")
                except OSError:
                    self.drop(sock, by_server=True)
            # Replace the dropped ones at once (new ones have just sent their first bytes).
            for kind, wanted in self.wanted.items():
                for _ in range(wanted - sum(1 for k in self.sockets.values() if k == kind)):
                    self.open(kind)
            self.stopping.wait(self.interval_s)

    def drop(self, sock: socket.socket, by_server: bool) -> None:
        self.sockets.pop(sock, None)
        sock.close()
        self.closed_by_server += by_server

    def __enter__(self) -> "SlowClients":
        self.thread.start()
        wait_for(lambda: self.open_count() >= sum(self.wanted.values()), 10, "slow connections")
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        for sock in list(self.sockets):
            self.drop(sock, by_server=False)


class HealthChecks:
    """``GET /healthz`` every ``interval_s`` on a fresh connection, each allowed ``timeout_s``."""

    def __init__(self, port: int, interval_s: float = 0.25, timeout_s: float = 5.0, slow: SlowClients | None = None):
        self.port, self.interval_s, self.timeout_s, self.slow = port, interval_s, timeout_s, slow
        self.statuses: list[int] = []
        self.slow_open_during: list[int] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopping.is_set():
            if self.slow is not None:
                self.slow_open_during.append(self.slow.open_count())
            self.statuses.append(http_get(self.port, "/healthz", self.timeout_s))
            self.stopping.wait(self.interval_s)

    def answered(self) -> int:
        return sum(1 for status in self.statuses if status == 200)

    def __enter__(self) -> "HealthChecks":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        self.thread.join(timeout=self.timeout_s + 5)


def jpeg_images(count: int = 8) -> list[bytes]:
    """Different 640x480 JPEGs (colour and a dark block) for the uploads."""
    from PIL import Image, ImageDraw

    images = []
    for index in range(count):
        image = Image.new("RGB", (640, 480), ((index * 53) % 256, (index * 97) % 256, (index * 151) % 256))
        ImageDraw.Draw(image).rectangle((80 + index * 20, 120, 400 + index * 20, 360), fill=(20, 20, 20))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def run_load(port: int, total: int, concurrency: int, run_id: str, on_request, deadline: float) -> dict:
    """``total`` uploads through ``port``, each with its own file name ``<run_id>-<n>.jpg``.

    Every request is sent once: an upload is not repeated after an error, as a client cannot know whether
    it was stored. Returns the statuses by request number (0 = no answer) and the ``Retry-After`` of 5xx.
    """
    images = jpeg_images()
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        connection = None
        while time.monotonic() < deadline:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            on_request(index)
            body, content_type = multipart(f"{run_id}-{index:05d}.jpg", images[index % len(images)])
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                connection.request("POST", "/api/v1/predictions", body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                status = response.status
            except CONNECTION_ERRORS:
                status = 0
                connection.close()
                connection = None
            with lock:
                statuses[index] = status
        if connection is not None:
            connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic() + 65))
    return statuses


def control_direct(instance: Gunicorn, slow_body: int, slow_header: int, checks: int = 4) -> dict:
    """The slow connections straight at one gunicorn instance: how many health checks still get answers."""
    with SlowClients(instance.port, slow_body, slow_header):
        time.sleep(1.5)  # every connection has sent a few bytes: gunicorn's event loop is reading them
        statuses = [http_get(instance.port, "/healthz", 1.5) for _ in range(checks)]
    # Once the slow connections are gone, the instance must recover by itself.
    wait_for(lambda: http_get(instance.port, "/healthz", 2) == 200, 30, "the instance after the control run")
    return {"checks": checks, "answered": sum(1 for status in statuses if status == 200)}


def database_rows(postgres: Postgres) -> dict[str, int]:
    """File name -> number of rows in ``predictions``."""
    rows: dict[str, int] = {}
    for line in postgres.psql("SELECT original_filename FROM predictions;", database="cars").splitlines():
        rows[line] = rows.get(line, 0) + 1
    return rows


def test(args: argparse.Namespace) -> dict:
    """The cluster test; returns the report, with ``ok`` and the one-line ``summary``."""
    workdir = Path(tempfile.mkdtemp(prefix="cluster-test-"))
    workdir.chmod(0o755)  # as root, PostgreSQL and nginx's workers run as other users
    run_id = f"cluster-{secrets.token_hex(4)}"
    # One client address sends everything: limits high enough never to answer 429, still counted in Redis.
    cluster = Cluster(workdir, port=free_port(), instances=2, workers=args.workers, threads=args.threads,
                      model_dir=args.model_dir, extra_env={"RATELIMIT_UPLOAD": "100000 per minute",
                                                           "RATELIMIT_API": "100000 per minute"})
    report: dict = {"requests": args.requests, "concurrency": args.concurrency, "workdir": str(workdir)}
    started = time.monotonic()
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, True)
        cluster.start(stack)
        report["startup_s"] = round(time.monotonic() - started, 1)
        victim = cluster.instances[1]
        report["control"] = control_direct(cluster.instances[0], args.slow_body, args.slow_header)

        kill: dict = {}

        def on_request(index: int) -> None:
            if index == args.requests // 2 and not kill:
                kill.update(at_request=index, pids=cluster.kill_instance(victim))

        load_started = time.monotonic()
        with SlowClients(cluster.nginx.port, args.slow_body, args.slow_header) as slow, \
                HealthChecks(cluster.nginx.port, slow=slow) as health:
            statuses = run_load(cluster.nginx.port, args.requests, args.concurrency, run_id, on_request,
                                deadline=load_started + args.time_limit)
            # A few checks more once the load is done, with the slow connections still held.
            time.sleep(1.0)
        report["load_s"] = round(time.monotonic() - load_started, 1)
        report["slow"] = {"body": args.slow_body, "header": args.slow_header,
                          "held_at_fewest": min(health.slow_open_during, default=0),
                          "closed_by_nginx": slow.closed_by_server, "failed_connects": slow.failed_connects}
        report["health"] = {"checks": len(health.statuses), "answered": health.answered(),
                            "statuses": {str(s): health.statuses.count(s) for s in sorted(set(health.statuses))}}
        report["kill"] = {"at_request": kill.get("at_request"), "pids": kill.get("pids"),
                          "exit_status": victim.process.returncode}

        by_status: dict[int, int] = {}
        for status in statuses.values():
            by_status[status] = by_status.get(status, 0) + 1
        report["statuses"] = {str(status): count for status, count in sorted(by_status.items())}
        report["unsent"] = args.requests - len(statuses)
        created = {f"{run_id}-{index:05d}.jpg" for index, status in statuses.items() if status == 201}
        answered_502 = {f"{run_id}-{index:05d}.jpg" for index, status in statuses.items() if status == 502}
        rows = database_rows(cluster.postgres)
        extra = set(rows) - created
        report["database"] = {
            "rows": sum(rows.values()), "created_201": len(created),
            "missing_201": len(created - set(rows)), "duplicates": sum(n - 1 for n in rows.values()),
            # Committed by the killed instance in the instant before it could answer: the client got 502.
            "committed_then_killed": len(extra & answered_502), "unexplained": len(extra - answered_502),
        }
        report["integrity_ok"], report["integrity"] = cluster.postgres.amcheck()
        report["redis_keys"] = cluster.redis.keys()
        report["survivor_ready"] = http_get(cluster.instances[0].port, "/readyz") == 200

    report["seconds"] = round(time.monotonic() - started, 1)
    database, health = report["database"], report["health"]
    unexpected = {status: count for status, count in by_status.items() if status not in (201, 502)}
    checks = {
        "every upload answered 201, or 502 by the killed instance": (
            not unexpected and report["unsent"] == 0 and by_status.get(502, 0) <= args.concurrency),
        "instance killed": kill.get("at_request") is not None and victim.process.returncode == -signal.SIGKILL,
        "health checks all answered": health["checks"] >= 8 and health["answered"] == health["checks"],
        "slow connections held": report["slow"]["held_at_fewest"] >= (args.slow_body + args.slow_header) // 2,
        "gunicorn alone holds the slow connections too": report["control"]["answered"] == report["control"]["checks"],
        "every 201 stored once, nothing else": (database["missing_201"] == 0 and database["duplicates"] == 0
                                                and database["unexplained"] == 0),
        "integrity": report["integrity_ok"],
        "rate-limit counters in Redis": report["redis_keys"] > 0,
        "surviving instance ready": report["survivor_ready"],
    }
    report["failed"] = [name for name, passed in checks.items() if not passed]
    report["ok"] = not report["failed"]
    statuses_text = ", ".join(f"{status} x{count}" for status, count in report["statuses"].items())
    rows_text = f"rows {database['rows']} = 201s {database['created_201']}" if database["rows"] == database[
        "created_201"] else (f"rows {database['rows']} vs 201s {database['created_201']} "
                             f"({database['committed_then_killed']} committed by the killed instance, answered 502; "
                             f"{database['missing_201']} missing, {database['unexplained']} unexplained)")
    report["summary"] = (
        f"cluster-test {'PASS' if report['ok'] else 'FAIL'}: {args.requests} uploads via nginx to 2 instances, "
        f"one SIGKILLed at #{kill.get('at_request')}: {statuses_text} in {report['load_s']} s; "
        f"health {health['answered']}/{health['checks']} answered while {args.slow_body} slow-body + "
        f"{args.slow_header} slow-header connections were held (direct to gunicorn: "
        f"{report['control']['answered']}/{report['control']['checks']}); {rows_text}; "
        f"integrity {'ok' if report['integrity_ok'] else 'FAILED: ' + report['integrity']} (pg_amcheck); "
        f"redis keys {report['redis_keys']}"
        + (f"; failed: {', '.join(report['failed'])}" if report["failed"] else ""))
    return report


def up(args: argparse.Namespace) -> None:
    """Start the cluster and serve until SIGINT or SIGTERM."""
    workdir = Path(tempfile.mkdtemp(prefix="cluster-"))
    workdir.chmod(0o755)  # as root, PostgreSQL and nginx's workers run as other users
    cluster = Cluster(workdir, port=args.port, instances=args.instances, workers=args.workers,
                      threads=args.threads, model_dir=args.model_dir)
    stop = threading.Event()
    # Both, explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        cluster.start(stack)
        print(f"http://127.0.0.1:{args.port}/  nginx -> gunicorn "
              + ", ".join(f"127.0.0.1:{instance.port}" for instance in cluster.instances)
              + f" -> PostgreSQL 127.0.0.1:{cluster.postgres.port}, Redis 127.0.0.1:{cluster.redis.port}"
              + f"\nlogs in {workdir}; Ctrl-C stops everything", flush=True)
        stop.wait()
        print("stopping", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model_artifacts" / "default")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per instance (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="gunicorn threads per worker (default 2)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("up", help="start the cluster and serve until Ctrl-C")
    serve.add_argument("--port", type=int, default=8080, help="nginx's port on 127.0.0.1 (default 8080)")
    serve.add_argument("--instances", type=int, default=2, help="gunicorn instances (default 2)")
    check = commands.add_parser("test", help="the load, slow-client and kill test; prints one line")
    check.add_argument("--requests", type=int, default=300, help="uploads sent through nginx (default 300)")
    check.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    check.add_argument("--slow-body", type=int, default=16, help="slow-body connections (default 16)")
    check.add_argument("--slow-header", type=int, default=16, help="slow-header connections (default 16)")
    check.add_argument("--time-limit", type=float, default=300, help="seconds the load may take (default 300)")
    check.add_argument("--out", type=Path, help="write the whole report as JSON here")
    check.add_argument("--keep", action="store_true", help="keep the logs and the database folder")
    args = parser.parse_args(argv)
    args.model_dir = args.model_dir.resolve()
    if not args.model_dir.is_dir():
        raise SystemExit(f"error: no model artifact at {args.model_dir}; pass --model-dir")
    if args.command == "up":
        up(args)
        return 0
    # A CI timeout's SIGTERM unwinds like an error, so everything started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = test(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(report["summary"], flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
