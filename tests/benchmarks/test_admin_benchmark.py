"""The admin review benchmark at a small size: every query measured both ways, and the indexes put back.

No timing is asserted: the benchmark reports timings, this checks that it measures what it says.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from benchmarks import admin_review

pytestmark = pytest.mark.slow


def review_indexes(database) -> set[str]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE ?",
                                  (admin_review.REVIEW_INDEX_PREFIX + "%",)).fetchall()
    return {name for (name,) in rows}


def test_benchmark_times_every_query_with_and_without_the_review_indexes(color_artifact, tmp_path):
    database = tmp_path / "review.db"
    admin_review.main(["--rows", "300", "--repeat", "1", "--model-dir", str(color_artifact),
                       "--database", str(database), "--out", str(tmp_path / "results")])
    report = json.loads((tmp_path / "results" / "admin_review.json").read_text())
    assert report["database"]["rows"] == 300
    queries = set(admin_review.QUERIES)
    assert set(report["with_review_indexes"]) == set(report["without_review_indexes"]) == queries
    # The page's statement count does not depend on the filters (the README promises it).
    assert {figures["statements"] for figures in report["with_review_indexes"].values()} == {9}
    assert set(report["ratios"]["per_query_wall_without_over_with"]) == queries
    assert len(review_indexes(database)) == 3  # dropped for the baseline, then restored

    table = (tmp_path / "results" / "admin_review.md").read_text()
    assert table.count("\n| ") == len(queries) + 2  # header, rule and one row per query
    assert "without review indexes" in table and "300 rows" in table
