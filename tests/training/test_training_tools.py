"""Dataset tools: dedupe (dry run by default), resize and split."""

from __future__ import annotations

import shutil

from PIL import Image

from tests.training.conftest import write_class_folder
from training.cli import main


def _folder_with_duplicates(tmp_path):
    root = write_class_folder(tmp_path / "data", 4)
    shutil.copy(root / "red" / "000.jpg", root / "red" / "000_copy.jpg")                    # exact
    with Image.open(root / "blue" / "003.jpg") as image:
        image.resize((image.width * 3, image.height * 3)).save(root / "blue" / "003_big.jpg", quality=80)  # near
    return root


def test_dedupe_dry_run_deletes_nothing(tmp_path, capsys):
    root = _folder_with_duplicates(tmp_path)
    before = sorted(root.rglob("*.*"))
    assert main(["tools", "dedupe", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 exact and 1 near-duplicate groups; 2 files would be removed" in out
    assert "dry run" in out
    assert sorted(root.rglob("*.*")) == before


def test_dedupe_apply_removes_the_copies_only(tmp_path):
    root = _folder_with_duplicates(tmp_path)
    assert main(["tools", "dedupe", str(root), "--apply", "--no-progress"]) == 0
    assert not (root / "red" / "000_copy.jpg").exists() and (root / "red" / "000.jpg").exists()
    assert len([p for p in (root / "blue").iterdir() if p.stem.startswith("003")]) == 1
    assert len(list(root.rglob("*.*"))) == 12


def test_resize_writes_a_cropped_copy(tmp_path):
    root = write_class_folder(tmp_path / "data", 3)
    out = tmp_path / "small"
    assert main(["tools", "resize", str(root), "--out", str(out), "--size", "20", "16", "--no-progress"]) == 0
    files = sorted(out.rglob("*.jpg"))
    assert len(files) == 9
    assert all(Image.open(f).size == (20, 16) for f in files)
    assert len(list(root.rglob("*.*"))) == 9  # the source is untouched


def test_split_dry_run_then_apply(tmp_path, capsys):
    root = write_class_folder(tmp_path / "data", 10)
    out = tmp_path / "split"
    assert main(["tools", "split", str(root), "--out", str(out), "--fractions", "0.8", "0.2"]) == 0
    assert "train 24, val 6" in capsys.readouterr().out and not out.exists()
    assert main(["tools", "split", str(root), "--out", str(out), "--fractions", "0.8", "0.2", "--apply"]) == 0
    for name, count in (("train", 8), ("val", 2)):
        assert all(len(list((out / name / c).iterdir())) == count for c in ("red", "green", "blue"))
    assert len(list(root.rglob("*.*"))) == 30
