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


def training_command(training_config: dict[str, Any]) -> str | None:
    """The ``python -m training train`` command line that reproduces the recorded configuration.

    Only options that differ from the defaults are written. Needs the training package's own option
    table (a training install); ``None`` on a serving-only install.
    """
    config = training_config.get("config") if isinstance(training_config, dict) else None
    if not isinstance(config, dict):
        return None
    try:
        from training.cli import TRAIN_OPTIONS
        from training.config import DEFAULTS
    except ImportError:  # serving-only install: no PyYAML / training dependencies
        return None
    parts = ["python -m training train"]
    for options in TRAIN_OPTIONS.values():
        for flag, key, kwargs in options:
            value, default = _lookup(config, key), _lookup(DEFAULTS, key)
            if value is None or value == default:
                continue
            if "const" in kwargs:  # a switch such as --no-augment
                if value == kwargs["const"]:
                    parts.append(flag)
                continue
            shown = " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
            parts.append(f"{flag} {_quote(shown)}")
    return " \\\n    ".join(parts)


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _quote(text: str) -> str:
    return f"'{text}'" if any(ch in text for ch in " '\"$") else text


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
        classifier: The served :class:`app.classifier.Classifier`.
        gate: The loaded :class:`app.trust.VehicleGate`, or ``None``.

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
        "command": training_command(metadata.get("training_config") or {}),
        "gate": gate.metadata if gate is not None else None,
    }
