"""Verdicts: "ok", "not sure" below the model's confidence threshold, "not a car" from the gate."""

from __future__ import annotations

import pytest

from inference.gate import confidence_threshold, decide
from trust_support import dispose, make_app, post_image, with_confidence

TOP = [{"label": "a", "score": 0.6}, {"label": "b", "score": 0.3}]


@pytest.mark.parametrize("threshold, vehicle_score, vehicle_threshold, expected", [
    (0.5, 0.9, 0.3, "ok"),
    (0.6, 0.9, 0.3, "ok"),            # a score equal to the threshold is kept
    (0.7, 0.9, 0.3, "uncertain"),
    (0.7, 0.1, 0.3, "not_a_car"),     # the gate wins over the confidence check
    (0.5, 0.1, 0.3, "not_a_car"),
    (None, 0.9, 0.3, "ok"),           # no threshold: never uncertain
    (0.7, None, None, "uncertain"),   # no gate: never not_a_car
    (None, None, None, "ok"),
])
def test_decide(threshold, vehicle_score, vehicle_threshold, expected):
    assert decide(TOP, threshold=threshold, vehicle_score=vehicle_score,
                  vehicle_threshold=vehicle_threshold) == expected


@pytest.mark.parametrize("metadata, expected", [
    ({"confidence": {"threshold": 0.42}}, 0.42),
    ({"confidence": {"threshold": 1}}, 1.0),
    ({"confidence": {"threshold": None}}, None),    # no cut reached the target precision
    ({"confidence": {"threshold": True}}, None),
    ({"confidence": {"threshold": "0.4"}}, None),
    ({"confidence": None}, None),
    ({}, None),
])
def test_confidence_threshold_from_metadata(metadata, expected):
    assert confidence_threshold(metadata) == expected


@pytest.fixture
def thresholded_app(color_artifact, tmp_path, database_url):
    """The colours model with a 0.9 confidence threshold and no vehicle gate."""
    model = with_confidence(color_artifact, tmp_path / "colors-thresholded", 0.9)
    application = make_app(model, database_url, VEHICLE_GATE_DIR="none")
    yield application
    dispose(application)


def test_a_clear_answer_is_ok_and_a_mixed_colour_is_uncertain(thresholded_app, make_image):
    client = thresholded_app.test_client()
    clear = post_image(client, make_image("red"))
    assert clear.status_code == 201
    assert clear.json["predictions"][0]["score"] > 0.9
    assert clear.json["verdict"] == "ok" and clear.json["vehicle_score"] is None

    # Reddish grey: red wins, but only with about 60 %.
    mixed = post_image(client, make_image((128, 100, 100)))
    assert mixed.json["predictions"][0]["label"] == "red"
    assert mixed.json["predictions"][0]["score"] < 0.9
    assert mixed.json["verdict"] == "uncertain"
    assert client.get(f"/api/v1/predictions/{mixed.json['id']}").json["verdict"] == "uncertain"

    page = client.get(f"/predictions/{mixed.json['id']}").get_data(as_text=True)
    assert 'data-verdict="uncertain"' in page and "Not sure" in page and "Best guesses" in page
    page = client.get(f"/predictions/{clear.json['id']}").get_data(as_text=True)
    assert 'data-verdict="ok"' in page and "Not sure" not in page


def test_without_a_threshold_nothing_is_uncertain(color_artifact, tmp_path, make_image, database_url):
    model = with_confidence(color_artifact, tmp_path / "colors-plain", None)
    application = make_app(model, database_url, VEHICLE_GATE_DIR="none")
    try:
        response = post_image(application.test_client(), make_image((128, 100, 100)))
        assert response.json["predictions"][0]["score"] < 0.9
        assert response.json["verdict"] == "ok"
    finally:
        dispose(application)


def test_the_verdict_is_stored_with_the_prediction(thresholded_app, make_image):
    from app.extensions import db
    from app.models import Prediction

    client = thresholded_app.test_client()
    ids = [post_image(client, make_image(color)).json["id"] for color in ("red", (128, 100, 100))]
    with thresholded_app.app_context():
        verdicts = [db.session.scalar(db.select(Prediction).filter_by(public_id=i)).verdict for i in ids]
        uncertain = db.session.execute(db.select(Prediction.public_id).filter_by(verdict="uncertain")).scalars().all()
    assert verdicts == ["ok", "uncertain"]
    assert uncertain == [ids[1]]


def test_admin_review_filters_on_the_verdict(thresholded_app, make_image):
    from admin_support import create_admin, login

    client = thresholded_app.test_client()
    public_ids = {verdict: post_image(client, make_image(color)).json["id"]
                  for verdict, color in (("ok", "red"), ("uncertain", (128, 100, 100)))}
    from app.extensions import db
    from app.models import Prediction

    with thresholded_app.app_context():  # the admin table lists row ids
        ids = {verdict: db.session.scalar(db.select(Prediction.id).filter_by(public_id=public_id))
               for verdict, public_id in public_ids.items()}
    create_admin(thresholded_app)
    assert login(client).status_code == 302

    def listed(**query) -> set[int]:
        import re

        page = client.get("/admin/", query_string=query).get_data(as_text=True)
        return {int(i) for i in re.findall(r'<tr data-id="(\d+)"', page)}

    assert listed() == set(ids.values())
    assert listed(verdict="uncertain") == {ids["uncertain"]}
    assert listed(verdict="ok") == {ids["ok"]}
    assert listed(verdict="not_a_car") == set()
    assert listed(verdict="bogus") == set(ids.values())  # an unknown value is ignored, as other filters do
    page = client.get("/admin/", query_string={"verdict": "uncertain"}).get_data(as_text=True)
    assert '<option value="uncertain" selected>' in page and 'class="badge text-bg-light verdict">uncertain<' in page
