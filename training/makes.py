"""Make labels beside class labels: photos labelled by make only, trained in the same network.

A class-labelled dataset (Stanford's 196 models) knows the make of every class through a ``folder,label``
CSV (``data.class_makes``). Photos labelled by make only (``data.make_data``: ``train/<Make>/*.jpg`` and
``val/<Make>/*.jpg``, e.g. web photos of recent cars) teach the make output but not the class output, and
photos of makes the model should not name (``data.other_makes``: ``train/<Brand>/``, ``val/<Brand>/``)
teach one extra make label, :data:`OTHER_MAKE`, so that a car of an unknown make is answered as such
instead of as the nearest known make.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training import data as data_lib

OTHER_MAKE = "Other make"


@dataclass
class MakeData:
    """The make output's labels and the make-only photos.

    Attributes:
        labels: Make labels in output order (:data:`OTHER_MAKE` last when other makes are taught).
        class_make: Index into ``labels`` of each class of the class-labelled dataset.
        web: ``{"train": Split, "val": Split}`` of make-only photos of known makes.
        other: ``{"train": Split, "val": Split}`` of photos of other makes, all labelled :data:`OTHER_MAKE`.
    """

    labels: list[str]
    class_make: list[int]
    web: dict[str, data_lib.Split] = field(default_factory=dict)
    other: dict[str, data_lib.Split] = field(default_factory=dict)

    def make_only(self, split: str) -> data_lib.Split:
        """The make-only photos of ``split``: known makes, then other makes."""
        joined = data_lib.Split()
        for part in (self.web.get(split), self.other.get(split)):
            if part is not None:
                joined.paths.extend(part.paths)
                joined.labels.extend(part.labels)
        return joined

    def summary(self) -> dict[str, Any]:
        """Counts per split and source, and the makes taught from make-only photos, for ``metadata.json``."""
        taught = sorted({self.labels[m] for m in self.web["train"].labels}) if "train" in self.web else []
        others = sorted({Path(p).parent.name for p in self.other["train"].paths}) if "train" in self.other else []
        return {"labels": list(self.labels), "web_makes": taught, "other_makes": others,
                "counts": {source: {name: len(part) for name, part in parts.items()}
                           for source, parts in (("make_data", self.web), ("other_makes", self.other))}}


def _make_folders(root: Path, split: str) -> dict[str, list[str]]:
    """``{make folder: [image paths]}`` under ``root/split``; empty when the split folder is missing."""
    folder = root / split
    if not folder.is_dir():
        return {}
    return {p.name: [str(f) for f in data_lib.list_images(p)] for p in data_lib.class_folders(folder)}


def load_make_data(class_names: list[str], class_makes: str | Path | dict[str, str],
                   make_data: str | Path | None = None, other_makes: str | Path | None = None) -> MakeData:
    """Read the class -> make map and the make-only photo folders.

    Args:
        class_names: The class-labelled dataset's labels, in output order.
        class_makes: ``folder,label`` CSV giving every class its make, or that mapping itself.
        make_data: Folder with ``train/<Make>/`` and ``val/<Make>/`` photos labelled by make only. A make
            that no class has becomes a make label of its own.
        other_makes: Folder with ``train/<Brand>/`` and ``val/<Brand>/`` photos of makes to answer as
            :data:`OTHER_MAKE`.

    Returns:
        The :class:`MakeData`.

    Raises:
        ValueError: A class has no make in the CSV, or a folder has no training photos.
    """
    mapping = class_makes if isinstance(class_makes, dict) else data_lib.read_label_map(class_makes)
    missing = [name for name in class_names if name not in mapping]
    if missing:
        source = "the class -> make map" if isinstance(class_makes, dict) else class_makes
        raise ValueError(f"{source} gives no make for {len(missing)} classes, e.g. {missing[0]!r}")
    web_files = {split: _make_folders(Path(make_data), split) for split in ("train", "val")} if make_data else {}
    other_files = {split: _make_folders(Path(other_makes), split) for split in ("train", "val")} if other_makes else {}
    for name, files in (("make_data", web_files), ("other_makes", other_files)):
        if files and not files["train"]:
            raise ValueError(f"data.{name}: no train/<make>/ folders with images")
    labels = sorted({mapping[name] for name in class_names} | set(web_files.get("train", {})))
    if other_files:
        labels.append(OTHER_MAKE)
    index = {label: i for i, label in enumerate(labels)}
    result = MakeData(labels, [index[mapping[name]] for name in class_names])
    for split in ("train", "val"):
        web, other = data_lib.Split(), data_lib.Split()
        for make, paths in sorted(web_files.get(split, {}).items()):
            if make not in index:
                raise ValueError(f"{make_data}/{split}/{make} is a make with no training photos")
            web.paths.extend(paths)
            web.labels.extend([index[make]] * len(paths))
        for _brand, paths in sorted(other_files.get(split, {}).items()):
            other.paths.extend(paths)
            other.labels.extend([index[OTHER_MAKE]] * len(paths))
        if make_data:
            result.web[split] = web
        if other_makes:
            result.other[split] = other
    return result


def load_for_config(config: dict[str, Any], class_names: list[str]) -> MakeData | None:
    """The run's :class:`MakeData`, or ``None`` when ``data.class_makes`` is not set (no make output)."""
    data_cfg = config["data"]
    if not data_cfg.get("class_makes"):
        if data_cfg.get("make_data") or data_cfg.get("other_makes"):
            raise ValueError("data.make_data and data.other_makes need data.class_makes (the make of each class)")
        return None
    return load_make_data(class_names, data_cfg["class_makes"], data_cfg.get("make_data"),
                          data_cfg.get("other_makes"))


def metadata_section(makes: MakeData, class_names: list[str], class_makes: str | Path) -> dict[str, Any]:
    """The ``make_output`` and ``make_data`` entries of ``metadata.json`` (see :mod:`inference.artifact`)."""
    return {"make_output": {"labels": list(makes.labels),
                            "of": {name: makes.labels[m] for name, m in zip(class_names, makes.class_make)},
                            "label_map": Path(class_makes).name},
            "make_data": makes.summary()}
