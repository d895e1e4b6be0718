"""The CSV of the review set (content, filters, streaming) and ``export-corrections`` for training."""

from __future__ import annotations

import csv
import datetime as dt
import io
import tracemalloc

import pytest
from PIL import Image
from sqlalchemy import insert

from admin_support import create_admin, jpeg, login, prediction_values


@pytest.fixture
def corrected(app):
    """Four predictions: one confirmed, two relabelled (one to a label with a slash), one unreviewed."""
    from app.extensions import db
    from app.models import Correction, Prediction

    admin_id = create_admin(app)
    colours = [(220, 30, 30), (30, 200, 40), (20, 40, 230), (200, 200, 200)]
    with app.app_context():
        db.session.execute(insert(Prediction), [
            prediction_values(i, label=label, score=0.5 + i / 10, thumbnail=jpeg(colours[i], (80 + i, 60)),
                              filename=name, source="api" if i == 3 else "web")
            for i, (label, name) in enumerate([("red", "a.jpg"), ("red", "=cmd|' /C calc'!A0.jpg"),
                                               ("blue", "c.jpg"), ("green", "d.jpg")])])
        ids = [p.id for p in Prediction.query.order_by(Prediction.id)]
        db.session.add_all([
            Correction(prediction_id=ids[0], old_label="red", new_label="red", corrected_by_id=admin_id),
            Correction(prediction_id=ids[1], old_label="red", new_label="green", corrected_by_id=admin_id),
            Correction(prediction_id=ids[2], old_label="blue", new_label="AC/DC van", corrected_by_id=admin_id),
        ])
        db.session.commit()
    return ids


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_has_the_documented_columns_and_the_filtered_rows(app, client, corrected):
    from app.admin.export import PREDICTION_COLUMNS
    from app.extensions import db
    from app.models import Prediction

    with app.app_context():
        flagged = db.session.get(Prediction, corrected[2])
        flagged.verdict, flagged.vehicle_score = "not_a_car", 0.0125
        db.session.commit()
    login(client)
    response = client.get("/admin/predictions.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="predictions-')
    rows = read_csv(response.get_data(as_text=True))
    assert list(rows[0]) == list(PREDICTION_COLUMNS)
    assert [int(r["id"]) for r in rows] == corrected[::-1]  # newest first, like the table
    by_id = {int(r["id"]): r for r in rows}
    first = by_id[corrected[0]]
    assert (first["top_label"], first["corrected_label"], first["model_was_right"], first["corrected_by"]) == \
        ("red", "red", "yes", "alice")
    assert by_id[corrected[1]]["model_was_right"] == "no"
    assert by_id[corrected[3]]["corrected_label"] == "" and by_id[corrected[3]]["model_was_right"] == ""
    assert first["sha256"] == prediction_values(0)["sha256"] and first["top_score"] == "0.500000"
    assert first["created_at"] == "2026-11-01T12:00:00Z"
    assert (first["verdict"], first["vehicle_score"]) == ("", "")  # logged before verdicts existed
    assert (by_id[corrected[2]]["verdict"], by_id[corrected[2]]["vehicle_score"]) == ("not_a_car", "0.0125")
    # The answer leads each row, in the words of the result page; the top-1 label is detail further right.
    assert list(rows[0])[:5] == ["id", "headline", "answer_level", "answer_label", "answer_score"]
    assert by_id[corrected[2]]["headline"].startswith("This does not look like a car")
    assert first["headline"] == "red"  # logged before answers existed: its top-1 label is all there is
    # A file name that a spreadsheet would run as a formula is defused.
    assert by_id[corrected[1]]["original_filename"].startswith("'=")

    only_wrong = read_csv(client.get("/admin/predictions.csv?status=wrong&sort=top_score&order=asc")
                          .get_data(as_text=True))
    assert [int(r["id"]) for r in only_wrong] == [corrected[1], corrected[2]]
    assert [int(r["id"]) for r in read_csv(client.get("/admin/predictions.csv?source=api").get_data(as_text=True))] \
        == [corrected[3]]


def stream_csv(client) -> tuple[int, int]:
    """Read the CSV response piece by piece; returns (lines, peak bytes allocated while reading)."""
    response = client.get("/admin/predictions.csv", buffered=False)
    assert response.is_streamed
    tracemalloc.start()
    try:
        lines = sum(piece.count(b"\n") for piece in response.response)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        response.close()
    return lines, peak


def test_csv_is_streamed_with_flat_memory(app, client, monkeypatch):
    from app.admin import export
    from app.extensions import db
    from app.models import Prediction

    create_admin(app)
    login(client)
    monkeypatch.setattr(export, "CHUNK_ROWS", 200)
    with app.app_context():
        db.session.execute(insert(Prediction), [prediction_values(i) for i in range(1500)])
        db.session.commit()
    lines_small, peak_small = stream_csv(client)
    with app.app_context():
        db.session.execute(insert(Prediction), [prediction_values(i) for i in range(1500, 7500)])
        db.session.commit()
    lines_large, peak_large = stream_csv(client)
    assert (lines_small, lines_large) == (1501, 7501)
    # Five times the rows, about the same memory: rows are read and written a chunk at a time.
    assert peak_large < 1.5 * peak_small, (peak_small, peak_large)


def test_export_corrections_writes_the_training_layout(app, runner, corrected, tmp_path):
    from training.data import load_dataset

    out = tmp_path / "corrections"
    result = runner.invoke(args=["export-corrections", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 3 photos in 3 label folders" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["AC_DC van", "corrections.csv", "green", "red"]
    assert [p.name for p in (out / "green").iterdir()] == [f"{corrected[1]}.jpg"]
    with Image.open(out / "red" / f"{corrected[0]}.jpg") as image:
        assert image.format == "JPEG" and image.size == (80, 60)
        assert image.getpixel((40, 30))[0] > 180  # the red photo

    rows = read_csv((out / "corrections.csv").read_text(encoding="utf-8"))
    assert [r["label"] for r in rows] == ["red", "green", "AC/DC van"]  # the true label, unmangled
    assert [r["path"] for r in rows] == [f"red/{corrected[0]}.jpg", f"green/{corrected[1]}.jpg",
                                         f"AC_DC van/{corrected[2]}.jpg"]
    assert rows[1]["model_label"] == "red" and rows[1]["corrected_by"] == "alice"

    # The training package's class-folder reader sees one class per label folder and every photo.
    dataset = load_dataset(out, split=[0.5, 0.5])
    assert dataset.class_names == ["AC_DC van", "green", "red"]
    assert sum(len(s) for s in dataset.splits.values()) == 3


def test_export_corrections_with_nothing_reviewed(app, runner, tmp_path):
    result = runner.invoke(args=["export-corrections", str(tmp_path / "empty")])
    assert result.exit_code == 0 and "exported 0 photos" in result.output
    assert (tmp_path / "empty" / "corrections.csv").read_text().startswith("prediction_id,path,label")


def test_folder_names_are_safe():
    from app.admin.export import folder_name

    assert folder_name("Audi A4 2012") == "Audi A4 2012"
    assert folder_name("../etc") == "_.._etc"
    assert folder_name("..") == "_.."
    assert folder_name("a\\b\nc") == "a_b_c"
