"""Example photos on the upload page: the shipped set, the row, a click classifies like an upload, the setting."""

from __future__ import annotations

import re
import sqlite3

import pytest
from PIL import Image

from support import REPO_ROOT
from trust_support import CARS_VS_PLANES, dispose, make_app

SHIPPED = REPO_ROOT / "examples"
TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
EXAMPLE_BUTTON = re.compile(r'name="example" value="([^"]+)"')


def page_token(client) -> str:
    page = client.get("/").get_data(as_text=True)
    return TOKEN.search(page).group(1)


def test_shipped_examples_are_few_small_real_photos_each_with_source_and_licence():
    photos = sorted(p for p in SHIPPED.iterdir() if p.suffix == ".jpg")
    assert 6 <= len(photos) <= 8
    assert sum(p.stat().st_size for p in photos) < 1_000_000
    sources = (SHIPPED / "SOURCES.md").read_text(encoding="utf-8")
    for photo in photos:
        with Image.open(photo) as image:
            image.verify()
        row = next((line for line in sources.splitlines() if line.startswith(f"| `{photo.name}`")), "")
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 5 and cells[4] in ("Pixabay Content License", "Unsplash License"), row
        assert cells[3].split(",")[0] in cells[4], row  # the site's own licence
        original = CARS_VS_PLANES / cells[2].strip("`")
        if original.is_file():  # the shared dataset is mounted: the file is the one the table names
            assert original.read_bytes() == photo.read_bytes(), row
    assert "airliner.jpg" in [p.name for p in photos]  # the "not a car" one


def test_upload_page_shows_the_example_row(client):
    page = client.get("/").get_data(as_text=True)
    names = EXAMPLE_BUTTON.findall(page)
    assert names == sorted(p.name for p in SHIPPED.iterdir() if p.suffix == ".jpg")
    thumbnail = client.get(f"/examples/{names[0]}")
    assert thumbnail.status_code == 200 and thumbnail.mimetype == "image/jpeg"
    assert thumbnail.data == (SHIPPED / names[0]).read_bytes()


def test_clicking_an_example_classifies_it_like_an_upload_logged_as_example(app, client, database_url):
    response = client.post("/", data={"csrf_token": page_token(client), "example": "audi-r8.jpg"})
    assert response.status_code == 303
    result = client.get(response.headers["Location"])
    assert result.status_code == 200 and "Was this right?" in result.get_data(as_text=True)
    from app.extensions import db
    from app.models import Prediction

    with app.app_context():
        prediction = db.session.scalars(db.select(Prediction)).one()
        assert (prediction.source, prediction.original_filename) == ("example", "audi-r8.jpg")
        import hashlib

        assert prediction.sha256 == hashlib.sha256((SHIPPED / "audi-r8.jpg").read_bytes()).hexdigest()
        assert prediction.top_label in ("red", "green", "blue")  # the colours model answered for real


def test_example_posts_need_the_csrf_token(client):
    assert client.post("/", data={"example": "audi-r8.jpg"}).status_code == 400


@pytest.mark.parametrize("name", ["../app/config.py", "SOURCES.md", "missing.jpg", ""])
def test_only_listed_examples_can_be_classified_or_served(client, name):
    response = client.post("/", data={"csrf_token": page_token(client), "example": name})
    assert response.status_code == 400 and "no example photo with that name" in response.get_data(as_text=True)
    assert client.get(f"/examples/{name}").status_code == 404


def test_a_photo_and_an_example_together_are_refused(client, make_image):
    import io

    response = client.post("/", data={"csrf_token": page_token(client), "example": "audi-r8.jpg",
                                      "image": (io.BytesIO(make_image("red")), "red.jpg")})
    assert response.status_code == 400 and "not both" in response.get_data(as_text=True)


def test_examples_dir_none_hides_the_row(color_artifact, database_url):
    application = make_app(color_artifact, database_url, EXAMPLES_DIR="none")
    client = application.test_client()
    page = client.get("/").get_data(as_text=True)
    assert 'id="examples"' not in page and not EXAMPLE_BUTTON.search(page)
    response = client.post("/", data={"csrf_token": TOKEN.search(page).group(1), "example": "audi-r8.jpg"})
    assert response.status_code == 400
    assert client.get("/examples/audi-r8.jpg").status_code == 404
    dispose(application)


def test_examples_dir_points_at_another_folder(color_artifact, database_url, tmp_path, make_image):
    folder = tmp_path / "my-examples"
    folder.mkdir()
    (folder / "blue-car.png").write_bytes(make_image("blue", fmt="PNG"))
    (folder / "notes.txt").write_text("not a photo")
    application = make_app(color_artifact, database_url, EXAMPLES_DIR=str(folder))
    client = application.test_client()
    page = client.get("/").get_data(as_text=True)
    assert EXAMPLE_BUTTON.findall(page) == ["blue-car.png"]
    response = client.post("/", data={"csrf_token": TOKEN.search(page).group(1), "example": "blue-car.png"})
    assert response.status_code == 303
    result = client.get(response.headers["Location"]).get_data(as_text=True)
    assert re.findall(r'<span class="label">(\w+)</span>', result)[0] == "blue"
    dispose(application)


def test_examples_count_against_the_upload_limit(color_artifact, tmp_path, make_image):
    import io

    application = make_app(color_artifact, f"sqlite:///{tmp_path / 'limits.db'}", RATELIMIT_ENABLED=True,
                           RATELIMIT_UPLOAD="2 per minute")
    client = application.test_client()
    token = page_token(client)
    upload = client.post("/", data={"csrf_token": token, "image": (io.BytesIO(make_image("red")), "r.jpg")})
    example = client.post("/", data={"csrf_token": token, "example": "corvette.jpg"})
    refused = client.post("/", data={"csrf_token": token, "example": "corvette.jpg"})
    assert [upload.status_code, example.status_code, refused.status_code] == [303, 303, 429]
    assert "Too many requests" in refused.get_data(as_text=True)
    with sqlite3.connect(tmp_path / "limits.db") as connection:
        assert connection.execute("SELECT source FROM predictions ORDER BY id").fetchall() == [("web",), ("example",)]
    dispose(application)


def test_admin_can_filter_on_the_example_source(app, client):
    from admin_support import add_prediction, create_admin, login

    with app.app_context():
        add_prediction(1, source="web")
        add_prediction(2, source="example")
        add_prediction(3, source="api")
    create_admin(app)
    login(client)
    page = client.get("/admin/?source=example").get_data(as_text=True)
    assert re.findall(r'<tr data-id="(\d+)"', page) == ["2"]
    assert '<option selected>example</option>' in page


def test_the_example_folder_ships_with_the_docker_image():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "COPY examples/ examples/" in dockerfile
    assert "!examples/" in (REPO_ROOT / ".dockerignore").read_text().splitlines()
