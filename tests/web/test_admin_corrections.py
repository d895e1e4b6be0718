"""The detail page and the correction flow: confirm, relabel, edit, remove, CSRF, live accuracy."""

from __future__ import annotations

import re

import pytest

from admin_support import add_prediction, create_admin, csrf_token, login


@pytest.fixture
def photo(app):
    """Two predictions of the same photo (same sha256) and one of another."""
    with app.app_context():
        first = add_prediction(1, label="red", score=0.6, sha256="a" * 64, version="1.0")
        second = add_prediction(2, label="green", score=0.5, sha256="a" * 64, version="2.0")
        other = add_prediction(3, label="blue", score=0.9, sha256="b" * 64)
        return {"first": first.id, "second": second.id, "other": other.id}


@pytest.fixture
def admin_client(app, client):
    create_admin(app)
    assert login(client).status_code == 302
    return client


def correct(client, prediction_id: int, **fields):
    token = csrf_token(client, f"/admin/predictions/{prediction_id}")
    return client.post(f"/admin/predictions/{prediction_id}/correction", data={"csrf_token": token, **fields})


def stored_correction(app, prediction_id: int):
    from app.extensions import db
    from app.models import Correction

    with app.app_context():
        correction = db.session.query(Correction).filter_by(prediction_id=prediction_id).one_or_none()
        if correction is None:
            return None
        return (correction.old_label, correction.new_label, correction.corrected_by.username,
                correction.created_at, correction.updated_at)


def test_detail_page_shows_top_k_metadata_and_the_same_photo(admin_client, photo):
    html = admin_client.get(f"/admin/predictions/{photo['first']}").get_data(as_text=True)
    assert html.count('class="mb-2 prediction"') == 3
    assert "a" * 64 in html and "640 &times; 480" in html and "12.5 ms" in html and "photo-1.jpg" in html
    same = re.search(r'id="same-photo">(.*?)</ul>', html, re.S).group(1)
    assert f"#{photo['second']}" in same and f"#{photo['other']}" not in same
    assert "Not reviewed yet." in html
    assert re.search(r'id="verdict">-<', html)  # logged before verdicts existed
    # The label choices offer the model's labels for a correction.
    choices = re.search(r'<datalist id="label-choices">(.*?)</datalist>', html, re.S).group(1)
    assert {"red", "green", "blue"} <= set(re.findall(r'value="([^"]+)"', choices))
    assert admin_client.get("/admin/predictions/999999").status_code == 404


def test_mark_correct_then_relabel_then_remove(app, admin_client, photo):
    pid = photo["first"]
    response = correct(admin_client, pid, mark_correct="Model was right")
    assert response.status_code == 302 and response.headers["Location"] == f"/admin/predictions/{pid}"
    old, new, who, created, updated = stored_correction(app, pid)
    assert (old, new, who) == ("red", "red", "alice")
    assert "Confirmed correct" in admin_client.get(f"/admin/predictions/{pid}").get_data(as_text=True)

    # Editing keeps one row per prediction and moves the update time.
    correct(admin_client, pid, label="  Ferrari 458  ", save_label="Save true label")
    old, new, who, created_again, updated_again = stored_correction(app, pid)
    assert (old, new, created_again) == ("red", "Ferrari 458", created)
    assert updated_again >= updated
    page = admin_client.get(f"/admin/predictions/{pid}").get_data(as_text=True)
    assert "True label <strong>Ferrari 458</strong> (model said red)" in page
    # A new label becomes a choice for later corrections.
    assert 'value="Ferrari 458"' in admin_client.get(f"/admin/predictions/{photo['other']}").get_data(as_text=True)

    token = csrf_token(admin_client, f"/admin/predictions/{pid}")
    assert admin_client.post(f"/admin/predictions/{pid}/correction/delete",
                             data={"csrf_token": token}).status_code == 302
    assert stored_correction(app, pid) is None
    assert admin_client.post(f"/admin/predictions/{pid}/correction/delete",
                             data={"csrf_token": token}).status_code == 404


def test_empty_label_is_not_stored(app, admin_client, photo):
    response = correct(admin_client, photo["first"], label="   ", save_label="Save true label")
    assert response.status_code == 302
    assert stored_correction(app, photo["first"]) is None


def test_correction_forms_need_the_csrf_token(app, admin_client, photo):
    pid = photo["first"]
    response = admin_client.post(f"/admin/predictions/{pid}/correction", data={"mark_correct": "1"})
    assert response.status_code == 400
    assert stored_correction(app, pid) is None
    correct(admin_client, pid, mark_correct="1")
    response = admin_client.post(f"/admin/predictions/{pid}/correction/delete", data={})
    assert response.status_code == 400
    assert stored_correction(app, pid) is not None
    assert admin_client.post("/admin/logout", data={}).status_code == 400


def test_corrections_feed_the_live_accuracy_and_the_counts(app, admin_client, photo):
    correct(admin_client, photo["first"], mark_correct="1")              # version 1.0: right
    correct(admin_client, photo["second"], label="red", save_label="1")  # version 2.0: wrong
    html = admin_client.get("/admin/").get_data(as_text=True)
    v1 = re.search(r'<tr data-version="1.0">(.*?)</tr>', html, re.S).group(1)
    v2 = re.search(r'<tr data-version="2.0">(.*?)</tr>', html, re.S).group(1)
    assert "1 / 2" in v1  # version 1.0 served two photos (first and other), one reviewed
    assert re.search(r'class="live-accuracy">100%', v1) and re.search(r'class="wrong-share">0%', v1)
    assert "1 / 1" in v2
    assert re.search(r'class="live-accuracy">0%', v2) and re.search(r'class="wrong-share">100%', v2)
    corrected = admin_client.get("/admin/?status=corrected").get_data(as_text=True)
    assert '<span id="total-count">2</span>' in corrected
