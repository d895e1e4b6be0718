"""Reviews of one photo that disagree: the detail page warns and shows them, the export settles them.

Two uploads of the same photo (same SHA-256) are two predictions; an admin may review each. When their
true labels differ, exporting both would teach the model one photo under two labels.
"""

from __future__ import annotations

import csv
import datetime as dt

import pytest

from admin_support import add_prediction, create_admin, login


@pytest.fixture
def same_photo_reviews(app):
    """Three predictions of one photo: reviewed 'red' (earlier), 'blue' (later), and not reviewed."""
    from app.extensions import db
    from app.models import Correction

    admin_id = create_admin(app)
    with app.app_context():
        first = add_prediction(0, label="red")
        second = add_prediction(1, label="red", sha256=first.sha256)
        third = add_prediction(2, label="red", sha256=first.sha256)
        other = add_prediction(3, label="green")
        stamp = dt.datetime(2026, 12, 1, 12, tzinfo=dt.timezone.utc)
        db.session.add_all([
            Correction(prediction_id=first.id, old_label="red", new_label="red", corrected_by_id=admin_id,
                       created_at=stamp, updated_at=stamp),
            Correction(prediction_id=second.id, old_label="red", new_label="blue", corrected_by_id=admin_id,
                       created_at=stamp, updated_at=stamp + dt.timedelta(hours=1)),
            Correction(prediction_id=other.id, old_label="green", new_label="green", corrected_by_id=admin_id,
                       created_at=stamp, updated_at=stamp),
        ])
        db.session.commit()
        return first.id, second.id, third.id, other.id


def test_the_detail_page_warns_and_shows_the_other_reviews(client, same_photo_reviews):
    first, second, third, other = same_photo_reviews
    login(client)
    page = client.get(f"/admin/predictions/{third}").get_data(as_text=True)
    assert 'id="review-conflict"' in page
    assert '<span class="conflict-label">blue</span>' in page and '<span class="conflict-label">red</span>' in page
    same_photo = page.split('id="same-photo"')[1]
    assert "reviewed: <strong>blue</strong>" in same_photo and "reviewed: right (red)" in same_photo
    assert 'id="review-conflict"' not in client.get(f"/admin/predictions/{other}").get_data(as_text=True)


def test_export_keeps_the_latest_review_of_a_photo_and_reports_the_others(app, runner, same_photo_reviews,
                                                                         tmp_path):
    first, second, _, other = same_photo_reviews
    out = tmp_path / "corrections"
    result = runner.invoke(args=["export-corrections", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 2 photos in 2 label folders" in result.output
    assert "left out 1 predictions" in result.output and "conflicts.csv" in result.output
    assert sorted(p.name for p in (out / "blue").iterdir()) == [f"{second}.jpg"]
    assert not (out / "red").exists()
    with open(out / "conflicts.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["prediction_id"]), r["label"], r["label_kept"]) for r in rows] == [(first, "red", "blue")]
    with open(out / "corrections.csv", encoding="utf-8") as handle:
        exported = sorted(int(r["prediction_id"]) for r in csv.DictReader(handle))
    assert exported == sorted([second, other])


def test_an_export_without_conflicts_leaves_no_stale_report(app, runner, tmp_path):
    out = tmp_path / "corrections"
    out.mkdir()
    (out / "conflicts.csv").write_text("from an earlier export\n")
    assert runner.invoke(args=["export-corrections", str(out)]).exit_code == 0
    assert not (out / "conflicts.csv").exists()
