"""Liveness and readiness probes."""

from __future__ import annotations


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_when_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "checks": {"model": True, "database": True}}


def test_readyz_is_503_without_a_model(app, client):
    app.extensions["classifier"] = None
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["checks"]["model"] is False


def test_readyz_is_503_when_the_database_does_not_answer(color_artifact, tmp_path):
    from app import create_app

    unreachable = tmp_path / "no-such-dir" / "predictions.db"  # SQLite cannot create it
    application = create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": f"sqlite:///{unreachable}"})
    response = application.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"] == {"model": True, "database": False}
