"""A curl command and a sample response for each operation of the API page, shown before its tables.

``{base}`` is the address the page was served from, so a reader can paste the command as it stands; the
prediction id is a sample that the reader swaps for one of theirs (tests/deploy/test_manual_examples.py
runs every command of the page against a live server, with a real id in its place).
"""

from __future__ import annotations

SAMPLE_ID = "Xq3v9R2cT8mKp0LwYbN4aA"

PREDICTION = f"""{{"id": "{SAMPLE_ID}",
 "headline": {{"kind": "answer", "text": "A Ferrari", "doubt": "the model is not sure which one",
              "level": "make", "label": "Ferrari", "score": 0.491}},
 "answer": {{"level": "make", "label": "Ferrari", "score": 0.491}},
 "verdict": "uncertain",
 "created_at": "2026-12-03T14:44:26.412Z",
 "model": {{"name": "car-models-196", "version": "2.0.0"}},
 "predictions": [{{"label": "Ferrari California Convertible 2012", "score": 0.482}},
                 {{"label": "Chevrolet Corvette ZR1 2012", "score": 0.103}}, ...],
 "image": {{"width": 545, "height": 256, "sha256": "9f2c..."}},
 "latency_ms": 23.0, "vehicle_score": 0.9981,
 "groups": {{"make": [{{"label": "Ferrari", "score": 0.491}}, {{"label": "Chevrolet", "score": 0.163}},
                     {{"label": "Aston Martin", "score": 0.081}}],
            "segment": [{{"label": "premium", "score": 0.72}}, {{"label": "basic", "score": 0.28}}]}}}}"""

EXAMPLES: dict[str, dict[str, str]] = {
    "createPrediction": {
        "request": "curl -s -F image=@car.jpg {base}/api/v1/predictions",
        "response": "201 Created, Location: /api/v1/predictions/" + SAMPLE_ID + "\n\n" + PREDICTION,
    },
    "createPredictionBatch": {
        "request": "curl -s -F images=@car.jpg -F images=@notes.txt -F top_k=3 {base}/api/v1/predictions:batch",
        "response": '200 OK\n\n{"results": [{"index": 0, "filename": "car.jpg", "status": 201, "prediction": {...}},\n'
                    '             {"index": 1, "filename": "notes.txt", "status": 415,\n'
                    '              "error": {"status": 415, "code": "unsupported_media_type", "message": "..."}}],\n'
                    ' "succeeded": 1, "failed": 1}',
    },
    "getPrediction": {
        "request": "curl -s {base}/api/v1/predictions/" + SAMPLE_ID,
        "response": "200 OK\n\n" + PREDICTION,
    },
    "createFeedback": {
        "request": "curl -s -H 'Content-Type: application/json' -d '{\"verdict\": \"right\"}' "
                   "{base}/api/v1/predictions/" + SAMPLE_ID + "/feedback",
        "response": '201 Created\n\n{"id": 7, "prediction_id": "' + SAMPLE_ID + '", "verdict": "right", "label": null,\n'
                    ' "created_at": "2026-12-03T14:50:00.000Z"}',
    },
    "getExplanation": {
        "request": "curl -s -o heatmap.png {base}/api/v1/predictions/" + SAMPLE_ID + "/explanation.png",
        "response": "200 OK, Content-Type: image/png (the heatmap over the photo's thumbnail)",
    },
    "getModel": {
        "request": "curl -s {base}/api/v1/model",
        "response": '200 OK\n\n{"name": "car-models-196", "version": "2.0.0", "runtime": "litert", "variant": "int8-full",\n'
                    ' "metadata": {...}, "labels": ["AM General Hummer SUV 2000", ...]}',
    },
    "getOpenAPI": {
        "request": "curl -s {base}/api/v1/openapi.json",
        "response": '200 OK\n\n{"openapi": "3.1.0", "info": {...}, "paths": {...}, "components": {...}}',
    },
    "liveness": {"request": "curl -s {base}/healthz", "response": '200 OK\n\n{"status": "ok"}'},
    "readiness": {
        "request": "curl -s {base}/readyz",
        "response": '200 OK\n\n{"status": "ok", "checks": {"model": true, "database": true}}',
    },
    "warmup": {
        "request": "curl -s {base}/_ah/warmup",
        "response": '200 OK\n\n{"status": "warm", "model": "car-models-196", "version": "2.0.0", "warmup_ms": 13.9}',
    },
    "metrics": {
        "request": "curl -s {base}/metrics",
        "response": "200 OK\n\n# HELP http_requests_total ...\nhttp_requests_total{...} 42.0\n...",
    },
}
