"""Operations: request ids, JSON logs, Prometheus metrics, the App Engine warmup, the start-up config
log, and refusing to start in production with a weak SECRET_KEY."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.config import Config, public_config
from app.logs import configure_logging
from support import REPO_ROOT

BIN = os.path.dirname(sys.executable)
STRONG_KEY = "k" * 48


def scrape(client) -> dict[tuple[str, frozenset], float]:
    """``/metrics`` as ``{(sample name, labels): value}``."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_request_id_is_echoed_when_plain_and_made_otherwise(client):
    assert client.get("/healthz", headers={"X-Request-ID": "edge-42.a:b"}).headers["X-Request-ID"] == "edge-42.a:b"
    injected = client.get("/healthz", headers={"X-Request-ID": "x\" level=ERROR <script>"}).headers["X-Request-ID"]
    made = {client.get("/healthz").headers["X-Request-ID"] for _ in range(3)} | {injected}
    assert len(made) == 4 and all(re.fullmatch(r"[0-9a-f]{32}", value) for value in made)


@pytest.fixture
def captured_logs(capsys):
    """Logging bound to pytest's captured stdout for the test, then back to the real one."""
    yield capsys
    configure_logging("INFO", "json")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_logs_are_json_lines_tagged_with_the_request_id(captured_logs, color_artifact, tmp_path):
    application = create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}",
                              "SECRET_KEY": "do-not-log-this-key", "LOG_LEVEL": "INFO"})
    with application.test_client() as client:
        client.get("/api/v1/model", headers={"X-Request-ID": "trace-7"})
        client.get("/api/v1/no-such-thing", headers={"X-Request-ID": "trace-8"})
    output = captured_logs.readouterr().out
    entries = json_lines(output)
    assert "do-not-log-this-key" not in output
    startup = next(entry for entry in entries if entry["message"] == "effective configuration")
    assert set(Config.settings()) <= set(startup["config"]) and startup["config"]["SECRET_KEY"] == "(hidden)"
    served = next(entry for entry in entries if entry["message"].startswith("serving "))
    assert served["model"] == "colors" and served["load_seconds"] > 0
    access = {entry["request_id"]: entry for entry in entries if entry["logger"] == "app.access"}
    assert access["trace-7"]["status"] == 200 and access["trace-7"]["path"] == "/api/v1/model"
    assert access["trace-8"]["status"] == 404 and access["trace-8"]["duration_ms"] >= 0
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)


def test_text_log_format_is_readable(captured_logs, color_artifact, tmp_path):
    create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
                "LOG_FORMAT": "text"})
    line = next(line for line in captured_logs.readouterr().out.splitlines() if "serving" in line)
    assert not line.startswith("{") and " INFO app [None] serving " in line


def test_public_config_hides_secrets_and_passwords():
    shown = public_config({**Config.from_env({}), "SECRET_KEY": "s3cr3t-value",
                           "DATABASE_URL": "postgresql://cars:db-pass@db.internal/cars",
                           "RATELIMIT_STORAGE_URI": "redis://:redis-pass@cache:6379"})
    text = json.dumps(shown)
    assert "s3cr3t-value" not in text and "db-pass" not in text and "redis-pass" not in text
    assert shown["DATABASE_URL"] == "postgresql://cars:***@db.internal/cars"
    assert set(shown) == set(Config.settings())


def test_metrics_count_requests_predictions_and_inference(client, make_image):
    before = scrape(client)
    response = client.post("/api/v1/predictions", data={"image": (io.BytesIO(make_image("blue")), "b.jpg")})
    assert response.status_code == 201
    after = scrape(client)

    def grew(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("car_classifier_predictions_total", label="blue", source="api") == 1
    assert grew("car_classifier_http_requests_total", endpoint="/api/v1/predictions", method="POST",
                status="201") == 1
    assert grew("car_classifier_http_request_duration_seconds_count", endpoint="/api/v1/predictions",
                method="POST") == 1
    assert grew("car_classifier_inference_duration_seconds_count", model="colors", runtime="litert") == 1
    assert sample(after, "car_classifier_model_load_seconds", model="colors", version="0.0.1-test",
                  runtime="litert") > 0


def test_unknown_paths_share_one_metrics_label(client):
    path = f"/scan-{uuid.uuid4().hex}"
    before = scrape(client)
    assert client.get(path).status_code == 404
    text = client.get("/metrics").get_data(as_text=True)
    assert path not in text
    labels = dict(endpoint="<unmatched>", method="GET", status="404")
    assert sample(scrape(client), "car_classifier_http_requests_total", **labels) - \
        sample(before, "car_classifier_http_requests_total", **labels) == 1


def test_warmup_answers_from_the_load_time_warmup_without_running_the_model(client):
    before = scrape(client)
    for _ in range(3):
        response = client.get("/_ah/warmup")
        assert response.status_code == 200
        body = response.get_json()
        assert {k: body[k] for k in ("status", "model", "version")} == {
            "status": "warm", "model": "colors", "version": "0.0.1-test"}
        assert body["warmup_ms"] > 0  # measured when the model was loaded
    count = "car_classifier_inference_duration_seconds_count"
    assert sample(scrape(client), count, model="colors", runtime="litert") - \
        sample(before, count, model="colors", runtime="litert") == 0


@pytest.mark.parametrize("key", [None, "", "change-me", "short-but-not-a-placeholder"])
def test_production_refuses_a_missing_placeholder_or_short_secret_key(key, color_artifact, tmp_path):
    settings = {"APP_ENV": "production", "MODEL_DIR": str(color_artifact), "SECRET_KEY": key,
                "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}"}
    with pytest.raises(ValueError, match="APP_ENV=production but SECRET_KEY"):
        create_app(settings)
    assert create_app({**settings, "SECRET_KEY": STRONG_KEY}).config["SECRET_KEY"] == STRONG_KEY


def test_development_still_accepts_a_random_key(color_artifact, tmp_path):
    application = create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"})
    assert application.config["APP_ENV"] == "development" and len(application.config["SECRET_KEY"]) >= 32


@pytest.mark.slow
def test_gunicorn_in_production_without_a_key_stops_with_one_line(color_artifact, tmp_path):
    """gunicorn.conf.py makes up a shared key only outside production, so the app's check still bites."""
    env = {key: value for key, value in os.environ.items() if key != "SECRET_KEY"}
    env.update(APP_ENV="production", MODEL_DIR=str(color_artifact), PORT="0",
               DATABASE_URL=f"sqlite:///{tmp_path / 'g.db'}", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "m"))
    result = subprocess.run([os.path.join(BIN, "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: APP_ENV=production but SECRET_KEY is not set: set it to the output of "
        "`python -c 'import secrets; print(secrets.token_hex(32))'`"]


def test_an_empty_metrics_dir_setting_means_one_process(color_artifact, tmp_path):
    """prometheus_client alone would write its files into the working directory for an empty value."""
    script = f"""
from app import create_app
app = create_app({{"MODEL_DIR": {str(color_artifact)!r}, "DATABASE_URL": "sqlite:///{tmp_path / 'e.db'}"}})
print(app.test_client().get("/metrics").status_code)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": "", "PYTHONPATH": str(REPO_ROOT)},
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "200"
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(("counter_", "gauge_", "histogram_"))]
