"""Visitors' answers in the admin: the "visitors said wrong" filter, the suggestion beside the correction form
and its one-click adoption, the dashboard's share per model version, and export-corrections ignoring them."""

from __future__ import annotations

import re

import pytest

from admin_support import add_prediction, create_admin, login

ADOPT_FORM = re.compile(r'<li class="d-flex[^"]*suggestion" data-label="([^"]+)">.*?name="csrf_token" value="([^"]+)"',
                        re.S)


def add_answer(prediction_id: int, verdict: str, label: str | None = None, visitor: str = "v1"):
    """Store one visitor answer as the page would (inside an app context)."""
    from app.extensions import db
    from app.models import Feedback

    db.session.add(Feedback(prediction_id=prediction_id, verdict=verdict, label=label,
                            client_key=f"{visitor:0>64}", client_hash="f" * 64))
    db.session.commit()


@pytest.fixture
def answered(app):
    """Four predictions: #1 two visitors said green, #2 one said right, #3 one said not a car, #4 unanswered.

    Versions: 1.0 for #1 and #2, 2.0 for #3 and #4.
    """
    with app.app_context():
        ids = [add_prediction(1, label="red", version="1.0").id, add_prediction(2, label="red", version="1.0").id,
               add_prediction(3, label="blue", version="2.0").id, add_prediction(4, label="blue", version="2.0").id]
        add_answer(ids[0], "wrong", "green", "v1")
        add_answer(ids[0], "wrong", "green", "v2")
        add_answer(ids[0], "unknown", None, "v3")
        add_answer(ids[1], "right", None, "v1")
        add_answer(ids[2], "not_a_car", None, "v1")
    return ids


@pytest.fixture
def admin_client(app, client):
    create_admin(app)
    assert login(client).status_code == 302
    return client


def listed(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', page)]


def test_visitors_said_wrong_filter(admin_client, answered):
    said_wrong = admin_client.get("/admin/?visitors=said_wrong").get_data(as_text=True)
    assert sorted(listed(said_wrong)) == [answered[0], answered[2]]
    assert '<option value="said_wrong" selected>visitors said wrong</option>' in said_wrong
    answered_any = admin_client.get("/admin/?visitors=answered").get_data(as_text=True)
    assert sorted(listed(answered_any)) == answered[:3]
    # Combined with the other filters, and in the CSV of the filtered set.
    assert listed(admin_client.get("/admin/?visitors=said_wrong&model_version=2.0").get_data(as_text=True)) == [
        answered[2]]
    csv = admin_client.get("/admin/predictions.csv?visitors=said_wrong").get_data(as_text=True)
    assert sorted(int(line.split(",")[0]) for line in csv.splitlines()[1:]) == [answered[0], answered[2]]
    # An unknown value filters nothing rather than failing.
    assert len(listed(admin_client.get("/admin/?visitors=bogus").get_data(as_text=True))) == 4


def test_dashboard_shows_the_share_of_visitor_answers_saying_wrong_per_version(admin_client, answered):
    page = admin_client.get("/admin/").get_data(as_text=True)
    shares = dict(re.findall(r'<tr data-version="([^"]+)">.*?<td class="visitor-wrong-share">\s*([^<]+)', page, re.S))
    # 1.0: 3 of 4 answers said no (two "green", one "don't know"); 2.0: the one answer said "not a car".
    assert {v: s.strip() for v, s in shares.items()} == {"1.0": "75%", "2.0": "100%"}
    assert 'of 4</span>' in page and 'of 1</span>' in page
    # The dashboard follows the filters: only version 1.0's predictions with label red.
    filtered = admin_client.get("/admin/?label=red").get_data(as_text=True)
    assert re.findall(r'<tr data-version="([^"]+)">', filtered) == ["1.0"]


def test_dashboard_without_answers_shows_a_dash(app, admin_client):
    with app.app_context():
        add_prediction(1, version="3.0")
    page = admin_client.get("/admin/").get_data(as_text=True)
    assert re.search(r'<td class="visitor-wrong-share">-</td>', page)


def test_detail_shows_what_visitors_said_beside_the_correction_form(admin_client, answered):
    page = admin_client.get(f"/admin/predictions/{answered[0]}").get_data(as_text=True)
    assert page.index('id="correction"') < page.index('id="visitor-feedback"')
    assert 'data-verdict="wrong">wrong, with a label: 2</span>' in page
    assert "don&#39;t know the car: 1" in page
    assert re.findall(r'data-label="([^"]+)"', page) == ["green"]
    assert "(2 visitors)" in page
    quiet = admin_client.get(f"/admin/predictions/{answered[3]}").get_data(as_text=True)
    assert "No visitor answered." in quiet and "Adopt as correction" not in quiet
    not_a_car = admin_client.get(f"/admin/predictions/{answered[2]}").get_data(as_text=True)
    assert "not a car: 1" in not_a_car and "Adopt as correction" not in not_a_car  # no label to adopt


def test_one_click_adopts_the_suggestion_as_the_correction(app, admin_client, answered):
    page = admin_client.get(f"/admin/predictions/{answered[0]}").get_data(as_text=True)
    label, token = ADOPT_FORM.search(page).groups()
    action = re.search(r'<form method="post" action="([^"]+)" class="adopt-form">', page).group(1)
    response = admin_client.post(action.replace("&amp;", "&"),
                                 data={"csrf_token": token, "label": label, "save_label": "adopt"})
    assert response.status_code == 302
    from app.extensions import db
    from app.models import Correction, Feedback

    with app.app_context():
        correction = db.session.scalars(db.select(Correction)).one()
        assert (correction.prediction_id, correction.old_label, correction.new_label) == (answered[0], "red", "green")
        assert correction.corrected_by.username == "alice"
        assert db.session.scalar(db.select(db.func.count(Feedback.id))) == 5  # the answers stay as they were
    after = admin_client.get(f"/admin/predictions/{answered[0]}").get_data(as_text=True)
    assert 'True label <strong>green</strong>' in after
    assert '<span class="badge text-bg-success">adopted</span>' in after and "Adopt as correction" not in after


def test_adoption_needs_the_csrf_token(app, admin_client, answered):
    response = admin_client.post(f"/admin/predictions/{answered[0]}/correction",
                                 data={"label": "green", "save_label": "adopt"})
    assert response.status_code == 400
    from app.extensions import db
    from app.models import Correction

    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Correction.id))) == 0


def test_export_corrections_exports_admin_corrections_only(app, runner, answered, tmp_path):
    from app.extensions import db
    from app.models import AdminUser, Correction

    admin_id = create_admin(app)
    with app.app_context():
        db.session.add(Correction(prediction_id=answered[1], old_label="red", new_label="red",
                                  corrected_by=db.session.get(AdminUser, admin_id)))
        db.session.commit()
    out = tmp_path / "export"
    result = runner.invoke(args=["export-corrections", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 1 photos in 1 label folders" in result.output
    # #1's two visitors said "green", #3's said "not a car": neither is a true label until an admin adopts it.
    assert sorted(p.name for p in out.iterdir()) == ["corrections.csv", "red"]
    assert [p.name for p in (out / "red").iterdir()] == [f"{answered[1]}.jpg"]
    assert "green" not in (out / "corrections.csv").read_text()
