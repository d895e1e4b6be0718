"""End to end in a real browser: gunicorn serving the fixture model, Chromium uploading a car photo.

``UPDATE_SCREENSHOTS=1`` also refreshes ``docs/screenshots/result.png``. Skips when Debian's chromium or the shared photos are missing, except under ``CI=true`` where a
missing browser is a failure (CI installs it).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, stanford_photos

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = REPO_ROOT / "docs" / "screenshots" / "result.png"
BIN = Path(sys.executable).parent


# Draws a small PNG in the page and hands it over the way a user's drop or Ctrl+V would.
DISPATCH_IMAGE_EVENT = """async (kind) => {
  const canvas = document.createElement("canvas");
  canvas.width = 40; canvas.height = 30;
  canvas.getContext("2d").fillRect(0, 0, 40, 30);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], kind + ".png", {type: "image/png"}));
  if (kind === "drop") {
    document.getElementById("drop-zone").dispatchEvent(
      new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
  } else {
    document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true}));
  }
}"""


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing but CI=true: install it (apt-get install -y chromium)")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium); browser test skipped")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, server: subprocess.Popen, timeout: float = 60) -> None:
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


@pytest.fixture
def server(color_artifact, tmp_path):
    """gunicorn on a free port with a migrated SQLite file; yields (base URL, database path)."""
    database = tmp_path / "browser.db"
    port = free_port()
    env = {**os.environ, "MODEL_DIR": str(color_artifact), "DATABASE_URL": f"sqlite:///{database}",
           "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2",
           "SECRET_KEY": "browser-test"}
    migrate = subprocess.run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    process = subprocess.Popen([str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{base}/readyz", process)
        yield base, database
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_upload_a_real_car_photo_in_chromium(server, tmp_path):
    require_chromium()
    photo = stanford_photos(1)[0]
    base, database = server
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            console_errors = []
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            page.goto(f"{base}/")
            expect(page.locator("#drop-zone")).to_be_visible()
            for event in ("drop", "paste"):  # both fill the form's file input and show a preview
                page.evaluate(DISPATCH_IMAGE_EVENT, event)
                expect(page.locator("#file-name")).to_contain_text(f"{event}.png")
                assert page.locator("input[type=file]").evaluate("i => i.files[0].name") == f"{event}.png"
            expect(page.locator("#preview")).to_be_visible()
            page.set_input_files("input[type=file]", str(photo))
            expect(page.locator("#preview")).to_be_visible()  # instant preview from upload.js
            page.click("#submit-button")
            page.wait_for_url(f"{base}/predictions/*")

            bars = page.locator(".progress-bar")
            expect(bars).to_have_count(3)
            labels = page.locator(".prediction .label").all_inner_texts()
            assert sorted(labels) == ["blue", "green", "red"]
            expect(page.locator("#model-info")).to_contain_text("colors")
            thumbnail_width = page.locator("#thumbnail").evaluate("img => img.naturalWidth")
            assert 0 < thumbnail_width <= 320
            assert console_errors == []  # the CSP let the page's own script and styles through
            # The committed screenshot is refreshed on request only, so a test run leaves the tree clean.
            shot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / SCREENSHOT.name
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            prediction_id = int(page.url.rsplit("/", 1)[-1])
        finally:
            browser.close()

    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT source, original_filename, top_label, model_name FROM predictions WHERE id = ?",
            (prediction_id,)).fetchone()
    assert row == ("web", photo.name, labels[0], "colors")
