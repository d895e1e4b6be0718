"""The OpenAPI 3.1 description of the JSON API and the probes.

Written by hand next to the routes it describes; a test checks that every ``/api/v1`` route of the URL
map appears here with its methods, that the document is valid OpenAPI, and that real responses match
the schemas.
"""

from __future__ import annotations

import copy
from typing import Any

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
# What app.routing.PublicIdConverter matches (issued ids are 22 characters).
PUBLIC_ID_PATTERN = "^[A-Za-z0-9_-]{16,64}$"


def ref(schema: str) -> dict[str, str]:
    """A reference to ``#/components/schemas/<schema>``."""
    return {"$ref": f"#/components/schemas/{schema}"}


def json_response(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON response whose body is the named component schema."""
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": ref(schema)}}}
    if headers:
        response["headers"] = headers
    return response


def error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    """An error response (body ``Error``), optionally with ``Retry-After``."""
    headers = {"Retry-After": {"description": "Seconds to wait before retrying.",
                               "schema": {"type": "integer", "minimum": 0}}} if retry_after else None
    return json_response(description, "Error", headers)


SCHEMAS: dict[str, Any] = {
    "Answer": {
        "type": "object",
        "required": ["label", "score"],
        "properties": {
            "label": {"type": "string", "description": "Class name from the model's labels."},
            "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "Probability."},
        },
    },
    "Headline": {
        "type": "object",
        "required": ["kind", "text", "doubt", "level", "label", "score"],
        "description": "What to show first, in the words the result page uses. The top-k under it is detail.",
        "properties": {
            "kind": {"type": "string", "enum": ["not_a_car", "answer", "unsure", "top_label"],
                     "description": "`not_a_car`: the vehicle check found no car (say so before any car "
                                    "guess); `answer`: an answer at `level`; `unsure`: no level clears its "
                                    "threshold; `top_label`: stored before answers existed, only the top-1 "
                                    "label is known."},
            "text": {"type": "string", "description": "e.g. `Audi 100 Wagon 1994`, `A BMW`, `A premium car`, "
                                                      "`This does not look like a car`, `Not sure`."},
            "doubt": {"type": "string", "description": "What the model could not tell, e.g. `the model is not "
                                                       "sure which one`; empty for a class-level answer."},
            "level": {"type": ["string", "null"], "description": "The answer's level, as in `answer`."},
            "label": {"type": ["string", "null"]},
            "score": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        },
    },
    "Prediction": {
        "type": "object",
        "required": ["id", "headline", "created_at", "model", "predictions", "image", "latency_ms", "groups",
                     "answer"],
        "properties": {
            "headline": ref("Headline"),
            "id": {"type": "string", "pattern": PUBLIC_ID_PATTERN,
                   "description": "The prediction's public id: 128 random bits, URL-safe. Whoever has it "
                                  "can read the prediction; no one can guess another."},
            "created_at": {"type": "string", "format": "date-time", "description": "UTC, milliseconds."},
            "model": {
                "type": "object",
                "required": ["name", "version"],
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            },
            "predictions": {"type": "array", "items": ref("Answer"), "minItems": 1, "maxItems": 20,
                            "description": "Best first."},
            "image": {
                "type": "object",
                "required": ["width", "height", "sha256"],
                "properties": {
                    "width": {"type": "integer", "minimum": 1},
                    "height": {"type": "integer", "minimum": 1},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                               "description": "Of the uploaded bytes."},
                },
            },
            "latency_ms": {"type": "number", "minimum": 0,
                           "description": "Decoding and inference time on the server."},
            "verdict": {"type": ["string", "null"], "enum": ["ok", "uncertain", "not_a_car", None],
                        "description": "`not_a_car`: the vehicle gate saw no vehicle; `uncertain`: the top "
                                       "score is below the model's confidence threshold; null for "
                                       "predictions stored before verdicts existed."},
            "vehicle_score": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                              "description": "The vehicle gate's probability of a vehicle; null without a gate."},
            "groups": {"type": "object", "additionalProperties": {"type": "array", "items": ref("GroupScore"),
                                                                  "minItems": 1, "maxItems": 3},
                       "description": "Per label grouping of the model (e.g. `make`, `segment`), its best group "
                                      "labels (all of them when there are no more than 3), best first; a group's "
                                      "score is the sum of its classes' probabilities. `{}` for a model without "
                                      "groupings and for predictions stored before groups existed."},
            "answer": {"oneOf": [ref("LevelAnswer"), {"type": "null"}],
                       "description": "The most specific level whose score clears that level's confidence "
                                      "threshold: `class`, then the groupings from the most to the least "
                                      "specific. Null when the verdict is `not_a_car`, when no level is sure, "
                                      "and for predictions stored before answers existed."},
        },
    },
    "GroupScore": {
        "type": "object",
        "required": ["label", "score"],
        "properties": {
            "label": {"type": "string", "description": "Group label, e.g. `Audi` or `premium`."},
            "score": {"type": "number", "minimum": 0, "maximum": 1.000001,
                      "description": "Summed probability of the group's classes."},
        },
    },
    "LevelAnswer": {
        "type": "object",
        "required": ["level", "label", "score"],
        "properties": {
            "level": {"type": "string", "description": "`class` (the model's own labels) or a grouping name; "
                                                       "for a taught label, `class` or `make`."},
            "label": {"type": "string"},
            "score": {"type": "number", "minimum": -1, "maximum": 1.000001,
                      "description": "The level's probability; for a taught label, the cosine similarity of "
                                     "the photo to its nearest taught example."},
            "source": {"type": "string", "enum": ["model", "gallery"],
                       "description": "`model`, or `gallery` when a label taught by example (admin \"Teach a "
                                      "car\") answered because it was surer than the model."},
            "learned_from": {"type": ["integer", "null"],
                             "description": "With `source: gallery`: how many photos taught that label."},
        },
    },
    "FeedbackRequest": {
        "type": "object",
        "required": ["verdict"],
        "additionalProperties": False,
        "properties": {
            "verdict": {"type": "string", "enum": ["right", "wrong", "not_a_car", "unknown"],
                        "description": "`right`: the top answer is the car; `wrong`: it is the car named in "
                                       "`label`; `not_a_car`: the photo shows no car; `unknown`: the answer "
                                       "is wrong but the true car is not known."},
            "label": {"type": ["string", "null"], "maxLength": 255,
                      "description": "Only with `wrong`, and then required: one of the model's labels "
                                     "(`GET /api/v1/model`). With another verdict leave it out (or null)."},
        },
        # The app's rule, in the schema: `wrong` needs a label that is not blank; the others take none.
        "if": {"properties": {"verdict": {"const": "wrong"}}, "required": ["verdict"]},
        "then": {"required": ["label"], "properties": {"label": {"type": "string", "pattern": "\\S"}}},
        "else": {"properties": {"label": {"type": "null"}}},
    },
    "Feedback": {
        "type": "object",
        "required": ["id", "prediction_id", "verdict", "label", "created_at"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "prediction_id": {"type": "string", "pattern": PUBLIC_ID_PATTERN,
                              "description": "The public id of the prediction the answer is about."},
            "verdict": {"type": "string", "enum": ["right", "wrong", "not_a_car", "unknown"]},
            "label": {"type": ["string", "null"], "description": "The suggested label; null unless `wrong`."},
            "created_at": {"type": "string", "format": "date-time", "description": "UTC, milliseconds."},
        },
    },
    "BatchResult": {
        "type": "object",
        "required": ["index", "filename", "status"],
        "properties": {
            "index": {"type": "integer", "minimum": 0, "description": "Position of the file in the request."},
            "filename": {"type": ["string", "null"]},
            "status": {"type": "integer", "description": "201, or the status the single-photo call would give."},
            "prediction": ref("Prediction"),
            "error": {"$ref": "#/components/schemas/Error/properties/error"},
        },
    },
    "Batch": {
        "type": "object",
        "required": ["results", "succeeded", "failed"],
        "properties": {
            "results": {"type": "array", "items": ref("BatchResult"), "description": "In the order sent."},
            "succeeded": {"type": "integer", "minimum": 0},
            "failed": {"type": "integer", "minimum": 0},
        },
    },
    "Model": {
        "type": "object",
        "required": ["name", "version", "runtime", "metadata", "labels"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "runtime": {"type": "string", "enum": ["litert", "keras"]},
            "variant": {"type": ["string", "null"], "enum": ["float32", "float16", "int8", "int8-full", None],
                        "description": "The LiteRT copy served (`MODEL_VARIANT`); null with the Keras runtime."},
            "metadata": {"type": "object", "description": "The publishable part of the artifact's metadata.json: "
                                                        "what the model is and its measured quality (metrics, "
                                                        "confidence, groups, dataset counts); no training "
                                                        "configuration and no file-system path."},
            "labels": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "code", "message"],
                "properties": {
                    "status": {"type": "integer", "description": "Same as the HTTP status."},
                    "code": {"type": "string", "description": "Stable machine-readable reason, "
                                                            "e.g. `unsupported_media_type`."},
                    "message": {"type": "string", "description": "Plain-language explanation."},
                },
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "const": "ok"}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"},
                       "description": "`model` and `database`: true when working."},
        },
    },
    "Warmup": {
        "type": "object",
        "required": ["status", "model", "version"],
        "properties": {"status": {"type": "string", "const": "warm"}, "model": {"type": "string"},
                       "version": {"type": "string"},
                       "warmup_ms": {"type": ["number", "null"], "minimum": 0,
                                     "description": "How long the warm-up inference took when the model "
                                                    "was loaded (it is not run again here)."}},
    },
}

TOP_K_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 20}
# Both upload routes also take ``top_k`` from the query string, but a query parameter and a form field
# are independent in OpenAPI, while the app refuses the two with different values: the document gives
# the form field and says the rest in words, so that every request it allows is one the app takes.
TOP_K_QUERY_NOTE = (" `top_k` may be given as a query parameter instead of the form field; sent in both with "
                    "different values it is a 400 (`conflicting_top_k`).")


def multipart_body(field: str, field_schema: dict[str, Any]) -> dict[str, Any]:
    """A required multipart body with the file field ``field`` and an optional ``top_k`` field."""
    return {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": [field],
            "properties": {
                field: field_schema,
                "top_k": {**TOP_K_SCHEMA, "description": "Answers per photo (default `TOP_K`)."},
            },
        }}},
    }


# An empty file is refused (400), so the schema says a file has at least one byte.
FILE = {"type": "string", "contentMediaType": "application/octet-stream", "minLength": 1}
# In a batch an empty file is one more bad file: it gets its own 400 in ``results`` and the batch a 200.
BATCH_FILE = {"type": "string", "contentMediaType": "application/octet-stream"}
PREDICTION_ID = {"name": "prediction_id", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": PUBLIC_ID_PATTERN},
                 "description": "The `id` from the prediction's body (its public id)."}
TOO_MANY = error("Too many requests from this address; wait `Retry-After` seconds.", retry_after=True)
DATABASE_DOWN = error("The database is busy or unavailable; nothing was saved. Retry later.", retry_after=True)

PATHS: dict[str, Any] = {
    "/api/v1/predictions": {
        "post": {
            "operationId": "createPrediction",
            "tags": ["predictions"],
            "summary": "Classify a photo",
            "description": "Upload one image (JPEG, PNG, WebP, GIF, HEIC/HEIF or AVIF; of an animation "
                           "or image sequence the first image). The content decides the format, not "
                           "the file name. The prediction is stored and returned." + TOP_K_QUERY_NOTE,
            "requestBody": multipart_body("image", {**FILE, "description": "The photo."}),
            "responses": {
                "201": json_response("Classified and stored.", "Prediction", {
                    "Location": {"description": "The prediction's URL.", "schema": {"type": "string"}}}),
                "400": error("No file, an empty file, or `top_k` outside 1..20 or different in the "
                             "query and the form."),
                "413": error("Body over `MAX_CONTENT_LENGTH`, image over `MAX_IMAGE_PIXELS` (`MAX_WEBP_PIXELS` "
                             "for WebP), or a file of more than 1,000 images or frames."),
                "415": error("Not an image, or not JPEG, PNG, WebP, GIF, HEIC/HEIF or AVIF."),
                "422": error("Truncated or corrupt image."),
                "429": TOO_MANY,
                "503": DATABASE_DOWN,
            },
        },
    },
    "/api/v1/predictions:batch": {
        "post": {
            "operationId": "createPredictionBatch",
            "tags": ["predictions"],
            "summary": "Classify several photos in one request",
            "description": "Repeated multipart fields `images` (at most 32; the same formats as "
                           "`createPrediction`). Each file is classified and stored on its own; one bad "
                           "file never fails the others (an empty or unreadable one gets its own status "
                           "in `results`)." + TOP_K_QUERY_NOTE,
            "requestBody": multipart_body("images", {"type": "array", "minItems": 1, "maxItems": 32,
                                                     "items": BATCH_FILE, "description": "The photos."}),
            "responses": {
                "200": json_response("One result per file, in order.", "Batch"),
                "400": error("No file, more than 32 files, or `top_k` outside 1..20 or different in the query "
                             "and the form."),
                "413": error("Body over `MAX_CONTENT_LENGTH`."),
                "429": TOO_MANY,
                "503": DATABASE_DOWN,
            },
        },
    },
    "/api/v1/predictions/{prediction_id}": {
        "get": {
            "operationId": "getPrediction",
            "tags": ["predictions"],
            "summary": "Read a stored prediction",
            "parameters": [PREDICTION_ID],
            "responses": {
                "200": json_response("The prediction, same body as on creation.", "Prediction"),
                "404": error("No prediction with this id."),
                "429": TOO_MANY,
                "503": DATABASE_DOWN,
            },
        },
    },
    "/api/v1/predictions/{prediction_id}/feedback": {
        "post": {
            "operationId": "createFeedback",
            "tags": ["predictions"],
            "summary": "Say whether a prediction was right",
            "description": "Stores the client's answer apart from the prediction, which never changes; admins "
                           "see it as a suggestion. One answer per prediction and client address. Limited "
                           "per address by `RATELIMIT_FEEDBACK`.",
            "parameters": [PREDICTION_ID],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": ref("FeedbackRequest")}}},
            "responses": {
                "201": json_response("Stored.", "Feedback"),
                "400": error("Not a JSON object, an unknown verdict or field, `label` missing with `wrong`, "
                             "sent with another verdict, or not one of the model's labels."),
                "404": error("No prediction with this id."),
                "409": error("This client has already answered for this prediction."),
                "429": TOO_MANY,
                "503": DATABASE_DOWN,
            },
        },
    },
    "/api/v1/predictions/{prediction_id}/explanation.png": {
        "get": {
            "operationId": "getExplanation",
            "tags": ["predictions"],
            "summary": "Heatmap of the prediction's answer over the stored thumbnail",
            "description": "Class activation map of the answer (its top class when it has none; for a group "
                           "answer the probability-weighted sum of its members' maps), computed on first request "
                           "from the model's feature map and dense head, with no TensorFlow, then cached.",
            "parameters": [PREDICTION_ID],
            "responses": {
                "200": {"description": "PNG image.",
                        "content": {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}}},
                "404": error("No prediction with this id."),
                "409": error("The served model does not know the prediction's answer label."),
                "429": TOO_MANY,
                "501": error("The served model's head cannot be explained as a class activation map."),
                "503": error("The artifact's head.npz is unreadable, or the database is unavailable."),
            },
        },
    },
    "/api/v1/model": {
        "get": {
            "operationId": "getModel",
            "tags": ["model"],
            "summary": "Describe the served model",
            "description": "Name, version, runtime, the artifact's metadata and its labels.",
            "responses": {"200": json_response("The served model.", "Model"), "429": TOO_MANY},
        },
    },
    "/api/v1/openapi.json": {
        "get": {
            "operationId": "getOpenAPI",
            "tags": ["meta"],
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1 document.",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          "429": TOO_MANY},
        },
    },
    "/healthz": {
        "get": {
            "operationId": "liveness",
            "tags": ["operations"],
            "summary": "Liveness: the process answers",
            "responses": {"200": json_response("Alive.", "Health")},
        },
    },
    "/readyz": {
        "get": {
            "operationId": "readiness",
            "tags": ["operations"],
            "summary": "Readiness: model loaded and database answering",
            "responses": {"200": json_response("Ready.", "Readiness"),
                          "503": json_response("A check failed.", "Readiness")},
        },
    },
    "/_ah/warmup": {
        "get": {
            "operationId": "warmup",
            "tags": ["operations"],
            "summary": "App Engine warmup: the model's load-time warm-up and one query before traffic arrives",
            "responses": {"200": json_response("Warm.", "Warmup")},
        },
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "tags": ["operations"],
            "summary": "Prometheus metrics",
            "description": "Requests and latency per route, predictions per label, model load time, "
                           "inference time; summed over all gunicorn workers.",
            "responses": {"200": {"description": "Prometheus text exposition format.",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        },
    },
}


def build_spec() -> dict[str, Any]:
    """The OpenAPI document served at ``/api/v1/openapi.json``.

    Returns:
        A deep copy, so callers may change it.
    """
    return copy.deepcopy({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Car classifier API",
            "version": API_VERSION,
            "description": "Classify car photos and read stored predictions. JSON in and out, no "
                           "cookies and no CSRF token. Errors share one shape (`Error`).",
        },
        "tags": [{"name": "predictions"}, {"name": "model"}, {"name": "meta"}, {"name": "operations"}],
        "paths": PATHS,
        "components": {"schemas": SCHEMAS},
    })
