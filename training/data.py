"""Dataset discovery, label maps, reproducible splits, class weights and the ``tf.data`` pipeline.

Layout: ``DATA/<class folder>/*.jpg``, optionally split into ``DATA/train``, ``DATA/val`` and
``DATA/test``. Without those sub-folders a seeded, stratified split is made; either way the file lists
are written into the run folder (``splits.csv``) so the run can be repeated on exactly the same files.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """The files of one split with their label indices.

    Attributes:
        paths: Image file paths.
        labels: Label index per file, into the dataset's ``class_names``.
    """

    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Dataset:
    """A labelled dataset split into train / val / test.

    Attributes:
        root: The data folder.
        class_names: Output labels in index order (after the label map, if any).
        splits: ``{"train": Split, "val": Split, "test": Split}``; test may be empty.
        label_map: Path of the label map applied, if any.
        presplit: Whether the folder came with its own train/ val/ sub-folders.
    """

    root: Path
    class_names: list[str]
    splits: dict[str, Split]
    label_map: str | None = None
    presplit: bool = False


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` that hold at least one image, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and list_images(p))


def read_label_map(path: str | Path) -> dict[str, str]:
    """Read a ``folder,label`` CSV.

    Args:
        path: CSV file with a header row containing ``folder`` and ``label``.

    Returns:
        ``{folder name: label}``.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"folder", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: a label map needs the columns folder,label")
        return {row["folder"]: row["label"] for row in reader}


def _map_folder(folder: str, label_map: dict[str, str] | None) -> str:
    if label_map is None:
        return folder
    try:
        return label_map[folder]
    except KeyError:
        raise KeyError(f"class folder {folder!r} is missing from the label map") from None


def stratified_split(items_by_class: dict[str, list[str]], fractions: list[float], seed: int
                     ) -> dict[str, dict[str, list[str]]]:
    """Split every class's files by the same fractions with a seeded shuffle.

    Args:
        items_by_class: ``{class folder: [file, ...]}``.
        fractions: ``[train, val]`` or ``[train, val, test]``, summing to 1.
        seed: Shuffle seed; the same seed and files give the same split.

    Returns:
        ``{split name: {class folder: [file, ...]}}``.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or not 2 <= len(fractions) <= 3:
        raise ValueError(f"split fractions must be 2 or 3 numbers summing to 1, got {fractions}")
    result: dict[str, dict[str, list[str]]] = {name: {} for name in SPLITS[: len(fractions)]}
    for folder in sorted(items_by_class):
        files = sorted(items_by_class[folder])
        # A per-class generator keeps one class's split independent of which other classes exist.
        random.Random(f"{seed}:{folder}").shuffle(files)
        counts = [int(round(f * len(files))) for f in fractions[1:]]
        if len(files) >= len(fractions):  # every split gets at least one image when it can
            counts = [max(1, c) for c in counts]
        n_train = len(files) - sum(counts)
        bounds = [0, n_train]
        for count in counts:
            bounds.append(bounds[-1] + count)
        for index, name in enumerate(result):
            result[name][folder] = files[bounds[index]:bounds[index + 1]]
    return result


def load_dataset(root: str | Path, *, label_map: str | Path | None = None,
                 split: list[float] | None = None, seed: int = 42,
                 max_per_class: int | None = None) -> Dataset:
    """Find the images under ``root`` and split them.

    Args:
        root: Data folder.
        label_map: Optional ``folder,label`` CSV grouping folders into coarser labels.
        split: Fractions for the generated split when ``root`` has no train/ val/ sub-folders.
        seed: Split seed.
        max_per_class: Optional cap on training files per class folder (kept in name order).

    Returns:
        The :class:`Dataset`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    mapping = read_label_map(label_map) if label_map else None
    presplit = (root / "train").is_dir() and (root / "val").is_dir()
    files: dict[str, dict[str, list[str]]] = {}
    if presplit:
        for name in SPLITS:
            if (root / name).is_dir():
                files[name] = {p.name: [str(f) for f in list_images(p)] for p in class_folders(root / name)}
    else:
        by_class = {p.name: [str(f) for f in list_images(p)] for p in class_folders(root)}
        if not by_class:
            raise FileNotFoundError(f"no class folders with images under {root}")
        files = stratified_split(by_class, list(split or [0.7, 0.15, 0.15]), seed)
    if max_per_class:
        files["train"] = {k: v[:max_per_class] for k, v in files["train"].items()}
    class_names = sorted({_map_folder(folder, mapping) for folder in files["train"]})
    index = {name: i for i, name in enumerate(class_names)}
    splits: dict[str, Split] = {}
    for name in SPLITS:
        part = Split()
        for folder, paths in sorted(files.get(name, {}).items()):
            label = _map_folder(folder, mapping)
            if label not in index:
                raise ValueError(f"{name}/{folder} maps to {label!r}, which has no training images")
            part.paths.extend(paths)
            part.labels.extend([index[label]] * len(paths))
        splits[name] = part
    return Dataset(root, class_names, splits, str(label_map) if label_map else None, presplit)


def artifact_split(metadata: dict[str, Any], class_names: list[str], data_path: str | Path, split: str) -> Split:
    """A split of the data an artifact was trained on, rebuilt from its recorded data settings.

    The label map, the split fractions and the seed come from ``metadata["training_config"]``, so a
    generated split is the very one the model was trained and selected with.

    Args:
        metadata: The artifact's metadata.
        class_names: Its labels, in output order.
        data_path: The data folder it was trained on.
        split: ``train``, ``val`` or ``test``.

    Returns:
        The :class:`Split`.

    Raises:
        ValueError: The folder's labels differ from the model's, or the split is empty.
    """
    config = metadata.get("training_config", {}).get("config", {})
    data_cfg = config.get("data", {})
    dataset = load_dataset(data_path, label_map=data_cfg.get("label_map"), split=data_cfg.get("split"),
                           seed=config.get("seed", 42))
    if dataset.class_names != class_names:
        raise ValueError(f"the labels of {data_path} differ from the model's ({len(dataset.class_names)} vs "
                         f"{len(class_names)}); pass the data folder and label map the model was trained on")
    part = dataset.splits[split]
    if not len(part):
        raise ValueError(f"the {split} split of {data_path} is empty")
    return part


def class_weights(labels: list[int], num_classes: int) -> dict[int, float]:
    """Balanced class weights, ``n_samples / (n_classes * n_class_samples)``.

    Args:
        labels: Training label indices.
        num_classes: Number of classes.

    Returns:
        ``{class index: weight}``; classes absent from ``labels`` get weight 0.
    """
    counts = Counter(labels)
    total = len(labels)
    return {c: (total / (num_classes * counts[c]) if counts[c] else 0.0) for c in range(num_classes)}


def file_list_hash(dataset: Dataset) -> str:
    """SHA-256 over every split's (split, relative path, label) rows: names the exact data used."""
    digest = hashlib.sha256()
    for name in SPLITS:
        part = dataset.splits.get(name, Split())
        for path, label in zip(part.paths, part.labels):
            rel = Path(path).relative_to(dataset.root).as_posix()
            digest.update(f"{name}\t{rel}\t{dataset.class_names[label]}\n".encode())
    return digest.hexdigest()


def summarize(dataset: Dataset) -> dict[str, Any]:
    """Counts per split and per class, plus the file-list hash, for ``metadata.json``."""
    summary: dict[str, Any] = {
        "root": str(dataset.root),
        "presplit": dataset.presplit,
        "label_map": dataset.label_map,
        "num_classes": len(dataset.class_names),
        "counts": {name: len(dataset.splits[name]) for name in SPLITS},
        "file_list_sha256": file_list_hash(dataset),
    }
    per_class: dict[str, dict[str, int]] = defaultdict(dict)
    for name in SPLITS:
        for label, count in sorted(Counter(dataset.splits[name].labels).items()):
            per_class[dataset.class_names[label]][name] = count
    summary["per_class"] = dict(per_class)
    return summary


def write_split_file(dataset: Dataset, path: str | Path) -> Path:
    """Write ``split,path,label`` rows so the exact split can be reused or audited."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "path", "label"])
        for name in SPLITS:
            part = dataset.splits[name]
            for file_path, label in zip(part.paths, part.labels):
                writer.writerow([name, Path(file_path).relative_to(dataset.root).as_posix(),
                                 dataset.class_names[label]])
    return path
