"""In Chromium against gunicorn: a visitor without a photo clicks an example, then answers "Was this right?".

Serves the shipped model (``model_artifacts/default``) and vehicle gate when present, else the test's
colours model without a gate. ``UPDATE_SCREENSHOTS=1`` refreshes the manual screenshots
``docs/screenshots/examples.png`` and ``feedback.png`` (palette PNGs, to keep the repository small).
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from browser_support import chromium_page, gunicorn_server, require_chromium
from support import REPO_ROOT
from trust_support import SHIPPED_GATE

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
SHIPPED_MODEL = REPO_ROOT / "model_artifacts" / "default"
EXAMPLES = sorted(p.name for p in (REPO_ROOT / "examples").glob("*.jpg"))


def save_screenshot(locator, tmp_path: Path, name: str) -> Path:
    """Screenshot ``locator`` and store it as a 128-colour PNG (the committed copy under UPDATE_SCREENSHOTS=1)."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
    else:
        path = tmp_path / name
    raw = tmp_path / f"raw-{name}"
    locator.screenshot(path=str(raw))
    with Image.open(raw) as image:
        image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


@pytest.fixture
def shipped_server(color_artifact, tmp_path):
    """gunicorn serving the shipped model with its gate (or the colours model); yields (base URL, database)."""
    shipped = (SHIPPED_MODEL / "model.tflite").is_file() and (SHIPPED_GATE / "model.tflite").is_file()
    model = SHIPPED_MODEL if shipped else color_artifact
    database = tmp_path / "feedback-browser.db"
    gate = {} if shipped else {"VEHICLE_GATE_DIR": "none"}
    with gunicorn_server(model, database, ready_timeout=300, RATELIMIT_ENABLED="false", LOG_LEVEL="WARNING",
                         **gate) as base:
        yield base, database, shipped


def test_a_visitor_tries_examples_and_says_what_was_wrong(shipped_server, tmp_path):
    require_chromium()
    base, database, shipped = shipped_server
    from playwright.sync_api import expect

    with chromium_page(1000, 760) as (page, console_errors):
        page.goto(f"{base}/")
        buttons = page.locator("#examples button.example")
        expect(buttons).to_have_count(len(EXAMPLES))
        assert [buttons.nth(i).get_attribute("value") for i in range(len(EXAMPLES))] == EXAMPLES
        page.wait_for_function("() => [...document.querySelectorAll('#examples img')]"
                               ".every(img => img.complete && img.naturalWidth > 0)")
        shot = save_screenshot(page.locator("main"), tmp_path, "examples.png")
        assert 5_000 < shot.stat().st_size < 300_000

        # The airliner: an example like any upload. The vehicle check says no car, so the page asks
        # "Is this a car?" and "No" is one click; without the check it is "No" -> "Not a car".
        page.click("#examples button[value='airliner.jpg']")
        page.wait_for_url(re.compile(rf"{re.escape(base)}/predictions/[A-Za-z0-9_-]{{16,}}$"))
        plane_id = page.url.rsplit("/", 1)[-1]  # the public id
        if shipped:
            expect(page.locator("#verdict")).to_have_attribute("data-verdict", "not_a_car")
            expect(page.locator("#feedback-question")).to_have_text("Is this a car?")
            page.click("#feedback-no-car")
        else:
            expect(page.locator("#feedback-not-a-car")).to_be_hidden()  # inside the closed "No"
            page.click("#feedback-no-toggle")
            page.click("#feedback-not-a-car")
        page.wait_for_url(f"{base}/predictions/{plane_id}#feedback")
        expect(page.locator("#feedback-thanks")).to_have_attribute("data-verdict", "not_a_car")
        expect(page.locator("#feedback-question")).to_have_count(0)

        # A car: "No", type part of a label, pick it from the model's labels, Enter sends it.
        page.goto(f"{base}/")
        page.click("#examples button[value='audi-r8.jpg']")
        page.wait_for_url(re.compile(rf"{re.escape(base)}/predictions/[A-Za-z0-9_-]{{16,}}$"))
        car_id = page.url.rsplit("/", 1)[-1]
        top_label = page.locator(".prediction .label").first.inner_text()
        options = page.locator("#feedback-labels option").evaluate_all("os => os.map(o => o.value)")
        suggestion = next((label for label in options if label.startswith("Audi R8")), None) if shipped else None
        suggestion = suggestion or next(label for label in options if label != top_label)
        page.click("#feedback-no-toggle")
        field = page.locator("#feedback-label")
        expect(field).to_be_visible()
        assert field.get_attribute("list") == "feedback-labels"
        field.fill(suggestion)
        shot = save_screenshot(page.locator("main"), tmp_path, "feedback.png")
        assert 5_000 < shot.stat().st_size < 300_000
        field.press("Enter")  # the label form's own default button, never the "Yes" of the other form
        page.wait_for_url(f"{base}/predictions/{car_id}#feedback")
        expect(page.locator("#feedback-thanks")).to_have_attribute("data-verdict", "wrong")
        expect(page.locator("#feedback-thanks")).to_contain_text(suggestion)

        # One answer per session: a reload thanks again instead of asking.
        page.reload()
        expect(page.locator("#feedback-thanks")).to_be_visible()
        expect(page.locator("#feedback-no")).to_have_count(0)
        assert console_errors == []

    with sqlite3.connect(database) as connection:
        predictions = connection.execute("SELECT public_id, source, original_filename FROM predictions "
                                         "ORDER BY id").fetchall()
        answers = connection.execute("SELECT p.public_id, f.verdict, f.label, f.client_hash FROM feedback f "
                                     "JOIN predictions p ON p.id = f.prediction_id ORDER BY f.id").fetchall()
    assert predictions == [(plane_id, "example", "airliner.jpg"), (car_id, "example", "audi-r8.jpg")]
    assert [row[:3] for row in answers] == [(plane_id, "not_a_car", None), (car_id, "wrong", suggestion)]
    assert all(re.fullmatch(r"[0-9a-f]{64}", row[3]) for row in answers)
