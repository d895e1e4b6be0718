"""Admin review benchmark: the review page and the CSV export on 100,000 predictions, with and without
the review indexes.

Builds a throw-away SQLite database with the migrations, fills it with ``--rows`` predictions in one
executemany (thumbnails of realistic size made by Pillow, 196 labels, 3 model versions, 100 days, a few
thousand corrections), then times ``GET /admin/`` for a set of filter/sort combinations through the
test client: per request the wall and CPU time, the number of SQL statements and the slowest execute
(SQLite steps most rows in the fetch that follows, so that time shows in wall time, not here). The
baseline, in the same run on the same file, is the page with the covering indexes of migration 0002
dropped (the indexes of 0001 stay), so the ratio is what those indexes buy; they are put back afterwards.
Needs a model artifact for the app to start (``--model-dir``, default ``model_artifacts/default``).
Writes ``benchmarks/results/admin_review.json`` and ``.md`` and copies the table into the manual (the page in ``docs/`` that holds its markers).

Usage: ``python -m benchmarks.admin_review [--rows 100000] [--model-dir DIR] [--no-baseline]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import random
import tempfile
import time
from pathlib import Path

from PIL import Image
from sqlalchemy import event, text

from app.models import new_public_id
from benchmarks.serve import RESULTS_DIR, machine_description, update_readme

LABELS = [f"Car model {i:03d}" for i in range(196)]
REVIEW_INDEX_PREFIX = "ix_predictions_review_by_"
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
            "source": "web" if i % 4 else "api", "public_id": new_public_id()})
    db.session.execute(text(
        "INSERT INTO predictions (created_at, original_filename, sha256, width, height, content_type, thumbnail,"
        " model_name, model_version, top_label, top_score, top_k, latency_ms, source, public_id) VALUES (:created_at,"
        " :original_filename, :sha256, 640, 480, 'image/jpeg', :thumbnail, 'cars', :model_version, :top_label,"
        " :top_score, :top_k, 20.0, :source, :public_id)"), batch)
    db.session.execute(text(
        "INSERT INTO corrections (prediction_id, old_label, new_label, corrected_by_id, created_at, updated_at)"
        " SELECT id, top_label, CASE WHEN id % 90 = 0 THEN 'Car model 000' ELSE top_label END, :admin,"
        " created_at, created_at FROM predictions WHERE id % 30 = 0"), {"admin": admin_id})
    db.session.commit()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--rows", type=int, default=100_000, help="predictions in the database")
    data.add_argument("--thumbnail-side", type=int, default=160,
                      help="noise JPEG side; 160 gives ~12.5 KB, the mean of real 320 px car thumbnails")
    data.add_argument("--database", type=Path, help="reuse or keep this SQLite file (filled when it has no rows)")
    data.add_argument("--model-dir", default="model_artifacts/default", help="artifact the app starts with")
    run = parser.add_argument_group("run")
    run.add_argument("--repeat", type=int, default=3, help="runs per query; the fastest is reported")
    run.add_argument("--no-baseline", action="store_true", help="skip the run without the review indexes")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="folder for admin_review.json/.md (the manual is updated only for the default)")
    return parser.parse_args(argv)


def create_bench_app(database: Path, model_dir: str, rows: int, thumbnail_side: int) -> tuple:
    """The app on ``database``, migrated and filled (unless it already has an admin); returns (app, fill facts)."""
    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db
    from app.models import AdminUser

    app = create_app({"TESTING": True, "MODEL_DIR": model_dir, "DATABASE_URL": f"sqlite:///{database}",
                      "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False})
    facts: dict = {}
    with app.app_context():
        upgrade()
        if db.session.query(AdminUser).count() == 0:
            admin = AdminUser(username="bench")
            admin.set_password("benchmark password")
            db.session.add(admin)
            db.session.commit()
            thumbnail = thumbnail_bytes(thumbnail_side)
            began = time.perf_counter()
            fill(db, rows, thumbnail, admin.id)
            facts = {"fill_s": round(time.perf_counter() - began, 1), "thumbnail_bytes": len(thumbnail)}
        facts["rows"] = db.session.execute(text("SELECT count(*) FROM predictions")).scalar_one()
        facts["database_mb"] = round(database.stat().st_size / 1e6)
    return app, facts


class StatementLog:
    """Every SQL statement the engine runs, with its duration, while attached."""

    def __init__(self, engine):
        self.entries: list[tuple[float, str]] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, _cursor, _statement, _params, _context, _many):
        conn.info["began"] = time.perf_counter()

    def _after(self, conn, _cursor, statement, _params, _context, _many):
        self.entries.append((time.perf_counter() - conn.info["began"], " ".join(statement.split())))


def time_queries(client, log: StatementLog, repeat: int) -> dict[str, dict]:
    """The fastest of ``repeat`` runs of ``GET /admin/?QUERY`` for each query (other processes share the cores)."""
    client.get("/admin/")  # warm caches as a running server would have them
    figures = {}
    for query in QUERIES:
        runs = []
        for _ in range(repeat):
            log.entries.clear()
            began, began_cpu = time.perf_counter(), time.process_time()
            response = client.get(f"/admin/?{query}")
            assert response.status_code == 200, response.status_code
            runs.append((time.perf_counter() - began, time.process_time() - began_cpu, list(log.entries)))
        elapsed, cpu, statements = min(runs, key=lambda run: run[0])
        slowest = max(statements)
        figures[query] = {"wall_ms": round(elapsed * 1e3, 1), "cpu_ms": round(cpu * 1e3, 1),
                          "statements": len(statements), "slowest_execute_ms": round(slowest[0] * 1e3, 1),
                          "slowest_execute_statement": slowest[1][:200]}
        print(f"  {query or '(none)'}: {figures[query]['wall_ms']:.0f} ms", flush=True)
    return figures


def drop_review_indexes(engine) -> list[str]:
    """Drop migration 0002's covering indexes; returns their CREATE statements to put them back."""
    with engine.begin() as connection:
        found = connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name LIKE :p"),
                                   {"p": REVIEW_INDEX_PREFIX + "%"}).all()
        for name, _ in found:
            connection.execute(text(f'DROP INDEX "{name}"'))
    return [sql for _, sql in found]


def restore_indexes(engine, statements: list[str]) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


def time_csv_export(client) -> dict:
    began = time.perf_counter()
    response = client.get("/admin/predictions.csv", buffered=False)
    size = sum(len(piece) for piece in response.response)
    return {"mb": round(size / 1e6, 1), "seconds": round(time.perf_counter() - began, 1)}


def describe_query(query: str) -> str:
    return f"`{query}`" if query else "(none), 25 rows"


def render_markdown(report: dict) -> str:
    """The manual table: one row per query, the indexed page against the page without the review indexes."""
    machine, facts = report["machine"], report["database"]
    baseline = report.get("without_review_indexes")
    header = "| query | wall ms | CPU ms | SQL statements | slowest execute ms |"
    rule = "| --- | ---: | ---: | ---: | ---: |"
    if baseline:
        header += " wall ms without review indexes | ratio |"
        rule += " ---: | ---: |"
    lines = [f"Measured {report['measured_at']} on {machine['cpu']}, {machine['cores']} cores (1/5/15-minute "
             f"load average {', '.join(f'{x:g}' for x in machine['load_average_at_start'])} at the start), "
             f"{facts['rows']:,} predictions ({facts['database_mb']:,} MB SQLite file), best of "
             f"{report['repeat']} runs through the test client.", "", header, rule]
    for query, figures in report["with_review_indexes"].items():
        row = (f"| {describe_query(query)} | {figures['wall_ms']:.0f} | {figures['cpu_ms']:.0f} | "
               f"{figures['statements']} | {figures['slowest_execute_ms']:.0f} |")
        if baseline:
            ratio = baseline[query]["wall_ms"] / figures["wall_ms"]
            row += f" {baseline[query]['wall_ms']:.0f} | {ratio:.1f}x |"
        lines.append(row)
    lines.append("")
    if baseline:
        lines.append(f"Whole page set: **{report['ratios']['total_wall_without_over_with']:.1f}x** faster with "
                     f"the review indexes (sum of wall times).")
    csv = report["csv_export"]
    lines.append(f"The CSV of all {facts['rows']:,} rows ({csv['mb']} MB) streamed in {csv['seconds']} s.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    from app.extensions import db

    machine = machine_description()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        database = args.database or Path(folder) / "review.db"
        app, facts = create_bench_app(database, args.model_dir, args.rows, args.thumbnail_side)
        print(f"database: {json.dumps(facts)}", flush=True)
        with app.app_context():
            engine = db.engine
        log = StatementLog(engine)
        client = app.test_client()
        client.post("/admin/login", data={"username": "bench", "password": "benchmark password"})
        print("with the review indexes:", flush=True)
        indexed = time_queries(client, log, args.repeat)
        csv_export = time_csv_export(client)
        report = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine,
                  "database": facts, "repeat": args.repeat, "with_review_indexes": indexed,
                  "csv_export": csv_export}
        if not args.no_baseline:
            dropped = drop_review_indexes(engine)
            try:
                print(f"without the review indexes ({len(dropped)} dropped):", flush=True)
                baseline = time_queries(client, log, args.repeat)
            finally:
                restore_indexes(engine, dropped)
            report["without_review_indexes"] = baseline
            report["ratios"] = {
                "per_query_wall_without_over_with": {q: round(baseline[q]["wall_ms"] / indexed[q]["wall_ms"], 2)
                                                     for q in QUERIES},
                "total_wall_without_over_with": round(sum(f["wall_ms"] for f in baseline.values())
                                                      / sum(f["wall_ms"] for f in indexed.values()), 2)}
        with app.app_context():
            db.engine.dispose()
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["duration_s"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "admin_review.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "admin_review.md").write_text(render_markdown(report))
    print(render_markdown(report))
    if args.out.resolve() == RESULTS_DIR:
        print(f"Manual blocks filled: {', '.join(update_readme())}")


if __name__ == "__main__":
    main()
