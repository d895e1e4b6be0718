"""The OpenAPI document: valid, complete for every ``/api/v1`` route, true to real responses, and its page."""

from __future__ import annotations

import io
import re

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

IGNORED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture
def spec(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.is_json
    return response.get_json()


def openapi_path(rule: str) -> str:
    """Flask's ``/a/<int:x>`` as OpenAPI's ``/a/{x}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def assert_matches(spec: dict, schema_name: str, body) -> None:
    """Validate ``body`` against ``#/components/schemas/<schema_name>`` of ``spec``."""
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}",
                                      "components": spec["components"]})
    errors = [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(body)]
    assert not errors, errors


def test_document_is_valid_openapi(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_every_api_route_and_method_is_described(app, spec):
    """Adding a route under /api/v1 without describing it here fails this test (and the reverse)."""
    routed = {(openapi_path(rule.rule), method.lower())
              for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")
              for method in rule.methods - IGNORED_METHODS}
    described = {(path, method) for path, item in spec["paths"].items() if path.startswith("/api/v1/")
                 for method in item if method in {"get", "post", "put", "patch", "delete"}}
    assert routed == described


def test_every_described_path_outside_the_api_exists(app, spec):
    rules = {openapi_path(rule.rule) for rule in app.url_map.iter_rules()}
    assert set(spec["paths"]) <= rules


def test_real_responses_match_the_schemas(client, spec, make_image):
    created = client.post("/api/v1/predictions", data={"image": (io.BytesIO(make_image("green")), "g.jpg"),
                                                       "top_k": "2"})
    assert created.status_code == 201
    assert_matches(spec, "Prediction", created.get_json())
    assert_matches(spec, "Prediction", client.get(created.headers["Location"]).get_json())
    assert_matches(spec, "Model", client.get("/api/v1/model").get_json())
    answer = {"verdict": "wrong", "label": "red"}
    assert_matches(spec, "FeedbackRequest", answer)
    feedback_url = f"/api/v1/predictions/{created.get_json()['id']}/feedback"
    stored = client.post(feedback_url, json=answer)
    assert stored.status_code == 201
    assert_matches(spec, "Feedback", stored.get_json())
    again = client.post(feedback_url, json={"verdict": "right"})
    assert again.status_code == 409
    assert_matches(spec, "Error", again.get_json())
    rejected = client.post("/api/v1/predictions", data={"image": (io.BytesIO(b"not an image"), "x.jpg")})
    assert rejected.status_code == 415
    assert_matches(spec, "Error", rejected.get_json())
    assert_matches(spec, "Error", client.get("/api/v1/predictions/999999").get_json())
    batch = client.post("/api/v1/predictions:batch", data={"images": [
        (io.BytesIO(make_image("red")), "r.jpg"), (io.BytesIO(b"not an image"), "x.jpg")]})
    assert batch.status_code == 200 and batch.get_json()["failed"] == 1
    assert_matches(spec, "Batch", batch.get_json())
    assert_matches(spec, "Health", client.get("/healthz").get_json())
    assert_matches(spec, "Readiness", client.get("/readyz").get_json())
    assert_matches(spec, "Warmup", client.get("/_ah/warmup").get_json())


def test_schemas_reject_what_the_api_never_sends(spec):
    """The schemas are strict enough to catch a broken body, so the test above can fail."""
    validator = Draft202012Validator({"$ref": "#/components/schemas/Prediction", "components": spec["components"]})
    assert not validator.is_valid({"id": 1, "predictions": [{"label": "red", "score": 2.0}]})
    request = Draft202012Validator({"$ref": "#/components/schemas/FeedbackRequest", "components": spec["components"]})
    assert request.is_valid({"verdict": "not_a_car"})
    assert not request.is_valid({"verdict": "maybe"})
    assert not request.is_valid({"verdict": "right", "extra": 1})


def test_docs_page_renders_every_operation_without_scripts_or_cdn(client, spec):
    response = client.get("/api/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert f'id="{operation["operationId"]}"' in page
            assert f"<code>{path}</code>" in page
    for name in spec["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    assert "<code>MAX_CONTENT_LENGTH</code>" in page and "`" not in page.split("Schemas")[0]
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "inline script"
    assert not re.search(r"(src|href)=\"https?://", page), "resource from another site"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def request_schema(spec: dict, path: str, content_type: str) -> Draft202012Validator:
    body = spec["paths"][path]["post"]["requestBody"]["content"][content_type]["schema"]
    return Draft202012Validator({**body, "components": spec["components"]})


@pytest.mark.parametrize("answer, valid, status", [
    ({"verdict": "wrong", "label": "green"}, True, 201),
    ({"verdict": "wrong", "label": " green "}, True, 201),
    ({"verdict": "right"}, True, 201),
    ({"verdict": "right", "label": None}, True, 201),
    ({"verdict": "wrong", "label": ""}, False, 400),
    ({"verdict": "wrong", "label": "   "}, False, 400),
    ({"verdict": "wrong"}, False, 400),
    ({"verdict": "wrong", "label": None}, False, 400),
    ({"verdict": "right", "label": ""}, False, 400),
    ({"verdict": "not_a_car", "label": "red"}, False, 400),
])
def test_the_feedback_schema_allows_exactly_the_answers_the_app_takes(client, spec, make_image, answer, valid, status):
    created = client.post("/api/v1/predictions", data={"image": (io.BytesIO(make_image("red")), "r.jpg")})
    validator = request_schema(spec, "/api/v1/predictions/{prediction_id}/feedback", "application/json")
    assert validator.is_valid(answer) == valid
    response = client.post(f"/api/v1/predictions/{created.get_json()['id']}/feedback", json=answer)
    assert response.status_code == status, response.get_json()


def test_a_batch_with_an_empty_file_is_a_valid_request_and_gets_200(client, spec, make_image):
    validator = request_schema(spec, "/api/v1/predictions:batch", "multipart/form-data")
    assert validator.is_valid({"images": ["", "not empty"]})
    response = client.post("/api/v1/predictions:batch", data={"images": [
        (io.BytesIO(b""), "empty.jpg"), (io.BytesIO(make_image("red")), "r.jpg")]})
    assert response.status_code == 200
    assert [result["status"] for result in response.get_json()["results"]] == [400, 201]


@pytest.mark.parametrize("path", ["/api/v1/predictions", "/api/v1/predictions:batch"])
def test_top_k_is_one_form_field_in_the_document_and_the_query_string_is_described_in_words(client, spec, path,
                                                                                         make_image):
    """A query parameter and a form field are independent in OpenAPI; the app refuses them disagreeing."""
    operation = spec["paths"][path]["post"]
    assert not [p for p in operation.get("parameters", []) if p["name"] == "top_k"]
    assert "top_k" in operation["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert "query parameter" in operation["description"] and "conflicting_top_k" in operation["description"]
    field = "image" if path.endswith("predictions") else "images"
    response = client.post(f"{path}?top_k=2", data={field: (io.BytesIO(make_image("red")), "r.jpg")})
    assert response.status_code in (200, 201)
