"""The gallery benchmark at a small size, on the shipped model and real photos: every k measured (by the
margin over the model's references and by similarity alone), false overrides counted on both known sets,
the latency table filled, the README table written from the JSON.

No figure is asserted: the benchmark reports them, this checks that it measures what it says.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import gallery
from support import SHARED

pytestmark = pytest.mark.slow


def test_benchmark_teaches_each_k_and_reports_every_table(tmp_path):
    if not (SHARED / "datasets" / "web-makes" / "other-makes").is_dir():
        pytest.skip("real photos not available: ../shared/datasets is missing")
    gallery.main(["--k", "2", "3", "--limit", "4", "--repeats", "3", "--draws", "2", "--floors", "0.85", "0.5",
                  "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gallery.json").read_text())
    assert [row["k"] for row in report["results"]] == [2, 3]
    assert report["references"] > 0  # the shipped model ships references.npy: matches judged by their margin
    assert [row["k"] for row in report["similarity_only"]] == [2, 3]
    assert all(row["threshold"] >= 0.85 and row["references"] == 0 for row in report["similarity_only"])
    for row in report["results"]:
        assert row["references"] == report["references"] and row["threshold"] >= 0.0  # never below the floors
        assert row["examples"] == 3 * row["k"]
        assert row["taught_val"]["photos"] == 3 * 4
        assert set(row["false_overrides"]) == {"stanford-val", "web-makes-val"}
        assert all(entry["photos"] == 4 for entry in row["false_overrides"].values())
        assert set(row["loo_accuracy"]) == set(gallery.TAUGHT)
    study = report["floor_study"]
    assert [(row["floor"], row["k"]) for row in study] == [(0.85, 2), (0.85, 3), (0.5, 2), (0.5, 3),
                                                           ("margin", 2), ("margin", 3)]
    assert all(row["draws"] == 2 and 0 <= row["mean_answered"] <= 1 and 0 <= row["worst_false_override"] <= 1
               for row in study)
    assert set(report["latency"]["search"]) == {"0", "100", "1000", "10000"}
    assert report["latency"]["search"]["0"]["p50_ms"] == 0.0 and report["limit"] == 4
    table = (tmp_path / "gallery.md").read_text()
    assert "| 2 |" in table and "| 3 |" in table and "Capped at 4 photos per measured set." in table
    assert "**Aims:**" in table and "ms added at 1,000 examples" in table
    assert "| similarity, floor 0.85 | " in table and "| similarity, floor 0.50 | " in table
    assert "| margin over the references | " in table and "mean over 2 random draws" in table
    assert "Similarity alone" in table and "references (embeddings of its own training photos" in table
    (tmp_path / "gallery.md").unlink()
    gallery.main(["--render-only", "--out", str(tmp_path)])  # the same table from the stored figures
    assert (tmp_path / "gallery.md").read_text() == table
