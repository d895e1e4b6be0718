"""One headline per prediction, the same on every surface: API bodies, result page, admin list and detail.

The shipped model (with its make and segment groupings and the shipped vehicle check) answers real
example photos, so the three kinds of headline a visitor meets - a car, a make-level answer, not a car -
come from the model itself rather than from hand-made rows.
"""

from __future__ import annotations

import re

import pytest

from admin_support import add_prediction, create_admin, login
from support import REPO_ROOT
from trust_support import dispose, make_app

EXAMPLES = REPO_ROOT / "examples"
SHIPPED = REPO_ROOT / "model_artifacts" / "default"


@pytest.fixture
def shipped_app(database_url):
    application = make_app(SHIPPED, database_url)
    yield application
    dispose(application)


def post_example(client, name: str) -> dict:
    with open(EXAMPLES / name, "rb") as photo:
        response = client.post("/api/v1/predictions", data={"image": (photo, name)})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def test_the_api_body_leads_with_the_headline_and_a_plane_says_not_a_car_first(shipped_app):
    body = post_example(shipped_app.test_client(), "airliner.jpg")
    assert list(body)[:4] == ["id", "headline", "answer", "verdict"]
    assert body["headline"]["kind"] == "not_a_car" and body["verdict"] == "not_a_car"
    assert body["headline"]["text"] == "This does not look like a car" and body["answer"] is None
    # The car guesses are still there, as detail, for whoever wants them.
    assert body["predictions"][0]["label"]


def test_a_car_headline_carries_the_answer_level_label_and_score(shipped_app):
    client = shipped_app.test_client()
    for name in ("audi-r8.jpg", "corvette.jpg", "bmw-coupe.jpg"):
        body = post_example(client, name)
        lead = body["headline"]
        assert lead["kind"] in ("answer", "unsure"), (name, lead)
        if lead["kind"] == "answer":
            assert (lead["level"], lead["label"], lead["score"]) == \
                (body["answer"]["level"], body["answer"]["label"], body["answer"]["score"])
        # The same body read back has the same headline.
        assert client.get(f"/api/v1/predictions/{body['id']}").get_json()["headline"] == lead


def test_group_scores_of_a_complete_grouping_sum_to_one(shipped_app):
    """Listed group scores are the model's renormalised ones: a grouping listed whole sums to 1."""
    client = shipped_app.test_client()
    checked = 0
    for name in ("audi-r8.jpg", "corvette.jpg", "ferrari-california.jpg", "honda-suv.jpg", "airliner.jpg"):
        groups = post_example(client, name)["groups"]
        for grouping, scores in groups.items():
            total = sum(entry["score"] for entry in scores)
            assert total <= 1 + 1e-6, (name, grouping, total)
            if grouping == "segment":  # two labels, both listed
                assert total == pytest.approx(1.0, abs=1e-6), (name, total)
                checked += 1
    assert checked == 5


def test_the_result_page_shows_the_rest_of_a_partly_listed_grouping_as_other(shipped_app):
    client = shipped_app.test_client()
    body = post_example(client, "corvette.jpg")
    page = client.get(f"/predictions/{body['id']}").get_data(as_text=True)
    listed = sum(entry["score"] for entry in body["groups"]["make"])
    if listed < 0.995:
        assert f"other {round((1 - listed) * 100):.0f}%" in page
    segment = re.search(r'data-group="segment">(.*?)</li>', page, re.S).group(1)
    assert "other" not in segment  # both segments listed: they add to 100 % on their own


def test_the_not_a_car_page_folds_the_guesses_and_asks_is_this_a_car(shipped_app):
    client = shipped_app.test_client()
    body = post_example(client, "airliner.jpg")
    page = client.get(f"/predictions/{body['id']}").get_data(as_text=True)
    assert page.index("This does not look like a car") < page.index('<details class="mb-3" id="guesses">')
    assert page.index('id="guesses"') < page.index('id="predictions"')
    assert "Show the model's guesses anyway" in page
    assert "Is this a car?" in page and "Was this right?" not in page
    assert "<title>This does not look like a car - Car classifier</title>" in page


def test_the_admin_list_has_an_id_and_an_answer_column_and_the_detail_leads_with_the_headline(shipped_app):
    client = shipped_app.test_client()
    plane = post_example(client, "airliner.jpg")
    car = post_example(client, "audi-r8.jpg")
    create_admin(shipped_app)
    login(client)
    listing = client.get("/admin/").get_data(as_text=True)
    headers = re.findall(r"<th>(.*?)</th>", re.search(r"<thead>\s*<tr>(.*?)</tr>", listing.split(
        'id="predictions-table"')[1], re.S).group(1), re.S)
    assert headers[0] == "#" and "Answer" in headers
    rows = re.findall(r'<tr data-id="(\d+)">\s*<td class="row-id[^"]*">(\d+)</td>', listing)
    assert rows and all(a == b for a, b in rows)
    kinds = re.findall(r'<td class="answer" data-kind="(\w+)">\s*<span class="fw-semibold answer-text">([^<]+)<',
                       listing)
    assert ("not_a_car", "This does not look like a car") in kinds
    assert car["headline"]["text"] in [text for _, text in kinds]
    plane_row = max(int(i) for i, _ in rows) - 1  # posted first, so the older of the two
    detail = client.get(f"/admin/predictions/{plane_row}").get_data(as_text=True)
    assert 'id="headline" data-kind="not_a_car"' in detail
    assert detail.index('id="headline-text"') < detail.index('id="top-k"')
    assert plane["headline"]["text"] in detail


def test_no_admin_page_repeats_an_element_id(shipped_app):
    client = shipped_app.test_client()
    with shipped_app.app_context():
        row = add_prediction(0)
        add_prediction(1, sha256=row.sha256)
        row_id = row.id
    create_admin(shipped_app)
    login(client)
    for path in ("/admin/", f"/admin/predictions/{row_id}", "/"):
        page = client.get(path).get_data(as_text=True)
        ids = re.findall(r'\sid="([^"]+)"', page)
        assert len(ids) == len(set(ids)), (path, sorted({i for i in ids if ids.count(i) > 1}))


def test_one_prediction_is_singular_on_the_dashboard(shipped_app):
    client = shipped_app.test_client()
    with shipped_app.app_context():
        add_prediction(0, label="red")
    create_admin(shipped_app)
    login(client)
    page = client.get("/admin/?q=red").get_data(as_text=True)
    assert re.search(r'<span id="total-count">1</span> prediction \(filtered\)', page)


def test_live_accuracy_judges_each_answer_at_its_own_level(shipped_app):
    """"A BMW" corrected to "BMW M5 Sedan 2010" was right at its level, though not at the class level."""
    from app.extensions import db
    from app.models import Correction

    admin_id = create_admin(shipped_app)
    cases = [  # (answer level, answer label, top label, true label, right at its level)
        ("make", "BMW", "BMW M3 Coupe 2012", "BMW M5 Sedan 2010", True),
        ("make", "BMW", "BMW M3 Coupe 2012", "Audi R8 Coupe 2012", False),
        ("class", "Audi R8 Coupe 2012", "Audi R8 Coupe 2012", "Audi R8 Coupe 2012", True),
        ("segment", "premium", "BMW M3 Coupe 2012", "Audi R8 Coupe 2012", True),
    ]
    with shipped_app.app_context():
        for index, (level, label, top, true, _) in enumerate(cases):
            row = add_prediction(index, label=top, version="2.0.0")
            row.answer_level, row.answer_label, row.answer_score = level, label, 0.9
            db.session.add(Correction(prediction_id=row.id, old_label=top, new_label=true, corrected_by_id=admin_id))
        db.session.commit()
    client = shipped_app.test_client()
    login(client)
    page = client.get("/admin/").get_data(as_text=True)
    row = re.search(r'<tr data-version="2.0.0">(.*?)</tr>', page, re.S).group(1)
    # Class level: only the R8 confirmed (1 of 4); at their level: 3 of 4.
    assert re.search(r'class="live-accuracy">25%', row) and re.search(r'class="answer-accuracy">75%', row)


@pytest.mark.parametrize("level, answer, true, right", [
    ("class", "Audi R8 Coupe 2012", "Audi R8 Coupe 2012", True),
    ("class", "Audi R8 Coupe 2012", "Audi TT Hatchback 2011", False),
    ("make", "Audi", "Audi TT Hatchback 2011", True),
    ("make", "Audi", "a label the model never knew", False),
    ("make", "Other make", "a label the model never knew", True),
    ("make", "Other make", "Audi TT Hatchback 2011", False),
    ("segment", "basic", "Audi TT Hatchback 2011", False),
])
def test_right_at_level(level, answer, true, right):
    from app.admin.queries import right_at_level

    group_of = {"make": {"Audi R8 Coupe 2012": "Audi", "Audi TT Hatchback 2011": "Audi"},
                "segment": {"Audi R8 Coupe 2012": "premium", "Audi TT Hatchback 2011": "premium"}}
    assert right_at_level(level, answer, true, group_of) is right


@pytest.mark.parametrize("verdict, answer, groups, kind, text", [
    ("not_a_car", None, {}, "not_a_car", "This does not look like a car"),
    ("uncertain", ("make", "Audi", 0.9), {"make": [], "segment": []}, "answer", "An Audi"),
    ("ok", ("class", "Audi R8 Coupe 2012", 0.9), {}, "answer", "Audi R8 Coupe 2012"),
    ("uncertain", None, {"make": [], "segment": []}, "unsure", "Not sure"),
    ("ok", None, None, "top_label", "Audi TT Hatchback 2011"),  # stored before answers existed
    (None, None, None, "top_label", "Audi TT Hatchback 2011"),  # ... and before verdicts
])
def test_every_kind_of_headline(verdict, answer, groups, kind, text):
    from app.upload.headline import StoredAnswer, summary

    level, label, score = answer or (None, None, None)
    lead = summary(StoredAnswer(verdict, level, label, score, groups, [{"label": "Audi TT Hatchback 2011"}],
                                "Audi TT Hatchback 2011"))
    assert (lead["kind"], lead["text"]) == (kind, text)
    assert (lead["level"], lead["label"]) == ((level, label) if kind == "answer" else (None, None))
