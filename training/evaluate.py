"""The ``evaluate`` command and the report every training run writes beside its model.

``report/`` holds ``metrics.json`` (accuracy, top-5, per-class precision/recall/F1, top confusions,
confidence threshold), ``classification_report.txt``, ``confusion_matrix.png`` (the full matrix sorted
by class plus, for many classes, a labelled close-up of the most confused ones), ``top_confusions.csv``,
``confidence.png`` (coverage and accuracy against the score threshold) and ``training_curves.png``
when a ``history.csv`` is present.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from inference import tta as tta_lib  # noqa: E402
from training import export as export_lib  # noqa: E402
from training.commands import command, subcommand  # noqa: E402
from training.pipeline import make_dataset  # noqa: E402

FULL_LABELS_UP_TO = 30   # above this many classes the full matrix is drawn without tick labels
CLOSE_UP_CLASSES = 25    # classes in the labelled close-up of the most confused ones
TOP_CONFUSIONS = 30


def predict(model, paths: list[str], labels: list[int], *, num_classes: int, image_size: tuple[int, int],
            resize_mode: str, batch_size: int = 32, tta: str = "none",
            skip_above: float | None = None) -> np.ndarray:
    """Class probabilities for ``paths``, fed exactly as in training (no augmentation).

    With ``tta="flip"`` each photo's probabilities are the mean over it and its mirror image, as the
    app computes them for an artifact whose metadata says so; with ``skip_above`` too, a photo sure at
    that level on its own keeps its own (:func:`inference.tta.combine_views`).
    """
    ds = make_dataset(paths, labels, num_classes=num_classes, image_size=image_size, resize_mode=resize_mode,
                      batch_size=batch_size, cache=False).map(lambda x, y: x)
    probabilities = np.asarray(model.predict(ds, verbose=0), dtype="float64")
    if tta == "flip":
        mirrored = np.asarray(model.predict(ds.map(lambda x: x[:, :, ::-1, :]), verbose=0), dtype="float64")
        probabilities = tta_lib.combine_views(probabilities, mirrored, num_classes, skip_above)
    elif tta != "none":
        raise ValueError(f"unknown tta {tta!r}; use none or flip")
    return probabilities


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_report(matrix: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, plus macro and weighted averages."""
    true_pos = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    present = support > 0
    weights = support / max(1.0, support.sum())
    return {
        "per_class": per_class,
        "macro": {"precision": float(precision[present].mean()), "recall": float(recall[present].mean()),
                  "f1": float(f1[present].mean())},
        "weighted": {"precision": float((precision * weights).sum()), "recall": float((recall * weights).sum()),
                     "f1": float((f1 * weights).sum())},
    }


def format_report(report: dict[str, Any]) -> str:
    """Plain-text table in the usual classification-report layout."""
    width = max([len(name) for name in report["per_class"]] + [12])
    lines = [f"{'':{width}}  precision  recall  f1-score  support"]
    for name, row in report["per_class"].items():
        lines.append(f"{name:{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:8.3f}"
                     f"  {row['support']:7d}")
    total = sum(row["support"] for row in report["per_class"].values())
    for average in ("macro", "weighted"):
        row = report[average]
        lines.append(f"{average + ' avg':{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}"
                     f"  {row['f1']:8.3f}  {total:7d}")
    return "\n".join(lines) + "\n"


def top_confusions(matrix: np.ndarray, class_names: list[str], limit: int = TOP_CONFUSIONS
                   ) -> list[dict[str, Any]]:
    """The most frequent off-diagonal cells, largest first."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:limit]
    rows = []
    for flat in order:
        true_index, pred_index = np.unravel_index(flat, off.shape)
        count = int(off[true_index, pred_index])
        if count == 0:
            break
        rows.append({"true": class_names[true_index], "predicted": class_names[pred_index], "count": count,
                     "share_of_true": round(count / max(1, int(matrix[true_index].sum())), 4)})
    return rows


def confidence_curve(probabilities: np.ndarray, y_true: np.ndarray, target_precision: float
                     ) -> dict[str, Any]:
    """Choose the score threshold above which answers are right at ``target_precision``.

    The threshold is the lowest top-1 score ``s`` such that the answers scoring at least ``s`` are
    correct at least ``target_precision`` of the time; coverage is the share of images answered.

    Args:
        probabilities: ``(N, C)`` predictions.
        y_true: True label indices.
        target_precision: Wanted accuracy of the answers kept, e.g. 0.95.

    Returns:
        ``{"threshold", "target_precision", "coverage", "accuracy", "curve": [{"threshold", "coverage",
        "accuracy"}, ...]}``; ``threshold`` is ``None`` when no threshold reaches the target.
    """
    return threshold_curve(probabilities.max(axis=1), probabilities.argmax(axis=1) == y_true, target_precision)


def threshold_curve(scores: np.ndarray, right: np.ndarray, target_precision: float) -> dict[str, Any]:
    """As :func:`confidence_curve`, for answers given as (score, right) pairs.

    Args:
        scores: ``(N,)`` the score of each answer.
        right: ``(N,)`` whether each answer was right.
        target_precision: Wanted accuracy of the answers kept.

    Returns:
        As :func:`confidence_curve`.
    """
    order = np.argsort(-scores, kind="stable")
    cumulative_accuracy = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    threshold = coverage = accuracy = None
    sorted_scores = scores[order]
    for end in range(len(order), 0, -1):
        # Ties share one threshold, so only the last index of a run of equal scores is a valid cut.
        if end < len(order) and sorted_scores[end] == sorted_scores[end - 1]:
            continue
        if cumulative_accuracy[end - 1] >= target_precision:
            threshold = float(sorted_scores[end - 1])
            coverage = end / len(order)
            accuracy = float(cumulative_accuracy[end - 1])
            break
    curve = []
    for step in np.linspace(0.0, 1.0, 101):
        kept = scores >= step
        curve.append({"threshold": round(float(step), 2), "coverage": round(float(kept.mean()), 4),
                      "accuracy": round(float(right[kept].mean()), 4) if kept.any() else None})
    return {"threshold": threshold, "target_precision": target_precision, "coverage": coverage,
            "accuracy": accuracy, "curve": curve}


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path) -> None:
    """Row-normalised confusion matrix; for many classes, plus a labelled close-up of the most confused."""
    normalised = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    n = len(class_names)
    if n <= FULL_LABELS_UP_TO:
        fig, ax = plt.subplots(figsize=(max(5, 0.45 * n + 3), max(4, 0.45 * n + 2)))
        image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if normalised[i, j] > 0.5 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.colorbar(image, ax=ax, fraction=0.046)
    else:
        off = matrix.copy()
        np.fill_diagonal(off, 0)
        involvement = off.sum(axis=0) + off.sum(axis=1)
        chosen = np.sort(np.argsort(-involvement, kind="stable")[:CLOSE_UP_CLASSES])
        fig, (full, close) = plt.subplots(1, 2, figsize=(24, 12), gridspec_kw={"width_ratios": [1, 1.25]})
        full.imshow(normalised, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        full.set_title(f"all {n} classes (sorted by name, row-normalised)")
        full.set_xlabel("predicted class index")
        full.set_ylabel("true class index")
        sub = matrix[np.ix_(chosen, chosen)]
        sub_norm = sub / np.maximum(1, matrix[chosen].sum(axis=1, keepdims=True))
        close.imshow(sub_norm, cmap="Reds", vmin=0, vmax=max(0.05, float(sub_norm.max())))
        short = [class_names[i][:32] for i in chosen]
        close.set_xticks(range(len(chosen)), short, rotation=90, fontsize=7)
        close.set_yticks(range(len(chosen)), short, fontsize=7)
        for (i, j), count in np.ndenumerate(sub):
            if count:
                close.text(j, i, str(count), ha="center", va="center", fontsize=6)
        close.set_title(f"the {len(chosen)} most confused classes (counts)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confidence(confidence: dict[str, Any], path: Path) -> None:
    """Coverage and accuracy of the kept answers against the score threshold."""
    points = [p for p in confidence["curve"] if p["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["threshold"] for p in points], [p["accuracy"] for p in points], label="accuracy of kept answers")
    ax.plot([p["threshold"] for p in confidence["curve"]], [p["coverage"] for p in confidence["curve"]],
            label="coverage (share answered)")
    ax.axhline(confidence["target_precision"], color="grey", linestyle=":", label="target precision")
    if confidence["threshold"] is not None:
        ax.axvline(confidence["threshold"], color="red", linestyle="--",
                   label=f"threshold {confidence['threshold']:.3f}")
    ax.set_xlabel("top-1 score threshold")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_history(history_csv: Path, path: Path) -> bool:
    """Loss, accuracy (and top-5 when logged) per epoch from a Keras ``CSVLogger`` file.

    Returns:
        Whether a plot was written (``False`` when the file has no rows).
    """
    with open(history_csv, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("epoch", "").strip().isdigit()]
    if not rows:
        return False
    epochs = [int(row["epoch"]) + 1 for row in rows]
    panels = [("loss", "loss"), ("accuracy", "accuracy")]
    if "top5" in rows[0]:
        panels.append(("top5", "top-5 accuracy"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    for ax, (key, title) in zip(axes, panels):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [float(row[prefix + key]) for row in rows if row.get(prefix + key)]
            if values:
                ax.plot(epochs[: len(values)], values, style, marker=".", label=(prefix or "train_") + key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def evaluate_model(model, class_names: list[str], paths: list[str], labels: list[int], *,
                   image_size: tuple[int, int], resize_mode: str, report_dir: str | Path, batch_size: int = 32,
                   split_name: str = "val", target_precision: float = 0.95, tta: str = "none",
                   skip_above: float | None = None
                   ) -> dict[str, Any]:
    """Predict ``paths`` and write the report.

    Args:
        model: Keras classifier taking float32 RGB 0..255.
        class_names: Labels in output order.
        paths: Image files.
        labels: True label indices.
        image_size: ``(height, width)``.
        resize_mode: How images are fitted (as in the artifact's metadata).
        report_dir: Folder to write into (created).
        batch_size: Prediction batch size.
        split_name: Recorded in ``metrics.json``.
        target_precision: For the confidence threshold.
        tta: ``none`` or ``flip`` (see :func:`predict`).
        skip_above: The artifact's ``tta_skip_above`` (see :func:`predict`).

    Returns:
        ``{"metrics": {...}, "confidence": {...}}`` as also written to ``metrics.json``.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    num_classes = len(class_names)
    probabilities = predict(model, paths, labels, num_classes=num_classes, image_size=image_size,
                            resize_mode=resize_mode, batch_size=batch_size, tta=tta, skip_above=skip_above)
    y_true = np.asarray(labels)
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    report = classification_report(matrix, class_names)
    metrics: dict[str, Any] = {"split": split_name, "num_images": int(len(y_true)),
                               "accuracy": float((y_pred == y_true).mean())}
    if tta != "none":
        metrics["tta"] = tta
    if tta != "none" and skip_above is not None:
        metrics[tta_lib.SKIP_KEY] = skip_above
    if num_classes > 5:
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        metrics["top5_accuracy"] = float((top5 == y_true[:, None]).any(axis=1).mean())
    metrics["macro_f1"] = report["macro"]["f1"]
    metrics["weighted_f1"] = report["weighted"]["f1"]
    confusions = top_confusions(matrix, class_names)
    confidence = confidence_curve(probabilities, y_true, target_precision)

    export_lib.write_json(report_dir / "metrics.json", {
        **metrics, "classification_report": report, "top_confusions": confusions, "confidence": confidence})
    (report_dir / "classification_report.txt").write_text(format_report(report), encoding="utf-8")
    with open(report_dir / "top_confusions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["true", "predicted", "count", "share_of_true"])
        writer.writeheader()
        writer.writerows(confusions)
    plot_confusion(matrix, class_names, report_dir / "confusion_matrix.png")
    plot_confidence(confidence, report_dir / "confidence.png")
    history = report_dir / "history.csv"
    if history.exists():
        plot_history(history, report_dir / "training_curves.png")
    return {"metrics": metrics, "confidence": confidence}


def evaluate_artifact(model_dir: str | Path, data_path: str | Path, *, split: str = "val",
                      batch_size: int = 32, target_precision: float | None = None,
                      update_metadata: bool = False, fgsm: list[float] | None = None,
                      fgsm_limit: int | None = None) -> dict[str, Any]:
    """Evaluate a saved artifact on a split of a data folder; writes ``report/`` beside the model.

    The split is rebuilt from the artifact's recorded data settings (label map, split fractions, seed),
    so a generated split is the same one the model was trained with.

    Args:
        model_dir: Artifact folder (``model.keras``, ``labels.json``, ``metadata.json``).
        data_path: Data folder.
        split: ``val``, ``test`` or ``train``.
        batch_size: Prediction batch size.
        target_precision: Overrides the recorded confidence target.
        update_metadata: Also store the new metrics and confidence in ``metadata.json``.
        fgsm: Also measure accuracy under FGSM at these epsilons (pixel units, see
            :mod:`training.robustness`); adds ``"robustness"`` to the result.
        fgsm_limit: FGSM on the first ``fgsm_limit`` images of the split only.

    Returns:
        As :func:`evaluate_model`, plus ``"robustness"`` with ``fgsm``.
    """
    from training import data as data_lib
    from training.model import load_model

    model_dir = Path(model_dir)
    metadata = json.loads((model_dir / export_lib.METADATA_FILE).read_text(encoding="utf-8"))
    class_names = json.loads((model_dir / export_lib.LABELS_FILE).read_text(encoding="utf-8"))
    part = data_lib.artifact_split(metadata, class_names, data_path, split)
    if target_precision is None:
        target_precision = metadata.get("confidence", {}).get("target_precision", 0.95)
    model = load_model(model_dir / export_lib.KERAS_FILE)
    result = evaluate_model(model, class_names, part.paths, part.labels,
                            image_size=tuple(metadata["image_size"]), resize_mode=metadata["resize_mode"],
                            report_dir=model_dir / "report", batch_size=batch_size, split_name=split,
                            target_precision=target_precision, tta=metadata.get("tta", "none"),
                            skip_above=tta_lib.skip_above(metadata))
    if fgsm:
        from training.robustness import evaluate_robustness

        result["robustness"] = evaluate_robustness(
            model, class_names, part.paths, part.labels, image_size=tuple(metadata["image_size"]),
            resize_mode=metadata["resize_mode"], epsilons=fgsm, report_dir=model_dir / "report",
            batch_size=batch_size, split_name=split, limit=fgsm_limit)
    if update_metadata:
        metadata["metrics"] = result["metrics"]
        metadata["confidence"] = result["confidence"]
        if fgsm:
            metadata["robustness"] = result["robustness"]
        export_lib.write_json(model_dir / export_lib.METADATA_FILE, metadata)
    return result


@command("evaluate")
def add_evaluate_parser(subparsers) -> None:
    """Register ``python -m training evaluate``."""
    parser, required = subcommand(
        subparsers, "evaluate", _run_evaluate, summary="evaluate an artifact on a data split and write report/ beside it",
        description="Accuracy, top-5, classification report, confusion matrix, confidence threshold and "
                    "training curves, written to MODEL/report/.")
    required.add_argument("--model", required=True, metavar="DIR", help="artifact folder")
    required.add_argument("--data", required=True, metavar="DIR", help="data folder the model was trained on")
    options = parser.add_argument_group("evaluation")
    options.add_argument("--split", default="val", choices=["val", "test", "train"], help="split to evaluate")
    options.add_argument("--batch-size", type=int, default=32)
    options.add_argument("--target-precision", type=float, default=None,
                         help="precision for the confidence threshold (default: the artifact's)")
    options.add_argument("--update-metadata", action="store_true",
                         help="also store the new metrics and threshold in metadata.json")
    options.add_argument("--fgsm", metavar="EPS[,EPS...]", type=_epsilons, default=None,
                         help="also measure accuracy under FGSM perturbations of these sizes, in pixel units "
                              "0..255 (e.g. 0.5,1,2,4); writes robustness.json and example images")
    options.add_argument("--fgsm-limit", type=int, default=None, metavar="N",
                         help="run FGSM on the first N images of the split only")


def _run_evaluate(args: argparse.Namespace) -> int:
    result = evaluate_artifact(args.model, args.data, split=args.split, batch_size=args.batch_size,
                               target_precision=args.target_precision, update_metadata=args.update_metadata,
                               fgsm=args.fgsm, fgsm_limit=args.fgsm_limit)
    metrics = result["metrics"]
    print(", ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items()))
    confidence = result["confidence"]
    if confidence["threshold"] is not None:
        print(f"confidence threshold {confidence['threshold']:.3f} keeps {confidence['coverage']:.1%} of answers "
              f"at {confidence['accuracy']:.1%} accuracy (target {confidence['target_precision']:.0%})")
    for row in result.get("robustness", {}).get("results", []):
        print(f"FGSM epsilon {row['epsilon']:g} ({row['fraction']:.4f} of the range): accuracy {row['accuracy']:.1%}, "
              f"{row['changed']:.1%} of answers changed")
    print(f"report written to {args.model}/report/")
    return 0


def _epsilons(text: str) -> list[float]:
    from training.robustness import parse_epsilons

    try:
        return parse_epsilons(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
