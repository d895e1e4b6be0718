"""Serve the OpenAPI document as JSON and as a page rendered on the server (no scripts, no CDN)."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import jsonify, render_template, request
from markupsafe import Markup, escape

from . import bp
from .examples import EXAMPLES
from .spec import build_spec

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
CODE_SPAN = re.compile(r"`([^`]+)`")


@bp.get("/api/v1/openapi.json")
def openapi_json():
    """The OpenAPI 3.1 document."""
    return jsonify(build_spec())


@bp.get("/api/docs")
def docs():
    """The same document for people: operations, parameters, responses and schemas."""
    spec = build_spec()
    base = request.host_url.rstrip("/")
    examples = {name: {"request": example["request"].replace("{base}", base), "response": example["response"]}
                for name, example in EXAMPLES.items()}
    return render_template("apidocs/index.html", info=spec["info"], operations=list(operations(spec)),
                           examples=examples,
                           schemas={name: json.dumps(schema, indent=2)
                                    for name, schema in spec["components"]["schemas"].items()})


def operations(spec: dict[str, Any]):
    """Yield one dict per operation, in document order, with the bits the page shows.

    Args:
        spec: An OpenAPI document.

    Yields:
        ``{"method", "path", "anchor", "summary", "description", "parameters", "body", "responses"}``.
    """
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            body = operation.get("requestBody", {}).get("content", {})
            yield {
                "method": method.upper(),
                "path": path,
                "anchor": operation.get("operationId", f"{method}-{path}"),
                "summary": operation.get("summary", ""),
                "description": operation.get("description", ""),
                "parameters": operation.get("parameters", []),
                "body": [(content_type, resolved(spec, media.get("schema", {}))) for content_type, media in body.items()],
                "responses": [(status, response.get("description", ""), schema_name(response))
                              for status, response in operation["responses"].items()],
            }


def resolved(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` itself, or the component it refers to (``#/components/schemas/<name>``)."""
    reference = schema.get("$ref", "")
    if reference.startswith("#/components/schemas/"):
        return spec["components"]["schemas"][reference.rsplit("/", 1)[-1]]
    return schema


def schema_name(response: dict[str, Any]) -> str | None:
    """The component name a response body refers to, or its media type when it has no reference."""
    for content_type, media in response.get("content", {}).items():
        reference = media.get("schema", {}).get("$ref", "")
        return reference.rsplit("/", 1)[-1] if reference else content_type
    return None


@bp.app_template_filter("inline_code")
def inline_code(text: str | None) -> Markup:
    """Escape ``text`` and show its `backtick` spans (CommonMark, as OpenAPI descriptions use) as code."""
    return Markup(CODE_SPAN.sub(r"<code>\1</code>", str(escape(text or ""))))
