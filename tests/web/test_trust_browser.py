"""In Chromium against gunicorn: several photos at once, "not a car", the heatmap toggle, the model card.

Serves the shipped model (``model_artifacts/default``) when it is present, else the test's colours
model; the vehicle gate is the shipped one. ``UPDATE_SCREENSHOTS=1`` refreshes the manual screenshots
``docs/screenshots/batch.png``, ``explanation.png`` and ``model_card.png``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from browser_support import chromium_page, gunicorn_server, require_chromium
from support import REPO_ROOT, stanford_photos
from trust_support import CARS_VS_PLANES, SHIPPED_GATE

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
SHIPPED_MODEL = REPO_ROOT / "model_artifacts" / "default"


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """The committed screenshot under UPDATE_SCREENSHOTS=1, else a throwaway file."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS / name
    return tmp_path / name


@pytest.fixture
def trust_server(color_artifact, tmp_path):
    """gunicorn serving the shipped model (or the colours model) with the shipped vehicle gate."""
    if not (SHIPPED_GATE / "model.tflite").is_file():
        pytest.skip("no vehicle gate artifact")
    model = SHIPPED_MODEL if (SHIPPED_MODEL / "model.tflite").is_file() else color_artifact
    with gunicorn_server(model, tmp_path / "trust-browser.db", RATELIMIT_ENABLED="false", LOG_LEVEL="WARNING",
                         EXPLANATION_CACHE_DIR=str(tmp_path / "heatmaps")) as base:
        yield base


def car_photos_the_gate_passes(count: int) -> list[Path]:
    from inference.gate import VehicleGate

    gate = VehicleGate(SHIPPED_GATE, num_threads=1)
    photos = [p for p in stanford_photos(count + 4) if gate.is_vehicle(gate.score(Image.open(p).convert("RGB")))]
    return photos[:count]


def test_several_photos_heatmap_and_model_card_in_chromium(trust_server, tmp_path):
    require_chromium()
    cars = car_photos_the_gate_passes(4)
    plane_folder = CARS_VS_PLANES / "val" / "planes"
    if not plane_folder.is_dir():
        pytest.skip(f"{plane_folder} is missing")
    plane = sorted(plane_folder.glob("*.jpg"))[0]
    broken = tmp_path / "not-a-photo.jpg"
    broken.write_bytes(b"this is text, not a JPEG")
    chosen = [*cars[:2], plane, broken, *cars[2:]]
    from playwright.sync_api import expect

    with chromium_page(1100, 900) as (page, console_errors):
        page.goto(f"{trust_server}/")
        expect(page.locator("#model-card-link")).to_be_visible()
        page.set_input_files("#image", [str(p) for p in chosen])
        expect(page.locator("#file-name")).to_contain_text(f"{len(chosen)} photos chosen")
        expect(page.locator("#submit-button")).to_have_value(f"Classify {len(chosen)} photos")
        page.click("#submit-button")
        expect(page.locator("#batch")).to_have_attribute("data-finished", "true", timeout=60_000)

        cards = page.locator(".batch-item")
        expect(cards).to_have_count(len(chosen))
        states = [cards.nth(i).get_attribute("data-state") for i in range(len(chosen))]
        assert states == ["done", "done", "done", "failed", "done", "done"]
        assert cards.nth(2).get_attribute("data-verdict") == "not_a_car"
        # The plane's card says so first; its car guesses are folded away, as on its result page.
        expect(cards.nth(2).locator(".batch-label")).to_have_text("This does not look like a car")
        expect(cards.nth(2).locator(".batch-guesses")).to_be_hidden()
        cards.nth(2).locator(".batch-guesses-fold summary").click()
        expect(cards.nth(2).locator(".batch-guesses li")).to_have_count(3)
        # A car's card leads with the same words as its result page.
        car_headline = cards.nth(0).locator(".batch-label").inner_text()
        assert car_headline != "This does not look like a car"
        assert all(cards.nth(i).get_attribute("data-verdict") in ("ok", "uncertain") for i in (0, 1, 4, 5))
        expect(cards.nth(3).locator(".batch-result")).to_contain_text("not an image")
        expect(page.locator("#batch-summary")).to_have_text(f"{len(chosen)} of {len(chosen)} done, 1 failed")
        widths = page.locator(".batch-item .progress-bar").evaluate_all("bars => bars.map(b => b.style.width)")
        assert widths == ["100%"] * len(chosen)
        page.screenshot(path=str(screenshot_path(tmp_path, "batch.png")), full_page=True)
        with sqlite3.connect(tmp_path / "trust-browser.db") as connection:
            sources = [row[0] for row in connection.execute("SELECT source FROM predictions")]
        assert sources == ["web"] * (len(chosen) - 1)  # page uploads, logged as such; the text file is not

        # The plane's result page says so, and the heatmap toggles over the photo.
        first_car = trust_server + cards.nth(0).locator("a.batch-label").get_attribute("href")
        cards.nth(2).locator("a.batch-label").click()
        page.wait_for_url(f"{trust_server}/predictions/*")
        expect(page.locator("#verdict")).to_have_attribute("data-verdict", "not_a_car")
        expect(page.locator("#verdict")).to_contain_text("does not look like a car")
        page.goto(first_car)
        expect(page.locator("#answer")).to_contain_text(car_headline)
        expect(page.locator("#explanation")).to_be_hidden()
        page.click("#explain-toggle")
        expect(page.locator("#explanation")).to_be_visible(timeout=120_000)
        natural = page.locator("#explanation").evaluate("img => [img.naturalWidth, img.naturalHeight]")
        thumb = page.locator("#thumbnail").evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert natural == thumb
        expect(page.locator("#explain-toggle")).to_have_attribute("aria-pressed", "true")
        page.screenshot(path=str(screenshot_path(tmp_path, "explanation.png")), full_page=True)
        page.click("#explain-toggle")
        expect(page.locator("#explanation")).to_be_hidden()

        page.click("#model-card-link")
        page.wait_for_url(f"{trust_server}/model/")
        expect(page.locator("h1")).to_contain_text("Model card")
        expect(page.locator("#gate-table")).to_contain_text("non cars")
        # Every report figure the card links loads. They are lazy: one far below the fold loads only once
        # scrolled to (img.decode() on it would wait for ever), so each is scrolled into view first.
        for figure in page.locator("figure img").all():
            figure.scroll_into_view_if_needed()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=figure.element_handle(),
                                   timeout=30_000)
        page.screenshot(path=str(screenshot_path(tmp_path, "model_card.png")), full_page=True)
        # Chromium logs the one refused upload (the text file) as a failed request; nothing else.
        assert len(console_errors) == 1 and "415" in console_errors[0], console_errors
