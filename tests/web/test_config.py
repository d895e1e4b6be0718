"""Application factory and configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app import create_app
from inference.classifier import Classifier
from app.config import REPO_ROOT, Config, finalize
from support import manual_text


def test_defaults_when_environment_is_empty():
    values = Config.from_env({})
    assert values["MODEL_DIR"] == "model_artifacts/default"
    assert values["MODEL_RUNTIME"] == "auto"
    assert values["TOP_K"] == 5
    assert values["MAX_CONTENT_LENGTH"] == 10 * 1024 * 1024
    assert values["MAX_IMAGE_PIXELS"] == 40_000_000
    assert values["SQLITE_WAL"] is True


def test_environment_values_are_parsed():
    values = Config.from_env({"TOP_K": "3", "SQLITE_WAL": "off", "MAX_CONTENT_LENGTH": "2048",
                              "INFERENCE_THREADS": "2", "MODEL_RUNTIME": "keras"})
    assert values["TOP_K"] == 3
    assert values["SQLITE_WAL"] is False
    assert values["MAX_CONTENT_LENGTH"] == 2048
    assert values["INFERENCE_THREADS"] == 2
    assert values["MODEL_RUNTIME"] == "keras"


def test_invalid_environment_value_names_the_variable():
    with pytest.raises(ValueError, match="TOP_K"):
        Config.from_env({"TOP_K": "many"})
    with pytest.raises(ValueError, match="SQLITE_WAL"):
        Config.from_env({"SQLITE_WAL": "perhaps"})


def test_finalize_fills_instance_database_and_absolute_model_dir(tmp_path):
    values = finalize(Config.from_env({}), str(tmp_path / "instance"))
    assert values["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'instance' / 'predictions.db'}"
    assert values["MODEL_DIR"] == str(REPO_ROOT / "model_artifacts" / "default")
    assert len(values["SECRET_KEY"]) >= 32
    assert values["INFERENCE_THREADS"] >= 1


def test_postgres_scheme_is_normalised(tmp_path):
    values = finalize({**Config.from_env({}), "DATABASE_URL": "postgres://u:p@db/cars"}, str(tmp_path))
    assert values["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u:p@db/cars"
    assert values["SQLALCHEMY_ENGINE_OPTIONS"] == {"pool_pre_ping": True}  # survives a server restart


def test_sqlite_needs_no_connection_ping(tmp_path):
    values = finalize(Config.from_env({}), str(tmp_path))
    assert "SQLALCHEMY_ENGINE_OPTIONS" not in values


def test_factory_loads_the_classifier_once_and_registers_everything(app):
    classifier = app.extensions["classifier"]
    assert isinstance(classifier, Classifier)
    assert classifier.labels == ["red", "green", "blue"]
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/", "/predictions/<public_id:prediction_id>", "/predictions/<public_id:prediction_id>/thumbnail.jpg",
            "/api/v1/predictions", "/api/v1/predictions/<public_id:prediction_id>", "/api/v1/model",
            "/healthz", "/readyz"} <= rules
    assert {"sqlalchemy", "migrate", "csrf", "bootstrap"} <= set(app.extensions)
    assert {"model-info", "classify", "db"} <= set(app.cli.commands)


def test_factory_accepts_a_config_class(color_artifact, tmp_path):
    class Overrides:
        MODEL_DIR = str(color_artifact)
        DATABASE_URL = f"sqlite:///{tmp_path / 'x.db'}"
        TOP_K = 2
        lower_case_is_ignored = True

    application = create_app(Overrides)
    assert application.config["TOP_K"] == 2
    assert "lower_case_is_ignored" not in application.config


def test_environment_reaches_the_factory(color_artifact, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_DIR", str(color_artifact))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("TOP_K", "4")
    application = create_app()
    assert application.config["TOP_K"] == 4
    assert Path(application.config["MODEL_DIR"]) == color_artifact


def test_sqlite_connections_get_wal_and_busy_timeout(color_artifact, tmp_path):
    from sqlalchemy import text

    from app.extensions import db

    # Its own SQLite file: the shared ``app`` fixture may be on PostgreSQL (TEST_DATABASE_URL).
    application = create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": f"sqlite:///{tmp_path / 'wal.db'}"})
    with application.app_context():
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.session.execute(text("PRAGMA busy_timeout")).scalar() == 5000
        assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_wal_can_be_turned_off(color_artifact, tmp_path):
    from sqlalchemy import text

    from app.extensions import db

    application = create_app({"MODEL_DIR": str(color_artifact), "SQLITE_WAL": False,
                              "DATABASE_URL": f"sqlite:///{tmp_path / 'nfs.db'}"})
    with application.app_context():
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "delete"


def test_cli_model_info_and_classify(runner, tmp_path, make_image):
    result = runner.invoke(args=["model-info"])
    assert result.exit_code == 0, result.output
    assert '"name": "colors"' in result.output
    photo = tmp_path / "green.png"
    photo.write_bytes(make_image("green", fmt="PNG"))
    result = runner.invoke(args=["classify", str(photo), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    assert f"{photo}: green " in result.output


def test_readme_documents_every_setting():
    readme = manual_text()
    section = readme.split("<!-- section:config -->")[1].split("<!-- /section:config -->")[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.M))
    assert set(Config.settings()) <= documented
