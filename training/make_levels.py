"""Answer levels of a model with a make output, measured as served on both kinds of validation photos.

``python -m training levels ARTIFACT`` runs the artifact the way the app serves it (the LiteRT copy that
``MODEL_VARIANT=auto`` picks, the app's decoding, fit and test-time augmentation) over three validation
sets - Stanford ``val/`` (cropped photos with a class), ``web-makes/val`` (whole scenes, make only) and
``other-makes/val`` (makes the model was not taught) - and then:

* chooses each level's confidence threshold so that answers at that level are right at least the target
  precision of the time on the Stanford photos **and** on the web photos (the larger of the two cuts); the
  class level answers only where the make output agrees with the class, as the app does;
* writes ``metadata.json``: ``groups`` (``make`` from the make output, and the groupings over makes such
  as ``segment``), the class ``confidence``, and ``answer_levels``: per set, the share of photos answered
  at each level and how often rightly; ``report/answers.md`` holds the same as a table.

The photos' data folders are the ones recorded in the artifact's training configuration unless given.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.answers import Grouping, choose_answer, group_scores, group_sums, groupings
from inference.artifact import CLASS_LEVEL, MAKE_OUTPUT, OTHER_MAKE, check_groups
from training import data as data_lib
from training import evaluate as evaluate_lib
from training import export as export_lib
from training import makes as makes_lib
from training.commands import command

DEFAULT_GROUPS = {"segment": str(Path(__file__).resolve().parent / "label_maps" / "make_premium_basic.csv")}
SETS = ("stanford", "web", "other")
SET_TITLES = {"stanford": "Stanford val (cropped, with a class)", "web": "web-makes val (whole scenes)",
              "other": "other-makes val (makes it was not taught)"}
ANSWERS_MARKDOWN = "answers.md"
REPORT_FILE = "groups.json"
# Thresholds are chosen where the web and the Stanford photos both reach the target; other-makes photos
# count with the web photos (a right answer for them is "Other make").
CALIBRATION_SETS = {"stanford": ("stanford",), "web": ("web", "other")}


@dataclass
class Photos:
    """One validation set: files with their true class (-1 when unknown) and make label."""

    paths: list[str]
    classes: list[int]
    makes: list[str]


def validation_photos(metadata: dict[str, Any], labels: list[str], data: str | Path | None = None,
                      make_data: str | Path | None = None, other_makes: str | Path | None = None) -> dict[str, Photos]:
    """The three validation sets of a make-output artifact, from its recorded data folders unless given.

    Returns:
        ``{"stanford": Photos, "web": Photos, "other": Photos}`` (a set whose folder is unknown is left out).
    """
    recorded = metadata.get("training_config", {}).get("config", {}).get("data", {})
    data = data or recorded.get("path")
    make_data = make_data or recorded.get("make_data")
    other_makes = other_makes or recorded.get("other_makes")
    make_of = metadata[MAKE_OUTPUT]["of"]
    sets: dict[str, Photos] = {}
    if data:
        val = data_lib.artifact_split(metadata, labels, data, "val")
        sets["stanford"] = Photos(list(val.paths), list(val.labels), [make_of[labels[c]] for c in val.labels])
    found = makes_lib.load_make_data(labels, make_of, make_data, other_makes)
    for name, parts in (("web", found.web), ("other", found.other)):
        if "val" in parts and len(parts["val"]):
            part = parts["val"]
            sets[name] = Photos(list(part.paths), [-1] * len(part), [found.labels[m] for m in part.labels])
    return sets


def served_outputs(classifier, paths: list[str], *, max_pixels: int = 40_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Class and make probabilities of photo files as the app computes them for an upload.

    Args:
        classifier: From :func:`inference.classifier.load_classifier`.
        paths: Photo files.
        max_pixels: The decoder's pixel limit.

    Returns:
        ``((N, num_classes), (N, num_makes))`` float32.
    """
    from inference.imaging import decode_upload, fit_to_input

    classes, makes = [], []
    for path in paths:
        decoded = decode_upload(Path(path).read_bytes(), max_pixels=max_pixels, target=classifier.image_size,
                                resize_mode=classifier.resize_mode)
        class_p, make_p = classifier.outputs(fit_to_input(decoded.image, classifier.image_size, classifier.resize_mode))
        classes.append(class_p)
        makes.append(make_p)
    return np.asarray(classes, dtype=np.float32), np.asarray(makes, dtype=np.float32)


def make_groups(make_labels: list[str], maps: dict[str, str | Path]) -> dict[str, dict[str, Any]]:
    """The ``make`` grouping (each make its own group) and a grouping over makes per ``folder,label`` CSV."""
    groups = {"make": {"labels": sorted(make_labels), "of": {m: m for m in make_labels}, "from": MAKE_OUTPUT}}
    for name, path in maps.items():
        mapping = data_lib.read_label_map(path)
        missing = [m for m in make_labels if m not in mapping]
        if missing:
            raise KeyError(f"{path} gives no {name} for {len(missing)} makes, e.g. {missing[0]!r}")
        of = {m: mapping[m] for m in make_labels}
        groups[name] = {"labels": sorted(set(of.values())), "of": of, "from": MAKE_OUTPUT,
                        "label_map": Path(path).name}
    return groups


def _strictest(per_set: dict[str, dict[str, Any]], target_precision: float) -> dict[str, Any]:
    """One confidence section from per-set ones: the largest threshold, so every set reaches the target.

    ``None`` when some set cannot reach it at any threshold. The curve and figures kept are the
    first set's (Stanford), with each set's own cut recorded under ``per_set``.
    """
    thresholds = [c["threshold"] for c in per_set.values()]
    threshold = None if any(t is None for t in thresholds) else max(thresholds)
    first = next(iter(per_set.values()))
    kept = {name: {k: c[k] for k in ("threshold", "coverage", "accuracy")} for name, c in per_set.items()}
    return {**first, "threshold": threshold, "target_precision": target_precision, "per_set": kept}


BLENDS = tuple(round(0.1 * step, 1) for step in range(11))  # 0.0, 0.1, ... 1.0
BLEND_TIE = 0.001  # mean make accuracies this close are a draw: about one photo in 1,000


def _grouping(group: dict[str, Any], name: str, metadata: dict[str, Any], labels: list[str]) -> Grouping:
    """The app's :class:`inference.answers.Grouping` of one grouping section, so scores are summed as served."""
    return groupings({MAKE_OUTPUT: metadata[MAKE_OUTPUT], "groups": {name: group}}, labels)[0]


def choose_blend(groups: dict[str, dict[str, Any]], metadata: dict[str, Any], labels: list[str],
                 outputs: dict[str, tuple[np.ndarray, np.ndarray]], photos: dict[str, "Photos"]) -> dict[str, float]:
    """The weight of the make output against the summed classes that gives the best make accuracy, the mean
    over the Stanford and the web photos (each kind counts alike); ``{blend: that mean}`` for the record."""
    found = {}
    for blend in BLENDS:
        grouping = _grouping({**groups["make"], "blend": blend}, "make", metadata, labels)
        column = {label: i for i, label in enumerate(grouping.labels)}
        accuracies = []
        for names in CALIBRATION_SETS.values():
            right = [group_sums(grouping, *outputs[name]).argmax(axis=1)
                     == np.asarray([column[m] for m in photos[name].makes]) for name in names if name in outputs]
            if right:
                accuracies.append(float(np.concatenate(right).mean()))
        found[blend] = float(np.mean(accuracies))
    return found


def pick_blend(measured: dict[float, float], tie: float = BLEND_TIE) -> float:
    """The best-measured blend; blends within ``tie`` of the best are a draw (a photo or two of the
    validation sets), which goes to the heaviest make output: the output that knows recent cars and
    answers "Other make"."""
    best = max(measured.values())
    return max(blend for blend, accuracy in measured.items() if accuracy >= best - tie)


def _level_scores(outputs: dict[str, tuple[np.ndarray, np.ndarray]], photos: dict[str, Photos],
                  groups: dict[str, dict[str, Any]], metadata: dict[str, Any], labels: list[str]):
    """Per set: the class scores and rightness (class and make agree), and each grouping's scores and rightness."""
    found: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    built = {name: _grouping(group, name, metadata, labels) for name, group in groups.items()}
    for name, (class_p, make_p) in outputs.items():
        truth = photos[name]
        found[name] = {}
        for group_name, group in groups.items():
            sums = group_sums(built[group_name], class_p, make_p)
            column = {label: i for i, label in enumerate(built[group_name].labels)}
            true = np.asarray([column[group["of"][m]] for m in truth.makes])
            found[name][group_name] = (sums.max(axis=1), sums.argmax(axis=1) == true)
        top = class_p.argmax(axis=1)
        has_class = np.asarray(truth.classes) >= 0
        found[name][CLASS_LEVEL] = (class_p.max(axis=1), has_class & (top == np.asarray(truth.classes)))
    return found


def answer_table(metadata: dict[str, Any], labels: list[str], outputs: dict[str, tuple[np.ndarray, np.ndarray]],
                 photos: dict[str, Photos]) -> dict[str, list[dict[str, Any]]]:
    """Per set, how the app answers: the share answered at each level and the share of those right.

    Every photo is taken to be a car (the vehicle gate is not part of this measure). An answer is right
    when it names the photo's class (class level) or the group its true make belongs to.
    """
    groups = groupings(metadata, labels)
    class_threshold = (metadata.get("confidence") or {}).get("threshold")
    tables = {}
    for name, (class_p, make_p) in outputs.items():
        truth = photos[name]
        counts = {level: [0, 0] for level in [CLASS_LEVEL, *(g.name for g in groups), "none"]}
        for row, make_row, true_class, true_make in zip(class_p, make_p, truth.classes, truth.makes):
            best = int(np.argmax(row))
            top = {"label": labels[best], "score": float(row[best])}
            answer = choose_answer(top, class_threshold, group_scores(row, groups, top_k=1, make=make_row), groups, "ok")
            level = answer["level"] if answer else "none"
            counts[level][0] += 1
            if answer is None:
                continue
            if level == CLASS_LEVEL and true_class < 0:
                # A photo known by its make only: the class answer is checked by the make it names.
                right = metadata[MAKE_OUTPUT]["of"][answer["label"]] == true_make
            elif level == CLASS_LEVEL:
                right = answer["label"] == labels[true_class]
            else:
                right = answer["label"] == metadata["groups"][level]["of"][true_make]
            counts[level][1] += int(right)
        total = len(truth.paths)
        tables[name] = [{"level": level, "share": answered / total if total else 0.0,
                         "accuracy": right / answered if answered and level != "none" else None}
                        for level, (answered, right) in counts.items()]
    return tables


def calibrate_levels(model_dir: str | Path, *, runtime: str = "auto", variant: str = "auto",
                     maps: dict[str, str | Path] | None = None, target_precision: float | None = None,
                     data: str | Path | None = None, make_data: str | Path | None = None,
                     other_makes: str | Path | None = None, num_threads: int | None = None) -> dict[str, Any]:
    """Measure a make-output artifact as served and write its thresholds and answer levels.

    Args:
        model_dir: Artifact folder with a ``make_output`` section.
        runtime: ``auto``, ``litert`` or ``keras`` (as the app's ``MODEL_RUNTIME``).
        variant: The LiteRT copy (as ``MODEL_VARIANT``); ``auto`` is the one the app serves.
        maps: ``{grouping: folder,label CSV over make labels}`` (default: ``segment`` premium/basic).
        target_precision: For the thresholds (default: the artifact's).
        data, make_data, other_makes: Data folders (default: those of the training configuration).
        num_threads: Interpreter threads.

    Returns:
        The report written to ``report/groups.json``.
    """
    from inference.classifier import load_classifier

    model_dir = Path(model_dir)
    metadata = json.loads((model_dir / export_lib.METADATA_FILE).read_text(encoding="utf-8"))
    labels = json.loads((model_dir / export_lib.LABELS_FILE).read_text(encoding="utf-8"))
    if MAKE_OUTPUT not in metadata:
        raise ValueError(f"{model_dir} has no make output; use `python -m training groups add` for its groupings")
    if target_precision is None:
        target_precision = (metadata.get("confidence") or {}).get("target_precision", 0.95)
    make_labels = list(metadata[MAKE_OUTPUT]["labels"])
    groups = make_groups(make_labels, DEFAULT_GROUPS if maps is None else maps)
    check_groups(groups, labels, make_labels)
    photos = validation_photos(metadata, labels, data, make_data, other_makes)
    classifier = load_classifier(model_dir, runtime=runtime, num_threads=num_threads, variant=variant)
    outputs = {name: served_outputs(classifier, part.paths) for name, part in photos.items()}
    blends = choose_blend(groups, metadata, labels, outputs, photos)
    blend = pick_blend(blends)
    for group in groups.values():
        group["blend"] = blend
        group["blend_measured"] = {str(b): round(a, 4) for b, a in blends.items()}
    scores = _level_scores(outputs, photos, groups, metadata, labels)

    def joined(level: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        present = [n for n in names if n in scores]
        return (np.concatenate([scores[n][level][0] for n in present]),
                np.concatenate([scores[n][level][1] for n in present]))

    for group_name, group in groups.items():
        per_set = {key: evaluate_lib.threshold_curve(*joined(group_name, names), target_precision)
                   for key, names in CALIBRATION_SETS.items() if any(n in scores for n in names)}
        group["confidence"] = _strictest(per_set, target_precision)
        group["metrics"] = {"split": "val", **{f"accuracy_{key}": float(joined(group_name, names)[1].mean())
                                               for key, names in CALIBRATION_SETS.items()
                                               if any(n in scores for n in names)}}
        group["metrics"]["accuracy"] = group["metrics"].get("accuracy_stanford", group["metrics"].get("accuracy_web"))
    metadata["groups"] = groups
    if "stanford" in outputs:
        class_p, make_p = outputs["stanford"]
        agree = _agreement(metadata, labels, class_p, make_p)
        class_scores, class_right = scores["stanford"][CLASS_LEVEL]
        # A class answer needs the make output's agreement too, so disagreeing photos are never kept.
        confidence = evaluate_lib.threshold_curve(np.where(agree, class_scores, -1.0), class_right & agree,
                                                  target_precision)
        metadata["confidence"] = {**confidence, "measured": "as served, with the make output's agreement"}
    tables = answer_table(metadata, labels, outputs, photos)
    served = {"runtime": classifier.runtime, "variant": classifier.variant, "tta": classifier.tta,
              "tta_skip_above": classifier.skip_above, "resize_mode": classifier.resize_mode}
    metadata["answer_levels"] = {"target_precision": target_precision, "served": served,
                                 "num_images": {name: len(p.paths) for name, p in photos.items()},
                                 "sets": tables, "other_as_known_make": _other_as_known(outputs, photos, make_labels)}
    check_groups(metadata["groups"], labels, make_labels)
    export_lib.write_json(model_dir / export_lib.METADATA_FILE, metadata)
    report_dir = model_dir / "report"
    report_dir.mkdir(exist_ok=True)
    for group_name, group in groups.items():
        evaluate_lib.plot_confidence(group["confidence"], report_dir / f"confidence_{group_name}.png")
    report = {"target_precision": target_precision, "served": served, "levels": tables,
              "groups": {name: {"num_labels": len(g["labels"]), "threshold": g["confidence"]["threshold"],
                                "per_set": g["confidence"]["per_set"], "metrics": g["metrics"]}
                         for name, g in groups.items()},
              "other_as_known_make": metadata["answer_levels"]["other_as_known_make"]}
    export_lib.write_json(report_dir / REPORT_FILE, report)
    (report_dir / ANSWERS_MARKDOWN).write_text(render_markdown(metadata), encoding="utf-8")
    return report


def _agreement(metadata: dict[str, Any], labels: list[str], class_p: np.ndarray, make_p: np.ndarray) -> np.ndarray:
    """Whether each photo's top class belongs to the make the make output ranks first."""
    make_labels = metadata[MAKE_OUTPUT]["labels"]
    of = metadata[MAKE_OUTPUT]["of"]
    return np.asarray([of[labels[c]] == make_labels[m] for c, m in zip(class_p.argmax(axis=1), make_p.argmax(axis=1))])


def _other_as_known(outputs, photos: dict[str, Photos], make_labels: list[str]) -> float | None:
    """Share of the other-makes photos whose top make is one of the known makes (not :data:`OTHER_MAKE`)."""
    if "other" not in outputs:
        return None
    top = outputs["other"][1].argmax(axis=1)
    return float(np.mean([make_labels[i] != OTHER_MAKE for i in top]))


def _skip(served: dict[str, Any]) -> str:
    """", mirror skipped above 0.8" when the artifact skips the mirror view of sure photos, else nothing."""
    level = served.get("tta_skip_above")
    return f", mirror skipped above {level:g}" if served.get("tta") == "flip" and level is not None else ""


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def render_markdown(metadata: dict[str, Any]) -> str:
    """The ``answer_levels`` of a make-output artifact as one Markdown table (a column pair per set)."""
    levels = metadata["answer_levels"]
    sets = [name for name in SETS if name in levels["sets"]]
    head = "| answer level | " + " | ".join(f"{SET_TITLES[n]}: answered | right" for n in sets) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(sets)]
    rows = {n: {row["level"]: row for row in levels["sets"][n]} for n in sets}
    for level in [row["level"] for row in levels["sets"][sets[0]]]:
        label = "none (\"not sure\")" if level == "none" else level
        cells = [f"{_percent(rows[n][level]['share'])} | {_percent(rows[n][level]['accuracy'])}" for n in sets]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    served = levels["served"]
    counts = ", ".join(f"{levels['num_images'][n]} {n}" for n in sets)
    lines.append("")
    lines.append(f"{metadata.get('name')} {metadata.get('version')} as served ({served['runtime']} "
                 f"{served['variant']}, {served['resize_mode']}, TTA {served['tta']}{_skip(served)}) on {counts} "
                 "validation photos; "
                 f"thresholds at {_percent(levels['target_precision'])} precision on the Stanford and the web photos "
                 "alike; every photo taken to be a car. A make answer counts as right when it names the photo's make "
                 f"(\"{OTHER_MAKE}\" for the other-makes photos); a class answer on a photo known by its make only, "
                 "when the class is of that make.")
    if levels.get("other_as_known_make") is not None:
        lines.append(f"Other-makes photos whose top make is one of the known makes: "
                     f"{_percent(levels['other_as_known_make'])}.")
    return "\n".join(lines) + "\n"


@command("levels")
def add_levels_parser(subparsers) -> None:
    """Register ``levels`` on the ``python -m training`` command line."""
    parser = subparsers.add_parser(
        "levels", help="thresholds and answer levels of a make-output artifact, measured as served",
        description="Run ARTIFACT as the app serves it over Stanford val, web-makes val and other-makes val; choose "
        "the class, make and segment thresholds so answers at each level are right at the target precision on the "
        "Stanford and the web photos alike; write them with the per-set answer levels into metadata.json and "
        "report/answers.md.")
    parser.add_argument("artifact", metavar="ARTIFACT", help="artifact folder with a make output")
    data = parser.add_argument_group("data (default: the folders of the artifact's training configuration)")
    data.add_argument("--data", metavar="DIR", help="the class-labelled data folder (with val/)")
    data.add_argument("--make-data", metavar="DIR", help="make-only photos: DIR/val/<Make>/")
    data.add_argument("--other-makes", metavar="DIR", help="photos of makes it was not taught: DIR/val/<Brand>/")
    serving = parser.add_argument_group("serving")
    serving.add_argument("--runtime", default="auto", choices=["auto", "litert", "keras"])
    serving.add_argument("--variant", default="auto", help="LiteRT copy (default: the one the app serves)")
    serving.add_argument("--target-precision", type=float, metavar="P", help="default: the artifact's")
    serving.add_argument("--segment-map", metavar="CSV", default=DEFAULT_GROUPS["segment"],
                         help="folder,label CSV giving every make its segment "
                         "(default: training/label_maps/make_premium_basic.csv)")
    parser.set_defaults(handler=_run_levels)


def _run_levels(args: argparse.Namespace) -> int:
    report = calibrate_levels(args.artifact, runtime=args.runtime, variant=args.variant,
                              maps={"segment": args.segment_map}, target_precision=args.target_precision,
                              data=args.data, make_data=args.make_data, other_makes=args.other_makes)
    print((Path(args.artifact) / "report" / ANSWERS_MARKDOWN).read_text(encoding="utf-8"), end="")
    for name, group in report["groups"].items():
        print(f"{name}: threshold {group['threshold']}, per set {group['per_set']}")
    return 0
