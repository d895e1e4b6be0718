"""End to end in Chromium: an admin made with the CLI signs in, filters, opens a prediction, corrects it.

Reuses the gunicorn server of ``test_browser`` and the skip rules of ``browser_support`` (skips without Debian's chromium,
fails instead under ``CI=true``).
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import urllib.request
import uuid

import pytest
from PIL import Image

from browser_support import BIN, chromium_page, require_chromium
from support import COLOR_RGB, REPO_ROOT
from test_browser import server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "browser admin password"


def upload(base: str, color: str) -> str:
    """Classify a one-colour Pillow JPEG through the API, as a client would; returns its public id."""
    buffer = io.BytesIO()
    Image.new("RGB", (120, 90), COLOR_RGB[color]).save(buffer, format="JPEG")
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{color}.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + buffer.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{base}/api/v1/predictions", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.load(response)["id"]


def create_admin_with_cli(database, model_dir) -> None:
    """``flask create-admin`` against the server's database, the password from ADMIN_PASSWORD."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "MODEL_DIR": str(model_dir),
           "ADMIN_PASSWORD": PASSWORD}
    result = subprocess.run([str(BIN / "flask"), "--app", "wsgi", "create-admin", "operator"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "created admin operator" in result.stdout


def test_admin_signs_in_filters_and_corrects_a_prediction(server, color_artifact):  # noqa: F811
    require_chromium()
    base, database = server
    public_ids = {color: upload(base, color) for color in ("red", "green", "blue")}
    with sqlite3.connect(database) as connection:  # the admin pages use the row ids
        ids = {color: connection.execute("SELECT id FROM predictions WHERE public_id = ?", (public_id,)).fetchone()[0]
               for color, public_id in public_ids.items()}
    create_admin_with_cli(database, color_artifact)
    from playwright.sync_api import expect

    with chromium_page(1200, 900) as (page, console_errors):
        page.goto(f"{base}/admin/")
        page.wait_for_url(re.compile(r".*/admin/login\?next=%2Fadmin%2F|.*/admin/login\?next=/admin/"))
        page.fill("#username", "operator")
        page.fill("#password", PASSWORD)
        page.click("#submit")
        page.wait_for_url(f"{base}/admin/")
        expect(page.locator("#predictions-table tbody tr")).to_have_count(3)

        page.fill("#label", "red")
        page.click("#apply-filters")
        page.wait_for_url(re.compile(r".*/admin/\?.*label=red"))
        rows = page.locator("#predictions-table tbody tr")
        expect(rows).to_have_count(1)
        expect(page.locator("#total-count")).to_have_text("1")
        version_row = page.locator("#live-accuracy tbody tr").first
        expect(version_row.locator(".corrected-count")).to_have_text("0 / 1")
        assert rows.first.locator("img").evaluate("img => img.complete && img.naturalWidth") > 0

        rows.first.locator("a").click()
        page.wait_for_url(re.compile(rf".*/admin/predictions/{ids['red']}\?back="))
        expect(page.locator("#top-k .prediction")).to_have_count(3)
        page.fill("#label", "green")
        page.click("#save_label")
        expect(page.locator("#correction-status")).to_contain_text("True label green")
        expect(page.locator("#correction-status")).to_contain_text("operator")

        page.click("text=Back to the list")
        page.wait_for_url(re.compile(r".*/admin/\?.*label=red"))
        expect(version_row.locator(".corrected-count")).to_have_text("1 / 1")
        expect(version_row.locator(".wrong-share")).to_have_text("100%")
        expect(page.locator("#predictions-table .review-status")).to_contain_text("green")
        assert console_errors == []  # the CSP let the admin pages through: no inline scripts

    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT c.old_label, c.new_label, a.username FROM corrections c JOIN admin_users a"
            " ON a.id = c.corrected_by_id WHERE c.prediction_id = ?", (ids["red"],)).fetchone()
    assert row == ("red", "green", "operator")
