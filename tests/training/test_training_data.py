"""Data discovery: stratified reproducible splits, label maps, class weights, file lists."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from training.data import (class_weights, file_list_hash, load_dataset, read_label_map, stratified_split,
                           summarize, write_split_file)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _per_class(split) -> Counter:
    return Counter(split.labels)


def test_generated_split_is_stratified_and_complete(image_folder):
    dataset = load_dataset(image_folder, split=[0.6, 0.2, 0.2], seed=1)
    assert dataset.class_names == ["blue", "green", "red"]
    assert not dataset.presplit
    for name in ("train", "val", "test"):
        assert set(_per_class(dataset.splits[name]).values()) == {{"train": 6, "val": 2, "test": 2}[name]}
    every_file = [p for s in dataset.splits.values() for p in s.paths]
    assert len(every_file) == len(set(every_file)) == 30


def test_split_is_reproducible_and_depends_on_the_seed(image_folder):
    first = load_dataset(image_folder, seed=3)
    again = load_dataset(image_folder, seed=3)
    other = load_dataset(image_folder, seed=4)
    assert first.splits["val"].paths == again.splits["val"].paths
    assert file_list_hash(first) == file_list_hash(again)
    assert first.splits["val"].paths != other.splits["val"].paths
    assert file_list_hash(first) != file_list_hash(other)


def test_stratified_split_gives_every_split_an_image_for_small_classes():
    parts = stratified_split({"few": ["a", "b", "c"], "many": [str(i) for i in range(20)]}, [0.7, 0.15, 0.15], 0)
    assert [len(parts[s]["few"]) for s in ("train", "val", "test")] == [1, 1, 1]
    assert [len(parts[s]["many"]) for s in ("train", "val", "test")] == [14, 3, 3]
    with pytest.raises(ValueError):
        stratified_split({"x": ["a"]}, [0.5, 0.2], 0)


def test_presplit_folder_is_used_as_it_is(presplit_folder):
    dataset = load_dataset(presplit_folder)
    assert dataset.presplit
    assert len(dataset.splits["train"]) == 24 and len(dataset.splits["val"]) == 9
    assert len(dataset.splits["test"]) == 0
    assert all("/val/" in p for p in dataset.splits["val"].paths)


def test_label_map_groups_folders(image_folder, tmp_path):
    mapping = tmp_path / "warm.csv"
    mapping.write_text("folder,label\nred,warm\ngreen,cold\nblue,cold\n", encoding="utf-8")
    dataset = load_dataset(image_folder, label_map=mapping)
    assert dataset.class_names == ["cold", "warm"]
    for path, label in zip(dataset.splits["train"].paths, dataset.splits["train"].labels):
        assert dataset.class_names[label] == ("warm" if Path(path).parent.name == "red" else "cold")


def test_label_map_missing_a_folder_is_an_error(image_folder, tmp_path):
    mapping = tmp_path / "partial.csv"
    mapping.write_text("folder,label\nred,warm\n", encoding="utf-8")
    with pytest.raises(KeyError, match="is missing from the label map"):
        load_dataset(image_folder, label_map=mapping)


def test_class_weights_balance_the_classes():
    weights = class_weights([0, 0, 0, 1], 3)
    assert weights[0] == pytest.approx(4 / (3 * 3))
    assert weights[1] == pytest.approx(4 / 3)
    assert weights[2] == 0.0
    assert sum(weights[c] * n for c, n in ((0, 3), (1, 1))) == pytest.approx(4 * 2 / 3)


def test_summary_and_split_file_record_the_data(image_folder, tmp_path):
    dataset = load_dataset(image_folder)
    summary = summarize(dataset)
    assert summary["counts"] == {name: len(dataset.splits[name]) for name in ("train", "val", "test")}
    assert summary["per_class"]["red"]["train"] == _per_class(dataset.splits["train"])[2]
    rows = list(csv.DictReader(open(write_split_file(dataset, tmp_path / "splits.csv"), encoding="utf-8")))
    assert len(rows) == 30
    assert {row["split"] for row in rows} == {"train", "val", "test"}
    assert all(not Path(row["path"]).is_absolute() for row in rows)


@pytest.mark.parametrize("name, labels", [("stanford_premium_basic.csv", {"premium", "basic"}),
                                          ("stanford_make.csv", None)])
def test_shipped_label_maps_cover_196_classes(name, labels):
    mapping = read_label_map(REPO_ROOT / "training" / "label_maps" / name)
    assert len(mapping) == 196
    if labels:
        assert set(mapping.values()) == labels
        assert mapping["BMW M3 Coupe 2012"] == "premium"
        assert mapping["Chevrolet Corvette ZR1 2012"] == "basic"
    else:
        assert len(set(mapping.values())) == 49
