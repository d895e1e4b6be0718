"""End to end in Chromium, on the shipped model: an admin teaches a make with photos on "Teach a car", a
public upload of another photo of it is answered with the taught make and says it was learned from the
photos added (on its result page and on the batch cards); once the make is removed, the same photo gets
the model's own answer again.

The photo uploaded is a mirrored, cropped copy of a taught photo (see ``test_gallery_teaching``), the one
the model itself is least sure of, so the test does not depend on what a particular model knows.
``UPDATE_SCREENSHOTS=1`` refreshes the README screenshots ``docs/screenshots/teach.png`` and
``taught_answer.png``.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid

import pytest

from browser_support import chromium_page, gunicorn_server, require_chromium
from support import REPO_ROOT
from test_browser_admin import PASSWORD, create_admin_with_cli
from test_gallery_teaching import MODEL_DIR, PHOTOS, taught_photos, variant

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"


def screenshot(page, tmp_path, name: str) -> None:
    """A full-page screenshot: into the docs with ``UPDATE_SCREENSHOTS=1``, else a temporary file."""
    shot = SCREENSHOTS / name if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def api_answer(base: str, data: bytes) -> dict | None:
    """The API's answer for a photo, as a client would ask."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"car.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{base}/api/v1/predictions", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["answer"]


def test_teach_a_make_in_the_browser_then_a_public_upload_is_answered_with_it(tmp_path):
    require_chromium()
    photos = taught_photos()
    database = tmp_path / "gallery.db"
    with gunicorn_server(MODEL_DIR, database, ready_timeout=180, RATELIMIT_ENABLED="false",
                         GALLERY_CHECK_SECONDS="0") as base:
        create_admin_with_cli(database, MODEL_DIR)
        variants = {}
        for path in photos:
            data = variant(path)
            variants[(api_answer(base, data) or {"score": 0.0})["score"]] = data
        asked = tmp_path / "another-photo-of-it.jpg"
        asked.write_bytes(variants[min(variants)])
        from playwright.sync_api import expect

        with chromium_page(1200, 900) as (page, console_errors):
            page.goto(f"{base}/admin/login")
            page.fill("#username", "operator")
            page.fill("#password", PASSWORD)
            page.click("#submit")
            page.wait_for_url(f"{base}/admin/")
            page.click("#teach-link")
            page.wait_for_url(f"{base}/admin/gallery")
            expect(page.locator("#gallery-empty")).to_be_visible()
            page.fill("#teach-label", "Tata")
            page.select_option("#teach-level", "make")
            junk = tmp_path / "notes.jpg"
            junk.write_bytes(b"not a photo")
            page.set_input_files("#teach-photos", [*map(str, photos), str(junk)])
            page.click("#teach-submit")  # the page's script sends the photos one request each
            expect(page.locator("#teach-status")).to_have_attribute("data-done", "true", timeout=120_000)
            expect(page.locator("#teach-status")).to_contain_text(f"Taught Tata with {PHOTOS} photos.")
            expect(page.locator("#teach-status")).to_contain_text("Refused: notes.jpg")
            row = page.locator("#taught .taught-label")
            expect(row).to_have_count(1)
            expect(row.locator(".label")).to_have_text("Tata")
            expect(row.locator(".count")).to_have_text(str(PHOTOS))
            screenshot(page, tmp_path, "teach.png")

            page.goto(f"{base}/")
            page.set_input_files("#image", str(asked))
            page.click("#submit-button")
            page.wait_for_url(f"{base}/predictions/*")
            expect(page.locator("#answer")).to_contain_text("A Tata")
            expect(page.locator("#answer")).to_contain_text(f"learned from {PHOTOS} photos you added")
            expect(page.locator("#taught-answer")).to_be_visible()
            screenshot(page, tmp_path, "taught_answer.png")

            page.goto(f"{base}/")  # a batch of two: each card says what answered it
            page.set_input_files("#image", [str(asked), str(asked)])
            page.click("#submit-button")
            expect(page.locator("#batch")).to_have_attribute("data-finished", "true", timeout=60_000)
            expect(page.locator(".batch-item .taught-note")).to_have_count(2)
            expect(page.locator(".batch-item .taught-note").first).to_contain_text(
                f"Tata: learned from {PHOTOS} photos you added")

            page.goto(f"{base}/admin/gallery")
            page.locator("#taught .taught-label .remove").click()
            page.wait_for_url(f"{base}/admin/gallery")
            expect(page.locator("#gallery-empty")).to_be_visible()

            page.goto(f"{base}/")
            page.set_input_files("#image", str(asked))
            page.click("#submit-button")
            page.wait_for_url(f"{base}/predictions/*")
            expect(page.locator("#taught-answer")).to_have_count(0)
            assert "learned from" not in page.content()
            # The CSP let the new pages through (no inline scripts); the one failed load is the refused file.
            assert [e for e in console_errors if "415" not in e] == [] and len(console_errors) == 1
