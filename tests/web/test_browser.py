"""End to end in a real browser: gunicorn serving the fixture model, Chromium uploading a car photo.

``UPDATE_SCREENSHOTS=1`` also refreshes ``docs/screenshots/result.png``. Skips when Debian's chromium or the shared photos are missing, except under ``CI=true`` where a
missing browser is a failure (CI installs it).
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from browser_support import chromium_page, gunicorn_server, require_chromium
from support import REPO_ROOT, stanford_photos

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SCREENSHOT = REPO_ROOT / "docs" / "screenshots" / "result.png"


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


@pytest.fixture
def server(color_artifact, tmp_path):
    """gunicorn on a free port with a migrated SQLite file; yields (base URL, database path)."""
    database = tmp_path / "browser.db"
    with gunicorn_server(color_artifact, database, SECRET_KEY="browser-test") as base:
        yield base, database


def test_upload_a_real_car_photo_in_chromium(server, tmp_path):
    require_chromium()
    photo = stanford_photos(1)[0]
    base, database = server
    from playwright.sync_api import expect

    with chromium_page(1100, 800) as (page, console_errors):
        page.goto(f"{base}/")
        expect(page.locator("#drop-zone")).to_be_visible()
        for event in ("drop", "paste"):  # both fill the form's file input and show a preview
            page.evaluate(DISPATCH_IMAGE_EVENT, event)
            expect(page.locator("#file-name")).to_contain_text(f"{event}.png")
            assert page.locator("#image").evaluate("i => i.files[0].name") == f"{event}.png"
        expect(page.locator("#preview")).to_be_visible()
        page.set_input_files("#image", str(photo))
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
        public_id = page.url.rsplit("/", 1)[-1]

    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT source, original_filename, top_label, model_name FROM predictions WHERE public_id = ?",
            (public_id,)).fetchone()
    assert row == ("web", photo.name, labels[0], "colors")


def test_take_a_photo_sends_the_camera_picture_through_the_form(server, tmp_path):
    """The camera control's picture (here an iPhone-style HEIC file) lands in the form's image field."""
    require_chromium()
    import phone_files

    base, database = server
    photo = tmp_path / "IMG_0007.HEIC"
    photo.write_bytes(phone_files.photo("HEIF", "green"))
    from playwright.sync_api import expect

    with chromium_page(420, 800, phone=True) as (page, console_errors):
        page.goto(f"{base}/")
        camera = page.locator("#camera-input")
        assert camera.get_attribute("capture") == "environment" and camera.get_attribute("accept") == "image/*"
        expect(page.locator("#camera-button")).to_be_visible()
        expect(page.locator("#camera-button")).to_contain_text("Take a photo")
        camera.set_input_files(str(photo))
        assert page.locator("#image").evaluate("i => i.files[0].name") == "IMG_0007.HEIC"
        expect(page.locator("#file-name")).to_contain_text("IMG_0007.HEIC")
        page.click("#submit-button")
        page.wait_for_url(f"{base}/predictions/*")
        assert page.locator(".prediction .label").all_text_contents()[0] == "green"  # folded away if "not a car"
        public_id = page.url.rsplit("/", 1)[-1]

    with sqlite3.connect(database) as connection:
        row = connection.execute("SELECT source, content_type, original_filename FROM predictions WHERE public_id = ?",
                                 (public_id,)).fetchone()
    assert row == ("web", "image/heic", "IMG_0007.HEIC")


def test_the_upload_controls_read_well_on_a_phone_and_a_desktop(server):
    """At 390 px the file input gets the whole row (its "No file chosen" is not cut); a desktop, which has
    no camera to open, is not offered "Take a photo"."""
    require_chromium()
    base, _ = server
    from playwright.sync_api import expect

    with chromium_page(390, 800, phone=True) as (page, console_errors):
        page.goto(f"{base}/")
        expect(page.locator("#camera-button")).to_be_visible()
        field = page.locator("#image").evaluate("i => i.getBoundingClientRect().width")
        row = page.locator("#upload-form").evaluate("f => f.getBoundingClientRect().width")
        assert field >= row - 1
        assert console_errors == []
    with chromium_page(1280, 800) as (page, console_errors):
        page.goto(f"{base}/")
        expect(page.locator("#image")).to_be_visible()
        expect(page.locator("#camera-button")).to_be_hidden()
        assert console_errors == []
