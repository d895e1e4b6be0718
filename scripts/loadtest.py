"""Load and fault run against the real server: gunicorn, its workers, SQLite, all on loopback.

Phases, each with its own verdict (all must pass for exit status 0):

1. **load + crash** - ``--requests`` uploads at ``--concurrency`` from a threaded HTTP client with
   keep-alive connections; halfway through, one gunicorn worker is killed with SIGKILL. Checked:
   gunicorn starts a replacement; no request ends in an error (a request whose connection died with
   the worker is sent again on a new connection, as any HTTP client library would); afterwards
   ``PRAGMA integrity_check`` is ``ok``, every id answered with 201 is in ``predictions``, and the rows
   equal the 201s plus at most one row per connection the kill cut (a request the dead worker had
   committed but could not answer).
2. **database locked** - another connection holds SQLite's write lock while a burst of uploads
   arrives: every one gets 503 with ``Retry-After`` and the plain-language message (never 500) and
   writes nothing; after the lock is released the same burst gets 201s, with no restart.
3. **model missing / corrupt at start** - gunicorn started on a missing artifact folder and on one
   with a garbage ``model.tflite`` must exit non-zero with exactly one line on stderr.

Usage:
    python scripts/loadtest.py --requests 10000 --concurrency 16 --workers 2 \\
        [--model-dir model_artifacts/default] [--out benchmarks/results/loadtest.json]

Only 127.0.0.1 is used; every wait is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.serve import Server, free_port, multipart, percentile, worker_pids  # noqa: E402

BIN = Path(sys.executable).parent
DATABASE_MESSAGE = "The database is busy or unavailable"
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


@dataclass
class Tally:
    """Outcomes of a batch of requests, shared by the client threads."""

    statuses: dict[int, int] = field(default_factory=dict)
    created_ids: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    connection_errors: int = 0
    bad_bodies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, latency_s: float, body: bytes, headers: http.client.HTTPMessage) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.latencies_s.append(latency_s)
            if status == 201:
                self.created_ids.append(json.loads(body)["id"])
                return
            # A 503 must explain itself and say when to retry; any other 5xx is a failure outright.
            explained = status == 503 and DATABASE_MESSAGE.encode() in body and headers.get("Retry-After")
            if (status >= 500 or status == 0) and not explained and len(self.bad_bodies) < 20:
                self.bad_bodies.append(f"{status}: {body[:300].decode(errors='replace')}")


class Client:
    """A keep-alive HTTP/1.1 connection to the server that reconnects after a failure."""

    def __init__(self, port: int, timeout_s: float):
        self.port, self.timeout_s = port, timeout_s
        self.connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes, content_type: str) -> tuple[int, bytes, http.client.HTTPMessage]:
        """One upload; raises a connection error when the server end went away."""
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        try:
            self.connection.request("POST", "/api/v1/predictions", body=body,
                                    headers={"Content-Type": content_type})
            response = self.connection.getresponse()
            return response.status, response.read(), response.headers
        except CONNECTION_ERRORS:
            self.close()
            raise

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def payloads(count: int = 8) -> list[tuple[bytes, str]]:
    """Encoded upload bodies: 640x480 JPEGs of different colours and content."""
    from PIL import Image, ImageDraw

    bodies = []
    for index in range(count):
        image = Image.new("RGB", (640, 480), ((index * 53) % 256, (index * 97) % 256, (index * 151) % 256))
        ImageDraw.Draw(image).rectangle((80 + index * 20, 120, 400 + index * 20, 360), fill=(20, 20, 20))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        bodies.append(multipart(f"car-{index}.jpg", buffer.getvalue()))
    return bodies


def run_load(port: int, bodies: list[tuple[bytes, str]], total: int, concurrency: int, tally: Tally, *,
             on_progress=None, timeout_s: float = 60.0, retries: int = 3) -> None:
    """Send ``total`` uploads from ``concurrency`` threads; a cut connection is retried on a new one.

    Args:
        port: Server port on 127.0.0.1.
        bodies: Request bodies, used in turn.
        total: Number of requests.
        concurrency: Client threads, each with its own keep-alive connection.
        tally: Where outcomes go.
        on_progress: Called with the number of requests handed out so far (from the client threads).
        timeout_s: Socket timeout per request.
        retries: Attempts after a connection error before the request counts as failed (status 0).
    """
    counter = iter(range(total))
    counter_lock = threading.Lock()

    def worker() -> None:
        client = Client(port, timeout_s)
        while True:
            with counter_lock:
                index = next(counter, None)
            if index is None:
                break
            if on_progress:
                on_progress(index)
            body, content_type = bodies[index % len(bodies)]
            for _attempt in range(retries + 1):
                started = time.perf_counter()
                try:
                    status, answer, headers = client.post(body, content_type)
                except CONNECTION_ERRORS:
                    with tally.lock:
                        tally.connection_errors += 1
                    time.sleep(0.05)
                    continue
                tally.add(status, time.perf_counter() - started, answer, headers)
                break
            else:
                tally.add(0, 0.0, b"connection failed", http.client.HTTPMessage())
        client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Gunicorn(Server):
    """gunicorn with the project's config on a free loopback port; its log goes to a file.

    (The log is a file rather than a pipe: a pipe nobody reads would stall gunicorn once it filled.)
    """

    def __init__(self, env: dict[str, str], log_path: Path):
        port = free_port()
        super().__init__("app", [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"],
                         {**env, "BIND": f"127.0.0.1:{port}"}, port)
        self.log_path = log_path

    def start(self, ready_timeout_s: float = 180.0) -> None:
        """Start, wait for ``/readyz`` and every configured worker (``SystemExit`` with the log tail on failure)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"error: gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    break
            except CONNECTION_ERRORS:
                pass
            time.sleep(0.2)
        else:
            self.stop()
            raise SystemExit(f"error: gunicorn not ready within {ready_timeout_s:.0f} s:\n{self.log_tail()}")
        # One booted worker answers /readyz while the master may still be forking the others; callers
        # compare worker pids, so wait for the whole configured set.
        expected = int(self.env.get("WEB_CONCURRENCY") or 0)
        if expected and self.wait_for_workers(expected, set(), max(1.0, deadline - time.monotonic())) is None:
            self.stop()
            raise SystemExit(f"error: {expected} gunicorn workers not up in time:\n{self.log_tail()}")

    def workers(self) -> list[int]:
        return sorted(worker_pids(self.process.pid))

    def wait_for_workers(self, count: int, excluding: set[int], timeout_s: float = 60.0) -> float | None:
        """Seconds until ``count`` workers run, none of them in ``excluding``; ``None`` on timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            current = set(self.workers())
            if len(current) == count and not current & excluding:
                return time.monotonic() - started
            time.sleep(0.05)
        return None

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def database_facts(database: Path) -> dict:
    """Integrity check result and the public ids in ``predictions`` (the ids the API answers with; read while
    the server may still run)."""
    with sqlite3.connect(database, timeout=30) as connection:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        ids = {row[0] for row in connection.execute("SELECT public_id FROM predictions")}
    return {"integrity_check": integrity, "ids": ids}


def phase_load_and_kill(server: Gunicorn, database: Path, bodies, args) -> dict:
    """Phase 1: the load, one SIGKILLed worker halfway, then the database checks."""
    tally = Tally()
    kill: dict = {}
    kill_at = args.requests // 2 if args.kill else -1
    watcher: list[threading.Thread] = []

    def on_progress(index: int) -> None:
        if index == kill_at:
            before = server.workers()
            victim = before[0]
            os.kill(victim, signal.SIGKILL)
            kill.update(victim_pid=victim, workers_before=before, at_request=index)
            # Time the replacement while the load goes on.
            watcher.append(threading.Thread(target=lambda: kill.update(replaced_in_s=server.wait_for_workers(
                args.workers, {victim}, timeout_s=60.0)), daemon=True))
            watcher[0].start()

    rows_before = len(database_facts(database)["ids"])
    started = time.perf_counter()
    run_load(server.port, bodies, args.requests, args.concurrency, tally, on_progress=on_progress)
    elapsed = time.perf_counter() - started
    if kill:
        watcher[0].join(timeout=65)
        replaced_in = kill.get("replaced_in_s")
        kill.update(workers_after=server.workers(), replaced=replaced_in is not None,
                    replaced_in_s=None if replaced_in is None else round(replaced_in, 2),
                    master_alive=server.process.poll() is None)
    facts = database_facts(database)
    created = set(tally.created_ids)
    new_rows = len(facts["ids"]) - rows_before
    orphans = new_rows - len(created)  # committed by the killed worker, answer lost with it
    errors = sum(count for status, count in tally.statuses.items() if status != 201)
    result = {
        "requests": args.requests, "concurrency": args.concurrency, "workers": args.workers,
        "seconds": round(elapsed, 1), "requests_per_s": round(args.requests / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "created_201": len(tally.created_ids), "errors": errors,
        "latency_ms": {"p50": round(percentile(tally.latencies_s, 50) * 1000, 1),
                       "p95": round(percentile(tally.latencies_s, 95) * 1000, 1),
                       "p99": round(percentile(tally.latencies_s, 99) * 1000, 1)},
        "connections_cut": tally.connection_errors, "rows_added": new_rows,
        "rows_without_201": orphans, "ids_201_missing_from_db": len(created - facts["ids"]),
        "duplicate_201_ids": len(tally.created_ids) - len(created),
        "integrity_check": facts["integrity_check"], "kill": kill or None,
        "error_samples": tally.bad_bodies[:5],
    }
    result["ok"] = (errors == 0 and result["ids_201_missing_from_db"] == 0 and result["duplicate_201_ids"] == 0
                    and facts["integrity_check"] == "ok" and 0 <= orphans <= tally.connection_errors
                    and (not args.kill or (kill["replaced"] and kill["master_alive"])))
    return result


def phase_database_locked(server: Gunicorn, database: Path, bodies, args) -> dict:
    """Phase 2: a burst against a write-locked database, then the same burst once it is free."""
    burst = max(args.concurrency * 2, 8)
    rows_before = len(database_facts(database)["ids"])
    holder = sqlite3.connect(database, isolation_level=None, timeout=30)
    holder.execute("BEGIN EXCLUSIVE")
    locked = Tally()
    try:
        started = time.perf_counter()
        run_load(server.port, bodies, burst, args.concurrency, locked)
        locked_s = time.perf_counter() - started
    finally:
        holder.rollback()
        holder.close()
    rows_after_lock = len(database_facts(database)["ids"])
    recovered = Tally()
    run_load(server.port, bodies, burst, args.concurrency, recovered)
    rows_after_recovery = len(database_facts(database)["ids"])
    result = {
        "burst": burst, "while_locked": {str(k): v for k, v in locked.statuses.items()},
        "while_locked_seconds": round(locked_s, 1), "bad_503_or_5xx_bodies": locked.bad_bodies[:3],
        "rows_written_while_locked": rows_after_lock - rows_before,
        "after_release": {str(k): v for k, v in recovered.statuses.items()},
        "rows_written_after_release": rows_after_recovery - rows_after_lock,
        "workers_alive": len(server.workers()) == args.workers,
    }
    result["ok"] = (locked.statuses == {503: burst} and not locked.bad_bodies
                    and result["rows_written_while_locked"] == 0 and recovered.statuses == {201: burst}
                    and result["rows_written_after_release"] == burst and result["workers_alive"])
    return result


def start_with_broken_model(env: dict[str, str], model_dir: Path, log_path: Path) -> dict:
    """Start gunicorn on ``model_dir``; it must exit non-zero with one line on stderr."""
    server_env = {**env, "MODEL_DIR": str(model_dir), "BIND": f"127.0.0.1:{free_port()}"}
    try:
        result = subprocess.run([str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"],
                                cwd=REPO_ROOT, env=server_env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"exit_status": None, "lines": [], "ok": False, "problem": "still running after 120 s"}
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    log_path.write_text(result.stderr)
    return {"exit_status": result.returncode, "lines": lines[:5],
            "ok": result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr}


def phase_startup_faults(env: dict[str, str], model_dir: Path, workdir: Path) -> dict:
    """Phase 3: a missing artifact folder and a corrupt model file."""
    corrupt = Path(shutil.copytree(model_dir, workdir / "corrupt-model"))
    for name in ("model.tflite", "model.keras"):
        if (corrupt / name).exists():
            (corrupt / name).write_bytes(b"this is not a model\n" * 64)
    result = {"missing": start_with_broken_model(env, workdir / "no-such-model", workdir / "missing.log"),
              "corrupt": start_with_broken_model(env, corrupt, workdir / "corrupt.log")}
    result["ok"] = all(case["ok"] for case in result.values())
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the phases, print and save the results; exit status 1 when a phase fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=2, help="gunicorn threads per worker")
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model_artifacts" / "default")
    parser.add_argument("--no-kill", dest="kill", action="store_false", help="do not kill a worker")
    parser.add_argument("--skip", nargs="*", default=[], choices=["load", "locked", "startup"])
    parser.add_argument("--busy-timeout-ms", type=int, default=None,
                        help="SQLITE_BUSY_TIMEOUT_MS for the server (default: the app's default)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the database and logs here")
    args = parser.parse_args(argv)

    model_dir = args.model_dir.resolve()
    if not model_dir.is_dir():
        raise SystemExit(f"error: no model artifact at {model_dir}; pass --model-dir")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="loadtest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "loadtest.db"
    env = {**os.environ, "MODEL_DIR": str(model_dir), "DATABASE_URL": f"sqlite:///{database}",
           "WEB_CONCURRENCY": str(args.workers), "GUNICORN_THREADS": str(args.threads),
           "RATELIMIT_ENABLED": "false",  # one client address sends everything
           "SECRET_KEY": "loadtest-" + os.urandom(8).hex()}
    if args.busy_timeout_ms is not None:
        env["SQLITE_BUSY_TIMEOUT_MS"] = str(args.busy_timeout_ms)
    migrate = subprocess.run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    if migrate.returncode != 0:
        raise SystemExit(f"error: migration failed: {migrate.stderr[-2000:]}")

    report: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "model_dir": str(model_dir),
                    "cpu_cores": os.cpu_count(), "python": platform.python_version(), "workdir": str(workdir)}
    bodies = payloads()
    server = Gunicorn(env, workdir / "gunicorn.log")
    if not {"load", "locked"} <= set(args.skip):
        server.start()
        try:
            if "load" not in args.skip:
                report["load_and_kill"] = phase_load_and_kill(server, database, bodies, args)
                print("load + kill -9:", json.dumps(report["load_and_kill"], indent=1))
            if "locked" not in args.skip:
                report["database_locked"] = phase_database_locked(server, database, bodies, args)
                print("database locked:", json.dumps(report["database_locked"], indent=1))
        finally:
            server.stop()
    if "startup" not in args.skip:
        report["startup_faults"] = phase_startup_faults(env, model_dir, workdir)
        print("model missing/corrupt at start:", json.dumps(report["startup_faults"], indent=1))
    report["ok"] = all(phase["ok"] for phase in report.values() if isinstance(phase, dict))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"overall: {'PASS' if report['ok'] else 'FAIL'}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
