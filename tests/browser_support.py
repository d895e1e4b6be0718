"""What the real-browser tests share: a migrated gunicorn server on a free port and a Chromium page.

Chromium is Debian's (`/usr/bin/chromium`). Without it the browser tests skip with the reason, except
under ``CI=true``, where CI installs it and its absence is a failure.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from support import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking switches Chromium keeps dialling Google's hosts, which a closed
# network refuses many times a second.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BIN = Path(sys.executable).parent


def require_chromium() -> None:
    """Skip (or fail under CI) when Debian's chromium is not installed."""
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing but CI=true: install it (apt-get install -y chromium)")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium); browser test skipped")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, server: subprocess.Popen, timeout: float = 60) -> None:
    """Poll ``url`` until it answers 200; fail early with gunicorn's output if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"gunicorn exited with {server.returncode}: {server.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not become ready within {timeout} s")


@contextlib.contextmanager
def gunicorn_server(model_dir: Path, database: Path, ready_timeout: float = 60, **settings: str) -> Iterator[str]:
    """Migrate ``database``, serve ``model_dir`` with gunicorn on a free port, stop it afterwards.

    Args:
        model_dir: Artifact folder to serve.
        database: SQLite file (created and migrated here).
        ready_timeout: Seconds the server may take to answer ``/readyz`` (a big model on a busy machine needs more).
        settings: Further environment variables for the app.

    Yields:
        The server's base URL.
    """
    port = free_port()
    env = {**os.environ, "MODEL_DIR": str(model_dir), "DATABASE_URL": f"sqlite:///{database}",
           "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2",
           "SECRET_KEY": "browser-test-" + "x" * 32, **settings}
    migrate = subprocess.run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    process = subprocess.Popen([str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{base}/readyz", process, timeout=ready_timeout)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def chromium_page(width: int = 1100, height: int = 800, phone: bool = False) -> Iterator[tuple[object, list[str]]]:
    """A page in headless Chromium and the list its console errors are collected into.

    Args:
        width: Viewport width in CSS pixels.
        height: Viewport height in CSS pixels.
        phone: A touch screen, as on a phone (a desktop page is the default).

    Yields:
        ``(page, console_errors)``.
    """
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, has_touch=phone, is_mobile=phone)
            console_errors: list[str] = []
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            yield page, console_errors
        finally:
            browser.close()
