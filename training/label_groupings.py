"""``python -m training groups add``: named groupings of an artifact's labels (make, segment), measured on val.

A grouping maps every fine label to one group label (a ``folder,label`` CSV under ``training/label_maps``).
The app sums the fine probabilities per group and answers at the most specific level that clears its
threshold (:mod:`inference.answers`), so each grouping needs its own threshold, chosen here on the
validation split at the artifact's target precision, exactly as the class threshold is.

Adding a grouping needs no retraining: the artifact's model predicts the val split once, the group
scores are the sums of those probabilities. ``metadata.json`` gains ``groups[NAME]``; ``report/`` gains
``groups.json`` (every grouping's figures and the share of val photos answered at each level),
``answers.csv`` and ``answers.md`` (the same as tables; ``groups table --readme`` copies the latter into
a manual page between ``<!-- answers:NAME -->`` markers) and ``confidence_NAME.png``. The training config key ``groups``
(``{name: label map}``) runs the same step after training.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from inference import tta as tta_lib
from inference.answers import choose_answer, group_scores, groupings
from inference.artifact import CLASS_LEVEL, check_groups
from training import data as data_lib
from training import evaluate as evaluate_lib
from training import export as export_lib
from training.commands import command

REPORT_FILE = "groups.json"
ANSWERS_TABLE = "answers.csv"
ANSWERS_MARKDOWN = "answers.md"


def build_grouping(labels: list[str], label_map: str | Path) -> dict[str, Any]:
    """The ``labels``/``of`` part of a grouping from a ``folder,label`` CSV.

    Args:
        labels: The artifact's labels.
        label_map: CSV whose folders are those labels.

    Returns:
        ``{"labels": sorted group labels, "of": {fine label: group label}}``.

    Raises:
        KeyError: A label of the model is missing from the map.
    """
    mapping = data_lib.read_label_map(label_map)
    missing = [label for label in labels if label not in mapping]
    if missing:
        raise KeyError(f"{len(missing)} model labels are missing from {label_map}, e.g. {missing[0]!r}")
    of = {label: mapping[label] for label in labels}
    return {"labels": sorted(set(of.values())), "of": of}


def measure_grouping(grouping: dict[str, Any], labels: list[str], probabilities: np.ndarray, y_true: np.ndarray,
                     target_precision: float) -> dict[str, Any]:
    """Accuracy and confidence threshold of a grouping on predicted probabilities.

    Args:
        grouping: From :func:`build_grouping`.
        labels: The artifact's labels, in output order.
        probabilities: ``(N, num_classes)`` class probabilities.
        y_true: ``(N,)`` true class indices.
        target_precision: Wanted accuracy of the group answers kept.

    Returns:
        ``{"metrics": {"accuracy", "num_images"}, "confidence": {...as the class confidence}}``.
    """
    column = {label: i for i, label in enumerate(grouping["labels"])}
    matrix = np.zeros((len(labels), len(column)))
    for row, label in enumerate(labels):
        matrix[row, column[grouping["of"][label]]] = 1.0
    summed = probabilities @ matrix
    truth = matrix[y_true].argmax(axis=1)
    accuracy = float((summed.argmax(axis=1) == truth).mean())
    return {"metrics": {"accuracy": accuracy, "num_images": int(len(truth))},
            "confidence": evaluate_lib.confidence_curve(summed, truth, target_precision)}


def answer_levels(metadata: dict[str, Any], labels: list[str], probabilities: np.ndarray, y_true: np.ndarray
                  ) -> list[dict[str, Any]]:
    """How the app would answer each photo: the share answered at each level, and how often rightly.

    Every photo is taken to be a car (the vehicle gate is not part of this measure).

    Returns:
        One row per level (``class``, the groupings most specific first, then ``none``): ``level``,
        ``share`` of photos answered there, ``accuracy`` of those answers (``None`` when there are none),
        and the level's own top-1 ``level_accuracy`` and ``coverage`` at its threshold.
    """
    groups = groupings(metadata, labels)
    class_threshold = (metadata.get("confidence") or {}).get("threshold")
    counts: dict[str, list[int]] = {level: [0, 0] for level in [CLASS_LEVEL, *(g.name for g in groups), "none"]}
    for row, truth in zip(probabilities, y_true):
        best = int(np.argmax(row))
        top = {"label": labels[best], "score": float(row[best])}
        answer = choose_answer(top, class_threshold, group_scores(row, groups, top_k=1), groups, "ok")
        level = answer["level"] if answer else "none"
        counts[level][0] += 1
        if answer is None:
            continue
        if level == CLASS_LEVEL:
            right = answer["label"] == labels[truth]
        else:
            right = answer["label"] == metadata["groups"][level]["of"][labels[truth]]
        counts[level][1] += int(right)
    total = len(y_true)
    rows = []
    for level, (answered, right) in counts.items():
        if level == CLASS_LEVEL:
            own = {"level_accuracy": (metadata.get("metrics") or {}).get("accuracy"),
                   "coverage": (metadata.get("confidence") or {}).get("coverage")}
        elif level == "none":
            own = {"level_accuracy": None, "coverage": None}
        else:
            group = metadata["groups"][level]
            own = {"level_accuracy": (group.get("metrics") or {}).get("accuracy"),
                   "coverage": (group.get("confidence") or {}).get("coverage")}
        rows.append({"level": level, "share": answered / total if total else 0.0,
                     "accuracy": right / answered if answered and level != "none" else None, **own})
    return rows


def validation_probabilities(model_dir: Path, metadata: dict[str, Any], labels: list[str], data_path: str | Path,
                             batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The artifact's class probabilities on its val split, rebuilt from the recorded data settings."""
    from training.model import load_model

    val = data_lib.artifact_split(metadata, labels, data_path, "val")
    model = load_model(model_dir / export_lib.KERAS_FILE)
    probabilities = evaluate_lib.predict(model, val.paths, val.labels, num_classes=len(labels),
                                         image_size=tuple(metadata["image_size"]),
                                         resize_mode=metadata.get("resize_mode", "center_crop"),
                                         batch_size=batch_size, tta=metadata.get("tta", "none"),
                                         skip_above=tta_lib.skip_above(metadata))
    return probabilities, np.asarray(val.labels)


def add_groups(model_dir: str | Path, maps: dict[str, str | Path], data_path: str | Path, *,
               target_precision: float | None = None, batch_size: int = 32) -> dict[str, Any]:
    """Add (or replace) groupings in an artifact, measured on its val split.

    Args:
        model_dir: Artifact folder.
        maps: ``{grouping name: folder,label CSV}``.
        data_path: The data folder the model was trained on.
        target_precision: For the thresholds (default: the artifact's class target, else 0.95).
        batch_size: Prediction batch size.

    Returns:
        The report: every grouping of the artifact and the answer levels.
    """
    model_dir = Path(model_dir)
    metadata = json.loads((model_dir / export_lib.METADATA_FILE).read_text(encoding="utf-8"))
    labels = json.loads((model_dir / export_lib.LABELS_FILE).read_text(encoding="utf-8"))
    if target_precision is None:
        target_precision = (metadata.get("confidence") or {}).get("target_precision", 0.95)
    built = {name: build_grouping(labels, path) for name, path in maps.items()}
    probabilities, y_true = validation_probabilities(model_dir, metadata, labels, data_path, batch_size)
    groups = dict(metadata.get("groups") or {})
    report_dir = model_dir / "report"
    report_dir.mkdir(exist_ok=True)
    for name, grouping in built.items():
        measured = measure_grouping(grouping, labels, probabilities, y_true, target_precision)
        groups[name] = {**grouping, "label_map": Path(maps[name]).name, "metrics": {"split": "val", **measured["metrics"]},
                        "confidence": measured["confidence"]}
        evaluate_lib.plot_confidence(measured["confidence"], report_dir / f"confidence_{name}.png")
    check_groups(groups, labels)  # the reader's own check, before anything is written
    metadata["groups"] = groups
    levels = answer_levels(metadata, labels, probabilities, y_true)
    report = {
        "split": "val", "num_images": int(len(y_true)), "target_precision": target_precision,
        "levels": levels,
        "groups": {name: {"num_labels": len(group["labels"]), "label_map": group.get("label_map"),
                          "accuracy": group["metrics"]["accuracy"],
                          "threshold": group["confidence"]["threshold"],
                          "coverage": group["confidence"]["coverage"],
                          "accuracy_above_threshold": group["confidence"]["accuracy"]}
                   for name, group in groups.items()},
    }
    export_lib.write_json(model_dir / export_lib.METADATA_FILE, metadata)
    export_lib.write_json(report_dir / REPORT_FILE, report)
    with open(report_dir / ANSWERS_TABLE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["level", "share", "accuracy", "level_accuracy", "coverage"])
        writer.writeheader()
        writer.writerows(levels)
    (report_dir / ANSWERS_MARKDOWN).write_text(render_markdown(report, metadata.get("name") or model_dir.name),
                                               encoding="utf-8")
    return report


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def render_markdown(report: dict[str, Any], name: str) -> str:
    """The answer levels of ``report`` (from :func:`add_groups`) as a Markdown table."""
    lines = ["| level | top-1 accuracy at this level | coverage at its threshold | photos answered at this level "
             "| right, of those |", "|---|---:|---:|---:|---:|"]
    for row in report["levels"]:
        size = report["groups"].get(row["level"], {}).get("num_labels")
        level = f"{row['level']} ({size} labels)" if size else row["level"]
        if row["level"] == "none":
            level = "none (\"not sure\")"
        lines.append(f"| {level} | {_percent(row['level_accuracy'])} | {_percent(row['coverage'])} | "
                     f"{_percent(row['share'])} | {_percent(row['accuracy'])} |")
    lines.append("")
    lines.append(f"{name} on its {report['num_images']} {report['split']} photos, thresholds at "
                 f"{_percent(report['target_precision'])} precision; every photo taken to be a car. "
                 f"From `report/{REPORT_FILE}`.")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, artifacts_dir: Path) -> list[str]:
    """Copy ``ARTIFACT/report/answers.md`` into ``readme`` between ``<!-- answers:ARTIFACT -->`` markers.

    Returns:
        The artifacts whose tables were copied.
    """
    text = readme.read_text(encoding="utf-8")
    filled = []
    for name in re.findall(r"<!-- answers:([\w.-]+) -->", text):
        source = artifacts_dir / name / "report" / ANSWERS_MARKDOWN
        if source.is_file():
            block = re.compile(rf"(<!-- answers:{re.escape(name)} -->\n).*?(<!-- /answers:{re.escape(name)} -->)", re.S)
            text = block.sub(lambda m: m.group(1) + source.read_text(encoding="utf-8") + m.group(2), text)
            filled.append(name)
    readme.write_text(text, encoding="utf-8")
    return filled


@command("groups")
def add_groups_parser(subparsers) -> None:
    """Register ``groups add`` on the ``python -m training`` command line."""
    parser = subparsers.add_parser("groups", help="label groupings of an artifact (make, segment)",
                                   description="Manage the label groupings stored in an artifact's metadata.json.")
    actions = parser.add_subparsers(dest="groups_action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add", help="add a grouping measured on the val split, without retraining",
        description="Map every label of ARTIFACT to a group label with a folder,label CSV, sum the model's val "
        "probabilities per group, choose the group's confidence threshold at the artifact's target precision, "
        "and store the grouping in metadata.json (report/groups.json and report/answers.csv are rewritten).")
    add.add_argument("artifact", metavar="ARTIFACT", help="artifact folder (model.keras, labels.json, metadata.json)")
    add.add_argument("--name", required=True, help="grouping name, e.g. make or segment")
    add.add_argument("--map", required=True, metavar="CSV", help="folder,label CSV covering every label")
    add.add_argument("--data", required=True, metavar="DIR", help="data folder the model was trained on")
    add.add_argument("--target-precision", type=float, metavar="P",
                     help="precision the threshold is chosen for (default: the artifact's)")
    add.add_argument("--batch-size", type=int, default=32)
    add.set_defaults(handler=_run_add)
    table = actions.add_parser(
        "table", help="print the answer-level table of an artifact's report (optionally into a manual page)",
        description="Print ARTIFACT/report/answers.md; with --readme, copy every artifact's table into that page "
        "between its <!-- answers:NAME --> markers.")
    table.add_argument("artifact", metavar="ARTIFACT", help="artifact folder whose report has answers.md")
    table.add_argument("--readme", type=Path, metavar="FILE", help="manual page to update, e.g. docs/models.md")
    table.set_defaults(handler=_run_table)


def _run_table(args: argparse.Namespace) -> int:
    artifact = Path(args.artifact)
    print((artifact / "report" / ANSWERS_MARKDOWN).read_text(encoding="utf-8"), end="")
    if args.readme:
        print("Manual tables filled:", ", ".join(update_readme(args.readme, artifact.parent)) or "none")
    return 0


def _run_add(args: argparse.Namespace) -> int:
    report = add_groups(args.artifact, {args.name: args.map}, args.data, target_precision=args.target_precision,
                        batch_size=args.batch_size)
    group = report["groups"][args.name]
    threshold = "none reaches the target" if group["threshold"] is None else f"{group['threshold']:.3f}"
    print(f"{args.name}: {group['num_labels']} groups, top-1 {group['accuracy']:.1%} on {report['num_images']} val "
          f"images, threshold {threshold}")
    for row in report["levels"]:
        right = "" if row["accuracy"] is None else f", {row['accuracy']:.1%} right"
        print(f"  answered at {row['level']}: {row['share']:.1%}{right}")
    return 0
