"""Visitors' answers to "Was this right?": the page's forms, the API, one answer per visitor, hashed addresses,
the per-address limit, and that an answer never changes its prediction."""

from __future__ import annotations

import hashlib
import hmac
import io
import re

import pytest

from trust_support import dispose, make_app

TOKEN = re.compile(r'name="csrf_token"[^>]* value="([^"]+)"')


def classify(client, make_image, color: str = "red") -> str:
    """One API upload; returns the prediction's public id."""
    response = client.post("/api/v1/predictions", data={"image": (io.BytesIO(make_image(color)), f"{color}.jpg")})
    assert response.status_code == 201
    return response.get_json()["id"]


def result_page(client, prediction_id: str) -> str:
    response = client.get(f"/predictions/{prediction_id}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def answer_on_page(client, prediction_id: str, **form):
    """Post the result page's feedback form with the page's own CSRF token."""
    token = TOKEN.search(result_page(client, prediction_id)).group(1)
    return client.post(f"/predictions/{prediction_id}/feedback", data={"csrf_token": token, **form})


def stored(app) -> list[tuple]:
    from app.extensions import db
    from app.models import Feedback

    with app.app_context():
        rows = db.session.scalars(db.select(Feedback).order_by(Feedback.id)).all()
        # The prediction by its public id, the one the API and the page give the visitor.
        return [(f.prediction.public_id, f.verdict, f.label, f.client_hash, f.client_key) for f in rows]


def test_a_not_a_car_page_asks_is_this_a_car_with_the_models_labels(client, make_image):
    """A plain red photo is no car to the vehicle check: "Was this right?" would have no clear meaning."""
    page = result_page(client, classify(client, make_image))
    assert 'data-kind="not_a_car"' in page
    assert "Is this a car?" in page and "Was this right?" not in page
    assert re.findall(r'<datalist id="feedback-labels">(.*?)</datalist>', page) == [
        '<option value="red"><option value="green"><option value="blue">']
    for button in ("feedback-no-car", "feedback-is-car", "feedback-wrong", "feedback-unknown"):
        assert f'id="{button}"' in page


def test_a_car_page_asks_was_this_right(color_artifact, database_url, make_image):
    """Without the vehicle check every photo is a car, and its answer is what the question is about."""
    application = make_app(color_artifact, database_url, VEHICLE_GATE_DIR="none")
    try:
        client = application.test_client()
        page = result_page(client, classify(client, make_image))
    finally:
        dispose(application)
    assert "Was this right?" in page and "Is this a car?" not in page
    for button in ("feedback-yes", "feedback-no", "feedback-wrong", "feedback-not-a-car", "feedback-unknown"):
        assert f'id="{button}"' in page


def test_yes_is_stored_and_the_page_thanks_instead_of_asking_again(app, client, make_image):
    prediction_id = classify(client, make_image)
    response = answer_on_page(client, prediction_id, verdict="right")
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/predictions/{prediction_id}#feedback")
    page = result_page(client, prediction_id)
    assert 'id="feedback-thanks" data-verdict="right"' in page and 'id="feedback-question"' not in page
    assert [row[:3] for row in stored(app)] == [(prediction_id, "right", None)]


def test_no_with_a_label_from_the_type_ahead(app, client, make_image):
    prediction_id = classify(client, make_image, "red")
    assert answer_on_page(client, prediction_id, verdict="wrong", label="blue").status_code == 303
    assert "it is a <strong>blue</strong>" in result_page(client, prediction_id)
    assert [row[:3] for row in stored(app)] == [(prediction_id, "wrong", "blue")]


@pytest.mark.parametrize("verdict", ["not_a_car", "unknown"])
def test_not_a_car_and_i_dont_know_ignore_a_half_typed_label(app, client, make_image, verdict):
    prediction_id = classify(client, make_image)
    assert answer_on_page(client, prediction_id, verdict=verdict, label="gre").status_code == 303
    assert [row[:3] for row in stored(app)] == [(prediction_id, verdict, None)]


@pytest.mark.parametrize("form, message", [
    ({"verdict": "wrong", "label": ""}, "needs a label"),
    ({"verdict": "wrong", "label": "purple"}, "not one of the model&#39;s labels"),
    ({"verdict": "maybe"}, "verdict must be one of"),
    ({}, "verdict must be one of"),
])
def test_page_answers_that_make_no_sense_get_400_and_the_form_again(app, client, make_image, form, message):
    prediction_id = classify(client, make_image)
    response = answer_on_page(client, prediction_id, **form)
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and message in page and 'id="feedback-error"' in page
    assert 'id="feedback-question"' in page and stored(app) == []


def test_page_answers_need_the_csrf_token(app, client, make_image):
    prediction_id = classify(client, make_image)
    response = client.post(f"/predictions/{prediction_id}/feedback", data={"verdict": "right"})
    assert response.status_code == 400 and "expired" in response.get_data(as_text=True)
    assert stored(app) == []


def test_one_answer_per_prediction_per_browser_session(app, make_image):
    visitor = app.test_client()
    prediction_id = classify(visitor, make_image)
    assert answer_on_page(visitor, prediction_id, verdict="right").status_code == 303
    # The form is gone; a replayed post is refused with 409 and the answer stays as it was.
    assert 'id="feedback-question"' not in result_page(visitor, prediction_id)
    token = TOKEN.search(visitor.get("/").get_data(as_text=True)).group(1)
    replay = visitor.post(f"/predictions/{prediction_id}/feedback",
                          data={"csrf_token": token, "verdict": "wrong", "label": "blue"})
    assert replay.status_code == 409 and "already answered" in replay.get_data(as_text=True)
    # Another browser session from another address (another visitor) may answer the same prediction once too.
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "198.51.100.23"
    assert answer_on_page(other, prediction_id, verdict="wrong", label="blue").status_code == 303
    rows = stored(app)
    assert [row[1:3] for row in rows] == [("right", None), ("wrong", "blue")]
    assert rows[0][4] != rows[1][4]  # two visitors, two keys
    # A second prediction is a new question for the first visitor.
    second = classify(visitor, make_image, "green")
    assert answer_on_page(visitor, second, verdict="right").status_code == 303


def test_dropping_the_cookie_buys_no_second_answer_on_the_page_or_the_api(app, make_image):
    """Eight cookie-less answers from one address to one prediction: one is stored, seven get 409."""
    uploader = app.test_client()
    prediction_id = classify(uploader, make_image)
    statuses = []
    for attempt in range(8):
        fresh = app.test_client()  # no cookie: a new browser session each time
        fresh.environ_base["REMOTE_ADDR"] = "203.0.113.50"
        if attempt % 2:
            statuses.append(fresh.post(f"/api/v1/predictions/{prediction_id}/feedback",
                                       json={"verdict": "wrong", "label": "blue"}).status_code)
        else:
            statuses.append(answer_on_page(fresh, prediction_id, verdict="wrong", label="blue").status_code)
    assert statuses == [303] + [409] * 7
    assert [row[1:3] for row in stored(app)] == [("wrong", "blue")]
    # Once the window has passed, the address may answer again (a new visitor behind the same address).
    from app import feedback
    from app.extensions import db
    from app.models import Feedback

    with app.app_context():
        db.session.execute(db.update(Feedback).values(
            created_at=Feedback.created_at - feedback.ADDRESS_WINDOW - feedback.dt.timedelta(minutes=1)))
        db.session.commit()
    later = app.test_client()
    later.environ_base["REMOTE_ADDR"] = "203.0.113.50"
    assert answer_on_page(later, prediction_id, verdict="right").status_code == 303


def test_the_client_address_is_stored_only_as_a_keyed_hash(app, client, make_image):
    prediction_id = classify(client, make_image)
    response = client.post(f"/api/v1/predictions/{prediction_id}/feedback", json={"verdict": "right"},
                           environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert response.status_code == 201
    (_, _, _, client_hash, client_key), = stored(app)
    expected = hmac.new(b"test-secret", b"address:203.0.113.7", hashlib.sha256).hexdigest()
    assert client_hash == client_key == expected
    assert client_hash != hashlib.sha256(b"203.0.113.7").hexdigest()  # keyed: not recomputable without the secret
    from app.extensions import db

    from sqlalchemy import text

    with app.app_context():
        every_value = repr(db.session.execute(text("SELECT * FROM feedback")).all())
    assert "203.0.113.7" not in every_value


def test_api_answer_201_with_the_stored_feedback(client, make_image):
    prediction_id = classify(client, make_image, "red")
    response = client.post(f"/api/v1/predictions/{prediction_id}/feedback", json={"verdict": "wrong", "label": "green"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "prediction_id", "verdict", "label", "created_at"}
    assert (body["prediction_id"], body["verdict"], body["label"]) == (prediction_id, "wrong", "green")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["created_at"])


def test_api_second_answer_from_the_same_address_is_409(app, client, make_image):
    prediction_id = classify(client, make_image)
    url = f"/api/v1/predictions/{prediction_id}/feedback"
    assert client.post(url, json={"verdict": "right"}).status_code == 201
    again = client.post(url, json={"verdict": "not_a_car"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_answered"
    elsewhere = client.post(url, json={"verdict": "not_a_car"}, environ_base={"REMOTE_ADDR": "198.51.100.4"})
    assert elsewhere.status_code == 201
    assert [row[1] for row in stored(app)] == ["right", "not_a_car"]


@pytest.mark.parametrize("body, code", [
    ({"verdict": "wrong"}, "missing_label"),
    ({"verdict": "wrong", "label": "purple"}, "unknown_label"),
    ({"verdict": "wrong", "label": 3}, "missing_label"),
    ({"verdict": "right", "label": "red"}, "unexpected_label"),
    ({"verdict": "not_a_car", "label": "red"}, "unexpected_label"),
    ({"verdict": "RIGHT"}, "invalid_verdict"),
    ({"verdict": None}, "invalid_verdict"),
    ({}, "invalid_verdict"),
    ({"verdict": "right", "prediction_id": 1}, "invalid_feedback"),
    (["right"], "invalid_feedback"),
    ("right", "invalid_feedback"),
])
def test_api_malformed_answers_get_400(app, client, make_image, body, code):
    prediction_id = classify(client, make_image)
    response = client.post(f"/api/v1/predictions/{prediction_id}/feedback", json=body)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code
    assert stored(app) == []


@pytest.mark.parametrize("body", ["[" * 1000 + "]" * 1000, '{"verdict": ' * 5000 + '"right"' + "}" * 5000,
                                  "[" * 100_000, b"\xff\xfe{", "NaN]"],
                         ids=["nested 1000", "nested objects 5000", "unclosed 100000", "not utf-8", "junk"])
def test_api_any_malformed_json_body_is_400_without_an_error_logged(app, client, make_image, caplog, body):
    prediction_id = classify(client, make_image)
    with caplog.at_level("ERROR"):
        response = client.post(f"/api/v1/predictions/{prediction_id}/feedback", data=body,
                               content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_feedback"
    assert not [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")]
    assert stored(app) == []


def test_api_body_that_is_not_json_gets_400_and_unknown_prediction_404(client, make_image):
    prediction_id = classify(client, make_image)
    not_json = client.post(f"/api/v1/predictions/{prediction_id}/feedback", data="verdict=right",
                           content_type="application/x-www-form-urlencoded")
    assert not_json.status_code == 400 and not_json.get_json()["error"]["code"] == "invalid_feedback"
    broken = client.post(f"/api/v1/predictions/{prediction_id}/feedback", data="{", content_type="application/json")
    assert broken.status_code == 400
    missing = client.post("/api/v1/predictions/999999/feedback", json={"verdict": "right"})
    assert missing.status_code == 404 and missing.is_json


def test_answers_never_change_the_prediction(app, client, make_image):
    prediction_id = classify(client, make_image, "red")
    before = client.get(f"/api/v1/predictions/{prediction_id}").get_json()
    for number in range(5):
        client.post(f"/api/v1/predictions/{prediction_id}/feedback", json={"verdict": "wrong", "label": "blue"},
                    environ_base={"REMOTE_ADDR": f"192.0.2.{number}"})
    answer_on_page(client, prediction_id, verdict="not_a_car")
    assert client.get(f"/api/v1/predictions/{prediction_id}").get_json() == before
    from app.extensions import db
    from app.models import Correction

    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Correction.id))) == 0
    assert len(stored(app)) == 6


def test_a_flood_of_answers_gets_429_page_and_api_together(color_artifact, tmp_path, make_image):
    application = make_app(color_artifact, f"sqlite:///{tmp_path / 'flood.db'}", RATELIMIT_ENABLED=True,
                           RATELIMIT_FEEDBACK="3 per minute", RATELIMIT_UPLOAD="6 per minute")
    client = application.test_client()
    ids = [classify(client, make_image) for _ in range(5)]
    statuses = [client.post(f"/api/v1/predictions/{ids[0]}/feedback", json={"verdict": "right"}).status_code,
                client.post(f"/api/v1/predictions/{ids[1]}/feedback", json={"verdict": "right"}).status_code,
                answer_on_page(client, ids[2], verdict="right").status_code]
    assert statuses == [201, 201, 303]
    refused = client.post(f"/api/v1/predictions/{ids[3]}/feedback", json={"verdict": "right"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    page = answer_on_page(client, ids[4], verdict="right")
    assert page.status_code == 429 and "Too many requests" in page.get_data(as_text=True)
    # Another address still may answer, and the flood cost no uploads: classifying still works.
    assert client.post(f"/api/v1/predictions/{ids[3]}/feedback", json={"verdict": "right"},
                       environ_base={"REMOTE_ADDR": "198.51.100.9"}).status_code == 201
    assert classify(client, make_image)
    assert len(stored(application)) == 4
    dispose(application)


def test_api_answers_are_also_under_the_api_limit(color_artifact, tmp_path, make_image):
    application = make_app(color_artifact, f"sqlite:///{tmp_path / 'api.db'}", RATELIMIT_ENABLED=True,
                           RATELIMIT_API="2 per minute", RATELIMIT_FEEDBACK="100 per minute")
    client = application.test_client()
    ids = [classify(client, make_image) for _ in range(2)]
    urls = [f"/api/v1/predictions/{i}/feedback" for i in (*ids, ids[0])]
    statuses = [client.post(url, json={"verdict": "right"}, environ_base={"REMOTE_ADDR": "192.0.2.50"}).status_code
                for url in urls]
    assert statuses == [201, 201, 429]
    dispose(application)
