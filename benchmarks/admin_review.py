"""Admin review benchmark: the review page, the CSV export and each SQL statement on 100,000 predictions.

Builds a throw-away SQLite database with the migrations, fills it with ``--rows`` predictions in one
executemany (thumbnails of realistic size made by Pillow, 196 labels, 3 model versions, 100 days, a few
thousand corrections), then times ``GET /admin/`` for a set of filter/sort combinations through the
test client, and reports per request: wall time, the number of SQL statements and the slowest one.
Needs a model artifact for the app to start (``--model-dir``, default ``model_artifacts/default``).

Usage: ``python -m benchmarks.admin_review [--rows 100000] [--model-dir DIR]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import random
import tempfile
import time
from pathlib import Path

from PIL import Image
from sqlalchemy import event, text

LABELS = [f"Car model {i:03d}" for i in range(196)]
QUERIES = ["", "per_page=200", "sort=top_score&order=asc", "model_version=1.1", "label=Car+model+007",
           "low_confidence=1", "low_confidence=1&sort=top_score", "status=uncorrected", "status=wrong",
           "date_from=2026-09-01&date_to=2026-09-07", "q=upload-9999", "q=model+00", "page=400&per_page=200"]


def thumbnail_bytes(side: int) -> bytes:
    """A noisy JPEG (noise compresses about as badly as a photo) of ``side`` x ``3/4 side`` pixels."""
    image = Image.effect_noise((side, side * 3 // 4), 60).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def fill(db, rows: int, thumbnail: bytes, admin_id: int) -> None:
    """Insert ``rows`` predictions and a correction for every 30th one."""
    rng = random.Random(5)
    start = dt.datetime(2026, 8, 1)
    seconds_apart = 100 * 86400 / rows
    batch = []
    for i in range(rows):
        label = rng.choice(LABELS)
        batch.append({
            "created_at": (start + dt.timedelta(seconds=i * seconds_apart)).isoformat(sep=" "),
            "original_filename": f"upload-{i}.jpg", "sha256": hashlib.sha256(str(i % 90_000).encode()).hexdigest(),
            "thumbnail": thumbnail, "model_version": f"1.{i % 3}", "top_label": label,
            "top_score": round(rng.random(), 4), "top_k": f'[{{"label": "{label}", "score": 0.5}}]',
            "source": "web" if i % 4 else "api"})
    db.session.execute(text(
        "INSERT INTO predictions (created_at, original_filename, sha256, width, height, content_type, thumbnail,"
        " model_name, model_version, top_label, top_score, top_k, latency_ms, source) VALUES (:created_at,"
        " :original_filename, :sha256, 640, 480, 'image/jpeg', :thumbnail, 'cars', :model_version, :top_label,"
        " :top_score, :top_k, 20.0, :source)"), batch)
    db.session.execute(text(
        "INSERT INTO corrections (prediction_id, old_label, new_label, corrected_by_id, created_at, updated_at)"
        " SELECT id, top_label, CASE WHEN id % 90 = 0 THEN 'Car model 000' ELSE top_label END, :admin,"
        " created_at, created_at FROM predictions WHERE id % 30 = 0"), {"admin": admin_id})
    db.session.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--thumbnail-side", type=int, default=160,
                        help="noise JPEG side; 160 gives ~12.5 KB, the mean of real 320 px car thumbnails")
    parser.add_argument("--model-dir", default="model_artifacts/default")
    parser.add_argument("--repeat", type=int, default=3, help="runs per query; the fastest is reported")
    parser.add_argument("--database", help="reuse or keep this SQLite file (filled when it has no rows)")
    args = parser.parse_args()

    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db
    from app.models import AdminUser

    with tempfile.TemporaryDirectory() as folder:
        database = Path(args.database) if args.database else Path(folder) / "review.db"
        app = create_app({"TESTING": True, "MODEL_DIR": args.model_dir, "DATABASE_URL": f"sqlite:///{database}",
                          "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False})
        thumbnail = thumbnail_bytes(args.thumbnail_side)
        with app.app_context():
            upgrade()
            if db.session.query(AdminUser).count() == 0:
                admin = AdminUser(username="bench")
                admin.set_password("benchmark password")
                db.session.add(admin)
                db.session.commit()
                began = time.perf_counter()
                fill(db, args.rows, thumbnail, admin.id)
                print(f"{args.rows} rows with {len(thumbnail)} byte thumbnails inserted in "
                      f"{time.perf_counter() - began:.1f} s; database {database.stat().st_size / 1e6:.0f} MB")
            engine = db.engine

        statements: list[tuple[float, str]] = []

        def before(conn, _cursor, _statement, _params, context, _many):
            conn.info["began"] = time.perf_counter()

        def after(conn, _cursor, statement, _params, _context, _many):
            statements.append((time.perf_counter() - conn.info["began"], " ".join(statement.split())))

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        client = app.test_client()
        client.post("/admin/login", data={"username": "bench", "password": "benchmark password"})
        client.get("/admin/")  # warm caches as a running server would have them
        print("| query | wall ms | CPU ms | SQL statements | slowest statement ms |\n"
              "| --- | ---: | ---: | ---: | ---: |")
        for query in QUERIES:
            runs = []
            for _ in range(args.repeat):  # the best of a few runs: other processes share the cores
                statements.clear()
                began, began_cpu = time.perf_counter(), time.process_time()
                response = client.get(f"/admin/?{query}")
                assert response.status_code == 200, response.status_code
                runs.append((time.perf_counter() - began, time.process_time() - began_cpu, list(statements)))
            elapsed, cpu, run_statements = min(runs, key=lambda run: run[0])
            slowest = max(run_statements)
            print(f"| `{query or '(none)'}` | {elapsed * 1000:.0f} | {cpu * 1000:.0f} | {len(run_statements)} | "
                  f"{slowest[0] * 1000:.0f} |")
        began = time.perf_counter()
        response = client.get("/admin/predictions.csv", buffered=False)
        size = sum(len(piece) for piece in response.response)
        print(f"CSV of all rows: {size / 1e6:.1f} MB in {time.perf_counter() - began:.1f} s")
        with app.app_context():
            db.engine.dispose()


if __name__ == "__main__":
    main()
