"""Choose ``tta_skip_above``: how sure a photo must be on its own for its mirror view to be skipped.

``python -m training tta ARTIFACT`` runs the artifact as the app serves it (the LiteRT copy it picks,
the app's decoding and fit) over its validation photos - Stanford ``val/``, and for a model with a make
output ``web-makes/val`` and ``other-makes/val`` too - on each photo and on its mirror image. For each
candidate level it counts, per set, the photos that would skip the mirror view and the answers that
would change against always averaging both views (the top class, the top make, or the answer's level
and label), and the top-1 accuracy either way; and the same with no mirror view at all, which says whether the
flip averaging is worth its cost. It writes the lowest level at which at most
``--max-changed`` percent of the answers change on every set into ``metadata.json``, with the table in
``report/tta.md`` and a plot in ``report/tta.png``.

Run ``python -m training levels`` after it: the answer thresholds are then chosen on the answers as
they are served.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from training import data as data_lib
from training import export as export_lib
from training.commands import command

CANDIDATES = tuple(round(0.5 + 0.05 * step, 2) for step in range(10))  # 0.50 ... 0.95
REPORT_MARKDOWN = "tta.md"
REPORT_PLOT = "tta.png"


def view_rows(classifier, paths: list[str], *, max_pixels: int = 40_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Whole output rows of each photo and of its mirror image, decoded and fitted as the app does.

    Returns:
        ``((N, width), (N, width))`` float32: on the photos, and on their mirror images.
    """
    from inference.imaging import decode_upload, fit_to_input

    first, mirrored = [], []
    for path in paths:
        decoded = decode_upload(Path(path).read_bytes(), max_pixels=max_pixels, target=classifier.image_size,
                                resize_mode=classifier.resize_mode)
        pixels = fit_to_input(decoded.image, classifier.image_size, classifier.resize_mode)
        rows = classifier.predict_batch(np.stack([pixels, pixels[:, ::-1]]))
        first.append(rows[0])
        mirrored.append(rows[1])
    return np.asarray(first, dtype=np.float32), np.asarray(mirrored, dtype=np.float32)


def answers_of(classifier, rows: np.ndarray) -> list[tuple[int, int, str, str]]:
    """Per row: the top class, the top make (-1 without a make output), and the answer's level and label."""
    from inference.answers import choose_answer, group_scores
    from inference.gate import confidence_threshold

    threshold = confidence_threshold(classifier.metadata)
    answers = []
    for row in rows:
        probabilities, make = classifier.split(row)
        best = int(np.argmax(probabilities))
        top = {"label": classifier.labels[best], "score": float(probabilities[best])}
        scores = group_scores(probabilities, classifier.groupings, make=make)
        answer = choose_answer(top, threshold, scores, classifier.groupings, "ok") or {}
        answers.append((best, int(np.argmax(make)) if make is not None else -1,
                        str(answer.get("level")), str(answer.get("label"))))
    return answers


def measure_levels(classifier, views: dict[str, tuple[np.ndarray, np.ndarray]],
                   truths: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[dict[str, Any]]:
    """Skipped mirror views, changed answers and top-1 accuracy per candidate level and set.

    Args:
        classifier: The served classifier.
        views: Per set, the rows of :func:`view_rows`.
        truths: Per set, ``(true classes, true makes)`` as label indices, -1 where unknown.

    Returns:
        One ``{"skip_above", "sets": {name: {...}}}`` per candidate, lowest first.
    """
    from inference.tta import combine_views, confident

    width = len(classifier.labels)
    always = {name: answers_of(classifier, combine_views(first, mirror, width))
              for name, (first, mirror) in views.items()}
    table = []
    for level in CANDIDATES:
        sets = {}
        for name, (first, mirror) in views.items():
            answers = answers_of(classifier, combine_views(first, mirror, width, level))
            sets[name] = {"images": len(answers),
                          "skipped": round(float(confident(first, width, level).mean()), 4),
                          "changed": round(float(np.mean([a != b for a, b in zip(answers, always[name])])), 4),
                          **_accuracies(answers, always[name], *truths[name])}
        table.append({"skip_above": level, "sets": sets})
    return table


def single_view(classifier, views: dict[str, tuple[np.ndarray, np.ndarray]],
                truths: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """Per set, the same figures with no mirror view at all (``tta: none``): is the flip worth its cost?"""
    from inference.tta import combine_views

    width = len(classifier.labels)
    figures = {}
    for name, (first, mirror) in views.items():
        answers = answers_of(classifier, first)
        always = answers_of(classifier, combine_views(first, mirror, width))
        figures[name] = {"images": len(answers), "skipped": 1.0,
                         "changed": round(float(np.mean([a != b for a, b in zip(answers, always)])), 4),
                         **_accuracies(answers, always, *truths[name])}
    return figures


def _accuracies(answers, always, classes: np.ndarray, makes: np.ndarray) -> dict[str, float | None]:
    """Top-1 of the classes (where known) and of the makes (where known), skipping and always averaging."""
    figures: dict[str, float | None] = {}
    for key, index, truth in (("class", 0, classes), ("make", 1, makes)):
        known = truth >= 0
        if not known.any() or (key == "make" and (not answers or answers[0][1] < 0)):
            continue
        for suffix, chosen in (("", answers), ("_always", always)):
            picked = np.asarray([a[index] for a in chosen])
            figures[f"{key}_top1{suffix}"] = round(float(np.mean(picked[known] == truth[known])), 4)
    return figures


def choose(table: list[dict[str, Any]], max_changed: float) -> float | None:
    """The lowest level whose changed answers stay within ``max_changed`` (a share) on every set."""
    for row in table:
        if all(figures["changed"] <= max_changed for figures in row["sets"].values()):
            return row["skip_above"]
    return None


def validation_views(classifier, data: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The artifact's validation sets run as :func:`view_rows`, with their true class and make indices."""
    metadata, labels = classifier.metadata, classifier.labels
    if classifier.make_labels:
        from training.make_levels import validation_photos

        photos = validation_photos(metadata, labels, data)
        make_index = {m: i for i, m in enumerate(classifier.make_labels)}
        sets = {name: (part.paths, part.classes, [make_index.get(m, -1) for m in part.makes])
                for name, part in photos.items()}
    else:
        recorded = metadata.get("training_config", {}).get("config", {}).get("data", {}).get("path")
        if not (data or recorded):
            raise ValueError("the artifact records no data folder: give --data")
        val = data_lib.artifact_split(metadata, labels, data or recorded, "val")
        sets = {"stanford": (list(val.paths), list(val.labels), [-1] * len(val.paths))}
    views = {name: view_rows(classifier, paths) for name, (paths, _, _) in sets.items()}
    truths = {name: (np.asarray(classes), np.asarray(makes)) for name, (_, classes, makes) in sets.items()}
    return views, truths


def choose_skip_above(model_dir: str | Path, *, max_changed: float = 0.005, data: str | Path | None = None,
                      runtime: str = "auto", variant: str = "auto") -> dict[str, Any]:
    """Measure the candidate levels on the artifact's validation photos and record the chosen one.

    Args:
        model_dir: Artifact folder with ``tta: flip``.
        max_changed: Largest share of answers on any set allowed to differ from always averaging.
        data: The class-labelled data folder (default: the one its training configuration records).
        runtime: ``auto``, ``litert`` or ``keras``, as the app's ``MODEL_RUNTIME``.
        variant: The LiteRT copy (default: the one the app serves).

    Returns:
        ``{"skip_above": float or None, "max_changed", "served", "table"}``, also in ``metadata.json``
        (``tta_skip_above``, and ``tta_choice`` without the table) and ``report/tta.md``.
    """
    from inference.classifier import load_classifier
    from inference.tta import SKIP_KEY

    model_dir = Path(model_dir)
    classifier = load_classifier(model_dir, runtime=runtime, variant=variant)
    if classifier.tta != "flip":
        raise ValueError(f"{model_dir} does not serve with tta: flip; there is no mirror view to skip")
    views, truths = validation_views(classifier, data)
    table = measure_levels(classifier, views, truths)
    chosen = choose(table, max_changed)
    report = {"skip_above": chosen, "max_changed": max_changed,
              "served": {"runtime": classifier.runtime, "variant": classifier.variant,
                         "resize_mode": classifier.resize_mode},
              "single_view": single_view(classifier, views, truths), "table": table}
    metadata_path = model_dir / export_lib.METADATA_FILE
    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    metadata.pop(SKIP_KEY, None)
    if chosen is not None:
        metadata[SKIP_KEY] = chosen
    metadata["tta_choice"] = {key: value for key, value in report.items() if key not in ("table", "single_view")} | {
        "per_set": next((row["sets"] for row in table if row["skip_above"] == chosen), None)}
    export_lib.write_json(metadata_path, metadata)
    report_dir = model_dir / "report"
    report_dir.mkdir(exist_ok=True)
    (report_dir / REPORT_MARKDOWN).write_text(render_markdown(report), encoding="utf-8")
    plot(table, chosen, report_dir / REPORT_PLOT)
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """The measured levels as a Markdown table, one row per level and set."""
    served = report["served"]
    chosen = report["skip_above"]
    lines = [f"# Skipping the mirror view ({served['runtime']} {served['variant']}, {served['resize_mode']})", "",
             f"Chosen `tta_skip_above`: **{chosen if chosen is not None else 'none (always both views)'}** - the "
             f"lowest level changing at most {100 * report['max_changed']:.1f} % of the answers on every set.", "",
             "| skip above | set | photos | mirror skipped | answers changed | class top-1 (always) | "
             "make top-1 (always) |", "|---:|---|---:|---:|---:|---:|---:|"]
    rows = [(f"{row['skip_above']:.2f}", row["sets"]) for row in report["table"]]
    for level, sets in rows + [("no mirror (`tta: none`)", report["single_view"])]:
        for name, figures in sets.items():
            lines.append(f"| {level} | {name} | {figures['images']} | "
                         f"{100 * figures['skipped']:.1f} % | {100 * figures['changed']:.1f} % | "
                         f"{_pair(figures, 'class')} | {_pair(figures, 'make')} |")
    return "\n".join(lines) + "\n"


def _pair(figures: dict[str, Any], key: str) -> str:
    if f"{key}_top1" not in figures:
        return "-"
    return f"{100 * figures[f'{key}_top1']:.1f} % ({100 * figures[f'{key}_top1_always']:.1f} %)"


def plot(table: list[dict[str, Any]], chosen: float | None, path: Path) -> None:
    """Mirror views skipped and answers changed against the level, one line per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [row["skip_above"] for row in table]
    figure, (skipped, changed) = plt.subplots(1, 2, figsize=(10, 4))
    for name in table[0]["sets"]:
        skipped.plot(levels, [100 * row["sets"][name]["skipped"] for row in table], marker="o", label=name)
        changed.plot(levels, [100 * row["sets"][name]["changed"] for row in table], marker="o", label=name)
    for axis, title in ((skipped, "mirror view skipped (% of photos)"), (changed, "answers changed (%)")):
        axis.set_xlabel("tta_skip_above")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if chosen is not None:
            axis.axvline(chosen, color="grey", linestyle="--")
    skipped.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@command("tta")
def add_tta_parser(subparsers) -> None:
    """Register ``tta`` on the ``python -m training`` command line."""
    parser = subparsers.add_parser(
        "tta", help="choose how sure a photo must be to skip its mirror view (tta_skip_above)",
        description="Run ARTIFACT as the app serves it on its validation photos and their mirror images; for "
        "each level from 0.50 to 0.95 count the mirror views skipped and the answers changed; write the lowest "
        "level that changes at most --max-changed percent of the answers on every set into metadata.json, with "
        "report/tta.md and report/tta.png. Run `python -m training levels` afterwards for a make-output model.")
    parser.add_argument("artifact", metavar="ARTIFACT", help="artifact folder serving with tta: flip")
    parser.add_argument("--max-changed", type=float, default=0.5, metavar="PERCENT",
                        help="most answers allowed to change on any validation set (default 0.5)")
    parser.add_argument("--data", metavar="DIR", help="class-labelled data folder (default: the recorded one)")
    serving = parser.add_argument_group("serving")
    serving.add_argument("--runtime", default="auto", choices=["auto", "litert", "keras"])
    serving.add_argument("--variant", default="auto", help="LiteRT copy (default: the one the app serves)")
    parser.set_defaults(handler=_run_tta)


def _run_tta(args: argparse.Namespace) -> int:
    report = choose_skip_above(args.artifact, max_changed=args.max_changed / 100.0, data=args.data,
                               runtime=args.runtime, variant=args.variant)
    print((Path(args.artifact) / "report" / REPORT_MARKDOWN).read_text(encoding="utf-8"), end="")
    return 0 if report["skip_above"] is not None else 1
