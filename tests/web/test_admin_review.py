"""The review table: filters, free-text search, sorting, paging, dashboard figures and SQL per page."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import event, insert

from admin_support import create_admin, jpeg, login, prediction_values

DAY = dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc)


@pytest.fixture
def seeded(app):
    """Ten predictions with known labels, scores, versions, days, sources and file names, two corrected."""
    from app.extensions import db
    from app.models import Correction, Prediction

    rows = [
        # index, label, score, version, day offset, source, filename
        (0, "red", 0.95, "1.0", 0, "web", "sunset-red-car.jpg"),
        (1, "red", 0.40, "1.0", 0, "api", "IMG_0001.JPG"),
        (2, "green", 0.85, "1.0", 1, "web", "park.png"),
        (3, "green", 0.30, "2.0", 1, "api", None),
        (4, "blue", 0.99, "2.0", 2, "web", "ocean_blue.jpg"),
        (5, "blue", 0.55, "2.0", 2, "web", "100%_blue.jpg"),
        (6, "red", 0.65, "2.0", 3, "api", "garage.jpg"),
        (7, "green", 0.45, "1.0", 3, "web", "forest.jpg"),
        (8, "blue", 0.75, "2.0", 4, "api", "harbour.jpg"),
        (9, "red", 0.20, "1.0", 4, "web", "night.jpg"),
    ]
    admin_id = create_admin(app)
    with app.app_context():
        db.session.execute(insert(Prediction), [
            prediction_values(i, label=label, score=score, version=version, source=source, filename=name,
                              created_at=DAY + dt.timedelta(days=offset, minutes=i), thumbnail=jpeg((i * 20, 0, 0)))
            for i, label, score, version, offset, source, name in rows])
        ids = {p.original_filename: p.id for p in Prediction.query.all()}
        db.session.add_all([
            Correction(prediction_id=ids["IMG_0001.JPG"], old_label="red", new_label="Ferrari red",
                       corrected_by_id=admin_id),
            Correction(prediction_id=ids["ocean_blue.jpg"], old_label="blue", new_label="blue",
                       corrected_by_id=admin_id),
        ])
        db.session.commit()
    return ids


@pytest.fixture
def admin_client(app, client, seeded):
    assert login(client).status_code == 302
    return client


def shown_files(client, **args) -> list[str]:
    """Original file names of the rows on the page, in table order (looked up through the row ids)."""
    from app.models import Prediction

    html = client.get("/admin/", query_string=args).get_data(as_text=True)
    ids = [int(i) for i in re.findall(r'<tr data-id="(\d+)">', html)]
    with client.application.app_context():
        names = {p.id: p.original_filename for p in Prediction.query.filter(Prediction.id.in_(ids))}
    return [names[i] for i in ids]


def test_newest_first_by_default(admin_client):
    assert shown_files(admin_client) == ["night.jpg", "harbour.jpg", "forest.jpg", "garage.jpg", "100%_blue.jpg",
                                         "ocean_blue.jpg", None, "park.png", "IMG_0001.JPG", "sunset-red-car.jpg"]


@pytest.mark.parametrize("args, expected", [
    ({"label": "green"}, {"park.png", None, "forest.jpg"}),
    ({"model_version": "2.0"}, {None, "ocean_blue.jpg", "100%_blue.jpg", "garage.jpg", "harbour.jpg"}),
    ({"source": "api"}, {"IMG_0001.JPG", None, "garage.jpg", "harbour.jpg"}),
    ({"date_from": "2026-11-02", "date_to": "2026-11-03"}, {"park.png", None, "ocean_blue.jpg", "100%_blue.jpg"}),
    ({"score_min": "0.5", "score_max": "0.9"}, {"park.png", "100%_blue.jpg", "garage.jpg", "harbour.jpg"}),
    ({"low_confidence": "1"}, {"IMG_0001.JPG", None, "forest.jpg", "night.jpg"}),
    ({"low_confidence": "1", "label": "red"}, {"IMG_0001.JPG", "night.jpg"}),
    ({"status": "corrected"}, {"IMG_0001.JPG", "ocean_blue.jpg"}),
    ({"status": "wrong"}, {"IMG_0001.JPG"}),
    ({"status": "confirmed"}, {"ocean_blue.jpg"}),
    ({"q": "ocean"}, {"ocean_blue.jpg"}),
    ({"q": "BLUE"}, {"ocean_blue.jpg", "100%_blue.jpg", "harbour.jpg"}),  # label or filename, any case
    ({"q": "ferrari"}, {"IMG_0001.JPG"}),  # the corrected label is searched too
    ({"q": "100%"}, {"100%_blue.jpg"}),  # LIKE wildcards are taken literally
    ({"q": "_"}, {"100%_blue.jpg", "ocean_blue.jpg", "IMG_0001.JPG"}),
    ({"label": "purple"}, set()),
])
def test_filters_and_search_return_the_right_rows(admin_client, args, expected):
    assert set(shown_files(admin_client, **args)) == expected


def test_uncorrected_filter_excludes_corrected_rows(admin_client):
    files = shown_files(admin_client, status="uncorrected")
    assert len(files) == 8 and "IMG_0001.JPG" not in files and "ocean_blue.jpg" not in files


def test_bad_filter_values_are_ignored_not_fatal(admin_client):
    response = admin_client.get("/admin/", query_string={"date_from": "yesterday", "score_min": "nan",
                                                        "per_page": "7", "sort": "password", "page": "-3"})
    assert response.status_code == 200
    assert len(re.findall(r'<tr data-id=', response.get_data(as_text=True))) == 10


def test_sorting_by_score_both_ways(admin_client):
    ascending = shown_files(admin_client, sort="top_score", order="asc")
    assert ascending[:3] == ["night.jpg", None, "IMG_0001.JPG"]
    assert shown_files(admin_client, sort="top_score", order="desc")[:2] == ["ocean_blue.jpg", "sunset-red-car.jpg"]


def test_sorting_by_label_breaks_ties_by_id(admin_client):
    files = shown_files(admin_client, sort="top_label", order="asc")
    assert files[:3] == ["ocean_blue.jpg", "100%_blue.jpg", "harbour.jpg"]  # the blues, ids ascending too
    files = shown_files(admin_client, sort="top_label", order="desc")
    assert files[:4] == ["night.jpg", "garage.jpg", "IMG_0001.JPG", "sunset-red-car.jpg"]


def test_pages_cover_every_row_once(app, client, seeded):
    from app.extensions import db
    from app.models import Prediction

    with app.app_context():
        db.session.execute(insert(Prediction), [prediction_values(100 + i) for i in range(45)])
        db.session.commit()
    login(client)
    seen = []
    for page in (1, 2, 3):
        html = client.get("/admin/", query_string={"per_page": 25, "page": page}).get_data(as_text=True)
        seen += re.findall(r'<tr data-id="(\d+)">', html)
    assert len(seen) == 55 and len(set(seen)) == 55
    assert "Page 3 of 3" in client.get("/admin/?per_page=25&page=99").get_data(as_text=True)


def test_dashboard_figures_follow_the_filters(admin_client):
    html = admin_client.get("/admin/").get_data(as_text=True)
    assert '<span id="total-count">10</span>' in html
    assert '<span id="mean-confidence">60.9%</span>' in html  # mean of the ten seeded scores
    assert html.count("<rect ") == 5  # five days with predictions
    assert "2026-11-01: 2" in html and "2026-11-05: 2" in html
    version_1 = re.search(r'<tr data-version="1.0">(.*?)</tr>', html, re.S).group(1)
    assert "1 / 5" in version_1 and "100%" in version_1 and "0%" in version_1  # 1 reviewed, it was wrong
    version_2 = re.search(r'<tr data-version="2.0">(.*?)</tr>', html, re.S).group(1)
    assert "1 / 5" in version_2 and re.search(r'class="live-accuracy">100%', version_2)

    filtered = admin_client.get("/admin/?label=red").get_data(as_text=True)
    assert '<span id="total-count">4</span>' in filtered
    assert re.search(r'<ol class="small mb-0 ps-3" id="label-distribution">\s*<li>red', filtered)


def test_thumbnails_are_served_by_url_not_inlined(admin_client, seeded):
    html = admin_client.get("/admin/").get_data(as_text=True)
    assert "data:image" not in html
    prediction_id = seeded["park.png"]
    assert f'/admin/predictions/{prediction_id}/thumbnail.jpg' in html
    image = admin_client.get(f"/admin/predictions/{prediction_id}/thumbnail.jpg")
    assert image.status_code == 200 and image.mimetype == "image/jpeg" and image.data[:2] == b"\xff\xd8"
    assert admin_client.get("/admin/predictions/999999/thumbnail.jpg").status_code == 404


def count_statements(app, client, path: str) -> list[str]:
    """The SQL statements one GET of ``path`` runs."""
    from app.extensions import db

    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert client.get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return statements


def test_queries_per_page_are_a_small_constant_and_skip_the_blobs(app, client, seeded):
    from app.extensions import db
    from app.models import Prediction

    with app.app_context():
        db.session.execute(insert(Prediction), [prediction_values(100 + i) for i in range(250)])
        db.session.commit()
    login(client)
    small = count_statements(app, client, "/admin/?per_page=25")
    large = count_statements(app, client, "/admin/?per_page=200")
    filtered = count_statements(app, client, "/admin/?per_page=200&q=red&status=uncorrected&sort=top_score")
    # The admin, five dashboard figures (one is the count, one the reviewed answers per level), the page's
    # rows, the label list, and the version and answer-level lists in one statement.
    assert len(small) == len(large) == len(filtered) == 9
    for statement in small + large:
        assert "thumbnail" not in statement  # the list never reads the JPEG blobs
    print(f"queries per review page: {len(small)}")
