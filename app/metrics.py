"""Prometheus metrics: requests per endpoint, latency, predictions per label, model load and inference time.

Under gunicorn every worker is its own process with its own counters. ``gunicorn.conf.py`` sets
``PROMETHEUS_MULTIPROC_DIR`` before the app is imported, so ``prometheus_client`` keeps each process's
values in files there and :func:`render` adds them up, whichever worker answers the scrape. Without
that variable (tests, ``flask run``) the process's own registry is served.
"""

from __future__ import annotations

import os
import time
from functools import wraps

from flask import Flask, g, request

# prometheus_client switches to multiprocess mode when the variable merely exists; an empty value would
# make it write its files into the working directory. Empty means unset (before the import reads it).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR", "x").strip():
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,  # noqa: E402
                               Gauge, Histogram, generate_latest, multiprocess)
from sqlalchemy import event  # noqa: E402

from inference.classifier import Classifier
from .models import Prediction

# Any process may import the app with the variable set (``flask db upgrade`` in the same shell, the
# migration run by gunicorn): make sure the folder exists before the first value is written there.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

NAMESPACE = "car_classifier"
UNMATCHED_ENDPOINT = "<unmatched>"  # 404s: one label value instead of one per scanned URL
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter("http_requests", "HTTP requests answered, by route, method and status.",
                   ["endpoint", "method", "status"], namespace=NAMESPACE)
REQUEST_SECONDS = Histogram("http_request_duration_seconds", "Time to answer an HTTP request, by route.",
                            ["endpoint", "method"], namespace=NAMESPACE)
PREDICTIONS = Counter("predictions", "Predictions stored, by top label and source (web or api).",
                      ["label", "source"], namespace=NAMESPACE)
MODEL_LOAD_SECONDS = Gauge("model_load_seconds", "Time to load and warm up the served model.",
                           ["model", "version", "runtime"], namespace=NAMESPACE, multiprocess_mode="max")
INFERENCE_SECONDS = Histogram("inference_duration_seconds", "Time of one model invocation (no decoding).",
                              ["model", "runtime"], namespace=NAMESPACE, buckets=INFERENCE_BUCKETS)


def register_metrics(app: Flask) -> None:
    """Count and time every request, count stored predictions, time the loaded model's inferences."""

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe_request(response):
        started = g.pop("metrics_started", None)
        endpoint = request.url_rule.rule if request.url_rule else UNMATCHED_ENDPOINT
        REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        if started is not None:
            REQUEST_SECONDS.labels(endpoint, request.method).observe(time.perf_counter() - started)
        return response

    if not event.contains(Prediction, "after_insert", _count_prediction):
        event.listen(Prediction, "after_insert", _count_prediction)


def _count_prediction(_mapper, _connection, prediction: Prediction) -> None:
    PREDICTIONS.labels(prediction.top_label, prediction.source).inc()


def observe_model_load(classifier: Classifier, seconds: float) -> None:
    """Record how long ``classifier`` took to load and time each of its inferences from now on.

    The runtimes stay free of metrics code: the classifier's ``predict_batch`` is wrapped on the
    instance, so every caller (web, API, CLI) is measured.
    """
    MODEL_LOAD_SECONDS.labels(classifier.name, classifier.version, classifier.runtime).set(seconds)
    timer = INFERENCE_SECONDS.labels(classifier.name, classifier.runtime)
    predict_batch = classifier.predict_batch

    @wraps(predict_batch)
    def timed_predict_batch(pixels):
        with timer.time():
            return predict_batch(pixels)

    classifier.predict_batch = timed_predict_batch


def render() -> tuple[bytes, dict[str, str]]:
    """The metrics page: all workers' values in multiprocess mode, else this process's.

    Returns:
        ``(body, headers)`` in the Prometheus text format.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), {"Content-Type": CONTENT_TYPE_LATEST}
