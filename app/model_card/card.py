"""Gather the model card from the served artifact: ``metadata.json`` and the files in ``report/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_FOLDER = "report"
# The report files the card shows, with their captions, in page order.
REPORT_FIGURES = (
    ("training_curves.png", "Training curves: loss and accuracy per epoch, training and validation."),
    ("confusion_matrix.png", "Confusion matrix on the validation split (rows: true class)."),
    ("confidence.png", "Threshold curve: accuracy and coverage of the answers kept above each top score."),
    ("robustness.png", "Accuracy under FGSM perturbations of growing size."),
    ("fgsm_examples.png", "FGSM examples: the photo, the perturbation (magnified) and the perturbed photo."),
)
# Index written by ``python -m training visualize``: activation and filter-pattern grids with captions.
VISUALS_FILE = "visualize.json"
VISUAL_KINDS = ("activations", "filters")
SERVABLE_SUFFIXES = (".png", ".csv", ".txt", ".json")
CONFUSIONS_SHOWN = 10
CURVE_POINTS_SHOWN = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def report_dir(model_dir: str | Path) -> Path:
    """The artifact's report folder."""
    return Path(model_dir) / REPORT_FOLDER


def read_json(path: Path) -> dict[str, Any]:
    """A JSON document, or ``{}`` when it is missing or unreadable (the card shows what exists)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def visuals(folder: Path) -> dict[str, Any]:
    """The pictures listed in ``report/visualize.json`` that exist there, grouped by kind.

    Args:
        folder: The artifact's report folder.

    Returns:
        ``{"photo": name or None, "activations": [...], "filters": [...]}``; each item has ``file``,
        ``layer`` and ``caption``. Names that are not plain PNG files of the folder are left out.
    """
    index = read_json(folder / VISUALS_FILE)
    shown: dict[str, Any] = {"photo": index.get("photo") if isinstance(index.get("photo"), str) else None,
                             **{kind: [] for kind in VISUAL_KINDS}}
    for item in index.get("images") or []:
        if not isinstance(item, dict) or item.get("kind") not in VISUAL_KINDS:
            continue
        name = item.get("file")
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".png"):
            continue
        if (folder / name).is_file():
            shown[item["kind"]].append({"file": name, "layer": str(item.get("layer") or ""),
                                        "caption": str(item.get("caption") or "")})
    return shown


def build_card(classifier, gate=None) -> dict[str, Any]:
    """Everything the model card page shows, from the artifact of ``classifier``.

    Args:
        classifier: The served :class:`inference.classifier.Classifier`.
        gate: The loaded :class:`inference.gate.VehicleGate`, or ``None``.

    Returns:
        A dictionary for the template (missing parts are empty, never an error).
    """
    metadata = classifier.metadata
    folder = report_dir(classifier.model_dir)
    report = read_json(folder / "metrics.json")
    confidence = metadata.get("confidence") or report.get("confidence") or {}
    curve = [p for p in confidence.get("curve") or [] if p.get("threshold") in CURVE_POINTS_SHOWN]
    robustness = read_json(folder / "robustness.json") or metadata.get("robustness") or {}
    dataset = metadata.get("dataset") or {}
    return {
        "classifier": classifier,
        "metadata": metadata,
        "metrics": metadata.get("metrics") or {k: v for k, v in report.items() if not isinstance(v, (dict, list))},
        "confidence": confidence,
        "curve": curve,
        "confusions": (report.get("top_confusions") or [])[:CONFUSIONS_SHOWN],
        "figures": [(name, caption) for name, caption in REPORT_FIGURES if (folder / name).is_file()],
        "visuals": visuals(folder),
        "robustness": robustness,
        "dataset": {key: dataset.get(key) for key in ("root", "num_classes", "counts", "label_map",
                                                      "file_list_sha256") if dataset.get(key) is not None},
        "training": metadata.get("training_config") or {},
        "command": (metadata.get("training_config") or {}).get("command"),
        "gate": gate.metadata if gate is not None else None,
        "served_copy": served_copy(classifier),
        "groups": group_sections(metadata, folder),
        # A make-output artifact's groups.json holds its levels per kind of photo (levels_by_set) instead.
        "levels": levels_list(read_json(folder / "groups.json")),
        "levels_by_set": levels_by_set(metadata),
        "knows": knows(classifier),
    }


SET_TITLES = {"stanford": "Stanford val: cropped photos with a class", "web": "web-makes val: whole scenes of recent cars",
              "other": "other-makes val: makes it was not taught"}


def levels_list(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The answer levels of ``report/groups.json`` when they are one list (artifacts without a make output)."""
    levels = report.get("levels")
    return levels if isinstance(levels, list) else []


def levels_by_set(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """Per validation set, the share answered at each level and how often rightly (make-output models)."""
    found = metadata.get("answer_levels") or {}
    sets = found.get("sets") if isinstance(found, dict) else None
    if not isinstance(sets, dict):
        return []
    counts = found.get("num_images") or {}
    return [{"name": name, "title": SET_TITLES.get(name, name), "images": counts.get(name), "rows": rows}
            for name, rows in sets.items() if isinstance(rows, list)]


def knows(classifier) -> dict[str, Any]:
    """What the model can name: its classes, its makes, and the makes it learnt from photos without a class."""
    taught = classifier.metadata.get("make_data")
    taught = taught if isinstance(taught, dict) else {}
    return {"classes": list(classifier.labels), "makes": list(classifier.make_labels),
            "web_makes": list(taught.get("web_makes") or []), "other_makes": list(taught.get("other_makes") or [])}


def served_copy(classifier) -> dict[str, Any] | None:
    """How the quantised LiteRT copy being served compared with float32 (``None`` when float32 serves)."""
    if classifier.runtime != "litert" or classifier.variant == "float32":
        return None
    row = (classifier.metadata.get("litert_variants") or {}).get(classifier.variant) or {}
    return {"variant": classifier.variant, **{key: row.get(key) for key in (
        "top1", "top1_float32", "drop_points", "split", "images", "ms_per_image", "float32_ms_per_image")}}


def group_sections(metadata: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """Per label grouping (most specific first): its size, accuracy, threshold and curve points."""
    sections = []
    for name, group in (metadata.get("groups") or {}).items():
        confidence = group.get("confidence") or {}
        figure = f"confidence_{name}.png"
        sections.append({
            "name": name, "num_labels": len(group.get("labels") or []),
            "accuracy": (group.get("metrics") or {}).get("accuracy"), "confidence": confidence,
            "curve": [p for p in confidence.get("curve") or [] if p.get("threshold") in CURVE_POINTS_SHOWN],
            "figure": figure if (folder / figure).is_file() else None,
        })
    return sorted(sections, key=lambda s: (-s["num_labels"], s["name"]))
