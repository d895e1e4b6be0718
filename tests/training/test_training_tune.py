"""``python -m training tune`` on tiny generated data with ``--weights none``: the search runs, writes its
table, plot and best.yaml, and ``train`` takes best.yaml as it is."""

from __future__ import annotations

import csv

import pytest
import yaml
from PIL import Image

from training.cli import main
from training.config import DEFAULTS, resolve
from training.tune import SEARCHED, best_config, scaled_augment

TINY_CONFIG = """\
name: tiny-tuned
model: {backbone: small_cnn, weights: imagenet, image_size: [32, 32], resize_mode: stretch}
train: {batch_size: 8, head_epochs: 1, fine_tune_epochs: 1, unfreeze_blocks: 1, verbose: 0}
"""


@pytest.fixture(scope="module")
def search(presplit_folder, tmp_path_factory):
    work = tmp_path_factory.mktemp("tune")
    config = work / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out = work / "out"
    status = main(["tune", "--config", str(config), "--data", str(presplit_folder), "--weights", "none",
                   "--trials", "3", "--max-minutes", "10", "--max-unfreeze", "1", "--trial-epochs", "1",
                   "--strengths", "0", "1", "--cache-dir", str(work / "cache"), "--out", str(out), "--quiet"])
    assert status == 0
    return {"out": out, "data": presplit_folder, "work": work, "config": config}


def test_writes_a_trials_table_a_plot_and_best_yaml(search):
    out = search["out"]
    with open(out / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    assert list(rows[0]) == ["trial", "score", "seconds", *[name for name, _ in SEARCHED]]
    for row in rows:
        assert 0.0 <= float(row["score"]) <= 1.0 and float(row["seconds"]) > 0
        assert 3e-4 <= float(row["head_lr"]) <= 1e-2 and 1e-5 <= float(row["fine_tune_lr"]) <= 3e-4
        assert 0 <= float(row["dropout"]) <= 0.5 and 0 <= float(row["label_smoothing"]) <= 0.2
        assert row["unfreeze_blocks"] in ("0", "1") and float(row["augment_strength"]) in (0.0, 1.0)
    with Image.open(out / "trials.png") as plot:
        assert plot.format == "PNG" and plot.width >= 300

    best_row = max(rows, key=lambda row: float(row["score"]))
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["train"]["head_lr"] == pytest.approx(float(best_row["head_lr"]), rel=1e-2)
    assert best["model"]["dropout"] == pytest.approx(float(best_row["dropout"]))
    assert best["train"]["unfreeze_blocks"] == int(best_row["unfreeze_blocks"])
    assert best["augment"]["enabled"] is (float(best_row["augment_strength"]) > 0)
    assert best["data"]["path"] == str(search["data"]) and best["model"]["weights"] == "none"


def test_train_takes_best_yaml_as_it_is(search):
    work = search["work"]
    status = main(["train", "--config", str(search["out"] / "best.yaml"), "--runs-dir", str(work / "runs"),
                   "--out", str(work / "artifact"), "--no-litert"])
    assert status == 0
    assert (work / "artifact" / "model.keras").is_file()


def test_a_second_search_reads_the_activations_from_the_cache_folder(search, capsys):
    stored = sorted(p.name for p in (search["work"] / "cache").rglob("*.npy"))
    assert stored == ["train_strength_0.npy", "train_strength_1.npy", "val.npy"]
    status = main(["tune", "--config", str(search["config"]), "--data", str(search["data"]), "--weights", "none",
                   "--trials", "1", "--max-minutes", "10", "--max-unfreeze", "1", "--trial-epochs", "1",
                   "--strengths", "0", "1", "--cache-dir", str(search["work"] / "cache"), "--no-baseline",
                   "--out", str(search["work"] / "again"), "--quiet"])
    assert status == 0
    assert capsys.readouterr().out.count("read from") == 3


def test_augment_strength_scales_the_configured_ranges():
    settings = DEFAULTS["augment"]
    half = scaled_augment(settings, 0.5)
    assert half["rotation"] == settings["rotation"] / 2 and half["zoom"] == settings["zoom"] / 2
    assert half["horizontal_flip"] is settings["horizontal_flip"] and half["enabled"]
    assert scaled_augment(settings, 0.0)["enabled"] is False
    config = resolve(None, {"data.path": "x"})
    best = best_config(config, {"head_lr": 0.0012345, "fine_tune_lr": 2e-5, "dropout": 0.30000001,
                                "label_smoothing": 0.05, "unfreeze_blocks": 2, "augment_strength": 1.0})
    assert best["train"]["head_lr"] == 0.00123 and best["model"]["dropout"] == 0.3
    assert best["augment"] == config["augment"] and best["train"]["unfreeze_blocks"] == 2


def test_help_says_what_is_approximated(capsys):
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = capsys.readouterr().out
    for phrase in ("approximated", "cached", "--max-unfreeze", "fixed augmented copy", "--trial-epochs",
                   "best.yaml"):
        assert phrase in text


def test_a_budget_too_small_for_any_trial_is_a_clear_error(presplit_folder, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    with pytest.raises(RuntimeError, match="no trial finished"):
        main(["tune", "--config", str(config), "--data", str(presplit_folder), "--weights", "none",
              "--trials", "2", "--max-minutes", "0.001", "--max-unfreeze", "1", "--strengths", "0",
              "--no-baseline", "--out", str(tmp_path / "out"), "--quiet"])
