"""The API page people read: linked from every page, an example and a sample response first, schemas folded.

The examples themselves are run against a live server in ``tests/deploy/test_manual_examples.py``.
"""

from __future__ import annotations

import re

from app.apidocs.examples import EXAMPLES
from app.apidocs.spec import build_spec


def operation_ids() -> set[str]:
    return {operation["operationId"] for item in build_spec()["paths"].values() for operation in item.values()}


def test_every_operation_has_an_example_and_nothing_else_does():
    assert set(EXAMPLES) == operation_ids()
    for name, example in EXAMPLES.items():
        assert example["request"].startswith("curl ") and "{base}/" in example["request"], name
        assert re.match(r"\d{3} ", example["response"]), name


def test_each_operation_shows_its_example_before_its_reference_and_the_schemas_are_folded(client):
    page = client.get("/api/docs", base_url="http://cars.example:8000").get_data(as_text=True)
    sections = re.findall(r'<section class="card mb-3 operation" id="(\w+)">(.*?)</section>', page, re.S)
    assert {name for name, _ in sections} == operation_ids()
    for name, section in sections:
        assert section.index("example-request") < section.index("example-response") < \
            section.index('<details class="mb-0 reference">'), name
        assert "curl -s" in section and "http://cars.example:8000/" in section, name
    schemas = re.findall(r'<details class="mb-2 schema" id="schema-(\w+)">', page)
    assert "Prediction" in schemas and "Headline" in schemas
    assert "<pre" not in page.split('<h2 class="h4 mt-5">Schemas</h2>')[1].split("<details")[0]


def test_every_page_links_the_api_docs_in_the_navbar_and_the_footer(client):
    for path in ("/", "/model/", "/admin/login", "/api/docs"):
        page = client.get(path).get_data(as_text=True)
        assert re.search(r'<a [^>]*href="/api/docs" id="api-docs-link">API</a>', page), path
        assert re.search(r'<a [^>]*href="/api/docs" id="footer-api-docs">', page), path
