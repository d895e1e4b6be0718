"""Every migration round-trips with real rows: upgrade to it, fill every table, downgrade, upgrade again.

For each revision R (with parent P): the schema is brought to R, rows go into every table R has
(predictions, admin_users, corrections, feedback, as far as they exist), then ``downgrade`` to P and
``upgrade`` to R again. Every row of every table that P has must come through both steps with the
values of every column P has: a downgrade may drop what its revision added, nothing else. The migrations
run through the app, with SQLite's foreign keys enforced as the app enforces them, so a table rebuild
that cascades into the rows pointing at it shows up here. With ``TEST_DATABASE_URL`` set the same runs
against PostgreSQL (``.ci/test-postgres``).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import MetaData, inspect, select

from app import create_app
from app.extensions import db

REVISIONS = [("0001", "base"), ("0002", "0001"), ("0003", "0002"), ("0004", "0003"), ("0005", "0004"),
             ("0006", "0005"), ("0007", "0006")]
ROWS = 3
WHEN = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)


def row_values(table: str, index: int) -> dict:
    """Plausible values for every column ``table`` has had in any revision (filtered to the present ones)."""
    number = index + 1
    if table == "predictions":
        return {"id": number, "created_at": WHEN + dt.timedelta(minutes=index), "original_filename": f"car-{number}.jpg",
                "sha256": f"{number:064x}", "width": 640 + index, "height": 480, "content_type": "image/jpeg",
                "thumbnail": bytes([index, 0xFF, 0xD8]), "model_name": "colors", "model_version": "1.0.0",
                "top_label": "red", "top_score": 0.5 + index / 10,
                "top_k": [{"label": "red", "score": 0.5 + index / 10}], "latency_ms": 12.5, "source": "web",
                "verdict": "ok", "vehicle_score": 0.9, "groups": {"make": [{"label": "Audi", "score": 0.9}]},
                "answer_level": "make", "answer_label": "Audi", "answer_score": 0.9,
                "public_id": f"public-id-{number:013d}", "answer_source": "gallery",
                "answer_learned_from": 12}
    if table == "admin_users":
        return {"id": number, "username": f"admin{number}", "password_hash": f"hash-{number}",
                "is_active": True, "created_at": WHEN, "last_login_at": WHEN, "session_token": f"token-{number}"}
    if table == "corrections":
        return {"id": number, "prediction_id": number, "old_label": "red", "new_label": f"blue-{number}",
                "corrected_by_id": number, "created_at": WHEN, "updated_at": WHEN}
    if table == "feedback":
        return {"id": number, "prediction_id": number, "verdict": "wrong", "label": "green",
                "created_at": WHEN, "client_hash": f"{number:064x}", "client_key": f"key-{number}"}
    if table == "gallery_examples":
        return {"id": number, "label": "Fiat Argo", "level": "class", "embedding": bytes(8), "model_name": "colors",
                "model_version": "1.0.0", "image": bytes([index, 0xFF, 0xD8]), "sha256": f"{number:064x}",
                "source": "upload", "prediction_id": number, "added_by": "admin1", "created_at": WHEN}
    if table == "gallery_negatives":
        return {"id": number, "model_name": "colors", "model_version": "1.0.0", "embedding": bytes(8)}
    if table == "gallery_state":
        return {"id": number, "version": number}
    raise AssertionError(f"no rows for a new table {table!r}: add them here")


def schema() -> dict[str, list[str]]:
    inspector = inspect(db.engine)
    return {table: sorted(column["name"] for column in inspector.get_columns(table))
            for table in inspector.get_table_names() if table != "alembic_version"}


def fill(tables: dict[str, list[str]]) -> None:
    metadata = MetaData()
    metadata.reflect(db.engine)
    with db.engine.begin() as connection:
        for name in ("predictions", "admin_users", "corrections", "feedback", *sorted(tables)):
            if name not in tables or (name in tables and _filled(connection, metadata.tables[name])):
                continue
            table = metadata.tables[name]
            rows = [{key: value for key, value in row_values(name, index).items() if key in table.columns}
                    for index in range(ROWS)]
            for row in rows:
                for key, value in row.items():
                    if isinstance(value, (dict, list)) and not _json_column(table.columns[key]):
                        row[key] = json.dumps(value)
            connection.execute(table.insert(), rows)


def _filled(connection, table) -> bool:
    return connection.execute(select(table).limit(1)).first() is not None


def _json_column(column) -> bool:
    return column.type.__class__.__name__.upper() in {"JSON", "JSONB"}


def snapshot(tables: dict[str, list[str]]) -> dict[str, list[dict]]:
    """Every row of ``tables``, as far as their columns go, in id order."""
    metadata = MetaData()
    metadata.reflect(db.engine)
    result = {}
    with db.engine.connect() as connection:
        for name, columns in tables.items():
            table = metadata.tables[name]
            rows = connection.execute(select(*(table.columns[c] for c in columns)).order_by(table.columns["id"]))
            result[name] = [dict(row._mapping) for row in rows]
    return result


@pytest.mark.parametrize("revision,parent", REVISIONS, ids=[revision for revision, _ in REVISIONS])
def test_each_revision_round_trips_without_losing_a_row(color_artifact, database_url, revision, parent):
    application = create_app({"MODEL_DIR": str(color_artifact), "DATABASE_URL": database_url})
    with application.app_context():
        try:
            upgrade(revision=parent) if parent != "base" else None
            kept = schema()  # what the parent has: all of it must survive
            upgrade(revision=revision)
            fill(schema())
            before = snapshot(kept)
            assert all(len(rows) == ROWS for rows in before.values()), {k: len(v) for k, v in before.items()}

            downgrade(revision=parent)
            assert schema() == kept
            assert snapshot(kept) == before, f"rows lost or changed by downgrading {revision}"

            upgrade(revision=revision)
            assert snapshot(kept) == before, f"rows lost or changed by upgrading {revision} again"
            if "predictions" in kept:
                upgrade()  # and on to the head from there, with the rows in place
                assert len(snapshot({"predictions": ["id"]})["predictions"]) == ROWS
        finally:
            db.engine.dispose()


def test_every_revision_is_covered():
    from alembic.script import ScriptDirectory

    from support import REPO_ROOT

    scripts = ScriptDirectory(str(REPO_ROOT / "migrations"))
    chain = [(s.revision, s.down_revision or "base") for s in reversed(list(scripts.walk_revisions()))]
    assert chain == REVISIONS
